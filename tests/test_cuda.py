"""The CUDA path of core.edvr.Restore: streams, pinned transfers, half precision, out-of-memory retry.

Skipped without a CUDA device (the project's CI machines have none); run them where one is:
``.venv/bin/pytest tests/test_cuda.py``.
"""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

import clips

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TESTS = Path(__file__).resolve().parent


def frames_of(clip: vs.VideoNode, order: list[int] | None = None) -> np.ndarray:
    order = list(range(clip.num_frames)) if order is None else order
    out = {}
    for n in order:
        f = clip.get_frame(n)
        out[n] = np.stack([np.asarray(f[p]) for p in range(3)]).astype(np.float32)
    return np.stack([out[n] for n in range(clip.num_frames)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def test_cuda_equals_cpu_and_any_order_is_identical(tiny_checkpoint: Path) -> None:
    source = clips.moving_pattern(48, 32, 12)
    cpu = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cpu"))
    cuda = vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cuda", precision="fp32")
    sequential = frames_of(cuda)
    # TF32 convolutions (PyTorch's default for cuDNN) round differently from the CPU's fp32
    np.testing.assert_allclose(sequential, cpu, atol=5e-3, rtol=0)
    order = list(range(12))
    random.Random(3).shuffle(order)
    again = vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cuda", precision="fp32")
    assert np.array_equal(frames_of(again, order), sequential)
    # many frames in flight at once: the pinned downloads of several frames overlap the next computation
    parallel = vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cuda", precision="fp32")
    futures = [parallel.get_frame_async(n) for n in order]
    got = {n: np.stack([np.asarray(f.result()[p]) for p in range(3)]) for n, f in zip(order, futures)}
    assert np.array_equal(np.stack([got[n] for n in range(12)]), sequential)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_is_close_to_fp32(tiny_checkpoint: Path, precision: str) -> None:
    source = clips.moving_pattern(48, 32, 6)
    full = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cuda", precision="fp32"))
    half = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cuda", precision=precision))
    assert psnr(half, full) > 45.0  # below half an 8-bit code value
    assert not np.array_equal(half, full)  # it really computed in half precision


def test_rgbh_clip_computes_fp16_and_returns_rgbh(tiny_checkpoint: Path) -> None:
    source = clips.moving_pattern(48, 32, 6)
    out = vs.core.edvr.Restore(vs.core.resize.Point(source, format=vs.RGBH), model=str(tiny_checkpoint),
                               device="cuda")
    assert out.format.id == vs.RGBH
    full = frames_of(vs.core.edvr.Restore(source, model=str(tiny_checkpoint), device="cuda", precision="fp32"))
    assert psnr(frames_of(out), full) > 45.0


def test_out_of_memory_retries_with_smaller_tiles(tmp_path: Path) -> None:
    """A frame too large for the memory allowed: the log warns, the tiles halve, the output is whole."""
    script = tmp_path / "oom.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        import numpy as np
        import torch
        import vapoursynth as vs
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        from vsedvr.nets import EDVR
        torch.manual_seed(0)
        torch.save({{"params": EDVR().state_dict()}}, {str(tmp_path / "m.pth")!r})
        # 1.5 GiB allowed: a whole 768x768 frame needs several (the x2 upsampling alone is 2.4 GB)
        torch.cuda.set_per_process_memory_fraction(1.5 * 2**30 / torch.cuda.get_device_properties(0).total_memory)
        source = clips.moving_pattern(768, 768, 5)
        out = vs.core.edvr.Restore(source, model={str(tmp_path / "m.pth")!r}, device="cuda")
        frame = out.get_frame(2)
        print("shape", np.asarray(frame[0]).shape, "finite", bool(np.isfinite(np.asarray(frame[0])).all()))
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "shape (3072, 3072) finite True" in done.stdout, done.stdout
    assert "CUDA ran out of memory" in done.stderr and "retrying with tiles of" in done.stderr, done.stderr
