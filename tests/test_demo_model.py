"""The bundled demo model (``edvr_demo``) loads offline and genuinely restores held-out clips.

A small version of ``bench/demo_quality.py``: 2 clips of 32x48 (LR) from each picture that
``tools/train_demo.py`` never trains on.
"""
from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("demo_quality", ROOT / "bench" / "demo_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("demo_quality", module)
    spec.loader.exec_module(module)
    return module


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


def test_demo_model_beats_bicubic_and_single_frame(offline: None) -> None:
    import torch

    bench = _bench()
    threads = torch.get_num_threads()
    try:  # one thread: immune to OpenMP spin-waiting when the CPU is shared
        result = bench.measure("edvr_demo", clips_per_image=2, lr_size=(32, 48), threads=1)
    finally:
        torch.set_num_threads(threads)
    print(bench.table(result))
    assert result["clips"] == 6
    assert result["restored"] >= result["bicubic"] + 0.5, result
    assert result["restored"] > result["copies"], result
