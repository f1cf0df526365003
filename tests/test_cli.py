"""The vsedvr command line, as real subprocesses: models, download, verify, info, usage errors.

Downloads come from a local HTTP server (tests/loopback_server.py). The zoo's real
checkpoints cannot be served (their hashes are fixed), so download/verify run the CLI's main()
in a child Python that first adds test specs to MODELS.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vsedvr
from loopback_server import Server
from vsedvr import MODELS
from vsedvr.cli import build_parser
from vsedvr.zoo import DEFAULT_MODEL
from vsedvr.cli import main

VENV_BIN = Path(sys.executable).parent
PAYLOADS = {name: os.urandom(150_000) + name.encode() for name in ("t1", "t2")}
FILES = {name: f"{name}-{hashlib.sha256(body).hexdigest()[:12]}.pth" for name, body in PAYLOADS.items()}

# main() with MODELS replaced by the specs given as JSON in argv[1]; the rest of argv is the CLI's.
WITH_SPECS = """
import json, sys
from vsedvr.cli import main
from vsedvr.zoo import MODELS, ModelSpec
MODELS.clear()
for s in json.loads(sys.argv[1]):
    MODELS[s["name"]] = ModelSpec(task="sr", scale=4, num_frames=3, arch={"num_frame": 3}, **s)
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ, VSEDVR_HOME=str(tmp_path / "cache"))
    e.pop("VSEDVR_BASE_URL", None)
    return e


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vsedvr", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def cli_with_specs(specs: list[dict[str, str | None]], args: list[str],
                   env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITH_SPECS, json.dumps(specs), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vsedvr: error:")]


def test_models_lists_the_zoo_and_what_is_cached(env: dict[str, str]) -> None:
    home = Path(env["VSEDVR_HOME"])
    home.mkdir()
    (home / MODELS["edvrm"].filename).write_bytes(b"\0" * 2_500_000)  # present (content not checked here)
    done = subprocess.run([str(VENV_BIN / "vsedvr"), "models"], env=env, capture_output=True, text=True,
                          timeout=300)  # the console script itself
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAME", "TASK", "SCALE", "FRAMES", "SIZE_MB", "CACHED"]
    marked = [line.split()[0] for line in lines[1:] if line.split()[1] == "(default)"]
    assert marked == [DEFAULT_MODEL]  # Restore's model when none is given, and only it
    rows = {line.split()[0]: line.replace(" (default)", "").split() for line in lines[1:]}
    assert list(rows) == list(MODELS)
    assert rows["edvrm"][1:6] == ["sr", "x4", "5", "2.5", "yes"]
    assert rows["edvrl"][4:6] == ["-", "no"]
    assert rows["basicsr_edvrl_deblur"][1:3] == ["deblur", "x1"]
    assert rows["basicsr_edvrl_vimeo"][3] == "7"
    assert "manual" in " ".join(rows["basicsr_edvrl"][6:]) and "download" in " ".join(rows["edvrm"][6:])


def test_verify_reports_a_corrupt_zoo_file(env: dict[str, str]) -> None:
    home = Path(env["VSEDVR_HOME"])
    home.mkdir()
    (home / MODELS["edvrm"].filename).write_bytes(b"not the checkpoint")
    done = cli(["verify"], env)
    assert done.returncode == 1
    assert done.stdout.split()[:2] == ["FAILED", "edvrm"] and len(done.stdout.splitlines()) == 1
    assert MODELS["edvrm"].sha256 in done.stdout


def test_download_then_verify_then_corruption(server: Server, env: dict[str, str]) -> None:
    home = Path(env["VSEDVR_HOME"])
    specs: list[dict[str, str | None]] = [
        {"name": name, "filename": FILES[name], "url": server.add(f"/{FILES[name]}", body, mode="slow")}
        for name, body in PAYLOADS.items()
    ]
    manual: dict[str, str | None] = {"name": "byhand", "filename": "byhand-0123456789ab.pth", "url": None}

    done = cli_with_specs(specs, ["download", "t1", "t2"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(home / FILES["t1"]), str(home / FILES["t2"])]
    assert f"vsedvr: downloading {FILES['t1']}" in done.stderr and "100.0%" in done.stderr  # progress bar
    assert error_lines(done.stderr) == []
    for name, body in PAYLOADS.items():
        assert (home / FILES[name]).read_bytes() == body

    done = cli_with_specs(specs, ["verify"], env)
    assert done.returncode == 0, done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [["OK", "t1"], ["OK", "t2"]]

    (home / FILES["t1"]).write_bytes(b"bit rot")
    done = cli_with_specs(specs, ["verify"], env)
    assert done.returncode == 1
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [["FAILED", "t1"], ["OK", "t2"]]

    done = cli_with_specs([*specs, manual], ["verify", "t2", "byhand"], env)
    assert done.returncode == 1
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [["OK", "t2"], ["MISSING", "byhand"]]

    # --all fetches the corrupt file again, keeps the good one, and skips what is placed by hand
    done = cli_with_specs([*specs, manual], ["download", "--all", "--quiet"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(home / FILES["t1"]), str(home / FILES["t2"])]
    assert "skipping 1 models that are only installed by hand (byhand)" in done.stderr
    assert "%" not in done.stderr
    assert server.gets[f"/{FILES['t1']}"] == 2 and server.gets[f"/{FILES['t2']}"] == 1
    assert (home / FILES["t1"]).read_bytes() == PAYLOADS["t1"]


def test_failed_download_is_one_error_line(server: Server, env: dict[str, str]) -> None:
    spec: dict[str, str | None] = {"name": "t1", "filename": FILES["t1"], "url": server.base + "/missing.pth"}
    done = cli_with_specs([spec], ["download", "t1"], env)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsedvr: error: ") and "HTTP 404" in lines[0]
    assert str(Path(env["VSEDVR_HOME"]) / FILES["t1"]) in lines[0]  # where to put it by hand


def test_info_shows_versions_and_the_plugin(env: dict[str, str]) -> None:
    import torch
    import vapoursynth as vs

    done = cli(["info"], env)
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == []
    info = dict(line.split(":", 1) for line in done.stdout.splitlines())
    info = {k: v.strip() for k, v in info.items()}
    assert info["vsedvr"].startswith(vsedvr.__version__)
    assert info["vapoursynth"].startswith(f"R{vs.core.core_version.release_major}")
    assert info["plugin"] == f"edvr {vsedvr.__version__} {vsedvr.plugin_path()}"
    assert info["torch"].startswith(torch.__version__)
    assert info["devices"].startswith("cpu")
    assert info["cache"].startswith(env["VSEDVR_HOME"])


def test_info_exits_1_when_torch_is_not_usable(env: dict[str, str], tmp_path: Path) -> None:
    """A broken PyTorch (here: a torch package whose import fails as a CUDA build's does without its
    libraries) is reported, and the exit status says so to a script or CI."""
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise OSError("libtorch_cuda.so: cannot open shared object file: No such file or directory")\n')
    done = cli(["info"], dict(env, PYTHONPATH=str(broken.parent)))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "torch:" in done.stdout and "not usable: OSError: libtorch_cuda.so" in done.stdout
    (line,) = error_lines(done.stderr)
    assert "PyTorch cannot be imported" in line


def test_help_examples_show_every_command() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    shown = [line.split()[1] for line in parser.format_help().split("Examples:")[1].splitlines()
             if line.startswith("  vsedvr ")]
    assert sorted(set(shown)) == sorted(commands), shown


@pytest.mark.parametrize("args", [["download", "EDVR-M"], ["download", "edvrm", "edvr_dmeo"], ["verify", "edvrl_wtsa"]])
def test_misspelt_model_name_gets_did_you_mean(args: list[str], env: dict[str, str]) -> None:
    expected = {"EDVR-M": "edvrm", "edvr_dmeo": "edvr_demo", "edvrl_wtsa": "edvrl_wotsa"}[args[-1]]
    done = cli(args, env)
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert f'unknown model {args[-1]!r}; Did you mean "{expected}"' in last, last
    assert not Path(env["VSEDVR_HOME"]).exists()  # nothing fetched, no folder made


def test_bad_usage_exits_2_as_a_subprocess(env: dict[str, str]) -> None:
    done = cli(["download"], env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == "vsedvr: error: name the models to download, or give --all (not both)"


@pytest.mark.parametrize("args", [[], ["nonsense"], ["download", "nope"], ["download", "--all", "edvrm"],
                                  ["verify", "nope"], ["models", "--bogus"], ["download", "--timeout", "x"]])
def test_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1].startswith("vsedvr")


def test_models_download_and_verify_do_not_import_torch(tmp_path: Path) -> None:
    """The zoo's table and cache need no PyTorch: the CLI answers in well under a second."""
    code = ("import sys; from vsedvr.cli import main; "
            "codes = [main(['models']), main(['verify'])]; "
            "sys.stderr.write(repr(codes) + ' ' + repr(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VSEDVR_HOME": str(tmp_path)})
    assert done.stderr.strip().endswith("[0, 0] []"), done.stderr
    assert "edvrm" in done.stdout
