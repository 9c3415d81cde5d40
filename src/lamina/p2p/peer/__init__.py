"""lamina.p2p.peer: a peer's data plane (pieces on disk, the piece server, the
downloader, rate limits, the cache).

What the front (``lamina.p2p.mirror``, the CLI) wires together::

    from lamina.p2p.peer.storage import PieceStore
    from lamina.p2p.peer.rates import TokenBucket, parse_rate, parse_size
    from lamina.p2p.peer.server import UploadGate, add_piece_routes
    from lamina.p2p.peer.engine import PeerEngine

    store = PieceStore(cache_dir, cache_size=parse_size("20GiB"))   # scans the cache
    engine = PeerEngine(
        store, scheduler, host, swarm_key,                # scheduler: api.SchedulerClient
        download_limit=TokenBucket.of(parse_rate("200Mbit")),         # or None: unlimited
    )
    await engine.start()                                  # its HTTP session; announces the host
    add_piece_routes(
        app, store, swarm_key,
        UploadGate(slots=host.upload_slots, limiter=TokenBucket.of(parse_rate("50Mbit"))),
        on_seed=engine.seed, counters=engine.counters,
    )
    async for chunk in engine.open(api.BlobRequest(task, size, source, headers, start, end)):
        ...                                               # verified bytes, in order
    engine.counters.bytes_from_source / .bytes_from_peers / .bytes_uploaded
    await engine.close()                                  # leaves the swarm, closes the session

Rooms:

- ``rates``: ``parse_rate`` ("50Mbit", "10MiB", "1.5Gbit/s" -> bytes a second),
  ``parse_size`` ("20GiB"), ``TokenBucket`` (upload and download limits).
- ``storage``: ``PieceStore``: one preallocated file a task, written with ``pwrite``
  at piece offsets; a bitfield marked only after the piece is on disk (a killed peer
  never trusts a piece it did not finish); the blob's sha256 checked before it moves to
  ``blobs/sha256/<hex>``; LRU eviction to ``cache_size`` that never touches a task in use.
- ``server``: ``add_piece_routes``: ``GET /p2p/v1/tasks/{task}/bitfield`` (long poll),
  ``GET /p2p/v1/tasks/{task}/pieces/{n}`` (sendfile), ``POST /p2p/v1/tasks/{task}/seed``;
  swarm tokens, upload slots, the upload limit (``docs/p2p.md``).
- ``swarm``: fetches one task's pieces from its parents: up to 8 at once, rarest first,
  endgame, each piece checked against the scheduler's digest before it is written.
- ``source``: the back-to-source fetch: the upstream blob streamed into the piece file,
  each piece's sha256 computed on the way.
- ``engine``: ``PeerEngine``, the :class:`lamina.p2p.api.BlobSource` over a
  :class:`lamina.p2p.api.SchedulerClient`.
"""
