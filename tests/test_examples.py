"""Every script in examples/ rendered by the real vspipe with a tiny checkpoint (-a model=...).

Without ``-a src=`` the examples generate a 96x64 YUV420P8 source of 12 frames; their output is
YUV420P10, 4x the size for super-resolution and the same size for deblurring.
"""
from __future__ import annotations

import inspect
import re
import subprocess
import typing
from pathlib import Path

import pytest
import vapoursynth as vs

import vsedvr
from vsedvr.filter.windows import PADDINGS
from vsedvr.zoo import MODELS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SOURCE_W, SOURCE_H, SOURCE_FRAMES = 96, 64, 12
SCALE = {"sr_yuv_source.vpy": 4, "deblur.vpy": 1, "rgbh_speed.vpy": 4, "scene_aware.vpy": 4}
OWNED_ELSEWHERE = {"demo.vpy"}  # the README's demo: tests/test_readme_commands.py runs `make demo`


@pytest.fixture(scope="module")
def tiny_deblur_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small deblurring EDVR (predeblur, hr_in: x1) with random weights, in BasicSR's layout."""
    import torch

    from vsedvr.nets import EDVR

    torch.manual_seed(1)
    net = EDVR(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1,
               with_predeblur=True, hr_in=True)
    path = tmp_path_factory.mktemp("checkpoints") / "tiny_deblur.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


def checkpoint_for(name: str, tiny_checkpoint: Path, tiny_deblur_checkpoint: Path) -> Path:
    return tiny_deblur_checkpoint if SCALE[name] == 1 else tiny_checkpoint


def read_y4m(data: bytes) -> tuple[dict[str, str], int]:
    """A 4:2:0 y4m stream's header fields and its number of frames; fails unless it is exact."""
    header, sep, rest = data.partition(b"\n")
    assert sep and header.startswith(b"YUV4MPEG2 "), data[:80]
    fields = {}
    for token in header.decode().split()[1:]:
        key, value = token.split("=", 1) if token.startswith("X") else (token[0], token[1:])
        fields[key] = value
    width, height = int(fields["W"]), int(fields["H"])
    assert fields["C"].startswith("420"), fields
    sample_bytes = 2 if fields["C"][3:] in ("p10", "p12", "p14", "p16") else 1
    frame_bytes = width * height * 3 // 2 * sample_bytes
    count, pos = 0, 0
    while pos < len(rest):
        assert rest[pos:pos + 6] == b"FRAME\n", f"frame {count} does not start with FRAME"
        pos += 6 + frame_bytes
        count += 1
    assert pos == len(rest), "the stream ends inside a frame"
    return fields, count


def test_every_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.vpy")} - OWNED_ELSEWHERE == set(SCALE)


@pytest.mark.parametrize("name", sorted(SCALE))
def test_default_model_is_a_zoo_model_of_the_right_task(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    default = re.search(r'globals\(\)\.get\("model", "([^"]+)"\)', text)
    assert default, "the script must read its model with globals().get(\"model\", <zoo name>)"
    assert MODELS[default.group(1)].scale == SCALE[name]


README_RENDERS_IT = pytest.mark.slow(reason="README's commands render sr_yuv_source.vpy through vspipe in make test "
                                            "(tests/test_readme_commands.py), from the checkout and from demo-output/")


@pytest.mark.parametrize("name", [pytest.param(n, marks=README_RENDERS_IT) if n == "sr_yuv_source.vpy" else n
                                  for n in sorted(SCALE)])
def test_example_renders_through_vspipe(name: str, tiny_checkpoint: Path, tiny_deblur_checkpoint: Path,
                                        vspipe: str, vs_env: dict[str, str]) -> None:
    model = checkpoint_for(name, tiny_checkpoint, tiny_deblur_checkpoint)
    done = subprocess.run([vspipe, "-c", "y4m", "-a", f"model={model}", str(EXAMPLES / name), "-"],
                          env=vs_env, capture_output=True, timeout=600)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, stderr
    fields, frames = read_y4m(done.stdout)
    assert fields["C"] == "420p10"
    scale = SCALE[name]
    assert (int(fields["W"]), int(fields["H"])) == (SOURCE_W * scale, SOURCE_H * scale)
    assert frames == SOURCE_FRAMES == int(fields["XLENGTH"])
    assert fields["F"] == "24:1"


def run_in_process(name: str, **args: str) -> dict[str, typing.Any]:
    """Runs an example as vspipe would (its -a arguments as globals); returns its globals."""
    scope: dict[str, typing.Any] = {"__name__": "__vapoursynth__", **args}
    exec(compile((EXAMPLES / name).read_text(), str(EXAMPLES / name), "exec"), scope)  # noqa: S102
    vs.clear_outputs()
    return scope


def test_scene_aware_marks_the_cut_and_keeps_the_marks(tiny_checkpoint: Path) -> None:
    scope = run_in_process("scene_aware.vpy", model=str(tiny_checkpoint))
    marks = [(f.props["_SceneChangePrev"], f.props["_SceneChangeNext"]) for f in scope["clip"].frames()]
    cut = SOURCE_FRAMES // 2
    if not hasattr(vs.core, "scd"):  # the PlaneStats fallback marks exactly the cut
        assert marks == [(0, int(n == cut - 1)) if n < cut else (int(n == cut), 0) for n in range(SOURCE_FRAMES)]
    assert marks[cut - 1][1] == 1 and marks[cut][0] == 1
    out = scope["out"]
    assert out.get_frame(cut).props["_SceneChangePrev"] == 1  # what Restore reads survives resize
    assert out.get_frame(cut - 1).props["_SceneChangeNext"] == 1


def test_rgbh_example_restores_in_rgbh(tiny_checkpoint: Path) -> None:
    scope = run_in_process("rgbh_speed.vpy", model=str(tiny_checkpoint))
    assert scope["rgb"].format.id == vs.RGBH
    assert scope["out"].format.id == vs.YUV420P10


def test_sr_example_takes_the_sources_colour_and_writes_bt709(tiny_checkpoint: Path) -> None:
    scope = run_in_process("sr_yuv_source.vpy", model=str(tiny_checkpoint))
    colour = scope["source_colour"]
    blank = vs.core.std.BlankClip(width=1920, height=1080, format=vs.YUV420P8, length=1)
    bt709 = {"matrix_in": vs.MATRIX_BT709, "transfer_in": vs.TRANSFER_BT709, "primaries_in": vs.PRIMARIES_BT709}
    bt601 = {"matrix_in": vs.MATRIX_ST170_M, "transfer_in": vs.TRANSFER_BT601, "primaries_in": vs.PRIMARIES_ST170_M}
    assert colour(blank) == bt709  # HD without properties
    assert colour(blank.resize.Point(720, 480)) == bt601  # SD without properties
    tagged = vs.core.std.SetFrameProps(blank, _Matrix=vs.MATRIX_BT470_BG, _Primaries=vs.PRIMARIES_BT470_BG,
                                       _Transfer=vs.TRANSFER_BT601)
    assert colour(tagged) == {"matrix_in": vs.MATRIX_BT470_BG, "transfer_in": vs.TRANSFER_BT601,
                              "primaries_in": vs.PRIMARIES_BT470_BG}
    # the generated source is SD (96x64): its 4x output is BT.709 all the same, and says so
    props = scope["out"].get_frame(0).props
    assert (props["_Matrix"], props["_Transfer"], props["_Primaries"]) == (
        vs.MATRIX_BT709, vs.TRANSFER_BT709, vs.PRIMARIES_BT709)


def test_sd_primaries_are_converted_not_relabelled(tiny_checkpoint: Path) -> None:
    """SMPTE 170M red written as BT.709 is a different code value than the same red relabelled."""
    scope = run_in_process("sr_yuv_source.vpy", model=str(tiny_checkpoint))
    red = vs.core.std.BlankClip(width=8, height=8, format=vs.RGBS, length=1, color=[0.8, 0.1, 0.1])
    sd = {"matrix_in": vs.MATRIX_ST170_M, "transfer_in": vs.TRANSFER_BT601, "primaries_in": vs.PRIMARIES_ST170_M}
    converted = scope["to_bt709_yuv"](red, sd).get_frame(0)
    relabelled = vs.core.resize.Bicubic(red, format=vs.YUV420P10, matrix_s="709").get_frame(0)
    assert abs(int(converted[2][0, 0]) - int(relabelled[2][0, 0])) >= 2  # Cr moves


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real H.264 file (ffmpeg's test pattern, 64x48, 6 frames) in a folder of its own."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("videos") / "input.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=24", "-frames:v", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True, timeout=120)
    return path


@pytest.mark.parametrize("name", ["demo.vpy", pytest.param("sr_yuv_source.vpy", marks=README_RENDERS_IT)])
def test_relative_src_is_taken_from_where_vspipe_runs(name: str, small_video: Path, tiny_checkpoint: Path,
                                                      vspipe: str, vs_env: dict[str, str]) -> None:
    """From a shell in the video's folder, ``-a src=input.mp4`` (and a relative checkpoint) work."""
    (small_video.parent / "tiny.pth").write_bytes(tiny_checkpoint.read_bytes())
    env = {k: v for k, v in vs_env.items() if k != "PWD"}  # bash sets it, as a terminal's shell has
    command = f"{vspipe} -c y4m -a src=input.mp4 -a model=tiny.pth {EXAMPLES / name} -"
    done = subprocess.run(["bash", "-c", command], cwd=small_video.parent, env=env, capture_output=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    fields, frames = read_y4m(done.stdout)
    assert (fields["W"], fields["H"], frames) == ("256", "192", 6)


def test_a_missing_relative_src_names_both_folders(small_video: Path, vspipe: str, vs_env: dict[str, str]) -> None:
    env = {k: v for k, v in vs_env.items() if k != "PWD"}
    done = subprocess.run(["bash", "-c", f"{vspipe} -c y4m -a src=missing.mp4 {EXAMPLES / 'sr_yuv_source.vpy'} -"],
                          cwd=small_video.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and done.stdout == ""
    assert "'missing.mp4' not found in" in done.stderr
    assert str(small_video.parent) in done.stderr and str(EXAMPLES) in done.stderr


def test_restore_has_typed_keyword_parameters() -> None:
    """vsedvr.restore is what editors complete: every Restore parameter, typed and documented."""
    sig = inspect.signature(vsedvr.restore)
    plugin = inspect.signature(vs.core.edvr.Restore)
    assert list(sig.parameters) == list(plugin.parameters)  # the same names, in the same order
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(sig.parameters.values())[2:])
    hints = typing.get_type_hints(vsedvr.restore, {**vars(vsedvr), "vs": vs})
    assert hints["return"] is vs.VideoNode and hints["scenechange"] is bool
    assert "Any" not in str(hints)
    assert typing.get_args(vsedvr.Padding) == PADDINGS
    doc = vsedvr.restore.__doc__ or ""
    for p in sig.parameters:
        assert f":param {p}:" in doc


def test_restore_passes_every_argument(tiny_checkpoint: Path) -> None:
    clip = vs.core.std.BlankClip(width=16, height=12, format=vs.RGBS, length=3)
    out = vsedvr.restore(clip, tiny_checkpoint, device="cpu", padding="replicate", scenechange=False,
                         tile=8, tile_overlap=4, precision="fp32")
    assert (out.width, out.height, out.num_frames) == (64, 48, 3)
    with pytest.raises(vs.Error, match='"padding"'):
        vsedvr.restore(clip, tiny_checkpoint, padding="mirror")  # type: ignore[arg-type]
    with pytest.raises(vs.Error, match='"tile"'):
        vsedvr.restore(clip, tiny_checkpoint, tile=(6, 8))
