"""lamina.lazy: lazy start (issue 14), the Nydus picture built for real.

So far the pure format (``format/``) and the range reader (``reader``, over the
``ChunkFetcher`` of ``api``): the bootstrap (the merged tree's metadata and
each file's chunk list, layout v1 in ``format/layout.py``, docs/lazy.md) and data
blobs of independently compressed, individually verifiable chunks. The converter,
``convert`` makes a lazy image in the store (no CLI yet). ``mount/`` holds the two
mount mechanisms measured so far (a pyfuse3 tree; EROFS metadata with data filled
through fanotify pre-content events), not yet wired to the format.

Nothing is imported here: each room is imported by name.
"""

__all__ = ["api", "convert", "format", "mount", "reader"]
