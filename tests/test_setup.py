"""The stack the bootstrap installs: VapourSynth R81, vspipe, PyTorch with deform_conv2d."""
from __future__ import annotations

import subprocess

import pytest


def test_vapoursynth_is_r81() -> None:
    import vapoursynth as vs

    assert vs.core.core_version.release_major == 81
    assert vs.__version__.release_major == 81
    clip = vs.core.std.BlankClip(width=64, height=48, format=vs.RGBS, length=3, color=[0.25, 0.5, 1.0])
    frame = clip.get_frame(2)
    assert frame[1][0, 0] == 0.5


def test_vspipe_version(vspipe: str, vs_env: dict[str, str]) -> None:
    out = subprocess.run([vspipe, "--version"], env=vs_env, capture_output=True, text=True, check=True)
    assert "R81" in out.stdout


def test_vspipe_renders_y4m(tmp_path, vspipe: str, vs_env: dict[str, str]) -> None:
    script = tmp_path / "blank.vpy"
    script.write_text(
        "import vapoursynth as vs\n"
        "clip = vs.core.std.BlankClip(width=64, height=48, format=vs.YUV420P8, length=7, fpsnum=24, fpsden=1)\n"
        "clip.set_output()\n")
    out = tmp_path / "out.y4m"
    subprocess.run([vspipe, "-c", "y4m", str(script), str(out)], env=vs_env, check=True, capture_output=True)
    data = out.read_bytes()
    header = data.split(b"\n", 1)[0].decode()
    magic, *fields = header.split()
    assert magic == "YUV4MPEG2"
    assert {"W64", "H48", "F24:1", "C420"} <= set(fields)
    assert data.count(b"FRAME\n") == 7
    frame_size = 64 * 48 * 3 // 2
    assert len(data) == len(header) + 1 + 7 * (len(b"FRAME\n") + frame_size)


def test_deform_conv2d_runs_on_cpu() -> None:
    torch = pytest.importorskip("torch")
    from torchvision.ops import deform_conv2d

    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    weight = torch.zeros(1, 2, 3, 3)
    weight[0, 0, 1, 1] = 1.0  # picks the centre tap of channel 0
    offset = torch.zeros(1, 18, 8, 8)
    offset[:, 9] = 1.0  # centre tap (k=4): dx = +1 -> samples the right neighbour
    mask = torch.ones(1, 9, 8, 8)
    out = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert out.shape == (1, 1, 8, 8)
    assert torch.equal(out[0, 0, :, :7], x[0, 0, :, 1:])
    assert torch.all(out[0, 0, :, 7] == 0)  # sampled outside the image
