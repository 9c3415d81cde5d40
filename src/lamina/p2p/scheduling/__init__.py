"""The scheduler's pure core: no sockets, no files, no clock of its own.

Rows (each imports only from rows below it):

- ``scheduler``: :class:`~lamina.p2p.scheduling.scheduler.Scheduler`, whose state
  changes only by events applied one at a time;
- ``policy``: the default parent-selection policy (Dragonfly's D2-2024 weights, the
  bad-node test);
- ``records``: the compact per-host, per-task and per-peer state (bitfields as ints)
  and its serialized form (what the Redis store keeps);
- ``fsm``: the peer and task state machines.
"""
