"""Closes the real vsedit (VapourSynth Editor) while it plays a Restore script; prints each exit.

    .venv/bin/python tools/vsedit_close.py --vsedit PATH [--runs 5] [--restores 1] [--play 4]

Needs a built vsedit (../shared/vsedit/build.sh), Xvfb and xdotool. Each run starts vsedit on its
own Xvfb display with a fresh HOME, opens the preview (F5), presses Play, lets it play --play
seconds (or, with a negative --play, not at all: Exit while frame 0 is computed) and chooses
File > Exit (Ctrl+Q), then waits for the process: its exit status, and how long
the exit took. The script is BestSource -> RGBS -> --restores edvr_demo Restores side by side ->
YUV420P10, as a user's preview; a std.ModifyFrame after it counts the frames that reached the
previewer. vsedit loads libvsscript as `libvapoursynth-script.so` from the library path, and
VSScript finds this .venv's Python through `vapoursynth config`'s entry for that path.
Exit status: 0 when every run exited with status 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vapoursynth as vs

VENV_BIN = Path(sys.executable).parent
PACKAGE = Path(vs.__file__).resolve().parent

SCRIPT = """\
import vapoursynth as vs
core = vs.core
clip = core.bs.VideoSource({video!r})
clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")
parts = [core.edvr.Restore(core.std.Crop(clip, right=96 - 96 // {restores}), model="edvr_demo", device="cpu")
         for _ in range({restores})]
clip = core.resize.Bicubic(core.std.StackHorizontal(parts), format=vs.YUV420P10, matrix_s="170m")

def shown(n, f):
    with open({marker!r}, "a") as out:
        out.write(f"{{n}}\\n")
    return f

core.std.ModifyFrame(clip, clip, shown).set_output()
"""


def xdotool(display: str, *args: str) -> str:
    done = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True,
                          text=True, timeout=30)
    return done.stdout.strip()


def wait_window(display: str, name: str, seconds: float) -> str:
    """The X window id of the first window whose name starts with `name`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = xdotool(display, "search", "--name", f"^{name}")
        if found:
            return found.split()[0]
        time.sleep(0.5)
    raise TimeoutError(f"no window {name!r} after {seconds} s")


def geometry(display: str, window: str) -> tuple[int, int, int, int]:
    values = dict(line.split("=") for line in xdotool(display, "getwindowgeometry", "--shell", window).splitlines())
    return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])


def environment(folder: Path) -> dict[str, str]:
    """vsedit's environment: libvsscript under the name vsedit loads, configured for this Python."""
    lib = folder / "lib"
    lib.mkdir()
    (lib / "libvapoursynth-script.so").symlink_to(PACKAGE / "libvsscript.so")
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / "xdg"), "HOME": str(folder / "home"),
           "LD_LIBRARY_PATH": str(lib), "XDG_RUNTIME_DIR": str(folder / "run")}
    (folder / "home").mkdir()
    (folder / "run").mkdir(mode=0o700)
    subprocess.run([str(VENV_BIN / "vapoursynth"), "config"], env=env, check=True, capture_output=True)
    config = folder / "xdg" / "vapoursynth" / "vapoursynth.toml"
    entry = next(line for line in config.read_text().splitlines() if "libvsscript.so" in line)
    config.write_text(config.read_text() + f'\n"{lib / "libvapoursynth-script.so"}" = {entry.split(" = ", 1)[1]}\n')
    return env


def one_run(vsedit: str, folder: Path, restores: int, play: float) -> tuple[int, float, int]:
    """(exit status, seconds from Exit to the process's end, frames shown before Exit)."""
    env = environment(folder)
    video, marker = folder / "clip.mp4", folder / "shown.txt"
    subprocess.run([str(VENV_BIN / "ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=96x64:rate=24:duration=30", "-pix_fmt", "yuv420p", str(video)], check=True)
    script = folder / "restore.vpy"
    script.write_text(SCRIPT.format(video=str(video), restores=restores, marker=str(marker)))
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24"],
                            pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        display = ":" + pipe.readline().strip()
    editor = None
    try:
        editor = subprocess.Popen([vsedit, str(script)], env={**env, "DISPLAY": display}, cwd=folder,
                                  stdout=subprocess.DEVNULL, stderr=open(folder / "vsedit.log", "w"))
        main = wait_window(display, "VapourSynth Editor - ", 60)
        for attempt in range(3):  # a key sent before the window takes the focus is lost
            xdotool(display, "windowfocus", "--sync", main)
            xdotool(display, "key", "--window", main, "F5")
            try:
                preview = wait_window(display, "Preview - ", 30)
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        if play >= 0:
            deadline = time.monotonic() + 120
            while not marker.exists() and time.monotonic() < deadline:  # frame 0 shown
                time.sleep(0.2)
            x, y, _, height = geometry(display, preview)
            xdotool(display, "mousemove", str(x + 10), str(y + height - 58), "click", "1")  # Play, bottom left
            time.sleep(play)
        shown = len(marker.read_text().split()) if marker.exists() else 0
        xdotool(display, "windowfocus", "--sync", main)
        xdotool(display, "key", "--window", main, "ctrl+q")  # File > Exit
        closed = time.monotonic()
        status = editor.wait(timeout=120)
        return status, time.monotonic() - closed, shown
    finally:
        if editor is not None and editor.poll() is None:
            editor.kill()
        xvfb.send_signal(signal.SIGTERM)
        xvfb.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vsedit", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--restores", type=int, default=1)
    parser.add_argument("--play", type=float, default=4.0,
                        help="seconds of playback before File > Exit; negative: Exit as soon as the preview opens, "
                             "frame 0 being computed")
    args = parser.parse_args()
    clean = 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="vsedit-close-") as folder:
            status, took, shown = one_run(args.vsedit, Path(folder), args.restores, args.play)
        how = f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"
        print(f"run {run + 1}: {how}, exit took {took:.1f} s, {shown} frames shown before Exit", flush=True)
        clean += status == 0
    print(f"{clean} of {args.runs} exits clean ({args.restores} Restore{'s' if args.restores > 1 else ''})")
    return 0 if clean == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
