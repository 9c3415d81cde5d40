"""Writing an OCI bundle (runtime-spec bundle.md) for a root filesystem already in
place: the one implementation behind ``lamina run``
(:func:`lamina.runtime.lifecycle.prepare_bundle`) and the builder's RUN steps
(:mod:`lamina.builder.sandbox.runner`).

In order: resolve the user in the root's own ``/etc/passwd`` and ``/etc/group``, make
the working directory inside the root, write the init files (``hosts``,
``resolv.conf``, ``hostname``) into a directory of lamina's, read the seccomp profile
and devices the options ask for, build ``config.json``
(:func:`lamina.runtime.bundle.spec.build_spec`), append the caller's extra mounts and
write it, crash-safely, into the bundle directory.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lamina.runtime.records.fields import write_file_atomic
from lamina.stateroot import CONFIG_FILE

if TYPE_CHECKING:
    from lamina.oci.config import ContainerConfig
    from lamina.runtime.bundle.spec import RunOptions


def nofile_limit() -> int:
    """Docker's RLIMIT_NOFILE, capped at ours: a runtime cannot raise the hard limit."""
    from lamina.runtime.bundle.spec import NOFILE_LIMIT

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)


def write_bundle(
    bundle: str,
    *,
    rootfs: str,
    init_dir: str,
    config: ContainerConfig,
    options: RunOptions,
    user: str,
    workdir: str,
    hostname: str,
    extra_mounts: Sequence[Mapping[str, Any]] = (),
    attachment: Mapping[str, Any] | None = None,
    cgroups_path: str | None = None,
) -> dict[str, Any]:
    """Write ``<bundle>/config.json`` for the process ``config`` and ``options`` describe,
    run as ``user`` (``-u`` text: name, uid, ``user:group``...) in ``workdir`` (made
    inside ``rootfs`` if missing); return the spec.

    The caller picks ``user`` and ``workdir`` by its own rules (``docker run``'s ``-u``
    and ``-w`` over the image's, or a build step's USER and WORKDIR). ``extra_mounts``
    are runtime-spec mount objects added after the default and init-file mounts.
    ``attachment`` is the container's network attachment (lamina.network): its
    namespace is joined and its address and DNS go into the init files.
    ``cgroups_path`` is the spec's ``linux.cgroupsPath`` (default: the runtime's choice).
    """
    from lamina.runtime.bundle.initlayer import write_init_files
    from lamina.runtime.bundle.security.options import gather
    from lamina.runtime.bundle.spec import build_spec
    from lamina.runtime.bundle.users import prepare_workdir, resolve_user

    # the primary group among the supplementary ones, as Docker and BuildKit do
    resolved = resolve_user(rootfs, user, primary_in_groups=True)
    cwd = prepare_workdir(rootfs, workdir)
    init_files = write_init_files(
        init_dir,
        hostname,
        options.network,
        attachment=attachment,
        add_hosts=options.add_hosts,
        dns=options.dns,
        dns_search=options.dns_search,
    )
    spec = build_spec(
        config,
        options,
        rootfs=rootfs,
        user=resolved,
        init_files=init_files,
        hostname=hostname,
        cwd=cwd,
        nofile=nofile_limit(),
        host_security=gather(options.security),
        netns=attachment.get("netns") if attachment else None,
        cgroups_path=cgroups_path,
    )
    spec["mounts"].extend(dict(m) for m in extra_mounts)
    path = os.path.join(bundle, CONFIG_FILE)
    write_file_atomic(path, json.dumps(spec, indent=1).encode(), 0o600)
    return spec
