"""Push and pull of a ~200 MB multi-layer image: lamina's client against ``skopeo copy``,
both talking to Debian's docker-registry (distribution 2.8) on loopback.

- push: ``lamina push IMG REG/repo:tag`` from a lamina root, against
  ``skopeo copy oci:LAYOUT docker://REG/repo:tag`` from an OCI layout of the same image;
- pull: ``lamina pull REG/repo:tag`` into a fresh root, against
  ``skopeo copy docker://REG/repo:tag oci:FRESH``.

Every round starts a fresh docker-registry (so no push finds its blobs already there)
and uses fresh destinations; contenders alternate (A B A B). Everything lives on a
private tmpfs, so disk noise stays out. The image: LAYERS layers of random (so
incompressible) file data, uncompressed tar, ~200 MB in all, made once and cached.
Ratios are skopeo's time over lamina's (higher is better for lamina).

This checkout's environment sets PYTHONDONTWRITEBYTECODE and its .venv holds no bytecode,
so every ``lamina`` start would compile aiohttp from source (~0.3 s of CPU). An installed
lamina has its bytecode (pip and ``uv sync --compile-bytecode`` write it), so the lamina
runs here get a bytecode cache under the bench cache (PYTHONPYCACHEPREFIX), warmed once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from bench.common import (
    CACHE,
    LAMINA,
    Sample,
    free_port,
    fresh,
    interleave,
    report,
    run_timed,
    tmpfs,
)

ROUNDS = int(os.environ.get("LAMINA_BENCH_ROUNDS", "3"))
TOTAL_MB = int(os.environ.get("LAMINA_BENCH_PUSHPULL_MB", "200"))
LAYERS = 5
# "push" or "pull" runs that half alone (quicker when working on one direction)
ONLY = os.environ.get("LAMINA_BENCH_PUSHPULL_ONLY", "")
IMAGE = "docker.io/library/pushpull:1"


def _make_image(root: Path) -> None:
    """LAYERS layers of random files, ~TOTAL_MB in all, tagged IMAGE in ``root``."""
    from lamina.image.importer import build_image
    from lamina.image.layer_io import write_layer
    from lamina.layers.api import Entry, EntryType
    from lamina.layers.tar import TarWriter
    from lamina.oci.config import History, ImageConfig
    from lamina.oci.platform import Platform
    from lamina.store.local import LocalStore

    store = LocalStore(root)
    per_layer = TOTAL_MB * 1_000_000 // LAYERS
    file_size = 4 << 20
    config = ImageConfig.new(Platform.host(), created="2024-01-01T00:00:00Z")
    descriptors = []
    with store.lease():
        for index in range(LAYERS):

            def produce(writer: TarWriter, index: int = index) -> None:
                writer.add_bytes(Entry(f"layer{index}", EntryType.DIR, mode=0o755), b"")
                left, n = per_layer, 0
                while left > 0:
                    size = min(file_size, left)
                    path = f"layer{index}/f{n}"
                    writer.add_bytes(
                        Entry(path, EntryType.FILE, mode=0o644, size=size), os.urandom(size)
                    )
                    left -= size
                    n += 1

            layer = write_layer(store, produce, "")
            descriptors.append(layer.descriptor)
            config = config.with_layer(
                layer.diff_id, History(created="2024-01-01T00:00:00Z", created_by=f"layer {index}")
            )
        build_image(store, descriptors, config, IMAGE)


def _prepare() -> tuple[Path, Path]:
    """(lamina root holding IMAGE, OCI layout of it), cached across runs."""
    base = CACHE / f"pushpull-{TOTAL_MB}"
    root, layout = base / "root", base / "layout"
    if not (base / "done").exists():
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        print(f"making a {TOTAL_MB} MB image of {LAYERS} layers ...", file=sys.stderr)
        _make_image(root)
        subprocess.run(
            [*LAMINA, "--root", str(root), "save", IMAGE, "--format", "oci-dir", "-o", str(layout)],
            check=True,
        )
        (base / "done").write_text("ok\n")
    return root, layout


class Registry:
    def __init__(self, work: Path) -> None:
        self.work = fresh(work)
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        config = self.work / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.work / 'storage'}\n"
            f"http:\n  addr: {self.host}\n  secret: bench\n"
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urlopen(f"http://{self.host}/v2/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        print("pushpull: skopeo and docker-registry are needed; skipped", file=sys.stderr)
        return
    root, layout = _prepare()
    work = tmpfs(CACHE / "pushpull-tmpfs", "6g")
    lamina_src = work / "lamina-src"
    if not lamina_src.exists():
        shutil.copytree(root, lamina_src)
    skopeo_src = work / "layout-src"
    if not skopeo_src.exists():
        shutil.copytree(layout, skopeo_src)
    env = {
        **os.environ,
        "REGISTRY_AUTH_FILE": str(work / "auth.json"),
        "PYTHONPYCACHEPREFIX": str(CACHE / "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = "import lamina.cli.remote_cmd, lamina.registry.client.remote, lamina.image.transfer.pull"
    subprocess.run(
        [sys.executable, "-c", warm + ", lamina.image.transfer.push"], env=env, check=True
    )
    state: dict[str, Registry] = {}

    def new_registry(name: str) -> None:
        if "reg" in state:
            state["reg"].stop()
        state["reg"] = Registry(work / "registry")

    def lamina_push() -> Sample:
        dest = f"{state['reg'].host}/bench/lamina:1"
        cmd = [*LAMINA, "--root", str(lamina_src), "push", "-q", IMAGE, dest]
        return run_timed(cmd, env=env)

    def skopeo_push() -> Sample:
        dest = f"docker://{state['reg'].host}/bench/skopeo:1"
        return run_timed(
            ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{skopeo_src}", dest]
        )

    push = None
    if ONLY != "pull":
        print("push (fresh registry each time):", file=sys.stderr)
        push = interleave(
            ROUNDS, {"lamina push": lamina_push, "skopeo copy (push)": skopeo_push}, new_registry
        )

    # pull: one registry holding the image (pushed by skopeo, so neither side pulls
    # what it pushed itself), fresh destinations each time
    new_registry("pull")
    src_ref = f"{state['reg'].host}/bench/image:1"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{skopeo_src}",
            f"docker://{src_ref}",
        ],
        check=True,
    )

    def clean(name: str) -> None:
        for path in (work / "pull-lamina", work / "pull-skopeo"):
            if path.exists():
                shutil.rmtree(path)

    def lamina_pull() -> Sample:
        cmd = [*LAMINA, "--root", str(work / "pull-lamina"), "pull", "-q", src_ref]
        return run_timed(cmd, env=env)

    def skopeo_pull() -> Sample:
        return run_timed(
            [
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                f"docker://{src_ref}",
                f"oci:{work / 'pull-skopeo'}:x",
            ]
        )

    pull = None
    if ONLY != "push":
        print("pull (fresh destination each time):", file=sys.stderr)
        pull = interleave(
            ROUNDS, {"lamina pull": lamina_pull, "skopeo copy (pull)": skopeo_pull}, clean
        )
    state["reg"].stop()
    size = sum(p.stat().st_size for p in (skopeo_src / "blobs").rglob("*") if p.is_file())
    extra = {"image_bytes": size, "layers": LAYERS, "rounds": ROUNDS}
    if push is not None:
        report("pushpull_push", push, "skopeo copy (push)", extra)
    if pull is not None:
        report("pushpull_pull", pull, "skopeo copy (pull)", extra)


if __name__ == "__main__":
    main()
