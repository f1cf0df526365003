"""README's main command: render examples/demo.vpy through the venv's vspipe into demo-output/."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "demo.vpy"
OUTPUT = ROOT / "demo-output" / "demo.y4m"


def main() -> int:
    OUTPUT.parent.mkdir(exist_ok=True)
    vspipe = Path(sys.executable).parent / "vspipe"
    started = time.monotonic()
    done = subprocess.run([str(vspipe), "--progress", "-c", "y4m", str(SCRIPT), str(OUTPUT)])
    if done.returncode:
        return done.returncode
    print(f"demo: wrote {OUTPUT.relative_to(ROOT)} ({OUTPUT.stat().st_size / 1e6:.1f} MB) "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
