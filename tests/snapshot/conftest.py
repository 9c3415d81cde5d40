"""Fixtures of the snapshot tests: both snapshotters, mounting helpers, helper processes,
and a guard that fails any test leaving a mount behind."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from lamina.snapshot.api import Mount
from lamina.snapshot.base import DirSnapshotter
from lamina.snapshot.mount import mount_all, unmount_all
from lamina.snapshot.mountinfo import mountinfo
from lamina.snapshot.native import NativeSnapshotter
from lamina.snapshot.overlay import OverlaySnapshotter

KINDS = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}
Mounted = Callable[..., contextlib.AbstractContextManager[Path]]


@pytest.fixture
def lamina_root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture(params=sorted(KINDS))
def snapshotter(request: pytest.FixtureRequest, lamina_root: Path) -> DirSnapshotter:
    """Each test of the shared suite runs once per snapshotter."""
    return KINDS[request.param](str(lamina_root))  # type: ignore[abstract]


@pytest.fixture(autouse=True)
def no_leaked_mounts(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves anything mounted under its tmp_path (and clean it up)."""
    yield
    base = str(tmp_path.resolve())
    leaked = [m.mount_point for m in mountinfo() if m.mount_point.startswith(base + "/")]
    if leaked:
        unmount_all(base)
        pytest.fail(f"test leaked mounts: {leaked}")


@pytest.fixture
def mounted(tmp_path: Path) -> Mounted:
    """``with mounted(mounts) as path:`` mounts on a fresh directory, always unmounts."""
    counter = iter(range(1_000_000))

    @contextlib.contextmanager
    def mount(mounts: Sequence[Mount], **kwargs: object) -> Iterator[Path]:
        target = tmp_path / f"mnt{next(counter)}"
        target.mkdir()
        mount_all(mounts, str(target), **kwargs)  # type: ignore[arg-type]
        try:
            yield target
        finally:
            unmount_all(str(target))

    return mount
