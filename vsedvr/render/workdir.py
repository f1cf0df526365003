"""The work folder of one render: its plan, the manifest (replaced atomically), the segment files.

Layout: ``manifest.json`` (plan, verified segments, final output), ``seg-NNNNN.mkv`` (verified
segments), ``enc-NNNNN.EXT`` (a segment encoded with ``--encode``, in the output's container),
``.seg-NNNNN.*.partial`` and ``.enc-NNNNN.*.partial.EXT`` (attempts in progress or abandoned), ``attempts/NNNNN`` (one
line per attempt), ``progress/NNNNN`` (frames done by the running attempt), ``final.partial.*``
(the join, until it is verified and moved), ``.probe-*`` (the probe file workers must read),
``audio-N.w64`` (the script's audio output N), ``.lock`` (held by the driver that uses the folder).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..zoo.cache import sha256_file
from .protocol import fingerprint_difference
from .tools import DiskFullError, RenderError

__all__ = ["WorkDir", "plan_id"]

MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = 1
#: Plan fields whose change makes the segments of a folder useless.
IDENTITY = ("script_sha256", "args", "output_index", "frames", "info", "segment", "ranges", "ffv1", "fingerprint")


def plan_id(plan: dict[str, Any]) -> str:
    blob = json.dumps({k: plan.get(k) for k in IDENTITY}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = []
    if old.get("script_sha256") != new["script_sha256"]:
        changed.append("the script's contents")
    if old.get("args") != new["args"]:
        changed.append(f"the -a arguments ({' '.join(old.get('args', [])) or 'none'} -> {' '.join(new['args']) or 'none'})")
    if old.get("output_index") != new["output_index"]:
        changed.append("the output index")
    if old.get("segment") != new["segment"]:
        changed.append(f"--segment ({old.get('segment')} -> {new['segment']})")
    if old.get("frames") != new["frames"] or old.get("info") != new["info"]:
        changed.append("the clip vspipe reports (frames, size or format)")
    if old.get("ffv1") != new.get("ffv1"):
        changed.append("the segments' FFV1 settings (a newer vsedvr)")
    differs = fingerprint_difference(old.get("fingerprint") or {}, new.get("fingerprint") or {})
    if changed:  # frame 0 differing follows from a changed script or argument: not news
        differs = [d for d in differs if "canary" not in d]
    if differs:
        changed.append(f"the pipeline the segments were rendered with: {'; '.join(differs)}")
    return ", ".join(changed) or "the plan"


class WorkDir:
    """A render's work folder; the driver is the only writer of its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest: dict[str, Any] = {}
        self._lock_file: Any = None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def open(self, plan: dict[str, Any], fresh: bool = False) -> bool:
        """Takes the folder for ``plan``; True when it resumes a plan already there.

        A folder holding another plan is refused (its segments are not thrown away behind the
        user's back), unless ``fresh``, which deletes that plan's files first.
        """
        pid = plan_id(plan)
        self.lock()
        if self.manifest_path.is_file():
            try:
                old = json.loads(self.manifest_path.read_text())
            except (OSError, ValueError) as e:
                raise RenderError(f"cannot read {self.manifest_path} ({e}); delete the folder {self.path} "
                                  f"or pass another --work-dir") from e
            if old.get("plan_id") != pid:
                if not fresh:
                    raise RenderError(
                        f"the work folder {self.path} holds another render plan (changed: "
                        f"{_describe_change(old.get('plan', {}), plan)}); its segments would not fit this one. "
                        f"Run the earlier command to finish it, pass --work-dir DIR for a new folder, "
                        f"or add --fresh to delete its segments and start over")
                self.clear()
            else:
                self.manifest = old
                self.manifest["plan"] = plan  # the finishing options (encoder, audio, output) may change
                self._prepare()
                return True
        self.manifest = {"format": FORMAT, "plan_id": pid, "plan": plan, "segments": {}}
        self._prepare()
        return False

    def lock(self) -> None:
        """Takes the folder: one driver per folder, held until the process ends (a second run on the
        same output would delete the first one's attempts in progress and overwrite its manifest).
        A non-empty folder that is not a render's is refused (nothing of the user's is deleted)."""
        if getattr(self, "_lock_file", None) is not None:
            return
        if not self.manifest_path.is_file() and self.path.exists() and any(
                p.name != LOCK and not p.name.startswith(".probe-") for p in self.path.iterdir()):
            raise RenderError(f"the work folder {self.path} is not empty and is not a vsedvr render folder "
                              f"(no {MANIFEST}); pass --work-dir with a new or empty folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RenderError(f"cannot create the work folder {self.path}: {e}") from e
        try:
            self._lock_file = open(self.path / LOCK, "w")  # noqa: SIM115 - kept open: the lock
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RenderError(f"another vsedvr render is using the work folder {self.path}; let it finish "
                              f"(or stop it), or pass --work-dir DIR") from None
        except OSError as e:
            raise RenderError(f"cannot lock the work folder {self.path}: {e}") from e

    def write_probe(self) -> dict[str, str]:
        """A file with a random token that every worker must read (``check_shared`` in the worker):
        the proof that it sees this folder. Earlier runs' probes are deleted first."""
        self.remove_probes()
        probe = {"name": f".probe-{secrets.token_hex(8)}", "token": secrets.token_hex(16)}
        try:
            (self.path / probe["name"]).write_text(probe["token"])
        except OSError as e:
            raise RenderError(f"cannot write into the work folder {self.path}: {e}") from e
        return probe

    def remove_probes(self) -> None:
        for probe in self.path.glob(".probe-*"):
            probe.unlink(missing_ok=True)

    def _prepare(self) -> None:
        try:
            for sub in ("", "attempts", "progress"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RenderError(f"cannot create the work folder {self.path}: {e}") from e
        self.remove_partials()  # attempts of an earlier run that never finished
        for old in (self.path / "progress").iterdir():
            old.unlink(missing_ok=True)
        self.save()

    def remove_partials(self, join: bool = True) -> None:
        """Deletes the files of attempts in progress or abandoned: segments, and the join's unless
        ``join`` is False."""
        for pattern in (".*.partial", ".*.partial.*", "final.partial.*") if join else (".*.partial", ".*.partial.*"):
            for stale in self.path.glob(pattern):
                stale.unlink(missing_ok=True)

    def clear(self) -> None:
        """Deletes what vsedvr wrote here (and nothing else)."""
        self.remove_partials()
        for pattern in ("seg-*.mkv", "enc-*", "joined.mkv", "concat.txt", MANIFEST):
            for f in self.path.glob(pattern):
                f.unlink(missing_ok=True)
        for sub in ("attempts", "progress"):
            shutil.rmtree(self.path / sub, ignore_errors=True)

    def save(self) -> None:
        """Writes the manifest to a temporary file and renames it over the old one."""
        tmp = self.path / f".{MANIFEST}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.manifest, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.manifest_path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise DiskFullError(f"the disk holding {self.path} is full; free some space and run the same "
                                    f"command again to resume") from e
            raise

    # ------------------------------------------------------------------------------ segments

    def segment(self, index: int) -> dict[str, Any] | None:
        return self.manifest["segments"].get(str(index))

    def record_segment(self, record: dict[str, Any]) -> None:
        attempts = self.path / "attempts" / f"{record['index']:05d}"
        record = dict(record, attempts=len(attempts.read_text().splitlines()) if attempts.exists() else 1)
        self.manifest["segments"][str(record["index"])] = record
        self.save()

    def check_segment(self, index: int) -> str | None:
        """None if the recorded segment is on disk and intact, else what is wrong (and forgets it)."""
        rec = self.segment(index)
        if rec is None:
            return "not rendered"
        path = self.path / rec["file"]
        problem = None
        if not path.is_file():
            problem = "file missing"
        elif path.stat().st_size != rec["size"]:
            problem = f"file is {path.stat().st_size} bytes, {rec['size']} were written"
        elif sha256_file(path) != rec["sha256"]:
            problem = "file is corrupt (SHA-256 differs)"
        if problem:
            del self.manifest["segments"][str(index)]
            path.unlink(missing_ok=True)
            self.save()
        return problem

    def check_chunk(self, index: int, spec: dict[str, Any]) -> str | None:
        """None if segment ``index`` has its chunk, encoded with ``spec`` (:func:`.encode.chunk_spec`),
        on disk and intact; else what is wrong (the chunk record is dropped and its file deleted, so
        a stale chunk is never joined). The segment itself must have been checked first."""
        rec = self.segment(index)
        chunk = rec.get("chunk") if rec is not None else None
        if rec is None or chunk is None:
            return "not encoded"
        path = self.path / chunk["file"]
        problem = None
        if chunk.get("args") != spec["args"] or chunk.get("suffix") != spec["suffix"]:
            problem = f"its chunk was encoded with other --encode arguments ({' '.join(chunk.get('args', []))})"
        elif not path.is_file():
            problem = "its chunk is missing"
        elif path.stat().st_size != chunk["size"] or sha256_file(path) != chunk["sha256"]:
            problem = "its chunk is damaged (size or SHA-256 differs)"
        if problem:
            del rec["chunk"]
            path.unlink(missing_ok=True)
            self.save()
        return problem

    def file_matches(self, name: str, path: Path) -> bool:
        """True if the file recorded under ``name`` (final) is at ``path`` with its size and hash."""
        rec = self.manifest.get(name)
        return rec is not None and path.is_file() and path.stat().st_size == rec["size"] \
            and sha256_file(path) == rec["sha256"]

    def record_file(self, name: str, path: Path, **extra: Any) -> None:
        self.manifest[name] = {"size": path.stat().st_size, "sha256": sha256_file(path), **extra}
        self.save()
