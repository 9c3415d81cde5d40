"""A static C program that tries what a container should not be able to do (keyrings,
user namespaces, perf events, io_uring, mount) and prints one ``NAME RESULT`` line per
try (``OK`` or the errno name): busybox has none of these calls."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "probes" / "syscalls.c"
PROBES = ("keyctl", "unshare_user", "clone_user", "perf_event_open", "io_uring_setup", "mount")


def build_probe(dest: Path) -> Path:
    """Compile the probe, statically, to ``dest`` (gcc and libc6-dev: scripts/bootstrap.sh)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is not installed (scripts/bootstrap.sh installs it)")
    subprocess.run([gcc, "-static", "-O2", "-o", str(dest), str(SOURCE)], check=True)
    return dest


def parse(output: str) -> dict[str, str]:
    """``{"keyctl": "EPERM", ...}`` from the probe's output (other lines ignored)."""
    out = {}
    for line in output.splitlines():
        name, _, result = line.partition(" ")
        if name in PROBES:
            out[name] = result
    return out


def status(output: str, field: str) -> str:
    """A ``Field:\\tvalue`` line of /proc/self/status in ``output``."""
    for line in output.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in {output!r}")
