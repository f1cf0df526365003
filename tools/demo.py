"""README's main command (``make demo``): from a video file to a restored video file, offline.

1. Writes ``demo-output/input.mp4``: a real H.264 file (libx264, the static ffmpeg of
   imageio-ffmpeg), 24 frames of 96x64, a steady pan over a picture the demo model never saw,
   downscaled x4 the way REDS makes its low-resolution frames.
2. Runs examples/demo.vpy's header command as written there, through bash from the checkout root
   with .venv/bin on PATH: vspipe opens that file with BestSource, restores it
   with ``core.edvr.Restore(..., model="edvr_demo")`` and pipes y4m into ffmpeg, which writes
   ``demo-output/restored.mp4`` (384x256 H.264, tagged BT.709). The same conversions with a
   bicubic x4 instead of EDVR give ``demo-output/bicubic.mp4``, for comparison.
3. Decodes both files again (BestSource) and prints their PSNR against the ground truth
   (RGB, 8-bit, all frames) and writes ``demo-output/demo-compare.png``: the middle frame as
   bicubic | EDVR | ground truth (README shows a copy, docs/demo-compare.png).
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"
SCRIPT = ROOT / "examples" / "demo.vpy"
INPUT = OUT / "input.mp4"
RESTORED = OUT / "restored.mp4"
BICUBIC = OUT / "bicubic.mp4"
COMPARE = OUT / "demo-compare.png"
CROP = (slice(64, 256), slice(96, 288))  # the picture shows these rows and columns of the 384x256 frames
BIN = Path(sys.executable).parent
TAGS = "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709"
# the encoder settings of examples/demo.vpy's header command, for the bicubic comparison
ENCODE = ["-y", "-loglevel", "error", "-i", "-", "-vf", TAGS, "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p"]


def ffmpeg() -> str:
    """The static ffmpeg of imageio-ffmpeg (the bootstrap also links it as .venv/bin/ffmpeg)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Minimal 8-bit RGB PNG writer (rgb: uint8, (height, width, 3)), every row "Up"-filtered."""
    height, width, _ = rgb.shape
    up = np.diff(rgb, axis=0, prepend=np.zeros((1, width, 3), np.uint8))  # uint8: wraps modulo 256
    raw = b"".join(b"\x02" + up[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def encode(clip, path: Path, args: list[str]) -> None:  # noqa: ANN001 - a vs.VideoNode
    """Pipes a YUV clip as y4m into ffmpeg (``args``, then ``path``)."""
    proc = subprocess.Popen([ffmpeg(), *args, str(path)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        clip.output(proc.stdin, y4m=True)
    finally:
        proc.stdin.close()
    if proc.wait():
        raise SystemExit(f"demo: ffmpeg failed writing {path}")


def write_input(lr: np.ndarray) -> None:
    """The LR frames (L, 3, h, w) as a real H.264 file in BT.709, 24 fps."""
    import vapoursynth as vs

    core = vs.core
    length, _, height, width = lr.shape
    blank = core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=length, fpsnum=24, fpsden=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for plane in range(3):
            np.asarray(out[plane])[:] = lr[n, plane]
        return out

    yuv = core.resize.Bicubic(core.std.ModifyFrame(blank, blank, fill), format=vs.YUV420P8, matrix_s="709",
                              transfer_in_s="709", primaries_in_s="709", dither_type="error_diffusion")
    encode(yuv, INPUT, ["-y", "-loglevel", "error", "-i", "-", "-vf", TAGS, "-c:v", "libx264", "-crf", "10"])


def header_command() -> str:
    """examples/demo.vpy's header command (its lines indented 3+ spaces before "# Arguments")."""
    lines = []
    for line in SCRIPT.read_text().splitlines():
        if not line.startswith("#") or line.startswith("# Arguments"):
            break
        if line.startswith("#   "):
            lines.append(line[1:].strip())
    return " ".join(line.removesuffix("\\").strip() for line in lines)


def restore() -> float:
    """examples/demo.vpy's header command (vspipe | ffmpeg), as a user runs it; returns its seconds."""
    started = time.monotonic()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PWD", None)  # bash sets it to ROOT
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", header_command()], cwd=ROOT, env=env)
    if done.returncode:
        raise SystemExit(f"demo: `{header_command()}` failed (exit {done.returncode})")
    return time.monotonic() - started


def write_bicubic() -> None:
    """The input through the same conversions and encoder, with bicubic x4 instead of EDVR."""
    import vapoursynth as vs

    core = vs.core
    clip = core.bs.VideoSource(str(INPUT), cachemode=0)
    rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")
    rgb = core.resize.Bicubic(rgb, rgb.width * 4, rgb.height * 4, filter_param_a=0, filter_param_b=0.75)
    encode(core.resize.Bicubic(rgb, format=vs.YUV420P10, matrix_s="709", dither_type="error_diffusion"),
           BICUBIC, ENCODE)


def decode(path: Path) -> np.ndarray:
    """A BT.709 video file as float32 RGB frames (L, 3, H, W)."""
    import vapoursynth as vs

    core = vs.core
    rgb = core.resize.Bicubic(core.bs.VideoSource(str(path), cachemode=0), format=vs.RGBS, matrix_in_s="709")
    return np.stack([np.stack([np.asarray(f[p]) for p in range(3)]) for f in rgb.frames()])


def compare(hr: np.ndarray) -> tuple[float, float]:
    """PSNR of restored.mp4 and bicubic.mp4 against the ground truth; writes the comparison PNG."""
    import torch

    from demo_model_data import psnr, to_uint8  # this script's folder

    edvr, bic = decode(RESTORED), decode(BICUBIC)
    for name, frames in (("restored", edvr), ("bicubic", bic)):
        if frames.shape != hr.shape:
            raise SystemExit(f"demo: {name}.mp4 decodes to {frames.shape}, expected {hr.shape}")
    truth = torch.from_numpy(hr)
    p_edvr = float(np.mean([psnr(torch.from_numpy(edvr[i]), truth[i]) for i in range(len(hr))]))
    p_bic = float(np.mean([psnr(torch.from_numpy(bic[i]), truth[i]) for i in range(len(hr))]))
    mid = len(hr) // 2
    rows, cols = CROP
    gap = np.ones((3, rows.stop - rows.start, 4), np.float32)
    bic_mid, edvr_mid, hr_mid = (f[mid, :, rows, cols] for f in (bic, edvr, hr))
    panel = torch.from_numpy(np.concatenate([bic_mid, gap, edvr_mid, gap, hr_mid], axis=2))
    write_png(COMPARE, to_uint8(panel).byte().permute(1, 2, 0).contiguous().numpy())
    return p_edvr, p_bic


def main() -> int:
    from demo_model_data import demo_clip  # this script's folder

    OUT.mkdir(exist_ok=True)
    for stale in (INPUT, RESTORED, BICUBIC, COMPARE):
        stale.unlink(missing_ok=True)
    lr, hr = (t.numpy() for t in demo_clip())
    write_input(lr)
    print(f"demo: wrote {INPUT.relative_to(ROOT)} ({lr.shape[0]} frames of {lr.shape[3]}x{lr.shape[2]}, H.264)",
          file=sys.stderr)
    print(f"demo: running: {header_command()}", file=sys.stderr)
    seconds = restore()
    print(f"demo: wrote {RESTORED.relative_to(ROOT)} ({hr.shape[3]}x{hr.shape[2]}, H.264, BT.709) in "
          f"{seconds:.1f} s (BestSource -> edvr.Restore with edvr_demo -> ffmpeg)", file=sys.stderr)
    write_bicubic()
    p_edvr, p_bic = compare(hr)
    print(f"demo: PSNR against the ground truth, {len(hr)} frames decoded from the files: "
          f"EDVR (edvr_demo) {p_edvr:.2f} dB, bicubic {p_bic:.2f} dB ({p_edvr - p_bic:+.2f} dB)", file=sys.stderr)
    print(f"demo: wrote {BICUBIC.relative_to(ROOT)} and {COMPARE.relative_to(ROOT)} "
          f"(frame {len(hr) // 2}, cropped: bicubic | EDVR | ground truth)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # vspipe, ffmpeg and torch share the cores
    sys.exit(main())
