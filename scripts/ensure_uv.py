"""Put uv, the project's package manager, into a virtual environment of the project's own
when the machine has none: `make` needs nothing but python3.

Debian's Python refuses `pip install` into the system (externally-managed-environment),
so uv goes into its own venv under the given directory. Prints the path of the uv binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _venv(tools: Path) -> bool:
    return subprocess.run([sys.executable, "-m", "venv", str(tools)], check=False).returncode == 0


def main() -> int:
    tools = Path(sys.argv[1] if len(sys.argv) > 1 else "var/tools")
    uv = tools / "bin" / "uv"
    if uv.exists():
        print(uv)
        return 0
    if not _venv(tools):
        # Debian ships venv's pip bootstrap separately (python3-venv).
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print("ensure_uv: installing python3-venv with apt-get", file=sys.stderr)
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "python3-venv"], check=False)
            shutil.rmtree(tools, ignore_errors=True)
        if not _venv(tools):
            print("ensure_uv: cannot create a virtual environment; install uv (https://docs.astral.sh/uv/) "
                  "or python3-venv, then run make again", file=sys.stderr)
            return 1
    print(f"ensure_uv: installing uv into {tools}", file=sys.stderr)
    done = subprocess.run([str(tools / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "uv"], check=False)
    if done.returncode != 0 or not uv.exists():
        print("ensure_uv: pip could not install uv", file=sys.stderr)
        return 1
    print(uv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
