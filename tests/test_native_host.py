"""The plugin in a host process without Python: it loads, and Restore says what is missing."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import vapoursynth as vs

HOST_SOURCE = Path(__file__).resolve().parent / "native" / "host_without_python.c"


def test_restore_in_a_host_without_python_is_a_clear_error(tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the test host")
    package = Path(vs.__file__).resolve().parent
    host = tmp_path / "host"
    subprocess.run([compiler, "-std=c11", "-O1", f"-I{package / 'include'}", str(HOST_SOURCE), "-o", str(host),
                    f"-L{package}", "-l:libvapoursynth.so.4", f"-Wl,-rpath,{package}"], check=True)
    assert "libpython" not in subprocess.run(["ldd", str(host)], capture_output=True, text=True).stdout
    done = subprocess.run([str(host)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "Restore: needs a Python interpreter in the host process" in done.stdout
