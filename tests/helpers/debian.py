"""A Debian base image for tests, made once by `lamina bootstrap debian` and cached.

debootstrap takes ~25-45 s and ~200 MB, so the image is kept as an OCI layout tar in
``$LAMINA_TEST_CACHE`` (default ``/var/tmp/lamina-test-cache``) under a name that carries
the day it was made: repeated test sessions on one machine reuse it, a new day (or a
fresh CI machine) makes a new one. A file lock keeps parallel pytest workers from
bootstrapping twice. ``SOURCE_DATE_EPOCH`` is pinned, so the image is reproducible
against an unchanged mirror.

Use the session fixture in a test module::

    from helpers.debian import debian_image_fixture, load_debian  # noqa: F401

    def test_x(debian_image, lamina):
        load_debian(lamina, debian_image)          # now "debian:bookworm" is in its root
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina

CACHE_ROOT = Path(os.environ.get("LAMINA_TEST_CACHE", "/var/tmp/lamina-test-cache"))
EPOCH = 1_700_000_000
DEBIAN_REF = "debian:bookworm"


def _have_debootstrap() -> bool:
    return bool(shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin"))


def debian_archive(suite: str = "bookworm", variant: str = "minbase") -> Path:
    """The OCI layout tar of ``debian:<suite>`` (made today on this machine, or now)."""
    stem = f"debian-{suite}-{variant}-"
    path = CACHE_ROOT / f"{stem}{time.strftime('%Y%m%d', time.gmtime())}.tar"
    if path.exists():
        return path
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f".{stem}lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be making it right now
        if path.exists():
            return path
        with tempfile.TemporaryDirectory(prefix="make-", dir=CACHE_ROOT) as tmp:
            root = os.path.join(tmp, "root")
            env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
            ref = f"debian:{suite}"
            for args in (
                ["bootstrap", "debian", "--suite", suite, "--variant", variant, "-t", ref],
                ["save", "--format", "oci", "-o", os.path.join(tmp, "image.tar"), ref],
            ):
                proc = subprocess.run(
                    [*LAMINA, "--root", root, *args],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=900,
                    check=False,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"lamina {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
            os.rename(os.path.join(tmp, "image.tar"), path)
        for old in CACHE_ROOT.glob(f"{stem}*.tar"):
            if old != path:
                old.unlink(missing_ok=True)
    return path


@pytest.fixture(scope="session", name="debian_image")
def debian_image_fixture() -> Path:
    """Path of the cached ``debian:bookworm`` OCI layout tar (see :func:`debian_archive`)."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    if not _have_debootstrap():
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    return debian_archive()


def load_debian(lamina: Lamina, archive: Path, ref: str = DEBIAN_REF) -> None:
    """Load the cached image into the `lamina` fixture's root as ``ref``."""
    lamina("load", "-q", "-i", str(archive))
    if ref != DEBIAN_REF:
        lamina("tag", DEBIAN_REF, ref)
