"""What every segment shares, wherever it is rendered: its file name, the FFV1 settings, and the
check that the file decodes to exactly the frames VapourSynth wrote before it takes its name."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from .tools import RenderError, decode_hashes

__all__ = ["FFV1_ARGS", "SegmentFailed", "exit_text", "segment_name", "verify_segment"]

#: FFV1 version 3, every frame a keyframe (cuts anywhere, concat with -c copy), CRC per slice.
FFV1_ARGS = ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1"]


class SegmentFailed(RenderError):
    """This attempt at a segment failed (the script, ffmpeg, a dead worker, wrong frames); worth retrying."""


def segment_name(index: int) -> str:
    return f"seg-{index:05d}.mkv"


def exit_text(code: int) -> str:
    """How a process ended, for a message."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def verify_segment(ffmpeg: str, partial: Path, hashes: list[str], frame_size: int, where: str) -> Path:
    """Decodes ``partial`` and compares every frame with ``hashes``; renames it to its segment name
    and returns that path, or deletes it and raises SegmentFailed."""
    final = partial.with_name(segment_name(int(partial.name.split(".")[1].split("-")[1])))
    try:
        decoded = decode_hashes(ffmpeg, partial, frame_size)
        if decoded != hashes:
            bad = next((i for i, (a, b) in enumerate(zip(decoded, hashes)) if a != b), min(len(decoded), len(hashes)))
            raise SegmentFailed(f"{where}: the FFV1 file does not decode to what VapourSynth produced "
                                f"({len(decoded)} frames decoded, first difference at frame {bad} of the segment)")
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final
