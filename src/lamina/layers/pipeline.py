"""The one-pass layer pipeline: tar bytes in, compressed blob out, both digests on the way.

Commit, diff and import produce a tar stream with :class:`~lamina.layers.tar.stream.TarWriter`
and hand it to a :class:`LayerSink`. The sink hashes the uncompressed stream (the layer's
``diff_id``, image-spec config.md "rootfs"), compresses it, hashes the compressed bytes
(the descriptor's ``digest``) and writes them to an output, in one pass::

    with LayerSink(blob_writer, "gzip") as sink:
        writer = TarWriter(sink)
        ... writer.add(entry, file) ...
        writer.close()
        result = sink.close()      # LayerResult(diff_id, digest, size, ...)

Threads: the caller produces tar; one pipeline thread hashes the tar and feeds the
compressor; gzip deflates blocks on a pool (zstd uses its own workers). Hashing and
compression release the GIL, so production, hashing and compression overlap on two
cores. Queues are bounded (about 8 MiB of tar plus the compressor's blocks in flight).

The reverse, for apply: :func:`verified_layer_stream` decompresses a blob and checks the
``diff_id`` (and, if given, the blob's digest and size) when the stream reaches EOF.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol

from lamina.errors import DigestMismatch, InvalidArgument, SizeMismatch
from lamina.layers.api import CHUNK, DEFAULT_LIMITS, Limits, Readable
from lamina.layers.chunked_reader import ChunkedReader
from lamina.layers.compression.compress import Compressor, make_compressor
from lamina.layers.compression.decompress import DecompressedStream, open_decompressed
from lamina.oci.digest import Digest, Digester
from lamina.oci.mediatypes import OCI_LAYER_BY_COMPRESSION

_QUEUE_CHUNKS = 8  # tar chunks (~1 MiB each) waiting for the pipeline thread
_POLL = 0.1  # seconds between checks that the pipeline thread is still alive


class Output(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class LayerResult:
    """What one layer became: the descriptor fields and the config's diff_id."""

    diff_id: Digest  # sha256 of the uncompressed tar stream
    digest: Digest  # sha256 of the blob as written
    size: int  # bytes of the blob
    uncompressed_size: int
    media_type: str
    compression: str  # "gzip", "zstd" or "" (plain tar)


class _DigestingOutput:
    __slots__ = ("_hash", "_out", "digester")

    def __init__(self, out: Output, *, hash_it: bool = True) -> None:
        self._out = out
        self._hash = hash_it  # an uncompressed blob's digest is its diff_id: hash once
        self.digester = Digester()

    def write(self, data: bytes) -> None:
        if self._hash:
            self.digester.update(data)
        else:
            self.digester.size += len(data)
        self._out.write(data)


class LayerSink:
    """Takes raw tar bytes (it is the ``sink`` of a TarWriter) and produces a layer blob.

    ``write`` may block when the pipeline is behind (bounded memory) and re-raises any
    error of the pipeline thread. ``close`` finishes and returns the :class:`LayerResult`;
    ``abort`` (also called by ``__exit__`` on an exception) stops without finishing.
    ``output`` is written to from the pipeline thread and never closed here.
    """

    def __init__(
        self,
        output: Output,
        compression: str = "gzip",
        *,
        level: int | None = None,
        threads: int | None = None,
        queue_chunks: int = _QUEUE_CHUNKS,
    ) -> None:
        if compression not in OCI_LAYER_BY_COMPRESSION:
            raise InvalidArgument(f"unknown compression {compression!r}")
        self.compression = compression
        self.media_type = OCI_LAYER_BY_COMPRESSION[compression]
        self._out = _DigestingOutput(output, hash_it=bool(compression))
        self._diff = Digester()
        self._compressor: Compressor = make_compressor(
            compression, self._out, level=level, threads=threads
        )
        self._queue: queue.Queue[bytes | None] = queue.Queue(queue_chunks)
        self._stop = False
        self._finished = False
        self._result: LayerResult | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-pipeline")
        self._future: Future[None] = self._executor.submit(self._run)

    # --- the pipeline thread

    def _run(self) -> None:
        get = self._queue.get
        diff = self._diff
        compressor = self._compressor
        try:
            while (item := get()) is not None and not self._stop:
                diff.update(item)
                compressor.write(item)
            if self._stop:
                compressor.abort()
            else:
                compressor.close()
        except BaseException:
            compressor.abort()  # release the compressor's threads, then report
            raise

    # --- the caller's side

    def _put(self, item: bytes | None) -> None:
        while True:
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                if self._future.done():
                    self._future.result()  # raises the pipeline's error
                    raise InvalidArgument("layer pipeline stopped early") from None

    def write(self, data: bytes) -> None:
        if self._finished:
            raise InvalidArgument("LayerSink.write after close")
        if self._future.done():
            self._future.result()
            raise InvalidArgument("layer pipeline stopped early")
        if data:
            self._put(bytes(data) if not isinstance(data, bytes) else data)

    def close(self) -> LayerResult:
        """Finish the blob; returns the result (the same one if called again)."""
        if self._result is not None:
            return self._result
        if self._finished:
            raise InvalidArgument("LayerSink was aborted")
        self._finished = True
        try:
            self._put(None)
            self._future.result()
        finally:
            self._executor.shutdown(wait=True)
        self._result = LayerResult(
            diff_id=self._diff.digest(),
            digest=self._out.digester.digest() if self.compression else self._diff.digest(),
            size=self._out.digester.size,
            uncompressed_size=self._diff.size,
            media_type=self.media_type,
            compression=self.compression,
        )
        return self._result

    def abort(self) -> None:
        """Stop the pipeline without finishing the blob. Never raises the pipeline's error."""
        if self._finished:
            return
        self._finished = True
        self._stop = True
        while not self._future.done():
            try:
                self._queue.put(None, timeout=_POLL)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()  # make room: the thread drops what it gets now
        self._future.exception()  # wait for the thread; its error (if any) is moot now
        self._executor.shutdown(wait=True)

    def __enter__(self) -> LayerSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._result is None and not self._finished:
            self.close()


class VerifiedLayerStream(ChunkedReader):
    """A decompressed layer stream whose EOF checks the diff_id (and the blob digest).

    DigestMismatch (or SizeMismatch) is raised by the read that reaches EOF, so a reader
    that consumes the stream to the end (as ``read_entries`` does) verifies it.

    With ``read_ahead`` > 0 a daemon thread decompresses and hashes up to that many
    1 MiB chunks ahead of the reader, so decompression overlaps with whatever the reader
    does (an applier's file writes); its errors surface, in order, in the reader's thread.
    Call ``close`` (or read to EOF) to stop that thread.
    """

    __slots__ = (
        "_blob",
        "_diff",
        "_eof",
        "_error",
        "_expected",
        "_inner",
        "_queue",
        "_stop",
        "_verified",
        "diff_id",
    )

    def __init__(
        self,
        inner: DecompressedStream,
        expected_diff_id: Digest | None,
        blob: _CheckedBlob | None,
        read_ahead: int = 0,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._expected = expected_diff_id
        self._diff = Digester(expected_diff_id.algorithm if expected_diff_id else "sha256")
        self.diff_id: Digest | None = None  # set at EOF
        self._blob = blob
        self._verified = False
        self._eof = False
        self._stop = False
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] | None = None
        if read_ahead > 0:
            self._queue = queue.Queue(read_ahead)
            threading.Thread(target=self._pump, name="layer-read-ahead", daemon=True).start()

    @property
    def compression(self) -> str:
        return self._inner.kind

    @property
    def verified(self) -> bool:
        return self._verified

    def _at_eof(self) -> None:
        if self._verified:
            return
        if self._blob is not None:
            self._blob.check()
        got = self.diff_id = self._diff.digest()
        if self._expected is not None and got != self._expected:
            raise DigestMismatch(
                f"layer has diff_id {got}, expected {self._expected}",
                hint="the layer blob does not match the image config; fetch it again",
            )
        self._verified = True

    def _produce(self) -> bytes:
        data = self._inner.read(CHUNK)
        if data:
            self._diff.update(data)
        else:
            self._at_eof()
        return data

    def _pump(self) -> None:
        q = self._queue
        assert q is not None
        try:
            while not self._stop:
                item = self._produce()
                self._hand_over(q, item)
                if not item:
                    return
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the reader's thread
            self._error = exc
            self._hand_over(q, None)

    def _hand_over(self, q: queue.Queue[bytes | None], item: bytes | None) -> None:
        while not self._stop:
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _next(self) -> bytes:
        if self._queue is None:
            return self._produce()
        item = self._queue.get()
        if item is None:
            self._eof = True
            assert self._error is not None
            raise self._error
        return item

    def _fill(self) -> bool:
        if self._eof:
            if self._error is not None:
                raise self._error  # again, for a reader that reads past a failure
            if self._queue is None and not self._verified:
                self._at_eof()  # raise again for a reader that reads past a failed EOF
            return False
        chunk = self._next()
        if not chunk:
            self._eof = True
            return False
        self._buf, self._off = chunk, 0
        return True

    def close(self) -> None:
        """Stop the read-ahead thread (if any) and drop buffered data."""
        self._stop = True
        if self._queue is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
        self._buf = b""
        self._eof = True

    def __enter__(self) -> VerifiedLayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CheckedBlob:
    """The compressed side: counts and hashes the blob, checked at EOF."""

    __slots__ = ("_digest", "_digester", "_size", "_stream")

    def __init__(self, stream: Readable, digest: Digest | None, size: int | None) -> None:
        self._stream = stream
        self._digest = digest
        self._size = size
        self._digester = Digester(digest.algorithm if digest else "sha256")

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self._digester.update(data)
            if self._size is not None and self._digester.size > self._size:
                raise SizeMismatch(f"layer blob is longer than its descriptor's {self._size} bytes")
        return data

    def check(self) -> None:
        # drain: the decompressor may stop at its end marker before the blob's EOF
        while self.read(1 << 20):
            pass
        if self._size is not None and self._digester.size != self._size:
            raise SizeMismatch(f"layer blob has {self._digester.size} bytes, expected {self._size}")
        if self._digest is not None:
            got = self._digester.digest()
            if got != self._digest:
                raise DigestMismatch(f"layer blob has digest {got}, expected {self._digest}")


def verified_layer_stream(
    blob_stream: BinaryIO | Readable,
    compression: str | None,
    expected_diff_id: Digest | None,
    limits: Limits = DEFAULT_LIMITS,
    *,
    expected_digest: Digest | None = None,
    expected_size: int | None = None,
    read_ahead: int = 0,
) -> VerifiedLayerStream:
    """Decompress ``blob_stream`` (``compression=None`` detects it) and verify the
    uncompressed bytes against ``expected_diff_id`` at EOF (None: only compute it, into
    ``.diff_id``); also the blob itself against ``expected_digest``/``expected_size`` when
    given. All caps of ``limits`` apply. ``read_ahead=N`` decompresses up to N MiB ahead
    in a thread (see :class:`VerifiedLayerStream`)."""
    blob: _CheckedBlob | None = None
    source: BinaryIO | Readable = blob_stream
    if expected_digest is not None or expected_size is not None:
        blob = _CheckedBlob(blob_stream, expected_digest, expected_size)
        source = blob
    inner = open_decompressed(source, compression, limits)
    return VerifiedLayerStream(inner, expected_diff_id, blob, read_ahead)
