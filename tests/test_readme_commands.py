"""Every command in README.md's ```sh blocks and in the examples' headers, run as written from the
checkout root through bash, the real vspipe and the real ffmpeg (with .venv/bin on PATH, as after
``. .venv/bin/activate``; offline, with an empty model cache).

A README block runs as one script (commands in order). A command whose line ends in a comment
``# needs ...`` (a GPU, the internet, a model placed by hand) is not run; there must be few.
``make demo`` runs once (the ``demo`` fixture) and is checked in detail: the video it writes, its
picture (README shows docs/demo-compare.png, a copy of it) and its PSNR line.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NEEDS = re.compile(r"#\s*needs (.+)$")
MAX_NOT_RUN = 6
VIDEO_OUT = re.compile(r"(\S+\.(?:mkv|mp4))\s*(?:#.*)?$")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str  # one command, continuation lines joined
    needs: str | None  # why it cannot run here, or None


def join_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined; blank lines and comments dropped."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        text = line.strip()
        if pending is None and (not text or text.startswith("#")):
            continue
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        pending = None
        out.append((number, text))
    return out


def command(where: str, text: str) -> Command:
    """One command; ``text`` without its trailing comment (what bash runs is the same)."""
    needs = NEEDS.search(text)
    text = re.sub(r"\s+#.*$", "", text)
    if text in ("make test", "make test-all"):  # never recursively: they are this suite
        return Command(where, text, "this test suite itself")
    return Command(where, text, needs.group(1) if needs else None)


def readme_blocks() -> list[list[Command]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    blocks, current, inside = [], [], False
    for number, line in enumerate(lines, 1):
        if line.strip() == "```sh":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append([command(f"README.md:{n}", t) for n, t in join_lines(current)])
        elif inside:
            current.append((number, line))
    return [b for b in blocks if b]


def example_commands() -> list[Command]:
    """The commands of each example's header: its lines indented 3+ spaces before "# Arguments"."""
    found = []
    for path in sorted((ROOT / "examples").glob("*.vpy")):
        header: list[tuple[int, str]] = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.startswith("#") or line.startswith("# Arguments"):
                break
            if line.startswith("#   "):
                header.append((number, line[1:]))
        found += [command(f"examples/{path.name}:{n}", t) for n, t in join_lines(header)]
    return found


README_BLOCKS = readme_blocks()
EXAMPLE_COMMANDS = example_commands()
ALL = [c for b in README_BLOCKS for c in b] + EXAMPLE_COMMANDS
IN_README = {c.text for b in README_BLOCKS for c in b}
# the others run as README's commands, and examples/demo.vpy's as `make demo` (tools/demo.py runs it)
EXAMPLES_ONLY = [c for c in EXAMPLE_COMMANDS if c.text not in IN_README and not c.where.startswith("examples/demo.vpy")]
DEMO_COMMANDS = [c for c in EXAMPLE_COMMANDS if c.where.startswith("examples/demo.vpy")]


@pytest.fixture(scope="session")
def shell_env(vs_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(vs_env, VSEDVR_HOME=str(tmp_path_factory.mktemp("empty-model-cache")),
               OMP_WAIT_POLICY="passive")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("PWD", None)  # bash sets it to the checkout root, as an interactive shell would
    return env


def run_shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="session")
def demo(shell_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``make demo``, run once."""
    return run_shell("make demo", shell_env)


def probe(path: Path) -> tuple[str, int]:
    """The video stream line ffmpeg prints for a file, and the number of frames it decodes."""
    done = subprocess.run([str(BIN / "ffmpeg"), "-hide_banner", "-i", str(path), "-map", "0:v", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stream = next(line for line in done.stderr.splitlines() if "Stream #0:0" in line and "Video:" in line)
    frames = re.findall(r"frame=\s*(\d+)", done.stderr)
    return stream, int(frames[-1])


def check_video_outputs(cmd: Command, where: Path = ROOT) -> None:
    """Every video file a command (run in the folder ``where``) writes exists, plays (ffmpeg decodes
    it) and carries the colour tags the command gives; ``vsedvr render`` writes lossless FFV1 in MKV."""
    rendered = re.match(r"vsedvr render .*?-o (\S+)", cmd.text)
    if rendered:
        stream, frames = probe(where / rendered.group(1))
        assert "ffv1" in stream and frames >= 1, stream
        if "examples/scene_aware.vpy" in cmd.text and "src=" not in cmd.text:
            assert frames == 12 and "384x256" in stream, stream  # its generated clip, 4x
    for segment in cmd.text.split("|"):
        if not segment.strip().startswith("ffmpeg"):
            continue
        written = VIDEO_OUT.search(segment.strip())
        assert written, f"{cmd.where}: which file does this ffmpeg write? {segment}"
        stream, frames = probe(where / written.group(1))
        assert frames >= 1
        if "bt709" in segment:
            assert "bt709" in stream and "unknown" not in stream, stream
        if "src=demo-output/input.mp4" in cmd.text or (where == ROOT / "demo-output" and "src=input.mp4" in cmd.text):
            assert frames == 24 and "384x256" in stream, stream


def test_commands_are_found_and_few_are_not_run() -> None:
    assert any(c.text == "make demo" for c in ALL)
    assert {c.text for c in ALL if c.needs and c.text.startswith("make test")} == {"make test", "make test-all"}
    assert len([c for c in ALL if c.text.startswith("vspipe")]) >= 4
    not_run = [c for c in ALL if c.needs]
    assert len(not_run) <= MAX_NOT_RUN, "\n".join(f"{c.where}: {c.text}" for c in not_run)
    for c in EXAMPLE_COMMANDS:
        assert c.text.startswith(("vspipe", "make", "python", "vsedvr")), c  # the header rule caught prose


STARTS_RAY = pytest.mark.slow(reason="starts a local Ray cluster (vsedvr render --ray, after a --workers render): "
                                     "tens of seconds; tests/test_render.py renders through the local pool in make test")


@pytest.mark.parametrize("block", [pytest.param(b, id=b[0].where,
                                                marks=STARTS_RAY if any("--ray" in c.text for c in b) else ())
                                   for b in README_BLOCKS])
def test_readme_block_works_as_written(block: list[Command], demo: subprocess.CompletedProcess[str],
                                       shell_env: dict[str, str]) -> None:
    runnable = [c for c in block if not c.needs]
    assert not any(c.text.startswith("make test") for c in runnable)
    if not runnable:
        pytest.skip("; ".join(f"{c.text}: needs {c.needs}" for c in block))
    if [c.text for c in runnable] == ["make demo"]:
        assert demo.returncode == 0, demo.stderr[-3000:]
        return
    done = run_shell("\n".join(c.text for c in runnable), shell_env)
    assert done.returncode == 0, f"{block[0].where}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    where = ROOT
    for cmd in runnable:
        if cmd.text.startswith("cd "):  # the block's later commands run there
            where = (where / cmd.text[3:].strip()).resolve()
        check_video_outputs(cmd, where)


def test_readme_runs_an_example_from_another_folder() -> None:
    """README shows that the paths change with the folder (the generic test above runs the block)."""
    moved = [b for b in README_BLOCKS if b[0].text.startswith("cd ") and not b[0].needs]
    assert moved, "no README block runs an example from another folder"
    assert any("../examples/" in c.text and c.text.startswith("vspipe") for b in moved for c in b)


def test_default_model_offline_says_so_once_and_leaves_nothing(shell_env: dict[str, str], server: object,
                                                               tmp_path: Path) -> None:
    """README's commands for your own video, run as written offline (a loopback server refuses every
    download): the download error is printed once, no ffmpeg error follows, the cache keeps nothing."""
    block = next(b for b in README_BLOCKS if any("src=my-video.mkv" in c.text for c in b))
    cache = tmp_path / "cache"
    env = dict(shell_env, VSEDVR_HOME=str(cache), VSEDVR_BASE_URL=server.base + "/")  # type: ignore[attr-defined]
    done = run_shell("\n".join(c.text for c in block), env)
    assert done.returncode != 0
    assert server.gets, "nothing was downloaded"  # type: ignore[attr-defined]
    assert done.stderr.count("could not download model 'edvrm'") == 1, done.stderr
    assert "Invalid data found" not in done.stderr, done.stderr
    assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == [], sorted(cache.iterdir())


@pytest.mark.parametrize("cmd", EXAMPLES_ONLY, ids=[c.where for c in EXAMPLES_ONLY])
def test_example_header_command_works_as_written(cmd: Command, demo: subprocess.CompletedProcess[str],
                                                 shell_env: dict[str, str]) -> None:
    if cmd.needs:
        pytest.skip(f"needs {cmd.needs}")
    assert demo.returncode == 0, demo.stderr[-3000:]  # it writes demo-output/input.mp4
    done = run_shell(cmd.text, shell_env)
    assert done.returncode == 0, f"{cmd.where}\n{done.stderr[-3000:]}"
    check_video_outputs(cmd)


def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB PNG (as tools/demo.py writes them) as (height, width, 3) uint8."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
            assert body[8:10] == b"\x08\x02", "8-bit RGB"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert set(raw[:, 0]) <= {0, 2}, "filters None or Up only"
    rows = raw[:, 1:].astype(np.int32)
    out = np.zeros_like(rows)
    for y in range(height):
        out[y] = rows[y] + (out[y - 1] if y and raw[y, 0] == 2 else 0)
    return (out % 256).astype(np.uint8).reshape(height, width, 3)


def test_demo_writes_a_playable_video_the_picture_and_the_psnr(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stderr[-3000:]
    out = ROOT / "demo-output"
    stream, frames = probe(out / "input.mp4")
    assert "h264" in stream and "96x64" in stream and frames == 24, stream
    stream, frames = probe(out / "restored.mp4")
    assert "h264" in stream and "yuv420p(tv, bt709" in stream and "384x256" in stream and frames == 24, stream
    psnr = re.search(r"EDVR \(edvr_demo\) ([\d.]+) dB, bicubic ([\d.]+) dB", demo.stderr)
    assert psnr, demo.stderr[-3000:]
    assert float(psnr.group(1)) > float(psnr.group(2)) + 0.5  # visibly restores
    (header,) = DEMO_COMMANDS
    assert f"demo: running: {header.text}\n" in demo.stderr  # examples/demo.vpy's header command, as written

    made = read_png(out / "demo-compare.png")
    shown = read_png(ROOT / "docs" / "demo-compare.png")  # README's picture is this demo's output
    assert made.shape == shown.shape
    third = (made.shape[1] - 8) // 3
    truth_made, truth_shown = made[:, -third:].astype(int), shown[:, -third:].astype(int)
    assert np.array_equal(truth_made, truth_shown)  # the ground-truth panel is exact
    # the encoded panels may differ in the last bits between machines (x264's threads)
    assert np.abs(made.astype(int) - shown.astype(int)).mean() < 1.0
