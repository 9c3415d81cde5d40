"""S3 clients against a real SeaweedFS (``weed mini``), on loopback: the hand-written
SigV4 client lamina had (loaded from git at ``BASELINE``), aiobotocore (through the
driver's own client module, as the registry uses it) and obstore (``uv sync --group
bench`` installs it). Every PUT signs its payload's SHA-256, as the driver does.

Each contender runs in its own child process per round (rounds interleaved A B C A B C,
fresh key prefix each time) and does, in this order:

- PUT of a 256 MiB blob streamed from a file (obstore cannot stream a single PUT: it
  holds the body whole unless it goes multipart, so it gets its own multipart put, two
  parts in flight: its default of 12 buffered 256 MB for this blob);
- GET of it streamed in 1 MiB reads (throughput);
- many small (4 KiB) objects: PUT, GET, HEAD each, one at a time (ops/s);
- a multipart upload of 64 MiB in 8 MiB parts from a file;
- assembling 4 stored 16 MiB objects into one (what the driver's finish does with an
  upload's pieces): UploadPartCopy, server-side; obstore has no UploadPartCopy, so its
  bytes go down and up again;
- listing the small objects (ListObjectsV2 pages of 1000; keys/s);
- RSS after the client is made, and peak RSS (VmHWM) at the end.

Medians over the rounds; the summary line gives each contender over the hand-written
one (higher is better, except RSS). SeaweedFS keeps its data on a private tmpfs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import CACHE, REPO, RESULTS, fresh, tmpfs

ROUNDS = int(os.environ.get("LAMINA_BENCH_ROUNDS", "3"))
BLOB_MIB = int(os.environ.get("LAMINA_BENCH_S3_BLOB_MIB", "256"))
SMALL = int(os.environ.get("LAMINA_BENCH_S3_SMALL", "1200"))  # > 1000: two listing pages
MULTIPART_MIB = 64
PART_MIB = 8
COPY_SOURCES = 4  # 16 MiB objects assembled server-side
MIB = 1 << 20
# The last commit with the hand-written client (src/lamina/registry/storage/s3/client.py).
BASELINE = "48d2c4f4d42a167a73dc2ce148b6b26d7d41b8eb"
CONTENDERS = ("handwritten", "aiobotocore", "obstore")
BASELINE_NAME = "handwritten"


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# -- contenders (each runs in a child: python -m bench.s3 worker NAME ...) --------------


class _Ops:
    """What every contender implements, blocking, on one bucket."""

    def put_file(self, key: str, path: Path) -> None: ...
    def get_stream(self, key: str) -> int: ...
    def put_small(self, key: str, data: bytes) -> None: ...
    def get_small(self, key: str) -> bytes: ...
    def head(self, key: str) -> int: ...
    def multipart_file(self, key: str, path: Path, part: int) -> None: ...
    def part_copy(self, key: str, sources: list[str]) -> None: ...
    def list_keys(self, prefix: str) -> int: ...
    def delete_prefix(self, prefix: str) -> None: ...


def _load_baseline(where: Path) -> Any:
    """The hand-written client as it was at BASELINE, as package ``_s3_baseline``."""
    pkg = where / "_s3_baseline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("client", "sign"):
        text = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "show",
                f"{BASELINE}:src/lamina/registry/storage/s3/{name}.py",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        text = text.replace("lamina.registry.storage.s3.sign", "_s3_baseline.sign")
        (pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(where))
    import _s3_baseline.client as client  # type: ignore[import-not-found]
    import _s3_baseline.sign as sign  # type: ignore[import-not-found]

    return client, sign


class Handwritten(_Ops):
    def __init__(self, endpoint: str, bucket: str, key: str, secret: str, tmp: Path) -> None:
        client, sign = _load_baseline(tmp)
        self.mod = client
        self.c = client.S3Client(endpoint, bucket, sign.Credentials(key, secret))

    def put_file(self, key: str, path: Path) -> None:
        with path.open("rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()  # as its driver signed pieces
            self.c.put(key, self.mod.FileBody(f, 0, path.stat().st_size), payload_sha256=sha)

    def get_stream(self, key: str) -> int:
        answer = self.c.request("GET", key)
        n = 0
        try:
            while block := answer.read(MIB):
                n += len(block)
        finally:
            answer.close()
        return n

    def put_small(self, key: str, data: bytes) -> None:
        self.c.put(key, data)

    def get_small(self, key: str) -> bytes:
        return bytes(self.c.get_bytes(key, MIB))

    def head(self, key: str) -> int:
        return int(self.c.head(key).size)

    def multipart_file(self, key: str, path: Path, part: int) -> None:
        upload_id = self.c.create_multipart(key)
        etags = []
        with path.open("rb") as f:
            size = path.stat().st_size
            for number, offset in enumerate(range(0, size, part), 1):
                body = self.mod.FileBody(f, offset, min(part, size - offset))
                answer = self.c._empty(
                    "PUT", key, query={"partNumber": str(number), "uploadId": upload_id}, body=body
                )
                etags.append(answer["etag"])
        self.c.complete_multipart(key, upload_id, etags)

    def part_copy(self, key: str, sources: list[str]) -> None:
        upload_id = self.c.create_multipart(key)
        etags = [self.c.upload_part_copy(key, upload_id, n, s) for n, s in enumerate(sources, 1)]
        self.c.complete_multipart(key, upload_id, etags)

    def list_keys(self, prefix: str) -> int:
        return sum(1 for i in self.c.list_objects(prefix) if not isinstance(i, str))

    def delete_prefix(self, prefix: str) -> None:
        keys = [i.key for i in self.c.list_objects(prefix) if not isinstance(i, str)]
        self.c.delete_many(keys)


class Aiobotocore(_Ops):
    """aiobotocore as the driver uses it: lamina's S3Client (its private event loop, its
    botocore configuration); the one call the driver never makes goes through ``_run``."""

    def __init__(self, endpoint: str, bucket: str, key: str, secret: str, tmp: Path) -> None:
        from lamina.registry.storage.s3.client import Credentials, S3Client

        self.c = S3Client(endpoint, bucket, Credentials(key, secret))
        self.bucket = bucket
        del tmp

    def put_file(self, key: str, path: Path) -> None:
        with path.open("rb") as f:
            self.c.put(key, f)

    def get_stream(self, key: str) -> int:
        stream = self.c.get_stream(key, 0, None)
        assert stream is not None
        n = 0
        while block := self.c.read_body(stream.body, MIB):
            n += len(block)
        return n

    def put_small(self, key: str, data: bytes) -> None:
        self.c.put(key, data)

    def get_small(self, key: str) -> bytes:
        return self.c.get_bytes(key, MIB)

    def head(self, key: str) -> int:
        info = self.c.head(key)
        assert info is not None
        return info.size

    def multipart_file(self, key: str, path: Path, part: int) -> None:
        upload_id = self.c.create_multipart(key)
        etags = []
        with path.open("rb") as f:
            size = path.stat().st_size
            for number, offset in enumerate(range(0, size, part), 1):
                f.seek(offset)
                body = _FileSlice(f, min(part, size - offset))
                answer = self.c._run(
                    "part",
                    lambda c, n=number, b=body: c.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=b
                    ),
                )
                etags.append(answer["ETag"])
        self.c.complete_multipart(key, upload_id, etags)

    def part_copy(self, key: str, sources: list[str]) -> None:
        upload_id = self.c.create_multipart(key)
        etags = [self.c.upload_part_copy(key, upload_id, n, s) for n, s in enumerate(sources, 1)]
        self.c.complete_multipart(key, upload_id, etags)

    def list_keys(self, prefix: str) -> int:
        return sum(1 for i in self.c.list_objects(prefix) if not isinstance(i, str))

    def delete_prefix(self, prefix: str) -> None:
        self.c.delete_many([i.key for i in self.c.list_objects(prefix) if not isinstance(i, str)])


class _FileSlice(io.RawIOBase):
    """``length`` bytes of an open file from where it stands, read in pieces (an IOBase:
    aiohttp streams only those)."""

    def __init__(self, f: Any, length: int) -> None:
        super().__init__()
        self.f, self.start, self.length, self.left = f, f.tell(), length, length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self.left if size < 0 else min(size, self.left)
        data: bytes = self.f.read(n) if n > 0 else b""
        self.left -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = offset if whence == 0 else self.length - self.left + offset
        if whence == 2:
            pos = self.length + offset
        self.f.seek(self.start + pos)
        self.left = self.length - pos
        return pos

    def tell(self) -> int:
        return self.length - self.left


class Obstore(_Ops):
    def __init__(self, endpoint: str, bucket: str, key: str, secret: str, tmp: Path) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.s = S3Store(
            bucket,
            endpoint=endpoint,
            access_key_id=key,
            secret_access_key=secret,
            region="us-east-1",
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )
        del tmp

    def put_file(self, key: str, path: Path) -> None:
        # A single PUT is materialised whole by obstore: streaming means multipart.
        with path.open("rb") as f:
            self.obs.put(self.s, key, f, use_multipart=True, chunk_size=16 * MIB, max_concurrency=2)

    def get_stream(self, key: str) -> int:
        return sum(len(b) for b in self.obs.get(self.s, key).stream(min_chunk_size=MIB))

    def put_small(self, key: str, data: bytes) -> None:
        self.obs.put(self.s, key, data)

    def get_small(self, key: str) -> bytes:
        return bytes(self.obs.get(self.s, key).bytes())

    def head(self, key: str) -> int:
        return int(self.obs.head(self.s, key)["size"])

    def multipart_file(self, key: str, path: Path, part: int) -> None:
        with path.open("rb") as f:
            self.obs.put(self.s, key, f, use_multipart=True, chunk_size=part, max_concurrency=2)

    def part_copy(self, key: str, sources: list[str]) -> None:
        # No UploadPartCopy in obstore's API: the bytes go down (to a spool file, as a
        # driver would: obstore cannot read inside its own put) and up again.
        with tempfile.TemporaryFile() as spool:
            for src in sources:
                for block in self.obs.get(self.s, src).stream(min_chunk_size=MIB):
                    spool.write(block)
            spool.seek(0)
            self.obs.put(
                self.s, key, spool, use_multipart=True, chunk_size=16 * MIB, max_concurrency=2
            )

    def list_keys(self, prefix: str) -> int:
        return sum(len(page) for page in self.obs.list(self.s, prefix, chunk_size=1000))

    def delete_prefix(self, prefix: str) -> None:
        keys = [m["path"] for page in self.obs.list(self.s, prefix) for m in page]
        self.obs.delete(self.s, keys)


_MAKERS: dict[str, Callable[..., _Ops]] = {
    "handwritten": Handwritten,
    "aiobotocore": Aiobotocore,
    "obstore": Obstore,
}


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker(name: str, endpoint: str, bucket: str, key: str, secret: str, blob: str) -> None:
    """One contender's run: prints one JSON line of metrics."""
    src = Path(blob)
    tmp = Path(tempfile.mkdtemp(prefix="lamina-bench-s3-"))
    try:
        ops = _MAKERS[name](endpoint, bucket, key, secret, tmp)
        out: dict[str, float | None] = {"rss_after_client_mb": _status_kb("VmRSS") / 1024}
        prefix = f"bench-{name}-{os.getpid()}/"
        big = prefix + "big"
        size = src.stat().st_size
        out["put_mib_s"] = size / MIB / _timed(lambda: ops.put_file(big, src))
        got: list[int] = []
        out["get_mib_s"] = size / MIB / _timed(lambda: got.append(ops.get_stream(big)))
        assert got == [size], (got, size)

        small = [f"{prefix}small/{i:05d}" for i in range(SMALL)]
        payload = os.urandom(4096)
        # One of each first: a long-lived server pays a library's first-call costs once.
        ops.put_small(prefix + "warm/x", payload)
        ops.get_small(prefix + "warm/x")
        ops.head(prefix + "warm/x")
        ops.list_keys(prefix + "warm/")
        out["small_put_ops"] = SMALL / _timed(lambda: [ops.put_small(k, payload) for k in small])
        out["small_get_ops"] = SMALL / _timed(lambda: [ops.get_small(k) for k in small])
        out["small_head_ops"] = SMALL / _timed(lambda: [ops.head(k) for k in small])
        counts: list[int] = []
        listing = _timed(lambda: counts.append(ops.list_keys(prefix + "small/")))
        assert counts == [SMALL], counts
        out["list_keys_s"] = SMALL / listing

        part_src = src.with_name(f"multipart-{MULTIPART_MIB}.bin")
        mp = _timed(lambda: ops.multipart_file(prefix + "multipart", part_src, PART_MIB * MIB))
        out["multipart_mib_s"] = MULTIPART_MIB / mp
        assert ops.head(prefix + "multipart") == MULTIPART_MIB * MIB

        sources = [f"{prefix}piece-{i}" for i in range(COPY_SOURCES)]
        piece = src.with_name("piece-16.bin")
        for s in sources:
            ops.put_file(s, piece)
        out["assemble_s"] = _timed(lambda: ops.part_copy(prefix + "assembled", sources))
        assert ops.head(prefix + "assembled") == COPY_SOURCES * 16 * MIB
        out["peak_rss_mb"] = _status_kb("VmHWM") / 1024
        ops.delete_prefix(prefix)
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the parent ---------------------------------------------------------------------------


def _make_file(path: Path, mib: int, seed: bytes) -> None:
    block = (seed * (MIB // len(seed) + 1))[:MIB]
    with path.open("wb") as f:
        for i in range(mib):
            f.write(bytes([i & 0xFF]) + block[1:])


@contextlib.contextmanager
def _seaweed(data: Path) -> Iterator[Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.seaweed import start_seaweed  # the tests' own starter: one way to run it

    info, proc = start_seaweed(data)
    try:
        yield info
    finally:
        proc.kill()
        proc.wait()
        for port in info.ports:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def main() -> None:
    work = tmpfs(CACHE / "s3-work", "6g")
    try:
        _run(fresh(work / "run"))
    finally:
        if os.path.ismount(work):
            subprocess.run(["umount", str(work)], check=False)


def _available() -> list[str]:
    names = []
    for name, module in (("aiobotocore", "aiobotocore"), ("obstore", "obstore")):
        try:
            __import__(module)
        except ImportError:
            print(
                f"  s3: {name} is not installed, skipped (uv pip install {module})", file=sys.stderr
            )
            continue
        names.append(name)
    return [BASELINE_NAME, *names]


def _run(work: Path) -> None:
    blob = work / "blob.bin"
    _make_file(blob, BLOB_MIB, b"lamina-bench-s3")
    _make_file(work / f"multipart-{MULTIPART_MIB}.bin", MULTIPART_MIB, b"multipart")
    _make_file(work / "piece-16.bin", 16, b"piece")
    contenders = _available()
    samples: dict[str, list[dict[str, float | None]]] = {n: [] for n in contenders}
    with _seaweed(work / "seaweed") as info:
        for r in range(ROUNDS):
            for name in contenders:
                args = [name, info.endpoint, info.bucket, info.access_key, info.secret_key]
                proc = subprocess.run(
                    [sys.executable, "-m", "bench.s3", "worker", *args, str(blob)],
                    check=False,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    timeout=600,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"s3 worker {name} failed: {proc.stderr[-3000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                samples[name].append(row)
                print(
                    f"  round {r + 1} {name:<12} "
                    + " ".join(f"{k}={v:.1f}" for k, v in row.items() if v is not None),
                    file=sys.stderr,
                )
    _report(samples)


def _report(samples: dict[str, list[dict[str, float | None]]]) -> None:
    results: dict[str, dict[str, float | None]] = {}
    for name, rows in samples.items():
        results[name] = {}
        for key in rows[0]:
            values = [float(v) for row in rows if (v := row[key]) is not None]
            results[name][key] = round(statistics.median(values), 2) if values else None
    base = results[BASELINE_NAME]
    doc = {
        "bench": "s3",
        "baseline": BASELINE_NAME,
        "blob_mib": BLOB_MIB,
        "small_objects": SMALL,
        "rounds": ROUNDS,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "s3.json").write_text(json.dumps(doc, indent=2) + "\n")

    def line(name: str) -> str:
        r = results[name]
        cells = []
        for key in (
            "put_mib_s",
            "get_mib_s",
            "small_put_ops",
            "small_get_ops",
            "small_head_ops",
            "multipart_mib_s",
            "list_keys_s",
        ):
            value, ref = r[key], base[key]
            ratio = f" x{value / ref:.2f}" if value and ref and name != BASELINE_NAME else ""
            cells.append(f"{key} {value}{ratio}")
        cells.append(f"assemble_s {r['assemble_s']}")
        cells.append(f"rss {r['rss_after_client_mb']}/{r['peak_rss_mb']} MB")
        return f"{name}: " + ", ".join(cells)

    print("s3: " + "; ".join(line(n) for n in results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:8])
    else:
        main()
