"""The ``vsedvr`` command (also ``python -m vsedvr``): the model zoo and the installation.

Subcommands: ``models`` (the zoo table), ``download`` (fill the cache), ``verify`` (re-hash
cached files), ``info`` (versions, plugin, devices, cache folder), ``stubs`` (editor completion
of ``core.edvr.Restore``), ``render`` (a script rendered in segments by worker processes,
locally or on Ray; :mod:`vsedvr.render`). stdout carries only what was
asked for (tables, paths, results); progress bars, notes and errors go to stderr, an error as
one line starting ``vsedvr: error:``. Exit status: 0 success, 1 failure, 2 wrong usage.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .zoo import DEFAULT_MODEL, MODELS, ModelError, ModelSpec, cache_dir, fetch, model_path
from .zoo.cache import DEFAULT_TIMEOUT, sha256_file
from .zoo.registry import did_you_mean

__all__ = ["build_parser", "main"]

PROG = "vsedvr"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(text: str) -> None:
    print(f"{PROG}: error: {_one_line(text)}", file=sys.stderr)


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


def _source_kind(spec: ModelSpec) -> str:
    if spec.bundled:
        return "bundled with vsedvr"
    if spec.url is not None:
        return f"download ({spec.layout})"
    return f"manual ({spec.layout}, see --long)"


def _local_file(spec: ModelSpec) -> Path | None:
    """The model's file if it is present, else None (never raises)."""
    try:
        path = model_path(spec)
    except ModelError:
        return None
    return path if path.is_file() else None


def _specs(names: Sequence[str], parser: argparse.ArgumentParser) -> list[ModelSpec]:
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r};{did_you_mean(unknown[0])} known models: {', '.join(MODELS)}")
    return [MODELS[n] for n in dict.fromkeys(names)]  # keep order, drop repeats


# ------------------------------------------------------------------------------------ models


def cmd_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    rows = [("NAME", "TASK", "SCALE", "FRAMES", "SIZE_MB", "CACHED", "SOURCE")]
    for spec in MODELS.values():
        path = _local_file(spec)
        rows.append((spec.name + (" (default)" if spec.name == DEFAULT_MODEL else ""), spec.task, f"x{spec.scale}", str(spec.num_frames),
                     _mb(path.stat().st_size) if path else "-", "yes" if path else "no", _source_kind(spec)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    if args.long:
        for spec in MODELS.values():
            path = _local_file(spec)
            where = model_path(spec) if not spec.bundled else path
            print()
            print(f"{spec.name}: {spec.description}")
            print(f"  file:    {where}{'' if path else ' (not present)'}")
            print(f"  sha256:  {spec.sha256}...")
            if spec.reds4_psnr is not None:
                ssim = f" / SSIM {spec.reds4_ssim:.4f}" if spec.reds4_ssim is not None else ""
                print(f"  REDS4:   PSNR {spec.reds4_psnr:.2f} dB{ssim} (RGB)")
            print(f"  padding: {spec.padding}")
            print(f"  source:  {spec.source or spec.url or '-'}")
    return 0


# ---------------------------------------------------------------------------------- download


def cmd_download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.all == bool(args.names):
        parser.error("name the models to download, or give --all (not both)")
    if args.all:
        specs = [s for s in MODELS.values() if s.url is not None or s.bundled]
        manual = [s.name for s in MODELS.values()
                  if s.url is None and not s.bundled and _local_file(s) is None]
        if manual:
            _note(f"skipping {len(manual)} models that are only installed by hand ({', '.join(manual)}); "
                  f"`{PROG} models --long` says where to get them and where to put them")
    else:
        specs = _specs(args.names, parser)
    failed = 0
    for spec in specs:
        try:
            path = fetch(spec, progress=not args.quiet, timeout=args.timeout)
        except ModelError as e:
            _error(str(e))
            failed += 1
            continue
        print(path, flush=True)
    if failed and len(specs) > 1:
        _note(f"{failed} of {len(specs)} models could not be fetched")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------ verify


def cmd_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    named = bool(args.names)
    specs = _specs(args.names, parser) if named else list(MODELS.values())
    checked = failed = 0
    for spec in specs:
        path = _local_file(spec)
        if path is None:
            if named:
                print(f"MISSING  {spec.name}  {model_path(spec) if not spec.bundled else '(bundled file)'}")
                failed += 1
            continue
        try:
            digest = sha256_file(path)
        except OSError as e:
            print(f"FAILED   {spec.name}  {path}  cannot read: {e}")
            failed += 1
            continue
        checked += 1
        if digest.startswith(spec.sha256):
            print(f"OK       {spec.name}  {path}")
        else:
            print(f"FAILED   {spec.name}  {path}  sha256 {digest} does not start with {spec.sha256}")
            failed += 1
    if not named and checked == 0:
        _note(f"no model files to verify in {cache_dir()}")
    if failed:
        _note(f"{failed} model files missing or corrupt; `{PROG} download NAME` fetches them again "
                  f"(hand-placed models: `{PROG} models --long`)")
    return 1 if failed else 0


# -------------------------------------------------------------------------------------- info


def _vapoursynth_lines() -> tuple[list[tuple[str, str]], list[str]]:
    """(key, value) rows about VapourSynth and the plugin, and the problems found."""
    rows: list[tuple[str, str]] = []
    problems: list[str] = []
    try:
        import vapoursynth as vs

        core = vs.core
        version = core.core_version
        minor = f".{version.release_minor}" if version.release_minor else ""
        api = core.api_version
        rows.append(("vapoursynth", f"R{version.release_major}{minor} (API {api.api_major}.{api.api_minor}) "
                                    f"{Path(vs.__file__).parent}"))
    except Exception as e:  # noqa: BLE001 - any import or core failure is the answer itself
        rows.append(("vapoursynth", f"not usable: {_one_line(f'{type(e).__name__}: {e}')}"))
        problems.append("VapourSynth cannot be imported or started in this Python")
        return rows, problems

    from . import PLUGIN_NAME, plugin_path

    on_disk = plugin_path()
    try:
        info = core.edvr.Version()
    except AttributeError:
        where = f"{on_disk} exists but was not loaded" if on_disk else f"{PLUGIN_NAME} is not installed"
        rows.append(("plugin", f"not loaded by the core ({where})"))
        problems.append("the core has no edvr plugin; reinstall vsedvr with `pip install .` (not editable)")
        return rows, problems
    plugin_version = info["version"]
    plugin_version = plugin_version.decode() if isinstance(plugin_version, bytes) else str(plugin_version)
    path = info["path"]
    path = path.decode() if isinstance(path, bytes) else str(path)
    rows.append(("plugin", f"edvr {plugin_version} {path}"))
    if plugin_version != __version__:
        problems.append(f"the plugin is version {plugin_version} but the vsedvr package is {__version__}; "
                        f"reinstall vsedvr")
    return rows, problems


def _torch_lines() -> tuple[list[tuple[str, str]], list[str]]:
    """(key, value) rows about PyTorch and the devices it sees, and the problems found."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a missing or broken install is the answer itself
        return ([("torch", f"not usable: {_one_line(f'{type(e).__name__}: {e}')}")],
                ["PyTorch cannot be imported in this Python: Restore cannot run; install torch and torchvision "
                 "(docs/install.md)"])
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    rows = [("torch", f"{torch.__version__} ({build})")]
    devices = ["cpu"]
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver must not break info
        count = 0
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        devices.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.1f} GiB)")
    rows.append(("devices", "; ".join(devices)))
    rows.append(("device auto", "cuda:0" if count else "cpu"))
    return rows, []


def _cache_line() -> str:
    folder = cache_dir()
    if not folder.is_dir():
        return f"{folder} (not created yet)"
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix == ".pth"]
    size = sum(p.stat().st_size for p in files)
    return f"{folder} ({len(files)} checkpoint files, {_mb(size)} MB)"


def cmd_info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    rows: list[tuple[str, str]] = [
        ("vsedvr", f"{__version__} {Path(__file__).resolve().parent}"),
        ("python", f"{platform.python_version()} {sys.executable}"),
    ]
    vs_rows, problems = _vapoursynth_lines()
    torch_rows, torch_problems = _torch_lines()
    rows += vs_rows + torch_rows
    problems += torch_problems
    rows.append(("cache", _cache_line()))
    for var in ("VSEDVR_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "VSEDVR_BASE_URL"):
        if os.environ.get(var):
            rows.append((f"${var}", os.environ[var]))
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    for problem in problems:
        _error(problem)
    return 1 if problems else 0


def cmd_stubs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import stubs

    try:
        path = stubs.install(args.source, args.output)
    except ValueError as e:
        _error(str(e))
        return 1
    print(path)
    return 0


def cmd_render(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import shlex
    import signal

    from . import render as rendering  # no torch: the worker processes load it

    if args.ray is not None and (args.workers or args.devices):
        parser.error("--ray takes its workers from the cluster; drop --workers/--devices")
    if args.workers is not None and args.devices:
        parser.error("give --workers N (CPU workers) or --devices LIST, not both")
    if args.audio is not None and args.audio_output is not None:
        parser.error("give --audio FILE or --audio-output N, not both")
    if args.stall_timeout <= 0:
        parser.error(f"--stall-timeout must be more than 0 seconds, got {args.stall_timeout:g}")
    bad = [a for a in args.arg if "=" not in a]
    if bad:
        parser.error(f"-a {bad[0]!r}: expected NAME=VALUE")
    try:
        encode = shlex.split(args.encode) if args.encode else []
    except ValueError as e:
        parser.error(f"--encode: {e}")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a scheduler's kill: the same clean stop as Ctrl-C
    # stdout stays empty: a Ray driver prints the cluster's error messages (a dead node: kilobytes)
    # there, choosing sys.stdout when it prints; the command's own stdout goes to stderr meanwhile
    sys.stdout.flush()
    saved_stdout, saved_fd = sys.stdout, os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        if args.ray is not None:
            pool = rendering.RayPool(args.ray or None, retries=args.retries, cpus_per_task=args.cpus_per_task,
                                     stall_timeout=args.stall_timeout)
        else:
            if args.devices:
                slots = rendering.device_slots(args.devices.split(","), os.environ.get("CUDA_VISIBLE_DEVICES"))
            elif args.workers is not None:
                slots = rendering.cpu_slots(args.workers)
            else:
                slots = rendering.default_slots()
            pool = rendering.LocalPool(slots, retries=args.retries, stall_timeout=args.stall_timeout)
        rendering.render(args.script, args.output, args=args.arg, output_index=args.outputindex,
                         segment=args.segment, work_dir=args.work_dir, pool=pool, encode=encode,
                         audio=args.audio, ffmpeg=args.ffmpeg, keep=args.keep,
                         fresh=args.fresh, rerender=args.rerender, audio_output=args.audio_output,
                         progress_interval=args.progress_interval)
    except rendering.RenderError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _error("interrupted; the verified segments are kept: run the same command again to resume")
        return 130
    finally:
        sys.stdout = saved_stdout
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
    return 0


# ------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EDVR for VapourSynth: manage the model cache, check the installation, render long "
                    "videos in segments.",
        epilog=f"Examples:\n  {PROG} models\n  {PROG} download edvrm\n  {PROG} verify\n  {PROG} info\n  {PROG} stubs\n"
               f"  {PROG} render film.vpy -o film.mkv --workers 2   (more: {PROG} render --help)\n\n"
               "Models are cached in $VSEDVR_HOME, else $TORCH_HOME/vsedvr, else "
               "$XDG_CACHE_HOME/vsedvr or ~/.cache/vsedvr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("models", help="list the model zoo (task, scale, frames, cached or not, source)",
                       description="List the model zoo. SIZE_MB is the cached file's size.")
    p.add_argument("-l", "--long", action="store_true",
                   help="also print each model's file, hash, REDS4 score and where to get it")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("download", help="download models into the cache (progress on stderr)",
                       description="Download models into the cache and print their paths. Models "
                                   "published without a direct URL must be placed by hand "
                                   f"(`{PROG} models --long`).")
    p.add_argument("names", nargs="*", metavar="NAME", help="zoo names (see `vsedvr models`)")
    p.add_argument("--all", action="store_true", help="every model that can be downloaded")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"for connecting and for each read (default {DEFAULT_TIMEOUT:g})")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("verify", help="re-hash cached model files (exit status 1 if any fails)",
                       description="Re-hash model files against the SHA-256 prefix in their names. "
                                   "Without names: every model file present.")
    p.add_argument("names", nargs="*", metavar="NAME", help="zoo names; a named model that is missing fails")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("info", help="versions, the plugin, devices and the cache folder",
                       description="Show versions, where the plugin is, the devices PyTorch sees and "
                                   "the cache folder. Exit status 1 if VapourSynth, the plugin or PyTorch is "
                                   "not usable.")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("stubs", help="add core.edvr.Restore to VapourSynth's type stubs (editor completion)",
                       description="Add the edvr namespace (core.edvr.Restore, clip.edvr.Restore, with "
                                   "typed parameters) to the vapoursynth.pyi that editors read, and print "
                                   "its path. Safe to repeat; run it again after (re)installing VapourSynth "
                                   "or a stub generator.")
    p.add_argument("--source", type=Path, metavar="PYI",
                   help="stub file to start from (default: the installed vapoursynth.pyi)")
    p.add_argument("-o", "--output", type=Path, metavar="PYI", help="where to write (default: --source)")
    p.set_defaults(func=cmd_stubs)

    from .render import DEFAULT_SEGMENT
    from .render.scheduler import STALL_TIMEOUT

    p = sub.add_parser(
        "render", help="render a script in segments on many workers or a Ray cluster (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render SCRIPT into OUT by cutting it into frame ranges (segments), rendered by workers "
                    "(one per GPU or CPU slot, each evaluating the script once, as vspipe does), written as "
                    "verified lossless FFV1 and joined. The result is identical, frame by frame, to one plain "
                    "vspipe render. Re-running the same command resumes. Progress on stderr.",
        epilog=f"Examples:\n  {PROG} render film.vpy -o film.mkv --devices cuda:0,cuda:1\n"
               f"  {PROG} render film.vpy -o film.mkv --ray HEAD:6379 -a src=/shared/film.mkv\n"
               f"  {PROG} render film.vpy -o film.mkv --workers 2 --encode \"-c:v libx265 -crf 18\" --audio src.mkv\n\n"
               "More: docs/long-videos.md")
    p.add_argument("script", type=Path, metavar="SCRIPT.vpy")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="the result (FFV1 in MKV unless --encode says otherwise)")
    p.add_argument("-a", "--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a global of the script, a string, as vspipe's -a (repeat for several)")
    p.add_argument("--outputindex", type=int, default=0, metavar="N", help="the script's output to render (default 0)")
    g = p.add_argument_group("workers")
    g.add_argument("--workers", type=int, metavar="N", help="N CPU workers, the cores divided between them")
    g.add_argument("--devices", metavar="LIST",
                   help="one worker per device, e.g. cuda:0,cuda:1 (each sees its GPU alone, so scripts keep "
                        "device=\"auto\"); default: every GPU nvidia-smi lists, else one CPU worker")
    g.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="one worker per GPU (or CPU slot) of the Ray cluster at ADDRESS (HOST:PORT or auto); without "
                        "ADDRESS: $RAY_ADDRESS or a new local cluster. Needs ray (pip install ray)")
    g.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                   help="with --ray on a cluster without GPUs: CPUs (torch threads) per task (default 1)")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="attempts after the first for a failed segment (default 2)")
    g.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT, metavar="SECONDS",
                   help="a worker that renders no new frame (and finishes no check) for this long, and for at "
                        "least 20 times the median frame time, is killed and its segment retried elsewhere "
                        f"(default {STALL_TIMEOUT:g})")
    g = p.add_argument_group("segments and result")
    g.add_argument("--segment", type=int, default=DEFAULT_SEGMENT, metavar="FRAMES",
                   help=f"frames per segment (default {DEFAULT_SEGMENT})")
    g.add_argument("--work-dir", type=Path, metavar="DIR",
                   help="segments and manifest; on a folder all nodes share for --ray (default: OUT.parts)")
    g.add_argument("--encode", metavar="ARGS",
                   help="ffmpeg arguments of the encode, one string, e.g. \"-c:v libx265 -crf 18\": run on the "
                        "workers per segment and joined with -c copy (two-pass refused; default: keep the "
                        "lossless FFV1)")
    g.add_argument("--audio", metavar="FILE", help="a file whose audio streams are muxed into the result as they are")
    g.add_argument("--audio-output", type=int, metavar="N",
                   help="the script's own audio output N (audio.set_output(N)), muxed into the result: it follows "
                        "the script's trims")
    g.add_argument("--keep", action="store_true", help="keep the segment files after the result is verified")
    g.add_argument("--rerender", action="store_true",
                   help="render again when the finish changed (--encode, --audio, -o, the output moved) after the "
                        "segments were deleted; without it that is refused, naming the cost")
    g.add_argument("--fresh", action="store_true",
                   help="if the work folder holds another plan (changed script or arguments), delete it first")
    g.add_argument("--ffmpeg", metavar="PATH", help="ffmpeg to use (default: PATH, else imageio-ffmpeg)")
    g.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between progress lines when stderr is not a terminal (default 10)")
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on wrong usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format=f"{PROG}: %(message)s")  # warnings (e.g. a corrupt file) on stderr
    try:
        return int(args.func(args, parser))
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `vsedvr models | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (ModelError, OSError) as e:
        _error(str(e))
        return 1
