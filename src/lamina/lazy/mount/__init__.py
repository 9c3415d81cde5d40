"""Mount mechanisms for lazy start: a read-only tree whose file data arrives on demand.

Two designs behind one contract (:mod:`.api`), so the loader can keep the faster one:

* ``fuse``  (:mod:`.fuse`): a pyfuse3 daemon serves metadata and data; misses call
  ``fill`` and land in a per-inode sparse cache file.
* ``erofs`` (:mod:`.erofs`): ``mkfs.erofs`` builds the metadata, the kernel serves it
  from a file-backed mount; file data lives in a sparse ``--blobdev`` file that a
  fanotify pre-content listener fills before the kernel reads it.

Rows: ``daemon`` (process, state, sweep) > ``fuse | erofs`` > ``cache | fanotify |
skeleton | localdir`` > ``api``.
"""
