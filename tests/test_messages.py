"""Nothing but video on stdout: downloads, prints and warnings go to stderr or the VapourSynth log."""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import vapoursynth as vs

from loopback_server import Server
from test_examples import read_y4m
from vsedvr.filter import log
from vsedvr.zoo import infer_arch, read_state_dict

TESTS = Path(__file__).resolve().parent
W, H, LENGTH = 16, 12, 5


def test_vspipe_stream_is_clean_while_a_model_downloads_and_things_print(
        tmp_path: Path, server: Server, tiny_checkpoint: Path, vspipe: str, vs_env: dict[str, str]) -> None:
    body = tiny_checkpoint.read_bytes()
    filename = f"tiny_edvr-{hashlib.sha256(body).hexdigest()[:12]}.pth"
    server.add(f"/restorers/edvr/{filename}", body, mode="slow")
    arch = dict(infer_arch(read_state_dict(tiny_checkpoint)))
    script = tmp_path / "noisy.vpy"
    script.write_text(textwrap.dedent(f"""\
        import ctypes, logging, os, sys
        import vapoursynth as vs
        sys.path.insert(0, {str(TESTS)!r})
        import clips
        import vsedvr.filter.plugin
        from vsedvr.zoo import MODELS, ModelSpec
        from vsedvr.zoo.registry import MMEDIT_BASE_URL

        # a zoo entry downloaded from $VSEDVR_BASE_URL (the local server), as the mmediting ones are
        MODELS["tiny_test"] = ModelSpec(name="tiny_test", task="sr", scale=4, num_frames=5, arch={arch!r},
                                        filename={filename!r}, url=MMEDIT_BASE_URL + "restorers/edvr/" + {filename!r})

        real_load_model = vsedvr.filter.plugin.load_model

        def noisy_load_model(*args, **kwargs):  # a library that prints while a model loads
            print("NOISE from print()")
            os.write(1, b"NOISE from fd 1\\n")
            ctypes.CDLL(None).printf(b"NOISE from printf\\n")
            return real_load_model(*args, **kwargs)

        vsedvr.filter.plugin.load_model = noisy_load_model
        logging.getLogger("vsedvr").warning("TEST-WARNING from the script")
        clip = vs.core.edvr.Restore(clips.moving_pattern({W}, {H}, {LENGTH}), model="tiny_test")
        clip = vs.core.resize.Bicubic(clip, format=vs.YUV420P8, matrix_s="709")
        clip.set_output()
        """))
    home = tmp_path / "cache"
    env = dict(vs_env, VSEDVR_HOME=str(home), VSEDVR_BASE_URL=server.base)
    done = subprocess.run([vspipe, "-c", "y4m", str(script), "-"], env=env, capture_output=True, timeout=600)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, stderr

    assert b"NOISE" not in done.stdout and b"TEST-WARNING" not in done.stdout
    fields, frames = read_y4m(done.stdout)
    assert (fields["W"], fields["H"], fields["C"].startswith("420"), frames) == (str(4 * W), str(4 * H), True, LENGTH)

    for noise in ("NOISE from print()", "NOISE from fd 1", "NOISE from printf"):
        assert stderr.count(noise) == 1, stderr
    assert stderr.count("TEST-WARNING from the script") == 1, stderr  # the core log, printed by vspipe
    assert f"vsedvr: downloading {filename}" in stderr and "100.0%" in stderr  # the progress bar
    assert server.gets[f"/restorers/edvr/{filename}"] == 1
    assert (home / filename).read_bytes() == body


def test_stdout_to_stderr_moves_python_and_c_output(capfd: pytest.CaptureFixture[str]) -> None:
    print("before", flush=True)
    with log.stdout_to_stderr():
        print("python print")  # left in the buffer: the guard flushes it to stderr
        os.write(1, b"fd write\n")
        ctypes.CDLL(None).printf(b"c printf\n")
        with log.stdout_to_stderr():  # nesting is harmless
            print("nested")
    print("after", flush=True)
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    for text in ("python print", "fd write", "c printf", "nested"):
        assert err.count(text) == 1, err


def test_stdout_to_stderr_does_nothing_off_the_main_thread(capfd: pytest.CaptureFixture[str]) -> None:
    def work() -> None:
        with log.stdout_to_stderr():
            os.write(1, b"worker output\n")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    out, err = capfd.readouterr()
    assert out == "worker output\n" and err == ""


@pytest.fixture
def core_log() -> Iterator[list[tuple[int, str]]]:
    """What reaches the core log from vsedvr (all levels)."""
    logger = logging.getLogger("vsedvr")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    assert log.install() is log.install()  # once per process
    seen: list[tuple[int, str]] = []
    handle = vs.core.add_log_handler(lambda kind, message: seen.append((int(kind), message)))
    yield seen
    vs.core.remove_log_handler(handle)
    logger.setLevel(level)


def test_records_reach_the_core_log_with_their_level(core_log: list[tuple[int, str]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("vsedvr")
    # Out of reach of pytest's handlers, which only go to loggers that do not propagate when a
    # test phase starts: so this must happen here, inside the test.
    monkeypatch.setattr(logger, "propagate", False)
    logger.debug("a debug record")
    logger.info("an info record")
    logger.warning("a warning record")
    logger.error("an error record")
    thread = threading.Thread(target=logger.warning, args=("from a worker thread",))
    thread.start()
    thread.join()
    mine = [entry for entry in core_log if entry[1].startswith("vsedvr: ")]
    assert mine == [
        (vs.MESSAGE_TYPE_DEBUG, "vsedvr: a debug record"),
        (vs.MESSAGE_TYPE_INFORMATION, "vsedvr: an info record"),
        (vs.MESSAGE_TYPE_WARNING, "vsedvr: a warning record"),
        (vs.MESSAGE_TYPE_CRITICAL, "vsedvr: an error record"),  # never FATAL: that aborts the process
        (vs.MESSAGE_TYPE_WARNING, "vsedvr: from a worker thread"),
    ]


def test_no_second_copy_when_another_handler_shows_the_record(core_log: list[tuple[int, str]]) -> None:
    logger = logging.getLogger("vsedvr")
    assert logger.propagate  # pytest's handlers on the root logger get the record
    logger.warning("shown by pytest")
    assert not [entry for entry in core_log if "shown by pytest" in entry[1]]


STANDALONE = """
import logging
from vsedvr.filter import log
log.install()
logging.getLogger("vsedvr").warning("before any core")  # no VapourSynth imported: stderr
import vapoursynth as vs
seen = []
vs.core.add_log_handler(lambda kind, message: seen.append(message))
log.install()
logging.getLogger("vsedvr").warning("with a core")  # the core log (the standalone policy prints it)
assert "vsedvr: with a core" in seen, seen
"""


def test_plain_python_script_shows_each_warning_once_on_stderr() -> None:
    done = subprocess.run([sys.executable, "-c", STANDALONE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("vsedvr: before any core") == 1, done.stderr
    assert done.stderr.count("vsedvr: with a core") == 1, done.stderr
