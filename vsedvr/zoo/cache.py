"""Model cache: where checkpoints live, and a safe downloader.

Cache folder (first that applies): ``$VSEDVR_HOME``; ``$TORCH_HOME/vsedvr``;
``$XDG_CACHE_HOME/vsedvr``; ``~/.cache/vsedvr``. Files sit directly in it under their
official names. ``$VSEDVR_BASE_URL`` replaces the mmediting base URL
(``https://download.openmmlab.com/mmediting/``), e.g. for a mirror.

Downloads go to a temporary file in the cache folder, are checked against the SHA-256
prefix in the file name, fsynced and renamed into place atomically, so the final name
only ever holds a complete, verified file. An exclusive lock on ``<file>.lock`` serialises
processes fetching the same model; it is removed again when released (POSIX), also after a
failed download. Progress goes to stderr only (stdout may carry video).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import importlib.resources
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from .registry import BUNDLED_PACKAGE, MMEDIT_BASE_URL, MODELS, ModelSpec, did_you_mean

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = [
    "DEFAULT_TIMEOUT",
    "ModelError",
    "ProgressCallback",
    "cache_dir",
    "fetch",
    "model_path",
    "resolve_url",
    "sha256_file",
    "verify",
]

logger = logging.getLogger("vsedvr")

#: Seconds allowed for connecting and for each read of a download.
DEFAULT_TIMEOUT = 30.0

#: ``progress`` callable: ``(bytes_done, bytes_total_or_None)``.
ProgressCallback = Callable[[int, int | None], None]

_CHUNK = 1 << 16
_verified: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) hashed OK in this process
_verified_lock = threading.Lock()


class ModelError(Exception):
    """A model file cannot be found, downloaded, verified or loaded."""


def cache_dir() -> Path:
    """Folder holding downloaded / hand-placed checkpoints (not created here)."""
    env = os.environ.get("VSEDVR_HOME")
    if env:
        return Path(env).expanduser()
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser() / "vsedvr"
    env = os.environ.get("XDG_CACHE_HOME")
    base = Path(env).expanduser() if env else Path.home() / ".cache"
    return base / "vsedvr"


def resolve_url(spec: ModelSpec) -> str | None:
    """Download URL of *spec*, with ``$VSEDVR_BASE_URL`` applied to mmediting URLs."""
    if spec.url is None:
        return None
    base = os.environ.get("VSEDVR_BASE_URL")
    if base and spec.url.startswith(MMEDIT_BASE_URL):
        return base.rstrip("/") + "/" + spec.url[len(MMEDIT_BASE_URL):]
    return spec.url


def _bundled_path(spec: ModelSpec) -> Path:
    try:
        root = importlib.resources.files(BUNDLED_PACKAGE)
    except ModuleNotFoundError as e:
        raise ModelError(
            f"model {spec.name!r} ({spec.filename}) should ship inside the package "
            f"{BUNDLED_PACKAGE!r}, which is not installed; reinstall vsedvr"
        ) from e
    res = root.joinpath(spec.filename)
    if isinstance(res, Path):
        return res
    # Package inside a zip or similar: keep an extracted copy in the cache folder.
    dest = cache_dir() / spec.filename
    if not dest.is_file() and res.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f, res.open("rb") as src:
                shutil.copyfileobj(src, f)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return dest


def model_path(spec: ModelSpec | str) -> Path:
    """Where the file of *spec* is (or must be placed)."""
    spec = _spec(spec)
    return _bundled_path(spec) if spec.bundled else cache_dir() / spec.filename


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec(spec: ModelSpec | str) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    try:
        return MODELS[spec]
    except KeyError:
        raise ModelError(f"unknown model {spec!r};{did_you_mean(spec)} known models: {', '.join(MODELS)}") from None


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _hash_ok(path: Path, spec: ModelSpec, *, force: bool = False) -> bool:
    """Whether *path* matches the spec's hash; cached per process unless *force*."""
    key = str(path)
    stat = _stat_key(path)
    with _verified_lock:
        if not force and _verified.get(key) == stat:
            return True
    ok = sha256_file(path).startswith(spec.sha256)
    with _verified_lock:
        if ok:
            _verified[key] = stat
        else:
            _verified.pop(key, None)
    return ok


def _manual_hint(spec: ModelSpec, dest: Path, url: str | None) -> str:
    src = url if url is not None else (spec.source or "its publisher")
    return (
        f"\nTo install it by hand, get it from: {src}\n"
        f"and place it at:\n  {dest}\n"
        f"(folder: $VSEDVR_HOME, else $TORCH_HOME/vsedvr, else $XDG_CACHE_HOME/vsedvr or "
        f"~/.cache/vsedvr; keep the file name, its SHA-256 must start with {spec.sha256})"
    )


def _is_same_file(fd: int, path: Path) -> bool:
    """Whether *path* still names the file open as *fd* (another process may have removed it)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock held on *path*, created for the lock and removed when released.

    POSIX: the holder removes the file before it unlocks, so a process that opened it meanwhile
    finds itself holding a removed file and locks the new one instead. Windows cannot remove an
    open file: there the file stays (empty) in the cache folder.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    logger.info("waiting for another process to finish with %s", path)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if not _is_same_file(fd, path):  # removed by the holder we waited for: lock the next one
                    os.close(fd)
                    continue
            else:
                while True:
                    try:
                        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                        break
                    except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                        continue
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        yield
    finally:
        try:
            if fcntl is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # while still holding the lock (see the docstring)
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)


class _StderrProgress:
    """Minimal progress line on stderr, redrawn at most every 0.25 s."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last = -math.inf
        self.drawn = False
        self.stream = sys.stderr

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if self.stream is None or (not final and now - self.last < 0.25):
            return
        self.last = now
        self.drawn = True
        mib = done / 2**20
        if total:
            line = f"\r{self.label}: {100.0 * done / total:5.1f}% ({mib:.1f}/{total / 2**20:.1f} MiB)"
        else:
            line = f"\r{self.label}: {mib:.1f} MiB"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _download(
    spec: ModelSpec,
    url: str,
    dest: Path,
    progress: bool | ProgressCallback,
    timeout: float,
) -> None:
    """Download *url* to *dest* via a verified temporary file; raise ModelError on failure."""
    bar = _StderrProgress(f"vsedvr: downloading {spec.filename}") if progress is True else None
    report: ProgressCallback | None = bar if bar is not None else (progress if callable(progress) else None)
    tmp: str | None = None
    req = urllib.request.Request(url, headers={"User-Agent": "vsedvr"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
            h = hashlib.sha256()
            done = 0
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), 0o644)  # mkstemp makes it 0600; the cache may be shared
                if report is not None:
                    report(0, total)
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if report is not None:
                        report(done, total)
                if total is not None and done != total:
                    raise ModelError(
                        f"download of {url} was cut short: got {done} of {total} bytes; nothing was "
                        f"saved.{_manual_hint(spec, dest, url)}"
                    )
                digest = h.hexdigest()
                if not digest.startswith(spec.sha256):
                    raise ModelError(
                        f"download of {url} is corrupt or not the expected file: SHA-256 {digest} "
                        f"does not start with {spec.sha256}; nothing was saved."
                        f"{_manual_hint(spec, dest, url)}"
                    )
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dest)
        tmp = None
        _fsync_dir(dest.parent)
        with _verified_lock:
            _verified[str(dest)] = _stat_key(dest)
    except ModelError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        elif isinstance(e, urllib.error.URLError):
            reason = str(e.reason)
        else:
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ModelError(
            f"could not download model {spec.name!r} ({spec.filename}) from {url}: {reason}. "
            f"Check the network (or $VSEDVR_BASE_URL).{_manual_hint(spec, dest, url)}"
        ) from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if bar is not None:
            bar.close()


def fetch(
    spec: ModelSpec | str,
    *,
    progress: bool | ProgressCallback = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Return the local path of a verified checkpoint, downloading it if needed.

    :param spec: a :class:`ModelSpec` or a zoo name.
    :param progress: ``True`` for a progress line on stderr, ``False`` for none, or a
        callable ``(bytes_done, bytes_total_or_None)``.
    :param timeout: seconds for connecting and for each read.
    :raises ModelError: the file is missing and cannot be downloaded, the download fails,
        or the file does not match the SHA-256 prefix in its name. The message says which
        URL and where to place the file by hand.
    """
    spec = _spec(spec)
    if spec.bundled:
        path = _bundled_path(spec)
        if not path.is_file():
            raise ModelError(f"bundled model {spec.name!r} is missing: {path} does not exist; reinstall vsedvr")
        if not _hash_ok(path, spec):
            raise ModelError(
                f"bundled model {spec.name!r} at {path} is corrupt: SHA-256 does not start with "
                f"{spec.sha256}; reinstall vsedvr"
            )
        return path

    dest = cache_dir() / spec.filename
    url = resolve_url(spec)

    # Fast path: present and verified (hashed once per process).
    if dest.is_file() and _hash_ok(dest, spec):
        return dest
    if url is None:
        if dest.is_file():
            raise ModelError(
                f"{dest} is not the expected file for model {spec.name!r}: its SHA-256 does not "
                f"start with {spec.sha256}.{_manual_hint(spec, dest, url)}"
            )
        raise ModelError(
            f"model {spec.name!r} ({spec.filename}) is not downloaded automatically."
            f"{_manual_hint(spec, dest, url)}"
        )

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(
            f"cannot create the model folder {dest.parent} ({e}); set $VSEDVR_HOME to a writable folder"
        ) from e
    lock = dest.with_name(dest.name + ".lock")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_file_lock(lock))
        except OSError as e:
            raise ModelError(f"cannot lock {lock} ({e}); set $VSEDVR_HOME to a writable folder") from e
        # Another process may have finished the download while we waited.
        if dest.is_file():
            if _hash_ok(dest, spec):
                return dest
            logger.warning(
                "%s does not match SHA-256 prefix %s (corrupt or replaced); downloading it again",
                dest, spec.sha256,
            )
        # Holding the lock, no one else is downloading this file: old .part files are stale.
        for stale in dest.parent.glob(glob.escape(dest.name) + ".*.part"):
            with contextlib.suppress(OSError):
                stale.unlink()
        logger.info("downloading %s to %s", url, dest)
        _download(spec, url, dest, progress, timeout)
        return dest


def verify(model: ModelSpec | str) -> bool:
    """Re-hash the local file of *model*; ``True`` if it matches its SHA-256 prefix.

    :raises ModelError: the file is not there (the message says where it should be).
    """
    spec = _spec(model)
    path = model_path(spec)
    if not path.is_file():
        raise ModelError(f"model {spec.name!r} is not present: {path} does not exist")
    return _hash_ok(path, spec, force=True)
