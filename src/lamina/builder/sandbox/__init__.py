"""Where RUN steps run: ``runner`` (runc on an overlay snapshot, output streamed),
``mounts`` (``RUN --mount`` cache, bind, secret, tmpfs), ``workbench`` (the snapshots,
workspaces and crash leftovers of a build)."""
