"""Running containers: OCI runtime-spec bundles, the runc/crun driver, container state.

- :mod:`lamina.runtime.spec` (pure): run options and the ``config.json`` of a bundle,
  with Docker's ENTRYPOINT/CMD rules, environment, mounts, namespaces and defaults.
- :mod:`lamina.runtime.users`: ``-u``/``USER`` resolved from the image's own
  ``/etc/passwd`` and ``/etc/group`` (read inside the root, capped), WORKDIR creation.
- :mod:`lamina.runtime.initlayer`: ``/etc/hosts``, ``/etc/resolv.conf``,
  ``/etc/hostname`` and the mount-point placeholders of the init layer.
- :mod:`lamina.runtime.runc`: the OCI runtime driver (runc, crun).
- :mod:`lamina.runtime.containers`: container records on disk, names, lookup.
- :mod:`lamina.runtime.monitor`: the keeper process of a detached container.
- :mod:`lamina.runtime.lifecycle`: the steps the CLI calls (create, bundle, run, start,
  exec, stop, kill, remove, logs).
"""
