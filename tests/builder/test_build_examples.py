"""The examples/ build and run: the busybox hello, the multi-stage C program (much smaller
than its single-stage twin) and the Python app with apt cache mounts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.cli import Lamina
from helpers.debian import debian_image_fixture, load_debian  # noqa: F401  (fixture)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [pytest.mark.root, pytest.mark.interop]


def _size(lamina: Lamina, name: str) -> int:
    for row in json.loads(lamina("images", "--json").stdout):
        if row["name"] == f"docker.io/library/{name}":
            return int(row["size"])
    raise AssertionError(f"{name} not in lamina images")


def _layers(lamina: Lamina, name: str, tmp_path: Path) -> int:
    layout = tmp_path / f"layout-{name.replace(':', '-')}"
    lamina("save", "--format", "oci-dir", "-o", str(layout), name)
    index = json.loads((layout / "index.json").read_text())
    algo, hexd = index["manifests"][0]["digest"].split(":")
    return len(json.loads((layout / "blobs" / algo / hexd).read_text())["layers"])


def test_hello_example(lamina: Lamina) -> None:
    lamina("bootstrap", "busybox", "-t", "busybox")
    lamina("build", "-q", "-t", "hello", str(EXAMPLES / "hello"))
    machine = lamina("run", "--rm", "busybox", "uname", "-m").stdout.strip()
    assert (
        lamina("run", "--rm", "hello").stdout == f"Hello from lamina, nobody on Linux {machine}!\n"
    )
    out = lamina("run", "--rm", "-e", "GREETING=Hi", "hello").stdout
    assert out.startswith("Hi, nobody on Linux")


@pytest.mark.slow
def test_multistage_c_example(debian_image: Path, lamina: Lamina, tmp_path: Path) -> None:
    load_debian(lamina, debian_image)
    ctx = EXAMPLES / "multistage-c"
    lamina("build", "-q", "-t", "hello-c", str(ctx))
    single = ctx / "Containerfile.single"
    lamina("build", "-q", "-t", "hello-c:single", "-f", str(single), str(ctx))
    out = lamina("run", "--rm", "hello-c", "you").stdout
    assert re.fullmatch(r"hello, you, from a static C binary on Linux \S+\n", out), out
    assert lamina("run", "--rm", "hello-c:single", "me").stdout.startswith("hello, me, ")
    multi, one = _size(lamina, "hello-c:latest"), _size(lamina, "hello-c:single")
    # Only the binary (~700 kB static, ~300 kB gzipped) reaches the multi-stage image;
    # the single-stage one keeps Debian, gcc and the headers (~100 MB gzipped).
    assert multi < 1_000_000, multi
    assert one > 50 * multi, (one, multi)
    assert _layers(lamina, "hello-c:latest", tmp_path) == 1


@pytest.mark.slow
def test_python_app_example(debian_image: Path, lamina: Lamina, tmp_path: Path) -> None:
    load_debian(lamina, debian_image)
    lamina("build", "-q", "-t", "wordcount", str(EXAMPLES / "python-app"))
    out = json.loads(lamina("run", "--rm", "wordcount").stdout)
    assert out["python"].startswith("3.")
    assert out["words"] == {"a": 3, "rose": 3, "is": 2}
    out = json.loads(lamina("run", "--rm", "wordcount", "to be or not to be").stdout)
    assert out["words"] == {"to": 2, "be": 2, "or": 1, "not": 1}
    # The cache mounts kept apt's lists and .debs out of the image.
    tree = tmp_path / "tree"
    lamina("unpack", "wordcount", str(tree))
    assert not [p for p in (tree / "var/cache/apt/archives").glob("*.deb")]
    assert not [p for p in (tree / "var/lib/apt/lists").iterdir() if p.is_file()]
    assert (tree / "usr/bin/python3").exists()
