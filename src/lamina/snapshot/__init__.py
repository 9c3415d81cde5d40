"""Snapshots: layers and container roots as directories, returned as mounts.

Contracts in :mod:`lamina.snapshot.api`; implementations :mod:`~lamina.snapshot.overlay`
(overlayfs) and :mod:`~lamina.snapshot.native` (full copies); :mod:`~lamina.snapshot.mount`
is the only code that calls mount(2). Nothing is imported here, so that a command pays
only for the modules it uses.
"""
