"""The layout of lamina's state root (ARCHITECTURE.md §4): every file and directory
lamina keeps under ``--root``, named here once, so that the store, the snapshotters,
the runtime and ``lamina run``'s fast path can never drift apart::

    blobs/<algorithm>/<encoded>     the content store's blobs      (lamina.store.local)
    ingest/<random>.tmp             blobs being written, flock'ed by their writer
    locks/gc.lock, locks/refs.lock  the store's locks               (lamina.store.locks)
    refs.json                       the ref index                   (lamina.store.refs)
    snapshots/                      the overlay snapshotter's root  (lamina.snapshot)
        metadata.json, metadata.lock    the snapshot records, schema SNAPSHOT_SCHEMA_VERSION
        <id>/fs, <id>/work              one snapshot's content and overlay work dir
        tmp-<random>/                   a snapshot being made or deleted
    snapshots-native/               the native snapshotter's root (the same inside)
    containers/.lock                held while names are taken or records change
    containers/<id>/                one container (lamina.runtime.records.containers):
        state.json, exit.json, log, runtime.log, bundle/config.json, bundle/pid,
        rootfs/, hosts, resolv.conf, hostname
    runtime/<runc|crun>/            the OCI runtime's own state (its ``--root``)
    runtime/netns/<id>              a container's network namespace (bind mount)   (lamina.network)
    runtime/netavark/               netavark's and aardvark-dns's run-time config
    networks/<name>.json            a network's config (netavark's format)         (lamina.network)
    networks/attachments/<id>.json  a container's attachment: its lease, ports, netns
    cache/run/<hex of image>.json   run plans of the fast path  (lamina.runtime.plans)
    cache/build/, cache/build-*/    the builder's caches (records, context, COPY --from, mounts)
    cache/registry-blob-sources.json  which repository each blob was seen in (cross-repo mounts)
    build/work/<id>/, build/tmp/    build workspaces and temp files

Directories holding unpacked layers or container roots are 0700. Only :mod:`os` is
imported: the fast path imports this module, and its start-up time is a feature.
"""

from __future__ import annotations

import os

# ---------------------------------------------------------------------- the store

BLOBS = "blobs"
INGEST = "ingest"
LOCKS = "locks"
REFS = "refs.json"
GC_LOCK = "gc.lock"
REFS_LOCK = "refs.lock"

# ---------------------------------------------------------------------- snapshots

SNAPSHOTS = "snapshots"
SNAPSHOTS_NATIVE = "snapshots-native"
SNAPSHOT_METADATA = "metadata.json"
SNAPSHOT_LOCK = "metadata.lock"
# Bump when the metadata document changes; both its readers check it
# (lamina.snapshot.metadata and lamina.snapshot.raw_metadata).
SNAPSHOT_SCHEMA_VERSION = 1
SNAPSHOT_TMP_PREFIX = "tmp-"
SNAPSHOT_FS = "fs"  # in <id>/: the snapshot's content (0755: it becomes a container's /)
SNAPSHOT_WORK = "work"  # in <id>/: overlay's work dir
# The options of every overlay mount of a snapshot; why each one is there is explained
# in lamina.snapshot.mount (index=off: layers are shared by many upper dirs;
# redirect_dir/metacopy=off: the upper dir must stay a plain OCI-convertible tree).
OVERLAY_OPTIONS = ("index=off", "redirect_dir=off", "metacopy=off")
# The key of a container's active snapshot is this prefix and the container id.
CONTAINER_KEY_PREFIX = "container-"

# ---------------------------------------------------------------------- containers

CONTAINERS = "containers"
CONTAINERS_LOCK = ".lock"
STATE_FILE = "state.json"
EXIT_FILE = "exit.json"
LOG_FILE = "log"
RUNTIME_LOG = "runtime.log"
BUNDLE = "bundle"
ROOTFS = "rootfs"
CONFIG_FILE = "config.json"  # in bundle/ (runtime-spec bundle.md)
PID_FILE = "pid"  # in bundle/
# The init files of a container, in its directory (bind-mounted at /etc/<name>).
INIT_FILE_NAMES = ("hosts", "resolv.conf", "hostname")

RUNTIME_STATE = "runtime"
NETNS = os.path.join(RUNTIME_STATE, "netns")
NETAVARK_CONFIG = os.path.join(RUNTIME_STATE, "netavark")
NETWORKS = "networks"
NETWORK_ATTACHMENTS = os.path.join(NETWORKS, "attachments")
RUN_PLANS = os.path.join("cache", "run")

# ---------------------------------------------------------------------- the builder

BUILD_WORK = os.path.join("build", "work")
BUILD_TMP = os.path.join("build", "tmp")
BUILD_MOUNT_CACHES = os.path.join("cache", "build-mounts")  # RUN --mount=type=cache
BUILD_CACHE = os.path.join("cache", "build")  # step cache records
BUILD_CONTEXT_CACHE = os.path.join("cache", "build-context")  # context checksum stat cache
BUILD_FROM_CACHE = os.path.join("cache", "build-from")  # COPY --from trees
# ---------------------------------------------------------------------- transfers

BLOB_SOURCES = os.path.join("cache", "registry-blob-sources.json")  # for cross-repo mounts


def blobs_dir(root: str) -> str:
    return os.path.join(root, BLOBS)


def ingest_dir(root: str) -> str:
    return os.path.join(root, INGEST)


def locks_dir(root: str) -> str:
    return os.path.join(root, LOCKS)


def refs_file(root: str) -> str:
    return os.path.join(root, REFS)


def snapshots_dir(root: str, subdir: str = SNAPSHOTS) -> str:
    """A snapshotter's root: ``subdir`` is SNAPSHOTS (overlay) or SNAPSHOTS_NATIVE."""
    return os.path.join(root, subdir)


def snapshot_dir(snapshots: str, sid: int) -> str:
    """The directory of snapshot ``sid`` under a snapshotter root."""
    return os.path.join(snapshots, str(sid))


def snapshot_fs(snapshots: str, sid: int) -> str:
    return os.path.join(snapshots, str(sid), SNAPSHOT_FS)


def snapshot_work(snapshots: str, sid: int) -> str:
    return os.path.join(snapshots, str(sid), SNAPSHOT_WORK)


def container_key(container_id: str) -> str:
    """The key of the active snapshot a container's root is mounted from."""
    return CONTAINER_KEY_PREFIX + container_id


def containers_dir(root: str) -> str:
    return os.path.join(root, CONTAINERS)


def container_dir(root: str, container_id: str, *parts: str) -> str:
    """``containers/<id>/<parts...>``; the caller has checked ``container_id``."""
    return os.path.join(root, CONTAINERS, container_id, *parts)


def runtime_state_dir(root: str, runtime: str) -> str:
    """The ``--root`` of the OCI runtime ``runtime`` (runc, crun)."""
    return os.path.join(root, RUNTIME_STATE, runtime)


def netns_path(root: str, container_id: str) -> str:
    """The bind-mounted network namespace of a container (the runtime joins it)."""
    return os.path.join(root, NETNS, container_id)


def netavark_config_dir(root: str) -> str:
    return os.path.join(root, NETAVARK_CONFIG)


def networks_dir(root: str) -> str:
    return os.path.join(root, NETWORKS)


def attachments_dir(root: str) -> str:
    return os.path.join(root, NETWORK_ATTACHMENTS)


def run_plans_dir(root: str) -> str:
    return os.path.join(root, RUN_PLANS)


def build_work_dir(root: str) -> str:
    return os.path.join(root, BUILD_WORK)


def build_tmp_dir(root: str) -> str:
    return os.path.join(root, BUILD_TMP)


def build_mount_caches_dir(root: str) -> str:
    return os.path.join(root, BUILD_MOUNT_CACHES)
