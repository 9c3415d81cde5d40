"""The file side of a build step: snapshots in, one layer out.

:class:`Workbench` owns the snapshotter, the OCI runtime and the store for a build.
:meth:`Workbench.step` runs a piece of work on an active overlay snapshot stacked on a
layer chain (prepare -> mount -> work in the merged dir -> unmount -> diff the upper
dir into a layer blob -> commit the snapshot under the new ChainID, so the next step
stacks on it without unpacking anything). :meth:`Workbench.view` mounts a chain
read-only (``COPY --from``, ``RUN --mount=type=bind,from=``).

Chains are given as (layer descriptors, config); their snapshots are made on demand by
:func:`lamina.image.snapshots.unpack_to_snapshots`, one per ChainID, shared with
``lamina run``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lamina.builder.cache import CacheRecord
from lamina.errors import AlreadyExists, LaminaError, NotFound, Unsupported
from lamina.oci import mediatypes as mt
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.ids import chain_ids
from lamina.stateroot import build_tmp_dir, build_work_dir

if TYPE_CHECKING:
    from lamina.builder.sandbox.runner import Workspace
    from lamina.runtime.driver.runc import OCIRuntime
    from lamina.snapshot.api import Mount, Snapshotter
    from lamina.store.api import Store

KEY_PREFIX = "build-"
LABEL_OWNER = "lamina.builder/owner"


def rfc3339(epoch: float) -> str:
    """UTC, seconds, ``Z``: as :func:`lamina.image.importer.rfc3339` (not imported: a
    cached build must not load the layer writer)."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def oci_layer(d: Descriptor) -> Descriptor:
    """A Docker-typed layer as its OCI twin (same bytes): the built manifest is OCI."""
    compression = mt.LAYER_COMPRESSION.get(d.media_type)
    if compression is None or d.media_type.startswith("application/vnd.oci."):
        return d
    return Descriptor(mt.OCI_LAYER_BY_COMPRESSION[compression], d.digest, d.size)


class Workbench:
    def __init__(
        self,
        store: Store,
        *,
        compression: str = "gzip",
        source_date_epoch: int | None = None,
        runtime: str = "runc",
    ) -> None:
        self.store = store
        self.root = store.root
        self.compression = compression
        self.epoch = source_date_epoch
        self._runtime_name = runtime
        self._snap: Snapshotter | None = None
        self._runtime: OCIRuntime | None = None
        self._lock = threading.Lock()
        self._active: set[Workspace] = set()

    # ------------------------------------------------------------------ lazy parts

    @property
    def snapshotter(self) -> Snapshotter:
        with self._lock:
            return self._snapshotter()

    def _snapshotter(self) -> Snapshotter:
        if self._snap is None:
            if os.environ.get("LAMINA_SNAPSHOTTER", "overlay") != "overlay":
                raise Unsupported(
                    "lamina build needs the overlay snapshotter",
                    hint="unset LAMINA_SNAPSHOTTER",
                )
            from lamina.snapshot.overlay import OverlaySnapshotter

            self._snap = OverlaySnapshotter(self.root)
        return self._snap

    @property
    def runtime(self) -> OCIRuntime:
        with self._lock:
            if self._runtime is None:
                from lamina.runtime.driver.runc import select_runtime

                self._runtime, _ = select_runtime(self._runtime_name, self.root)
            return self._runtime

    def abort(self) -> None:
        """Kill the processes of the steps running now (other threads' RUNs end with
        an error); for Ctrl-C of a build whose stages run in threads."""
        with self._lock:
            active, runtime = list(self._active), self._runtime
        if runtime is None:
            return
        for ws in active:
            with contextlib.suppress(LaminaError):
                runtime.kill(ws.container_id, signal.SIGKILL)

    def now(self) -> str:
        return rfc3339(self.epoch if self.epoch is not None else time.time())

    # ------------------------------------------------------------------ crash leftovers

    def remove_stale(self) -> int:
        """Remove what killed builds left: workspaces (and what runc still runs in
        them), their mounts, and their active snapshots. Cheap when there is nothing."""
        removed = self._remove_stale_tmp()
        work = build_work_dir(self.root)
        if not os.path.isdir(work) or not os.listdir(work):
            return removed
        from lamina.builder.sandbox.runner import stale_workspaces
        from lamina.sysinfo import owner_alive

        for ws in stale_workspaces(self.root):
            key = ws.read_owner().get("snapshot")
            ws.remove(self.runtime)
            if key:
                with contextlib.suppress(NotFound):
                    self.snapshotter.remove(key)
            removed += 1
        if removed:
            for info in list(self.snapshotter.walk()):
                owner = info.labels.get(LABEL_OWNER)
                if info.name.startswith(KEY_PREFIX) and owner and not owner_alive(owner):
                    with contextlib.suppress(NotFound):
                        self.snapshotter.remove(info.name)
                        removed += 1
        return removed

    def _remove_stale_tmp(self) -> int:
        """Temp dirs (heredoc sources, downloads) of killed builds: ``<owner>.<hex>``."""
        base = build_tmp_dir(self.root)
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return 0
        from lamina.sysinfo import owner_alive

        removed = 0
        for name in names:
            if not owner_alive(name.rpartition(".")[0]):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
                removed += 1
        return removed

    # ------------------------------------------------------------------ chains

    def materialize(self, layers: Sequence[Descriptor], config: ImageConfig) -> str | None:
        """The committed snapshot of the chain (None for no layers), unpacked if needed."""
        if not layers:
            return None
        name = str(chain_ids(config.diff_ids)[-1])
        snap = self.snapshotter
        with contextlib.suppress(NotFound):
            snap.stat(name)
            return name
        from lamina.image.images import Image
        from lamina.image.snapshots import unpack_to_snapshots
        from lamina.oci.manifest import Manifest

        data = config.to_bytes()
        desc = Descriptor(mt.OCI_CONFIG, Digest.from_bytes(data), len(data))
        manifest = Manifest(config=desc, layers=tuple(layers))
        image = Image((), desc, desc, manifest, config)
        return unpack_to_snapshots(self.store, image, snap)

    def _stack(
        self,
        make: Callable[..., list[Mount]],
        key: str,
        top: str | None,
        layers: Sequence[Descriptor],
        config: ImageConfig,
    ) -> list[Mount]:
        """``prepare``/``view`` on ``top``; a ``lamina prune`` that removed ``top``
        between its unpack and now (nothing was stacked on it yet) is survived by
        unpacking it again, once."""
        from lamina.sysinfo import owner_label

        labels = {LABEL_OWNER: owner_label()}
        try:
            return make(key, top, labels=labels)
        except NotFound:
            if top is None:
                raise
            return make(key, self.materialize(layers, config), labels=labels)

    @contextmanager
    def view(self, layers: Sequence[Descriptor], config: ImageConfig) -> Iterator[str]:
        """The chain mounted read-only; yields the mount point."""
        from lamina.builder.sandbox.runner import Workspace
        from lamina.snapshot.mount import mount_all, unmount

        top = self.materialize(layers, config)
        snap = self.snapshotter
        key = f"{KEY_PREFIX}view-{os.urandom(8).hex()}"
        ws = Workspace.create(self.root, key)
        try:
            mounts = self._stack(snap.view, key, top, layers, config)
            try:
                mount_all(mounts, ws.rootfs)
                try:
                    yield ws.rootfs
                finally:
                    unmount(ws.rootfs)
            finally:
                with contextlib.suppress(NotFound):
                    snap.remove(key)
        finally:
            ws.remove(None)

    def step(
        self,
        layers: Sequence[Descriptor],
        config: ImageConfig,
        work: Callable[[Workspace, str], Callable[[], None] | None],
    ) -> CacheRecord:
        """Run ``work(workspace, upper_dir)`` with the chain mounted read-write at
        ``workspace.rootfs``; ``work`` may return a function to call once the root is
        unmounted (stub pruning). Returns the record of the layer the changes made (no
        layer when nothing changed)."""
        from lamina.builder.sandbox.runner import Workspace
        from lamina.image.layer_io import write_layer
        from lamina.image.snapshots import LABEL_DIFF_ID
        from lamina.layers.diff import diff_overlay_upper
        from lamina.layers.tar import TarWriter
        from lamina.snapshot.mount import mount_all, unmount

        top = self.materialize(layers, config)
        snap = self.snapshotter
        key = f"{KEY_PREFIX}{os.urandom(8).hex()}"
        ws = Workspace.create(self.root, key)
        created = self.now()
        with self._lock:
            self._active.add(ws)
        try:
            mounts = self._stack(snap.prepare, key, top, layers, config)
            try:
                upper = snap.upper_dir(key)
                mount_all(mounts, ws.rootfs)
                try:
                    after = work(ws, upper)
                finally:
                    unmount(ws.rootfs)
                if after is not None:
                    after()
                if not os.listdir(upper):
                    snap.remove(key)
                    return CacheRecord(None, None, created)
                clamp = self.epoch * 1_000_000_000 if self.epoch is not None else None

                def produce(writer: TarWriter) -> None:
                    diff_overlay_upper(upper, writer, clamp_mtime_ns=clamp)

                layer = write_layer(self.store, produce, self.compression)
                chain = str(chain_ids((*config.diff_ids, layer.diff_id))[-1])
                try:
                    snap.commit(chain, key, labels={LABEL_DIFF_ID: str(layer.diff_id)})
                except AlreadyExists:
                    snap.remove(key)  # the same layer was made before (or concurrently)
                return CacheRecord(layer.descriptor, layer.diff_id, created)
            except BaseException:
                with contextlib.suppress(LaminaError):
                    snap.remove(key)
                raise
        finally:
            with self._lock:
                self._active.discard(ws)
            ws.remove(self._runtime)
