"""The driver of ``vsedvr render``: plan the segments, hand them to a pool, record what comes
back (with ``--encode``, each segment's chunk, encoded on its worker), then join with ``-c copy``,
verify packet by packet and move the result into place."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..zoo.cache import sha256_file
from .ray_pool import RayPool
from .process import WorkerProcess
from .scheduler import LocalPool
from .encode import check_encode, chunk_spec, dry_encode, join_args
from .segment import FFV1_ARGS
from .tools import (RenderError, check_disk_full, decode_hashes, dry_run_ffmpeg, ffmpeg_cmd, find_ffmpeg,
                    first_difference, packet_hashes, tail)
from .workdir import WorkDir

__all__ = ["DEFAULT_SEGMENT", "render"]

DEFAULT_SEGMENT = 500  # frames; see docs/long-videos.md (measured start-up and overheads)
_AUDIO_CODEC_OPTS = ("-c:a", "-acodec", "-codec:a", "-an")


def _stderr(text: str) -> None:
    print(f"vsedvr render: {text}", file=sys.stderr, flush=True)


def _count(n: int, what: str) -> str:
    """'1 segment', '3 segments'."""
    return f"{n} {what}{'' if n == 1 else 's'}"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Frames done across all workers (from the progress files they write), fps, ETA, failures."""

    def __init__(self, work: WorkDir, ranges: Sequence[tuple[int, int]], todo: Sequence[int],
                 log: Callable[[str], None], interval: float) -> None:
        self.work, self.ranges, self.todo, self.log = work, ranges, list(todo), log
        self.total = sum(e - s + 1 for s, e in ranges)
        self.reused = self.total - sum(ranges[i][1] - ranges[i][0] + 1 for i in todo)
        self.done: set[int] = set()
        self.failed = 0
        self.t0 = time.monotonic()
        self.last = 0.0
        self.interval = interval
        self.tty = sys.stderr.isatty()
        self.attempts_before = {i: self._attempts(i) for i in self.todo}  # of earlier runs: not "retried" now

    def _attempts(self, index: int) -> int:
        try:
            return len((self.work.path / "attempts" / f"{index:05d}").read_text().splitlines())
        except OSError:
            return 0

    def frames_this_run(self) -> int:
        n = 0
        for i in self.todo:
            if i in self.done:
                n += self.ranges[i][1] - self.ranges[i][0] + 1
                continue
            try:
                n += int((self.work.path / "progress" / f"{i:05d}").read_text() or 0)
            except (OSError, ValueError):
                pass
        return n

    def retried(self) -> int:
        """Segments' attempts in this run after their first one."""
        return sum(max(0, self._attempts(i) - self.attempts_before[i] - 1) for i in self.todo)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (1.0 if self.tty else self.interval):
            return
        self.last = now
        frames = self.frames_this_run()
        elapsed = max(now - self.t0, 1e-6)
        fps = frames / elapsed
        left = self.total - self.reused - frames
        eta = _clock(left / fps) if fps > 0 else "?"
        line = (f"{self.reused + frames}/{self.total} frames, {fps:.2f} fps, ETA {eta}; segments "
                f"{len(self.done)}/{len(self.todo)} done, {self.failed} failed, {self.retried()} retried")
        if self.tty:
            print(f"\rvsedvr render: {line}\033[K", end="", file=sys.stderr, flush=True)
        else:
            self.log(line)

    def end_line(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def _ffmpeg_run(cmd: list[str], work: Path, what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        check_disk_full(proc.stderr, work)
        raise RenderError(f"{what} failed (ffmpeg exit status {proc.returncode}):\n{tail(proc.stderr)}")


def _check_join_packets(ffmpeg: str, partial: Path, parts: Sequence[Mapping[str, Any]], what: str) -> None:
    """The join holds exactly the verified parts' packets (``what``: "segment", the lossless FFV1
    files, or "chunk", the ``--encode`` ones), in order, with the codec parameters of each (a part
    from an encoder that chose other parameters would be joined without error and stop decoding
    there, or decode wrongly): a pass over the packets, no decode. Each part is the record of its
    file (``file``, ``extradata``, ``packets``) with its segment's ``index``, ``start``, ``end``,
    ``host``."""
    first = parts[0]["extradata"]
    for part in parts[1:]:
        if part["extradata"] != first:
            partial.unlink(missing_ok=True)
            where = f"(frames {part['start']}-{part['end']}, {'rendered' if what == 'segment' else 'encoded'} on " \
                    f"{part.get('host', '?')})"
            raise RenderError(f"{'segment' if what == 'segment' else 'the chunk of segment'} {part['index']} {where} "
                              f"has other {'FFV1 codec parameters' if what == 'segment' else 'codec parameters'} than "
                              f"{'segment 0' if what == 'segment' else 'the chunk of segment 0'}, so the join would "
                              f"stop decoding there (another ffmpeg or encoder build on that node?); delete "
                              f"{part['file']} in the work folder and run the same command again to make it anew")
    extradata, packets = packet_hashes(ffmpeg, partial)
    want = [p for part in parts for p in part["packets"]]
    if extradata != first or packets != want:
        partial.unlink(missing_ok=True)
        raise RenderError(f"the joined result differs from the verified {what}s at packet "
                          f"{first_difference(packets, want)} ({len(packets)} packets, {len(want)} expected"
                          f"{'; other codec parameters' if extradata != first else ''}); the {what}s are kept")


def _wait_audio(proc: WorkerProcess, ffmpeg: str, path: Path, output: Path, encode: Sequence[str], work: Path,
                log: Callable[[str], None]) -> None:
    """Waits for the process rendering the script's audio output; RenderError with its message."""
    while True:
        for ev in proc.poll(1.0):
            if ev["event"] == "done":
                a = ev["audio"]
                log(f"the script's audio: {a['samples'] / a['sample_rate']:.3f} s, {a['channels']} channel(s), "
                    f"{a['sample_rate']} Hz")
                proc.close(5)
                _check_audio(ffmpeg, path, output, encode, work)
                return
            if ev["event"] in ("error", "exit"):
                proc.kill()
                raise RenderError(ev["message"])


def _check_audio(ffmpeg: str, audio: Path, output: Path, encode: Sequence[str], work: Path) -> None:
    """A dry mux of 0.1 s of ``audio`` into the output's container, before any segment: a file
    without audio, or a codec the container refuses, used to fail only at the join."""
    probe = work / f".audio-check{output.suffix or '.mkv'}"
    codec = [] if any(opt in encode for opt in _AUDIO_CODEC_OPTS) else ["-c:a", "copy"]
    failed = dry_run_ffmpeg(ffmpeg_cmd(ffmpeg, "-y", "-i", str(audio), "-map", "0:a", "-t", "0.1", *codec, str(probe)),
                            probe)
    if failed:
        raise RenderError(f"--audio {audio}: its audio cannot be muxed into {output.name} ({failed}); "
                          f"give a file with an audio stream whose codec the output's container takes "
                          f"(MKV takes nearly all: -o {output.with_suffix('.mkv').name})")


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
        return
    except OSError:  # another file system
        pass
    tmp = dst.with_name(f".{dst.name}.vsedvr-partial")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RenderError(f"cannot copy the verified result {src} to {dst} ({e}); it is kept in the work folder: "
                          f"free some space there and run the same command again, or copy it yourself") from e
    src.unlink()


def _finish_changed(work: WorkDir, final: Mapping[str, Any], output: Path, encode: list[str], audio: str | None,
                    frames: int, same_key: bool) -> str:
    """Why a changed finish is refused: what changed, what rendering again would cost, what to do instead."""
    old_out = Path(final.get("output") or output)
    if same_key:
        what = (f"the verified result {output} is gone (moved or deleted)" if not output.exists()
                else f"the verified result {output} changed since it was verified (its SHA-256 differs)")
    else:
        changes = []
        if "output" in final and final["output"] != str(output):
            changes.append(f"-o ({final['output']} -> {output})")
        if "encode" in final and final["encode"] != encode:
            changes.append(f"--encode ({shlex.join(final['encode']) or 'none'} -> {shlex.join(encode) or 'none'})")
        if "audio" in final and final["audio"] != audio:
            changes.append(f"--audio ({final['audio'] or 'none'} -> {audio or 'none'})")
        what = f"the finish changed: {', '.join(changes) or '--encode, --audio or -o'}"
    seconds = sum(float(rec.get("seconds", 0)) for rec in work.manifest.get("segments", {}).values())
    cost = f"about {seconds / 3600:.2f} worker-hours at the last run's speed" if seconds else "all of its time"
    instead = []
    old_there = old_out.is_file() and old_out.stat().st_size == final.get("size")
    if same_key:
        instead.append(f"put the verified result back at {output} (the same command then has nothing to do)")
    elif old_there and "encode" in final and final["encode"] != encode and not final["encode"]:
        target = output if output != old_out else output.with_name(f"{output.stem}.encoded{output.suffix}")
        instead.append(f"encode the verified lossless result yourself: ffmpeg -i {shlex.quote(str(old_out))} "
                       f"{shlex.join(encode)} {shlex.quote(str(target))}")
    elif old_there and final.get("output") != str(output):
        instead.append(f"move the verified result: mv {shlex.quote(str(old_out))} {shlex.quote(str(output))}")
    instead.append("add --rerender to render them again (next time, --keep keeps the segments, and a changed "
                   "finish is then only a new join)")
    return (f"{what}, and the segments of that result were deleted once it was verified, so this would render all "
            f"{frames} frames again ({cost}). Instead: {'; or '.join(instead)}")


def render(script: str | os.PathLike, output: str | os.PathLike, *, args: Sequence[str] = (),
           output_index: int = 0, segment: int = DEFAULT_SEGMENT, work_dir: str | os.PathLike | None = None,
           pool: LocalPool | RayPool | None = None, encode: Sequence[str] = (), audio: str | None = None,
           ffmpeg: str | None = None, keep: bool = False, fresh: bool = False, rerender: bool = False,
           audio_output: int | None = None,
           env: Mapping[str, str] | None = None, log: Callable[[str], None] = _stderr,
           progress_interval: float = 10.0) -> dict[str, Any]:
    """Renders ``script`` into ``output`` segment by segment; returns a summary
    (segments ``rendered`` and ``reused``, ``frames``, ``seconds``, ``startup_s`` of the first
    worker). Raises RenderError.

    ``encode``: ffmpeg arguments of the encode (empty: keep the lossless FFV1); each segment is
    encoded on its worker into a chunk, and the chunks are joined with ``-c copy`` (two-pass and
    options that trim or retime are refused: :func:`.encode.check_encode`). ``audio``: a file
    whose audio is muxed in as it is; ``audio_output``: the script's own audio output of that
    index instead (rendered on this machine, so it follows the script's trims). ``rerender``:
    render again when the finish changed (``encode``, ``audio``, ``output``, or the output moved)
    after the segments were deleted; without it that is refused, naming the cost and the
    alternatives. ``env``: environment of the default pool's worker (None: this process's).
    The caller owns stdout: a Ray cluster's driver prints the cluster's error messages there
    (``vsedvr render`` points it at stderr).
    """
    t_start = time.monotonic()
    script = Path(script).resolve()
    output = Path(output).resolve()
    if not script.is_file():
        raise RenderError(f"no such script: {script}")
    if segment < 1:
        raise RenderError(f"--segment must be at least 1 frame, got {segment}")
    if audio is not None and not Path(audio).is_file():
        raise RenderError(f"--audio {audio}: no such file")
    if not output.parent.is_dir():
        raise RenderError(f"the output's folder {output.parent} does not exist")
    check_encode(encode)
    ffmpeg_exe = find_ffmpeg(ffmpeg)
    pool = pool if pool is not None else LocalPool([{}], env=env)
    work = WorkDir(Path(work_dir).resolve() if work_dir else output.with_name(output.name + ".parts"))
    work.lock()  # before any worker starts: a second driver on the folder is refused at once
    if audio is not None and audio_output is not None:
        raise RenderError("give --audio FILE or --audio-output N, not both")
    if audio:
        _check_audio(ffmpeg_exe, Path(audio), output, encode, work.path)
    audio_proc = None
    if audio_output is not None:  # evaluated here, while the workers start
        audio = str(work.path / f"audio-{audio_output}.w64")
        audio_proc = WorkerProcess({"script": str(script), "args": list(args), "audio_output": audio_output,
                                    "path": audio}, dict(os.environ if env is None else env))
    if isinstance(pool, RayPool):
        pool.connect()
    # the workers start (each checks that it sees this work folder and script, then evaluates the
    # script once) while this process waits for the first
    pool.start({"script": str(script), "script_sha256": sha256_file(script), "args": list(args),
                "output_index": output_index, "work_dir": str(work.path), "ffmpeg": ffmpeg,
                "probe": work.write_probe(), "encode": chunk_spec(encode, output) if encode else None})
    try:
        if audio_proc is not None:
            _wait_audio(audio_proc, ffmpeg_exe, Path(audio), output, encode, work.path, log)  # type: ignore[arg-type]
        summary = _render_with(pool, work, script, output, args, output_index, segment, encode, audio,
                               ffmpeg_exe, keep, fresh, rerender, log, progress_interval, t_start)
    except BaseException:
        pool.kill()
        if audio_proc is not None:
            audio_proc.kill()
        work.remove_partials(join=False)  # its workers' attempts in progress
        raise
    finally:
        work.remove_probes()
    return summary


def _render_with(pool: LocalPool | RayPool, work: WorkDir, script: Path, output: Path, args: Sequence[str],
                 output_index: int, segment: int, encode: Sequence[str], audio: str | None, ffmpeg_exe: str,
                 keep: bool, fresh: bool, rerender: bool, log: Callable[[str], None], progress_interval: float,
                 t_start: float) -> dict[str, Any]:
    info = pool.info()
    startup_s = float(info.get("startup_s", 0.0))
    frames = int(info["Frames"])
    ranges = [(s, min(s + segment, frames) - 1) for s in range(0, frames, segment)]
    audio_key = str(Path(audio).resolve()) if audio else None
    plan = {"script": str(script), "script_sha256": sha256_file(script), "args": list(args),
            "output_index": output_index, "frames": frames, "segment": segment, "ranges": ranges,
            "info": {k: info.get(k) for k in ("Width", "Height", "Format Name", "FPS")},
            "ffv1": FFV1_ARGS, "fingerprint": info.get("fingerprint"), "encode": list(encode),
            "audio": audio_key,
            "output": str(output)}
    resumed = work.open(plan, fresh=fresh)
    finish_key = hashlib.sha256(repr((plan["encode"], plan["audio"], str(output))).encode()).hexdigest()[:16]
    final = work.manifest.get("final")
    if final:
        intact = work.file_matches("final", output)
        if final.get("key") == finish_key and intact:
            pool.close()
            log(f"{output} is already rendered and verified (work folder {work.path}); nothing to do")
            return {"rendered": [], "reused": list(range(len(ranges))), "frames": frames, "seconds": 0.0,
                    "work_dir": str(work.path), "startup_s": startup_s}
        if final.get("segments_deleted") and not rerender:
            raise RenderError(_finish_changed(work, final, output, list(encode), audio_key, frames,
                                              same_key=final.get("key") == finish_key))
        work.manifest.pop("final", None)

    spec = chunk_spec(encode, output) if encode else None
    if spec is not None:  # before any segment: arguments ffmpeg refuses would fail every one of them
        dry_encode(ffmpeg_exe, spec, int(info["Width"]), int(info["Height"]), work.path)
    todo, to_encode = [], []
    for i in range(len(ranges)):
        problem = work.check_segment(i)
        if problem is None:
            if spec is not None:  # a verified segment: its chunk, if it has one encoded with these arguments
                chunk_problem = work.check_chunk(i, spec)
                if chunk_problem is not None:
                    if chunk_problem != "not encoded":
                        log(f"segment {i} (frames {ranges[i][0]}-{ranges[i][1]}): {chunk_problem}; encoding it again")
                    to_encode.append(i)
            continue
        if problem != "not rendered":
            log(f"segment {i} (frames {ranges[i][0]}-{ranges[i][1]}): {problem}; rendering it again")
        todo.append(i)
    log(f"{script.name}: {frames} frames {info.get('Width')}x{info.get('Height')} {info.get('Format Name')}, "
        f"{_count(len(ranges), 'segment')} of {segment} frames; {len(ranges) - len(todo)} already verified"
        f"{' (resumed ' + str(work.path) + ')' if resumed else ''}; {len(todo)} to render"
        f"{f', {len(to_encode)} to encode' if to_encode else ''} on {pool.describe()} "
        f"(the first evaluated the script in {startup_s:.1f} s)")
    if spec is not None:
        log(f"each segment is encoded on its worker with --encode {shlex.join(encode)} (chunks in "
            f"{spec['suffix']}; joined with -c copy)")

    # a verified segment whose chunk is missing or stale is only encoded (on a worker, with its record)
    tasks = [{"index": i, "start": ranges[i][0], "end": ranges[i][1]} for i in todo] + \
        [{"index": i, "start": ranges[i][0], "end": ranges[i][1], "record": work.segment(i)} for i in to_encode]
    progress = Progress(work, ranges, todo, log, progress_interval)
    failures: dict[int, str] = {}
    warned_space = False
    try:
        for event in pool.run(tasks):
            if event[0] == "done":
                rec = event[2]
                work.record_segment(rec)
                if rec["index"] not in todo:  # only its chunk was encoded
                    continue
                progress.done.add(rec["index"])
                progress.show(force=True)
                if not warned_space:
                    warned_space = True
                    per_frame = rec["size"] / max(1, rec["end"] - rec["start"] + 1)
                    need = per_frame * (frames - (rec["end"] - rec["start"] + 1)) * (2 if not encode else 1.2)
                    free = shutil.disk_usage(work.path).free
                    if need > free:
                        log(f"warning: the segments and the result need about {need / 1e9:.1f} GB more, "
                            f"{work.path} has {free / 1e9:.1f} GB free")
            elif event[0] == "failed":
                _, task, message, retrying = event
                progress.failed += 1
                if retrying:
                    log(f"{message.splitlines()[0]}; retrying")
                else:
                    failures[task["index"]] = message
                    log(message)
            elif event[0] == "note":
                log(event[1])
            else:
                progress.show()
    finally:
        progress.end_line()
    pool.close()
    work.remove_partials()  # of attempts that never finished (a worker or node that died mid-segment)
    if failures:
        raise RenderError(f"{len(failures)} of {_count(len(ranges), 'segment')} failed "
                          f"({', '.join(map(str, sorted(failures)))}); "
                          f"the others are kept: run the same command again to retry the failed ones. "
                          f"Last error: {failures[max(failures)]}")

    # join once, with -c copy (the segments, or with --encode their chunks), into a temporary name
    # in the work folder, verified packet by packet before the move
    records = [work.manifest["segments"][str(i)] for i in range(len(ranges))]
    colours = {json.dumps(rec.get("colour", {}), sort_keys=True) for rec in records}
    if len(colours) > 1:
        log(f"warning: the segments' first frames carry different colour properties ({'; '.join(sorted(colours))}); "
            f"the result is tagged with the first segment's")
    if spec is not None:
        parts: list[Mapping[str, Any]] = [dict(rec["chunk"], index=rec["index"], start=rec["start"], end=rec["end"])
                                          for rec in records]
        stale = [p["index"] for p in parts if p["args"] != spec["args"] or p["suffix"] != spec["suffix"]]
        if stale:  # cannot happen: check_chunk dropped them, and the workers encoded them again
            raise RenderError(f"internal error: the chunks of segments {stale} were encoded with other arguments")
    else:
        parts = records
    concat = work.path / "concat.txt"
    concat.write_text("".join(f"file '{part['file']}'\n" for part in parts))
    partial = work.path / f"final.partial{output.suffix or '.mkv'}"
    # -auto_convert 0: the packets as they are (by default the concat demuxer puts H.264's parameter
    # sets into every keyframe of MP4-style chunks: decodable, but not the chunks' packets)
    cmd = ffmpeg_cmd(ffmpeg_exe, "-y", "-f", "concat", "-safe", "0", "-auto_convert", "0", "-i", str(concat))
    if audio:
        cmd += ["-i", str(audio)]
    cmd += ["-map", "0:v:0"]
    extra = join_args(encode)
    if audio:
        cmd += ["-map", "1:a"]
        if not any(opt in extra for opt in _AUDIO_CODEC_OPTS):
            cmd += ["-c:a", "copy"]
    cmd += ["-c:v", "copy", *extra]
    what = "chunk" if spec is not None else "segment"
    log(f"joining {_count(len(ranges), what)}{' with audio' if audio else ''} with -c copy"
        f"{' (encoded on the workers: ' + shlex.join(encode) + ')' if encode else ' (lossless FFV1)'}")
    try:
        _ffmpeg_run(cmd + [str(partial)], work.path, "joining the segments")
    except RenderError:
        partial.unlink(missing_ok=True)  # on a full disk, the largest file there
        raise
    if spec is not None or all("packets" in rec for rec in records):
        _check_join_packets(ffmpeg_exe, partial, parts, what)
    else:  # segments recorded before packet hashes: decode the join and compare every frame
        hashes = [h for rec in records for h in rec["hashes"]]
        got_hashes = decode_hashes(ffmpeg_exe, partial, records[0]["frame_size"])
        if got_hashes != hashes:
            partial.unlink(missing_ok=True)
            raise RenderError(f"the joined result differs from the verified segments at frame "
                              f"{first_difference(got_hashes, hashes)} "
                              f"({len(got_hashes)} frames decoded, {frames} expected); the segments are kept")
    _move(partial, output)
    work.record_file("final", output, key=finish_key, verified="packets",
                     output=str(output), encode=list(encode), audio=plan["audio"], segments_deleted=not keep)
    concat.unlink(missing_ok=True)
    if not keep:
        for rec in records:
            (work.path / rec["file"]).unlink(missing_ok=True)
            if "chunk" in rec:
                (work.path / rec["chunk"]["file"]).unlink(missing_ok=True)
    seconds = time.monotonic() - t_start
    log(f"wrote {output} ({frames} frames, {'lossless, verified frame by frame' if not encode else 'encoded per segment'}"
        f"; the join checked packet by packet) "
        f"in {_clock(seconds)}; {_count(len(todo), 'segment')} rendered, {len(ranges) - len(todo)} reused")
    return {"rendered": todo, "reused": [i for i in range(len(ranges)) if i not in todo], "frames": frames,
            "seconds": seconds, "work_dir": str(work.path), "startup_s": startup_s}
