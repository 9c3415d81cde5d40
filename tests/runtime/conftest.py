"""Fixtures of the runtime tests: a private busybox rootfs per test, a container store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from runtime_support import Ran, Runner

from lamina.errors import NotFound
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.spec import RunOptions
from lamina.runtime.driver.runc import find_binary, select_runtime
from lamina.runtime.lifecycle import prepare_bundle, remove, run_foreground
from lamina.runtime.records.containers import ContainerStore


@pytest.fixture
def rootfs(busybox_rootfs: Path, tmp_path: Path) -> Path:
    """A copy of the session's busybox rootfs that this test may change."""
    dest = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(dest)], check=True)
    return dest


@pytest.fixture
def cstore(tmp_path: Path) -> ContainerStore:
    return ContainerStore(str(tmp_path / "root"))


@pytest.fixture
def run(cstore: ContainerStore, rootfs: Path, tmp_path: Path) -> Runner:
    """Create, prepare and run a container on the rootfs copy; return its output.

    ``run(*args, config=ContainerConfig(...), runtime="runc", **RunOptions fields)``;
    the container's record is removed afterwards unless ``keep=True``.
    """
    counter = [0]

    def go(
        *args: str,
        config: ContainerConfig | None = None,
        runtime: str = "runc",
        keep: bool = False,
        **fields: object,
    ) -> Ran:
        counter[0] += 1
        options = RunOptions(args=args, **fields)  # type: ignore[arg-type]
        c = cstore.create(
            image_ref="busybox:test",
            image_id="sha256:" + "0" * 64,
            runtime=runtime,
            rootfs=str(rootfs),
        )
        prepare_bundle(cstore, c, config or ContainerConfig(cmd=("sh",)), options)
        out_path = tmp_path / f"out{counter[0]}"
        err_path = tmp_path / f"err{counter[0]}"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            result = run_foreground(
                cstore,
                c,
                tty=options.tty,
                interactive=options.interactive,
                stdout=out.fileno(),
                stderr=err.fileno(),
            )
        c = cstore.get(c.id)
        if not keep:
            remove(cstore, c)
        return Ran(c, result, out_path.read_text(), err_path.read_text())

    return go


@pytest.fixture(params=["runc", "crun"])
def runtime(request: pytest.FixtureRequest, cstore: ContainerStore) -> str:
    """Each OCI runtime in turn, for tests that must hold under both (a host that
    cannot run crun skips it, which fails under CI)."""
    name: str = request.param
    if name == "crun":
        try:
            find_binary("crun")
        except NotFound:
            pytest.skip("crun is not installed")
        chosen, warning = select_runtime("crun", cstore.root)
        if chosen.name != "crun":
            pytest.skip(f"crun cannot run containers on this host: {warning}")
    return name
