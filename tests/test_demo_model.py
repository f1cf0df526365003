"""The bundled demo model (``edvr_demo``) loads offline and genuinely restores held-out content.

The quality test is a small version of ``bench/demo_quality.py``: 2 clips of 24x40 (LR) from each
held-out family (content and generators ``tools/train_demo_model.py`` never trains on). The data tests
check what the quality figures rest on: held-out content is disjoint from training content, the
clips are reproducible, and the LR centre frame is the degraded HR centre frame (not shifted).
"""
from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Margins for a 10-clip sample (docs/demo-model.md has the 60-clip figures of the shipped file;
# on these 10 clips edvr_demo-b7ed1f9d gives +2.17 dB over bicubic and +0.175 dB over 5 copies).
MIN_GAIN_OVERALL = 0.5     # dB over bicubic, all held-out clips
MIN_GAIN_PER_FAMILY = 0.2  # dB over bicubic, every held-out family
MIN_TEMPORAL_GAIN = 0.05   # dB over 5 copies of the centre frame, all held-out clips


def _load(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bench() -> Any:
    _load("bench_common", ROOT / "bench" / "bench_common.py")  # what demo_quality imports beside it
    return _load("demo_quality", ROOT / "bench" / "demo_quality.py")


def _data() -> Any:
    return _load("demo_model_data", ROOT / "tools" / "demo_model_data.py")


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, and an empty model cache: the model must come from inside the package."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path / "empty-cache"))


def test_demo_model_is_bundled_and_loads_offline(offline: None) -> None:
    from vsedvr import MODELS, load_model
    from vsedvr.zoo import model_path

    spec = MODELS["edvr_demo"]
    assert spec.bundled and spec.url is None and spec.task == "sr" and spec.scale == 4
    assert spec.num_frames == 5 and spec.padding == "reflection_circle"
    path = model_path(spec)
    assert path.is_file() and path.stat().st_size < 8_000_000
    net = load_model("edvr_demo", progress=False)
    assert net.scale == 4 and net.num_frames == 5 and net.with_tsa
    by_path = load_model(str(path), progress=False)
    assert all((a == b).all() for a, b in zip(net.state_dict().values(), by_path.state_dict().values()))


@pytest.fixture(scope="module")
def held_out_result() -> dict[str, Any]:
    """bench/demo_quality.py's measure on 2 clips per held-out family (no network needed)."""
    import torch

    bench = _bench()
    threads = torch.get_num_threads()
    try:  # one thread: immune to OpenMP spin-waiting when the CPU is shared
        result = bench.measure("edvr_demo", clips_per_family=2, threads=1)
    finally:
        torch.set_num_threads(threads)
    print(bench.table(result))
    return result


def test_demo_model_beats_bicubic_and_uses_the_neighbours(offline: None, held_out_result: dict[str, Any]) -> None:
    result = held_out_result
    assert result["clips"] == 2 * len(_data().HELD_OUT_FAMILIES)
    assert result["restored"] >= result["bicubic"] + MIN_GAIN_OVERALL, result
    assert result["restored_ssim"] > result["bicubic_ssim"], result
    assert result["restored"] >= result["copies"] + MIN_TEMPORAL_GAIN, result


@pytest.mark.xfail(strict=True, reason="issue 15 open: on flat+stripes edvr_demo-b7ed1f9d is below "
                                       "bicubic (-0.11 dB here, -0.27 dB on 60 clips); see docs/demo-model.md")
def test_demo_model_beats_bicubic_on_every_family(offline: None, held_out_result: dict[str, Any]) -> None:
    for family, r in held_out_result["per_group"].items():
        assert r["restored"] >= r["bicubic"] + MIN_GAIN_PER_FAMILY, (family, r)


@pytest.mark.parametrize("detail", ["brightness", pytest.param("colour", marks=pytest.mark.xfail(
    strict=True, reason="issues 15/25 open: edvr_demo-b7ed1f9d adds the same detail to R, G and B "
                        "(restores brightness only); fine-tuning with colour levers moves its one "
                        "colour direction, not adds one (docs/demo-model.md)"))])
def test_demo_model_restores_fine_detail_in_brightness_and_in_colour(offline: None, detail: str) -> None:
    """A sine grating of 12 HR px (3 LR px per period along the rows) at 45 degrees, as brightness
    (grey) or as colour alone (red against green, the stripes of issue 15): the restored grating
    must keep more of its amplitude than bicubic's. A model that learnt from photographs that
    colour is smooth attenuates colour detail below bicubic (edvr_demo-b7ed1f9d keeps 0.62 of a
    colour grating's amplitude, bicubic 0.89; of a grey one 0.94 and 0.89)."""
    import math

    import numpy as np
    import torch

    from vsedvr import load_model

    data = _data()
    (h, w), margin, period, crop = (96, 160), data.MARGIN, 12.0, 32
    y, x = np.mgrid[0:h + 2 * margin, 0:w + 2 * margin].astype(np.float32)
    phase = 2 * math.pi * (x + y) / math.sqrt(2) / period
    g = 0.5 + 0.35 * np.cos(phase)
    planes = [g, g, g] if detail == "brightness" else [g, 1 - g, np.full_like(g, 0.5)]
    hr = torch.from_numpy(np.stack(planes))
    m = margin // 4
    lr = data.downscale(hr)[..., m: m + h // 4, m: m + w // 4]
    net = load_model("edvr_demo", progress=False)
    with torch.no_grad():
        restored = net(lr.expand(5, -1, -1, -1)[None].contiguous())[0]
    bicubic = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    inner = (slice(margin + crop, margin + h - crop), slice(margin + crop, margin + w - crop))
    cos, sin = (torch.from_numpy(f(phase[inner])) for f in (np.cos, np.sin))

    def amplitude(out: torch.Tensor) -> float:
        """Amplitude of the grating's own frequency in the red channel (0.35 in the truth)."""
        red = out[0, crop:-crop, crop:-crop].double()
        return math.hypot(2 * float((red * cos).mean()), 2 * float((red * sin).mean()))

    kept, bicubic_kept = amplitude(restored) / 0.35, amplitude(bicubic) / 0.35
    assert abs(1 - kept) < abs(1 - bicubic_kept), (detail, kept, bicubic_kept)


def test_held_out_content_is_never_trained_on() -> None:
    data = _data()
    held_pictures = {p for pics in data.HELD_OUT_PICTURES.values() for p in pics}
    assert set(data.HELD_OUT_FAMILIES).isdisjoint(data.TRAIN_FAMILIES)
    assert set(data.HELD_OUT_FAMILIES) >= set(data.HELD_OUT_PICTURES)
    assert held_pictures.isdisjoint(data.TRAIN_IMAGES)
    assert set(data.HELD_OUT_IMAGES) <= held_pictures          # the demo clip's picture too
    assert "cat" in data.EXCLUDED_IMAGES                       # the same photograph as chelsea
    assert set(data.TRAIN_WEIGHTS) == set(data.TRAIN_FAMILIES)
    # The procedural held-out generators exist and are not reachable from a training family.
    for family in set(data.HELD_OUT_FAMILIES) - set(data.HELD_OUT_PICTURES):
        assert family in data.PROCEDURAL and family not in data.TRAIN_FAMILIES


def _best_shift(lr_centre: Any, hr_centre: Any) -> tuple[int, int]:
    """The LR-pixel shift (-1..1 each way) at which bicubic x4 of lr best matches hr."""
    import torch.nn.functional as F

    up = F.interpolate(lr_centre[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    errors = {}
    for dy in (-4, 0, 4):
        for dx in (-4, 0, 4):
            a = up[:, 8 + dy: -8 + dy or None, 8 + dx: -8 + dx or None]
            b = hr_centre[:, 8:-8, 8:-8]
            errors[(dy // 4, dx // 4)] = float((a - b).pow(2).mean())
    return min(errors, key=errors.get)


def test_clips_are_reproducible_and_the_centre_frames_aligned() -> None:
    import numpy as np
    import torch

    data = _data()
    first = data.family_clips(clips_per_family=1, seed=7)
    again = data.family_clips(clips_per_family=1, seed=7)
    assert [f for f, _, _ in first] == list(data.HELD_OUT_FAMILIES)
    for (fa, la, ha), (fb, lb, hb) in zip(first, again):
        assert fa == fb and torch.equal(la, lb) and torch.equal(ha, hb)
        assert la.shape == (5, 3, 24, 40) and ha.shape == (3, 96, 160)
        assert _best_shift(la[2], ha) == (0, 0), fa
    rng = np.random.default_rng(3)
    moving = 0
    for _ in range(8):
        lr, hr = data.training_clip(rng, 64, 8.0)
        assert lr.shape == (5, 3, 16, 16) and hr.shape == (5, 3, 64, 64)
        assert float(lr.min()) >= 0 and float(lr.max()) <= 1
        assert torch.equal(lr * 255, (lr * 255).round())          # 8-bit LR
        moving += int(any(not torch.equal(lr[t], lr[2]) for t in (0, 1, 3, 4)))
    assert moving >= 6


def test_pictures_file_holds_the_pictures(tmp_path: Path) -> None:
    """``--save-pictures`` carries every picture the data uses in one file, pixel for pixel."""
    data = _data()
    path = tmp_path / "pictures.npz"
    names = data.save_pictures(path)
    assert names == list(data.all_pictures()) and len(names) == len(set(names))
    from_wheels = {n: data.load_image(n) for n in ("astronaut", "sklearn:china", "logo")}
    try:
        data.use_pictures(path)
        for name, image in from_wheels.items():
            assert data.load_image(name).equal(image), name
    finally:
        data.use_pictures(None)


def test_trainer_runs_from_a_pictures_file_without_scikit_image(tmp_path: Path) -> None:
    """What a GPU machine without scikit-image / scikit-learn runs (with ``--device cuda``): the
    trainer takes its pictures from the file and writes a checkpoint vsedvr loads."""
    import subprocess

    import torch

    from vsedvr import load_model

    pictures = tmp_path / "pictures.npz"
    trainer = ROOT / "tools" / "train_demo_model.py"
    subprocess.run([sys.executable, str(trainer), "--save-pictures", str(pictures)], check=True,
                   capture_output=True, timeout=300)
    blocked = tmp_path / "blocked"
    for name in ("skimage", "sklearn"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    out = tmp_path / "out"
    env = {**__import__("os").environ, "PYTHONPATH": str(blocked)}
    run = subprocess.run([sys.executable, str(trainer), "--pictures", str(pictures), "--device", "cpu",
                          "--steps", "2", "--warmup", "1", "--workers", "0", "--eval-clips", "1",
                          "--out-dir", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (path,) = out.glob("edvr_demo-*.pth")
    meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
    assert meta["steps"] == 2 and "pictures.npz" in meta["image_source"]
    net = load_model(str(path), progress=False)
    assert net.num_frames == 5 and net.scale == 4
