#!/usr/bin/env python3
"""Create or update ``.venv`` with a real VapourSynth R81, PyTorch and vsedvr.

Run by README's commands (``make demo``, ``make test``, ``make test-all``). Idempotent: every step checks
whether its result is already in place and skips itself, so a second run takes seconds and
downloads nothing.

On Python >= 3.12 VapourSynth is the plain ``vapoursynth==81`` wheel. On 3.11 (these machines)
that wheel's core is used with its Python binding rebuilt from the R81 sources, because the
wheel's ``vapoursynth.abi3.so`` needs 3.12 (docs/install.md, "Python 3.11").

Standard library only: it runs before the venv exists.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
WORK = ROOT / ".cache" / "bootstrap"  # downloads and build files, kept so a rebuilt venv reuses them
VS_RELEASE = 81
DEV_REQUIREMENTS = ROOT / "tools" / "requirements-dev.txt"


def log(msg: str) -> None:
    print(f"[bootstrap] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def venv_ok(code: str) -> bool:
    """True when ``code`` runs without error in the venv's Python."""
    if not venv_python().exists():
        return False
    return subprocess.run([str(venv_python()), "-c", code], capture_output=True).returncode == 0


def pip(*args: str) -> None:
    run(venv_python(), "-m", "pip", "--disable-pip-version-check", *args)


def site_packages() -> Path:
    out = subprocess.check_output(
        [str(venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"], text=True)
    return Path(out.strip())


# vsedvr.zoo.cache.sha256_file's twin: this script runs with the system Python before vsedvr is installed.
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- venv

def ensure_venv() -> None:
    if venv_ok("import sys"):
        return
    log(f"creating {VENV}")
    run(sys.executable, "-m", "venv", "--clear", VENV)
    pip("install", "-q", "--upgrade", "pip", "setuptools>=68", "wheel")


# --------------------------------------------------------------------------- VapourSynth

VS_CHECK = f"import vapoursynth as vs, sys; sys.exit(vs.core.core_version.release_major != {VS_RELEASE})"


def ensure_vapoursynth() -> None:
    if venv_ok(VS_CHECK):
        return
    if sys.version_info >= (3, 12):
        log(f"installing vapoursynth=={VS_RELEASE} wheel")
        pip("install", "-q", vapoursynth_requirement())
    else:
        install_vapoursynth_rebuilt_binding()
    if not venv_ok(VS_CHECK):
        raise SystemExit("bootstrap: VapourSynth was installed but `import vapoursynth` does not report "
                         f"R{VS_RELEASE}; see the output above")


def index_url() -> str:
    """The package index pip is configured with (never a host written into this repo)."""
    out = subprocess.run([str(venv_python()), "-m", "pip", "config", "get", "global.index-url"],
                         capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return subprocess.check_output(
        [str(venv_python()), "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"],
        text=True).strip()


def fetch_sdist(dest: Path) -> Path:
    """Download ``vapoursynth-81.tar.gz`` from the index's simple page and check its sha256.

    ``pip download`` cannot fetch it: pip prepares the sdist's metadata, which needs Python 3.12.
    """
    name = f"vapoursynth-{VS_RELEASE}.tar.gz"
    path = dest / name
    if path.exists():
        return path
    page_url = index_url().rstrip("/") + "/vapoursynth/"
    req = urllib.request.Request(page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = resp.read().decode()
        content_type = resp.headers.get("Content-Type", "")
    if "json" in content_type:
        files = {f["filename"]: (urllib.parse.urljoin(page_url, f["url"]), f["hashes"].get("sha256"))
                 for f in json.loads(body)["files"]}
    else:  # PEP 503 HTML
        files = {}
        for href in re.findall(r'href="([^"]+)"', body):
            url, _, frag = href.partition("#sha256=")
            files[url.rsplit("/", 1)[-1]] = (urllib.parse.urljoin(page_url, url), frag or None)
    if name not in files:
        raise SystemExit(f"bootstrap: {name} is not listed on {page_url}")
    url, sha = files[name]
    log(f"downloading {name}")
    tmp = path.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as f:
        shutil.copyfileobj(resp, f)
    if sha and sha256_file(tmp) != sha:
        tmp.unlink()
        raise SystemExit(f"bootstrap: sha256 mismatch for {url}")
    tmp.replace(path)
    return path


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (its deb822 ``URIs:`` line)."""
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        if not src.exists():
            continue
        for line in src.read_text().splitlines():
            m = re.match(r"\s*URIs:\s*(\S+)", line) or re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    raise SystemExit("bootstrap: no Debian mirror found in /etc/apt/sources.list.d/*.sources")


def fetch_vulkan_headers(dest: Path) -> Path:
    """Vulkan >= 1.4 headers (VSVulkan4.h needs them; Debian 12 has 1.3).

    Debian 13's libvulkan-dev .deb is downloaded with a throw-away apt configuration and only
    unpacked into ``dest``: nothing of Debian 13 is installed on the system.
    """
    include = dest / "vulkan" / "usr" / "include"
    if (include / "vulkan" / "vulkan_core.h").exists():
        return include
    apt = dest / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {apt_mirror()} trixie main\n")
    opts = [f"-oDir::Etc::SourceList={apt / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={apt / 'lists'}", f"-oDir::Cache={apt / 'cache'}",
            "-oAPT::Sandbox::User=root"]
    log("downloading Debian 13's libvulkan-dev (headers only)")
    run("apt-get", "-q", *opts, "update", stdout=subprocess.DEVNULL)
    run("apt-get", "-q", *opts, "download", "libvulkan-dev", cwd=apt, stdout=subprocess.DEVNULL)
    deb = next(apt.glob("libvulkan-dev_*.deb"))
    run("dpkg", "-x", deb, dest / "vulkan")
    return include


def build_binding(sdist_root: Path, wheel_pkg: Path, vulkan_include: Path) -> Path:
    """Compile the R81 Cython binding for this Python, linked to the wheel's core."""
    ext = sysconfig.get_config_var("EXT_SUFFIX")
    out = sdist_root / f"vapoursynth{ext}"
    if out.exists():
        return out
    pip("install", "-q", "cython>=3.3")
    cython_dir = sdist_root / "src" / "cython"
    log("cythonizing vapoursynth.pyx")
    run(VENV / "bin" / "cython", "-3", "--cplus", "-X", "freethreading_compatible=True",
        "vapoursynth.pyx", "-o", "vapoursynth.cpp", cwd=cython_dir)
    log("compiling the Python binding (about 40 s)")
    py_include = sysconfig.get_paths()["include"]
    run("g++", "-shared", "-fPIC", "-O2", "-std=c++17", "-fno-char8_t",
        "-DVS_USE_LATEST_API", "-DVS_GRAPH_API", "-DVSSCRIPT_USE_LATEST_API", f"-DVS_CURRENT_RELEASE={VS_RELEASE}",
        f"-I{sdist_root}", f"-I{sdist_root / 'include'}", f"-I{sdist_root / 'src' / 'common'}",
        f"-I{cython_dir}", f"-I{py_include}", f"-I{vulkan_include}",
        cython_dir / "vapoursynth.cpp", sdist_root / "src" / "common" / "wave.cpp",
        f"-L{wheel_pkg}", "-l:libvapoursynth.so.4", "-Wl,-rpath,$ORIGIN", "-o", out)
    return out


def repack_wheel(unpacked: Path, binding: Path, dest: Path) -> Path:
    """Write the R81 wheel again as a wheel for this Python, with the rebuilt binding inside."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheel = dest / f"vapoursynth-{VS_RELEASE}-{tag}-{tag}-linux_x86_64.whl"
    pkg = unpacked / "vapoursynth"
    (pkg / "vapoursynth.abi3.so").unlink(missing_ok=True)
    shutil.copy2(binding, pkg / binding.name)
    info = unpacked / f"vapoursynth-{VS_RELEASE}.dist-info"
    meta = (info / "METADATA").read_text()
    (info / "METADATA").write_text(re.sub(r"(?m)^Requires-Python:.*\n", "", meta))
    wheel_meta = (info / "WHEEL").read_text()
    wheel_meta = re.sub(r"(?m)^Tag:.*\n", "", wheel_meta) + f"Tag: {tag}-{tag}-linux_x86_64\n"
    (info / "WHEEL").write_text(wheel_meta)
    records = []
    partial = wheel.with_name(wheel.name + ".part")  # vapoursynth_rebuilt_wheel reuses only a whole one
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
            rel = path.relative_to(unpacked).as_posix()
            if rel == f"{info.name}/RECORD":
                continue
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append((rel, f"sha256={digest}", str(len(data))))
            zi = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(records + [(f"{info.name}/RECORD", "", "")])
        zf.writestr(f"{info.name}/RECORD", buf.getvalue())
    partial.replace(wheel)
    return wheel


def vapoursynth_requirement() -> str:
    """What pip installs VapourSynth from on this Python: the index's wheel (>= 3.12), or the R81
    wheel repacked with a binding rebuilt for this Python (kept in .cache/bootstrap)."""
    if sys.version_info >= (3, 12):
        return f"vapoursynth=={VS_RELEASE}"
    return str(vapoursynth_rebuilt_wheel())


def vapoursynth_rebuilt_wheel() -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    built = WORK / f"vapoursynth-{VS_RELEASE}-{tag}-{tag}-linux_x86_64.whl"
    if built.exists():
        return built
    WORK.mkdir(parents=True, exist_ok=True)
    wheels = list(WORK.glob(f"vapoursynth-{VS_RELEASE}-cp312-abi3-manylinux*_x86_64.whl"))
    if not wheels:
        log(f"downloading the vapoursynth=={VS_RELEASE} manylinux wheel (for its core)")
        pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
            "--platform", "manylinux_2_28_x86_64", "-d", WORK, f"vapoursynth=={VS_RELEASE}")
        wheels = list(WORK.glob(f"vapoursynth-{VS_RELEASE}-cp312-abi3-manylinux*_x86_64.whl"))
    unpacked = WORK / "wheel"
    shutil.rmtree(unpacked, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(unpacked)
        for zi in zf.infolist():  # zipfile drops the executable bits (vspipe)
            mode = zi.external_attr >> 16
            if mode:
                os.chmod(unpacked / zi.filename, mode & 0o777)
    sdist = fetch_sdist(WORK)
    sdist_root = WORK / f"vapoursynth-{VS_RELEASE}"
    if not sdist_root.exists():
        with tarfile.open(sdist) as tf:
            tf.extractall(WORK, filter="data")
    binding = build_binding(sdist_root, unpacked / "vapoursynth", fetch_vulkan_headers(WORK))
    return repack_wheel(unpacked, binding, WORK)


def install_vapoursynth_rebuilt_binding() -> None:
    wheel = vapoursynth_rebuilt_wheel()
    log(f"installing {wheel.name}")
    pip("install", "-q", "--no-deps", "--force-reinstall", wheel)


# --------------------------------------------------------------------------- Python packages and vsedvr

def stamp_ok(name: str, digest: str) -> bool:
    stamp = VENV / f".stamp-{name}"
    return stamp.exists() and stamp.read_text() == digest


def write_stamp(name: str, digest: str) -> None:
    (VENV / f".stamp-{name}").write_text(digest)


def tree_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in files:
            if "__pycache__" in p.parts or p.suffix in (".pyc", ".so"):
                continue
            h.update(p.relative_to(ROOT).as_posix().encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def ensure_requirements() -> None:
    digest = tree_digest([DEV_REQUIREMENTS])
    if stamp_ok("requirements", digest) and venv_ok("import torch, torchvision, numpy, pytest, imageio_ffmpeg"):
        return
    log("installing PyTorch, ffmpeg and the test tools (PyTorch is about 5.5 GB installed)")
    pip("install", "-q", "-r", DEV_REQUIREMENTS)
    write_stamp("requirements", digest)


BESTSOURCE = "vapoursynth-bestsource==22"
BS_CHECK = "import vapoursynth as vs, sys; sys.exit(not hasattr(vs.core, 'bs'))"


def ensure_source_plugin() -> None:
    """BestSource (``core.bs.VideoSource``), the source plugin the examples open videos with.

    On Python >= 3.12 requirements-dev.txt installs it. Its wheels declare ``Requires-Python >=3.12``
    although they hold only a plugin library (no Python code), so on 3.11 the 3.12 wheel is
    downloaded and installed with ``--ignore-requires-python``.
    """
    if venv_ok(BS_CHECK):
        return
    if sys.version_info < (3, 12):
        WORK.mkdir(parents=True, exist_ok=True)
        wheels = list(WORK.glob("vapoursynth_bestsource-22-*.whl"))
        if not wheels:
            log(f"downloading {BESTSOURCE} (the Python 3.12 wheel: a plugin library, fine on 3.11)")
            pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--platform", "manylinux_2_28_x86_64", "-d", WORK, BESTSOURCE)
            wheels = list(WORK.glob("vapoursynth_bestsource-22-*.whl"))
        log(f"installing {wheels[0].name}")
        pip("install", "-q", "--no-deps", "--ignore-requires-python", wheels[0])
    else:
        pip("install", "-q", BESTSOURCE)
    if not venv_ok(BS_CHECK):
        raise SystemExit(f"bootstrap: {BESTSOURCE} is installed but the core has no `bs` namespace")


PACKAGE_SOURCES = ["vsedvr", "native", "models", "setup.cfg", "setup.py", "pyproject.toml"]


def ensure_package() -> None:
    digest = tree_digest([ROOT / p for p in PACKAGE_SOURCES if (ROOT / p).exists()])
    if stamp_ok("vsedvr", digest) and venv_ok("import vsedvr"):
        return
    log("installing vsedvr (and building its native plugin)")
    pip("install", "-q", "--no-deps", "--no-build-isolation", "--force-reinstall", str(ROOT))
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    write_stamp("vsedvr", digest)


def ensure_ffmpeg_on_path() -> None:
    """``.venv/bin/ffmpeg``: a link to imageio-ffmpeg's static ffmpeg, so README's ``... | ffmpeg ...``
    commands work once ``.venv/bin`` is on PATH (``. .venv/bin/activate``)."""
    link = VENV / "bin" / "ffmpeg"
    exe = subprocess.check_output(
        [str(venv_python()), "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"], text=True).strip()
    if link.is_symlink() and os.readlink(link) == exe:
        return
    link.unlink(missing_ok=True)
    link.symlink_to(exe)


def ensure_vapoursynth_config() -> None:
    """``vapoursynth config`` so that vspipe can find this Python (writes ~/.config/vapoursynth)."""
    check = ("import os, sys, tomllib; from vapoursynth import _utils as u; "
             "p = u._get_vapoursynth_config_path(); "
             "sys.exit(u._mangle_vsscript_key(u.get_vsscript()) not in tomllib.loads(p.read_text()))")
    if venv_ok(check):
        return
    run(VENV / "bin" / "vapoursynth", "config", stdout=subprocess.DEVNULL)


def ensure_editor_stubs() -> None:
    """``vsedvr stubs``: editors using this venv complete ``core.edvr.Restore(...)``."""
    stub = site_packages() / "vapoursynth" / "vapoursynth.pyi"
    if not stub.is_file() or "# <implementation/edvr>" in stub.read_text(encoding="utf-8"):
        return
    run(venv_python(), "-m", "vsedvr", "stubs", stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    started = time.monotonic()
    ensure_venv()
    ensure_vapoursynth()
    ensure_requirements()
    ensure_source_plugin()
    ensure_ffmpeg_on_path()
    ensure_package()
    ensure_vapoursynth_config()
    ensure_editor_stubs()
    log(f"ready in {time.monotonic() - started:.0f} s: {VENV}")


if __name__ == "__main__":
    main()
