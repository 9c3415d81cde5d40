"""The registry client's plain-HTTP GETs and HEADs: lighthttp against aiohttp.

Both contenders run the same code (``RegistryClient`` over ``Transport``); only
``Transport.use_lighthttp`` differs, so what is measured is the HTTP stack. Against a
lamina registry on loopback (storage on a private tmpfs):

- blob: ``fetch_blob`` of a BLOB_MIB (256) MiB blob into a fresh store on tmpfs,
  BLOB_FETCHES (4) times in a fresh process; MiB/s over the transfers (verified as
  they stream), peak RSS of the process;
- small: SMALL_REQUESTS manifest GETs and as many blob HEADs, 8 at once, in a fresh
  process; requests/s;
- start-up: wall time of a whole ``lamina pull`` of a one-layer image of 4 KiB into a
  fresh root (the process, from exec to exit: where importing aiohttp shows).

Rounds alternate (A B A B). Ratios are aiohttp's time over lighthttp's (above 1:
lighthttp is faster). Children get a bytecode cache (PYTHONPYCACHEPREFIX) as in
pushpull.py, so start-up is not dominated by compiling aiohttp.

Run: ``.venv/bin/python -m bench http_client`` (LAMINA_BENCH_ROUNDS, default 5).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE,
    LAMINA,
    REPO,
    Contender,
    Sample,
    fresh,
    interleave,
    report,
    run_timed,
    tmpfs,
)
from bench.registry import _start_lamina

ROUNDS = int(os.environ.get("LAMINA_BENCH_ROUNDS", "5"))
BLOB_MIB = int(os.environ.get("LAMINA_BENCH_HTTP_BLOB_MIB", "256"))
SMALL_REQUESTS = int(os.environ.get("LAMINA_BENCH_HTTP_REQUESTS", "2000"))
# fetches per process, each into a fresh store: one takes a tenth of a second, too
# short to tell apart from this shared machine's noise
BLOB_FETCHES = int(os.environ.get("LAMINA_BENCH_HTTP_BLOB_FETCHES", "4"))
CLIENTS = ("lighthttp", "aiohttp")
BIG = "bench/big:1"
SMALL = "bench/small:1"


def _make_image(root: Path, name: str, layer_size: int) -> None:
    """One layer of random bytes (a blob is a blob to the client) and a tiny config."""
    from lamina.oci import mediatypes as mt
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.manifest import Manifest
    from lamina.oci.platform import Platform
    from lamina.store.local import LocalStore

    store = LocalStore(root)
    with store.lease():
        writer = store.writer()
        with writer:
            left = layer_size
            while left:
                piece = os.urandom(min(left, 1 << 20))
                writer.write(piece)
                left -= len(piece)
            layer = writer.commit()
        arch = Platform.host().architecture
        rootfs = {"type": "layers", "diff_ids": [str(layer.digest)]}  # an uncompressed tar
        config = store.put_bytes(
            json.dumps({"architecture": arch, "os": "linux", "rootfs": rootfs}).encode()
        )
        manifest = Manifest(
            Descriptor(mt.OCI_CONFIG, config.digest, config.size),
            (Descriptor(mt.OCI_LAYER, layer.digest, layer.size),),
        )
        data = manifest.to_bytes()
        info = store.put_bytes(data)
        store.set_ref(name, Descriptor(mt.OCI_MANIFEST, info.digest, info.size))


# -- the children (one fresh process per sample) -----------------------------------------


def _client(use_lighthttp: bool) -> Any:
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport

    Transport.use_lighthttp = use_lighthttp
    return RegistryClient(Transport(lambda registry: None, connections=16))


async def _child_blob(use_lighthttp: bool, ref_text: str, dest: str) -> float:
    from lamina.image.api import NoProgress
    from lamina.oci.manifest import Manifest
    from lamina.oci.reference import Reference
    from lamina.store.local import LocalStore

    ref = Reference.parse(ref_text)
    async with _client(use_lighthttp) as client:
        top = await client.fetch_manifest(ref)
        layer = Manifest.parse(top.data).layers[0]
        spent = 0.0
        for n in range(BLOB_FETCHES):
            store = LocalStore(os.path.join(dest, str(n)))
            start = time.perf_counter()
            with store.lease():
                await client.fetch_blob(ref, layer, store, NoProgress())
            spent += time.perf_counter() - start
            shutil.rmtree(store.root)
        return spent


async def _child_small(use_lighthttp: bool, ref_text: str) -> float:
    from lamina.oci.manifest import Manifest
    from lamina.oci.reference import Reference

    ref = Reference.parse(ref_text)
    async with _client(use_lighthttp) as client:
        top = await client.fetch_manifest(ref)
        layer = Manifest.parse(top.data).layers[0]
        by_digest = ref.with_digest(top.descriptor.digest)
        left = SMALL_REQUESTS

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await client.fetch_manifest(by_digest)
                if not await client.has_blob(ref, layer):
                    raise RuntimeError("the blob is gone")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        return time.perf_counter() - start


# The CLI as the `lamina` script runs it, with the stack chosen; nothing of bench/ is
# imported, so start-up is lamina's own.
_LAMINA = (
    "import sys\n"
    "from lamina.registry.client.transport import Transport\n"
    "Transport.use_lighthttp = {}\n"
    "from lamina.cli.main import main\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.exit(main())\n"
)


def _child(argv: list[str]) -> None:
    kind, client, *rest = argv
    use = client == "lighthttp"
    out = rest.pop()
    if kind == "small":
        seconds = asyncio.run(_child_small(use, *rest))
    else:
        seconds = asyncio.run(_child_blob(use, *rest))
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(out).write_text(json.dumps({"seconds": seconds, "rss_kb": rss_kb}))


# -- the parent ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(CACHE / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run_child(args: list[str], out: Path) -> Sample:
    subprocess.run(
        [sys.executable, "-m", "bench.http_client", *args, str(out)],
        cwd=REPO,
        env=_env(),
        check=True,
    )
    doc = json.loads(out.read_text())
    return Sample(doc["seconds"], doc["rss_kb"])


def _ratios(results: dict[str, Contender]) -> float:
    return round(results["aiohttp"].median / results["lighthttp"].median, 3)


def main() -> None:
    work = tmpfs(CACHE / "http-client-tmpfs", "3g")
    src = work / "src"
    if not (src / "done").exists():
        fresh(src)
        _make_image(src / "root", "docker.io/library/big:1", BLOB_MIB << 20)
        _make_image(src / "root", "docker.io/library/small:1", 4096)
        (src / "done").write_text("ok\n")
    storage = fresh(work / "storage")
    proc, url = _start_lamina(storage)
    host = url.removeprefix("http://")
    try:
        env = _env()
        for name, dest in (("big:1", BIG), ("small:1", SMALL)):
            subprocess.run(
                [*LAMINA, "--root", str(src / "root"), "push", "-q", name, f"{host}/{dest}"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        # warm the bytecode cache of both paths once
        for client in CLIENTS:
            _run_child(["small", client, f"{host}/{SMALL}"], work / "warm.json")
        big, small = f"{host}/{BIG}", f"{host}/{SMALL}"

        def blob(client: str) -> Sample:
            return _run_child(["blob", client, big, str(fresh(work / "dest"))], work / "out.json")

        def requests(client: str) -> Sample:
            return _run_child(["small", client, small], work / "out.json")

        def pull(client: str) -> Sample:
            root = fresh(work / "pull-root")
            code = _LAMINA.format(client == "lighthttp")
            argv = ["lamina", "--root", str(root), "pull", "-q", small]
            return run_timed([sys.executable, "-c", code, *argv], env=env)

        results = {}
        for what, fn in (("blob", blob), ("small", requests), ("start-up", pull)):
            print(f"{what}:", file=sys.stderr)
            results[what] = interleave(ROUNDS, {c: (lambda c=c, fn=fn: fn(c)) for c in CLIENTS})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work / "dest", ignore_errors=True)
        shutil.rmtree(work / "pull-root", ignore_errors=True)
    mib_s = {c: round(BLOB_FETCHES * BLOB_MIB / results["blob"][c].median) for c in CLIENTS}
    rps = {c: round(2 * SMALL_REQUESTS / results["small"][c].median) for c in CLIENTS}
    extra: dict[str, object] = {"rounds": ROUNDS, "blob_mib": BLOB_MIB}
    report("http_client_blob", results["blob"], "aiohttp", {**extra, "mib_per_s": mib_s})
    report("http_client_small", results["small"], "aiohttp", {**extra, "requests_per_s": rps})
    report("http_client_startup", results["start-up"], "aiohttp", extra)
    print(
        "http_client: lighthttp over aiohttp: "
        f"blob x{_ratios(results['blob'])} ({mib_s['lighthttp']} vs {mib_s['aiohttp']} MiB/s), "
        f"small requests x{_ratios(results['small'])} "
        f"({rps['lighthttp']} vs {rps['aiohttp']} req/s), "
        f"`lamina pull` of a small image x{_ratios(results['start-up'])}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _child(sys.argv[1:])
    else:
        main()
