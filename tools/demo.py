"""README's main command: render examples/demo.vpy through the venv's vspipe into demo-output/.

Writes ``demo-output/demo.y4m`` (the restored clip, YUV420P10) and then compares it with the
ground truth: it decodes the y4m back to RGB (zimg, BT.709 limited range, as it was encoded),
puts bicubic x4 of the LR input through the same YUV 4:2:0 10-bit round trip, prints the mean
PSNR of both against the ground truth to stderr (RGB, 8-bit rounded, all frames) and writes
``demo-output/demo-compare.png``: the middle frame as bicubic | EDVR | ground truth.
"""
from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "demo.vpy"
OUTPUT = ROOT / "demo-output" / "demo.y4m"
COMPARE = ROOT / "demo-output" / "demo-compare.png"


def read_y4m(path: Path) -> tuple[list[np.ndarray], int, int]:
    """Frames of a 4:2:0 10/16-bit y4m as flat uint16 arrays, with (width, height)."""
    data = path.read_bytes()
    end = data.index(b"\n")
    fields = data[:end].split()
    if fields[0] != b"YUV4MPEG2":
        raise ValueError(f"{path}: not a y4m file")
    params = {f[:1]: f[1:] for f in fields[1:]}
    width, height, colour = int(params[b"W"]), int(params[b"H"]), params.get(b"C", b"420")
    if colour not in (b"420p10", b"420p16"):
        raise ValueError(f"{path}: expected 4:2:0 10-bit y4m, got C{colour.decode()}")
    samples = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    frames, pos = [], end + 1
    while pos < len(data):
        header_end = data.index(b"\n", pos)
        if not data[pos:header_end].startswith(b"FRAME"):
            raise ValueError(f"{path}: broken frame header at byte {pos}")
        start = header_end + 1
        frames.append(np.frombuffer(data, dtype="<u2", count=samples, offset=start))
        pos = start + 2 * samples
    return frames, width, height


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Minimal 8-bit RGB PNG writer (rgb: uint8, (height, width, 3))."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def compare() -> None:
    """PSNR of the rendered y4m and of bicubic against the ground truth; the side-by-side PNG."""
    import vapoursynth as vs

    sys.path.insert(0, str(ROOT / "tools"))
    from train_demo import bicubic_up, demo_clip, psnr, to_uint8

    import torch

    core = vs.core
    lr, hr = demo_clip()
    frames, width, height = read_y4m(OUTPUT)
    if len(frames) != hr.shape[0] or (height, width) != tuple(hr.shape[-2:]):
        raise ValueError(f"{OUTPUT}: {len(frames)} frames of {width}x{height}, expected "
                         f"{hr.shape[0]} of {hr.shape[-1]}x{hr.shape[-2]}; re-render it")

    def planes(frame: vs.VideoFrame) -> np.ndarray:
        return np.stack([np.asarray(frame[p]) for p in range(3)])

    # Decode the y4m: fill a YUV420P10 clip with its samples, convert back to RGB with zimg.
    yuv = core.std.BlankClip(width=width, height=height, format=vs.YUV420P10, length=len(frames))
    yuv = core.std.SetFrameProps(yuv, _Matrix=1, _Transfer=1, _Primaries=1, _Range=0, _ChromaLocation=0)  # limited range
    luma, chroma = width * height, ((width + 1) // 2) * ((height + 1) // 2)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        flat = frames[n]
        np.asarray(out[0])[:] = flat[:luma].reshape(height, width)
        for p in (1, 2):
            start = luma + (p - 1) * chroma
            np.asarray(out[p])[:] = flat[start:start + chroma].reshape((height + 1) // 2, (width + 1) // 2)
        return out

    decoded = core.resize.Bicubic(core.std.ModifyFrame(yuv, yuv, fill), format=vs.RGBS, matrix_in_s="709")

    # Bicubic through the same RGB -> YUV420P10 -> RGB round trip.
    bic = bicubic_up(lr).clamp(0, 1).numpy()
    blank = core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=len(frames))

    def fill_bicubic(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = bic[n, p]
        return out

    bic_clip = core.std.ModifyFrame(blank, blank, fill_bicubic)
    bic_clip = core.resize.Bicubic(core.resize.Bicubic(bic_clip, format=vs.YUV420P10, matrix_s="709"),
                                   format=vs.RGBS, matrix_in_s="709")

    edvr_rgb = torch.from_numpy(np.stack([planes(f) for f in decoded.frames()]))
    bic_rgb = torch.from_numpy(np.stack([planes(f) for f in bic_clip.frames()]))
    p_edvr = float(np.mean([psnr(edvr_rgb[i], hr[i]) for i in range(len(frames))]))
    p_bic = float(np.mean([psnr(bic_rgb[i], hr[i]) for i in range(len(frames))]))
    print(f"demo: PSNR vs ground truth, {len(frames)} frames, after the YUV420P10 round trip: "
          f"EDVR (edvr_demo) {p_edvr:.2f} dB, bicubic {p_bic:.2f} dB ({p_edvr - p_bic:+.2f} dB)",
          file=sys.stderr)

    mid = len(frames) // 2
    gap = torch.ones(3, height, 4)
    panel = torch.cat([bic_rgb[mid], gap, edvr_rgb[mid], gap, hr[mid]], dim=2)
    write_png(COMPARE, to_uint8(panel).byte().permute(1, 2, 0).contiguous().numpy())
    print(f"demo: wrote {COMPARE.relative_to(ROOT)} (frame {mid}: bicubic | EDVR | ground truth)",
          file=sys.stderr)


def main() -> int:
    OUTPUT.parent.mkdir(exist_ok=True)
    vspipe = Path(sys.executable).parent / "vspipe"
    started = time.monotonic()
    done = subprocess.run([str(vspipe), "--progress", "-c", "y4m", str(SCRIPT), str(OUTPUT)])
    if done.returncode:
        return done.returncode
    print(f"demo: wrote {OUTPUT.relative_to(ROOT)} ({OUTPUT.stat().st_size / 1e6:.1f} MB) "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)
    compare()
    return 0


if __name__ == "__main__":
    sys.exit(main())
