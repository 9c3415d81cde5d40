"""Run plans: what a full ``lamina run`` of one image with the default options found
out, cached under ``<root>/cache/run/`` for :mod:`lamina.runtime.plans.replay`.

Why: a plain ``lamina run --rm IMAGE CMD`` resolves the image, checks its layers are
unpacked, reads its passwd file, builds the runtime spec... and imports the modules
(and dataclasses) that do all that, which on a small machine costs over 100 ms, twice
what bare ``runc run`` takes. Yet for one image and the default options all of it
comes out the same every time. So the first (slow, full) run writes a *plan*: the
image's snapshot chain, the finished ``config.json`` with a placeholder container id,
the init files, the runtime's argv.

A plan is used only while it provably still holds; else the full path runs and writes
a new one. It is keyed by the image reference as typed and is void when
``refs.json`` changed (a tag moved, an image was removed or added), when the host's
``/etc/hosts``/``/etc/resolv.conf``/seccomp profile/host name/kernel/RLIMIT_NOFILE
changed (the init files and spec depend on them), when the runtime binary is gone, or
when the snapshot chain in the metadata differs (checked under the metadata lock
before mounting). Light imports only, as the replay's.
"""

from __future__ import annotations

import os

from lamina.lightstd import dumps, loads
from lamina.runtime.records.fields import write_file_atomic
from lamina.stateroot import refs_file, run_plans_dir

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# Bump when what the full path puts in a spec changes, so older plans are not replayed.
PLAN_VERSION = 5  # 5: the default spec has a pids limit
# The container id written into a plan's spec in place of the real one.
SENTINEL = "0" * 64
# Its short id (the host name on a bridge network), and in the init files its address.
SHORT_SENTINEL = "shortid00000"
ADDRESS_SENTINEL = "<container-address>"
# The host's files the init files and the spec come from; the last is the default
# seccomp profile (lamina.runtime.bundle.security.seccomp.DEFAULT_PROFILE: not imported, as it
# pulls in json).
HOST_FILES = ("/etc/hosts", "/etc/resolv.conf", "/usr/share/containers/seccomp.json")
_MAX_PLAN = 4 << 20


# The option sets a plan may be made for besides the defaults: the name of each is
# part of the plan's file name (``lamina run --security-opt seccomp=unconfined``).
VARIANTS = ("", "unconfined")
# The --network modes a plan can be made for and replayed with (bridge: the default).
PLAN_NETWORKS = ("bridge", "host")


def plan_path(root: str, image: str, variant: str = "", network: str = "bridge") -> str | None:
    """Where the plan for ``image`` (as typed), ``variant`` (one of :data:`VARIANTS`)
    and ``--network network`` lives; None when the name is too long to be a file name."""
    name = image.encode().hex()
    if len(name) > 200 or variant not in VARIANTS or network not in PLAN_NETWORKS:
        return None
    suffix = f".{variant}" if variant else ""
    suffix += "" if network == "bridge" else f".{network}"
    return os.path.join(run_plans_dir(root), name + suffix + ".json")


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def refs_key(root: str) -> list[int] | None:
    """What identifies this version of ``refs.json`` (inode, size, mtime): a plan made
    under another version no longer proves which image a name means. Take it before
    resolving the image, so that a tag moved meanwhile voids the plan."""
    return _stat_key(refs_file(root))


def _nofile_hard() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def host_facts() -> dict[str, Any]:
    """What the init files and the spec of a default run depend on, besides the image."""
    uname = os.uname()
    return {
        "nodename": uname.nodename,
        # the seccomp profile's rules depend on the kernel version (minKernel)
        "kernel": uname.release,
        "files": {p: _stat_key(p) for p in HOST_FILES},
        "nofile": _nofile_hard(),
    }


def make_plan(
    image: str,
    *,
    refs_key: list[int] | None,
    record: dict[str, Any],
    runtime_argv: Sequence[str],
    parent: str,
    chain: Sequence[int],
    spec: dict[str, Any],
    container_id: str,
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    init_files: dict[str, str],
    host: dict[str, Any],
    variant: str = "",
    network: str | None = None,
    address: str | None = None,
    mode: str = "bridge",
) -> dict[str, Any] | None:
    """The plan of a finished full-path run of ``image`` (its container ``container_id``
    prepared with default options), or None when it cannot be replayed.

    ``network`` is the network the container was attached to (None: host networking)
    and ``address`` its address there: the replay attaches each container anew.
    ``mode`` is the ``--network`` it ran with (one of :data:`PLAN_NETWORKS`)."""
    short = container_id[:12]
    text = dumps(spec, sort_keys=True)
    text = text.replace(container_id, SENTINEL)
    if SHORT_SENTINEL in text or refs_key is None:
        return None
    text = text.replace(short, SHORT_SENTINEL)  # the host name, and HOSTNAME
    out = loads(text)
    out["process"]["args"] = None
    files = {}
    for name, written in init_files.items():
        if SHORT_SENTINEL in written or ADDRESS_SENTINEL in written:
            return None
        generic = written.replace(short, SHORT_SENTINEL)
        if address is not None:
            generic = generic.replace(address + "\t", ADDRESS_SENTINEL + "\t")
        files[name] = generic
    return {
        "version": PLAN_VERSION,
        "image": image,
        "variant": variant,
        "refs": refs_key,
        "host": host,
        "record": record,
        "runtime": list(runtime_argv),
        "parent": parent,
        "chain": list(chain),
        "spec": out,
        "entrypoint": list(entrypoint),
        "cmd": list(cmd),
        "init_files": files,
        "network": network,
        "mode": mode,
    }


def save_plan(root: str, plan: dict[str, Any]) -> None:
    path = plan_path(root, plan["image"], plan.get("variant", ""), plan["mode"])
    if path is None:
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # a cache: losing it to a power cut costs one slow run, so no fsync
    write_file_atomic(path, dumps(plan).encode(), durable=False)


def load_plan(
    root: str, image: str, variant: str = "", network: str = "bridge"
) -> dict[str, Any] | None:
    """The plan for ``image``, ``variant`` and ``--network network`` if there is one
    and it still holds (see the module doc)."""
    path = plan_path(root, image, variant, network)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_PLAN + 1)
        plan = loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("version") != PLAN_VERSION:
        return None
    if plan.get("image") != image or plan.get("variant") != variant:
        return None
    if plan.get("mode", "bridge") != network:
        return None
    if plan.get("refs") != refs_key(root):
        return None
    if plan.get("host") != host_facts():
        return None
    argv = plan.get("runtime")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    if not any(os.access(a, os.X_OK) for a in argv if a.startswith("/")):
        return None
    return plan
