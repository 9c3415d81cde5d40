"""lamina.p2p: P2P distribution of blobs, the Dragonfly picture built for real.

A *task* is one blob, named by its digest (one layer is shared across registries,
repositories and tags). It is cut into pieces (:mod:`~lamina.p2p.pieces`). Peers are
registry-mirror proxies; a scheduler tells each peer which other peers (its
*parents*) to fetch pieces from, or to go back to the source; every piece is checked
against a digest the back-to-source peer computed from the source and the scheduler
handed out, never against what the sending parent claims.

The pure core (no sockets, no files):

- ``api``: the contract between the rooms (ids, states, schedules, Protocols);
- ``pieces``: piece size and spans from a blob's size;
- ``tokens``: swarm tokens (HMAC) that gate the piece servers and the scheduler;
- ``wire``: the scheduler's JSON wire format to and from ``api`` values;
- ``scheduling``: peer and task state machines, the parent-selection policy and the
  scheduler, whose state changes only by events applied one at a time.

The I/O around it, one subpackage each: ``service`` (the scheduler's HTTP server and
its state stores: memory, Redis), ``client`` (the scheduler client a peer uses),
``peer`` (pieces on disk, the piece server, the downloader, rate limits, the cache),
``mirror`` (the registry-mirror front a container runtime talks to). The wire
protocol is written down in ``docs/p2p.md``.

Nothing is imported here: each room is imported by name.
"""

__all__ = ["api", "pieces", "tokens", "wire"]
