"""Where lamina build must match BuildKit: COPY --from keeps owners and hardlinks, setuid
survives --chown, COPY --from is cached by the content it copies, ADD archives through
the public layer applier, and COPY --link makes a layer of its own."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import Lamina
from helpers.tree import Dir, File, Hardlink, build_tree
from lamina.builder.files.context import checksum, select
from lamina.builder.files.copy import CopyOptions, copy_into
from lamina.errors import Unsafe
from lamina.layers.apply import apply_layer

# ---------------------------------------------------------------------- unit level


@pytest.fixture
def stage_root(tmp_path: Path) -> Path:
    """A source stage's rootfs: files owned by 1:1 and 7:8, two hardlinked files."""
    root = tmp_path / "stage"
    build_tree(
        root,
        {
            "out/": Dir(mode=0o755, uid=1, gid=1),
            "out/a": File(b"a\n", mode=0o644, uid=1, gid=1),
            "out/hard": Hardlink("out/a"),
            "out/sub/": Dir(mode=0o750, uid=7, gid=8),
            "out/sub/b": File(b"b\n", mode=0o4755, uid=7, gid=8),
        },
    )
    return root


def _copy(src: Path, dest: Path, **kw: Any) -> None:
    dest.mkdir(exist_ok=True)
    sources = select(str(src), ["/out"], context=False)
    copy_into(str(src), sources, str(dest), CopyOptions("/copied/", **kw))


def _ids(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


@pytest.mark.root
def test_copy_from_keeps_owners_and_hardlinks(stage_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _copy(stage_root, dest, preserve_owner=True, hardlinks=True)
    assert _ids(dest / "copied/a") == (1, 1)
    assert _ids(dest / "copied/sub") == (7, 8)
    assert _ids(dest / "copied/sub/b") == (7, 8)
    assert stat.S_IMODE(os.lstat(dest / "copied/sub/b").st_mode) == 0o4755
    assert os.lstat(dest / "copied/hard").st_ino == os.lstat(dest / "copied/a").st_ino
    assert os.lstat(dest / "copied/a").st_nlink == 2
    assert _ids(dest / "copied") == (0, 0)  # made by the COPY (BuildKit: root-owned)


@pytest.mark.root
def test_copy_from_with_chown_keeps_hardlinks_and_setuid(stage_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _copy(stage_root, dest, chown="5:6", preserve_owner=True, hardlinks=True)
    assert _ids(dest / "copied/a") == (5, 6)
    assert _ids(dest / "copied/sub/b") == (5, 6)
    assert os.lstat(dest / "copied/hard").st_ino == os.lstat(dest / "copied/a").st_ino
    # BuildKit's copier chowns, then chmods with the source mode: setuid survives.
    assert stat.S_IMODE(os.lstat(dest / "copied/sub/b").st_mode) == 0o4755


@pytest.mark.root
def test_context_copy_resets_owners_and_splits_hardlinks(stage_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _copy(stage_root, dest)
    assert _ids(dest / "copied/a") == (0, 0)
    assert os.lstat(dest / "copied/hard").st_ino != os.lstat(dest / "copied/a").st_ino


@pytest.mark.root
def test_chown_keeps_setuid_and_setgid(tmp_path: Path) -> None:
    """Item of record: BuildKit keeps S_ISUID/S_ISGID on COPY --chown (buildah and a plain
    chown(2) clear them); lamina follows BuildKit."""
    ctx = tmp_path / "ctx"
    build_tree(ctx, {"su": File(b"x", mode=0o4755), "sg": File(b"y", mode=0o2755)})
    dest = tmp_path / "dest"
    dest.mkdir()
    sources = select(str(ctx), ["su", "sg"], context=True)
    copy_into(str(ctx), sources, str(dest), CopyOptions("/bin/", chown="1000:1000"))
    assert stat.S_IMODE(os.lstat(dest / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(dest / "bin/sg").st_mode) == 0o2755
    assert _ids(dest / "bin/su") == (1000, 1000)


@pytest.mark.root
def test_checksum_with_owners_sees_owners_and_hardlinks(stage_root: Path, tmp_path: Path) -> None:
    sources = select(str(stage_root), ["/out"], context=False)
    plain = checksum(str(stage_root), sources)
    owned = checksum(str(stage_root), sources, owners=True)
    os.chown(stage_root / "out/a", 9, 9)  # not b: chown(2) would clear its setuid bit
    again = select(str(stage_root), ["/out"], context=False)
    assert checksum(str(stage_root), again) == plain  # owners are not content
    assert checksum(str(stage_root), again, owners=True) != owned
    os.chown(stage_root / "out/a", 1, 1)
    # the same bytes, no longer hardlinked: a different copy
    os.unlink(stage_root / "out/hard")
    (stage_root / "out/hard").write_bytes(b"a\n")
    os.chmod(stage_root / "out/hard", 0o644)
    os.chown(stage_root / "out/hard", 1, 1)
    split = select(str(stage_root), ["/out"], context=False)
    assert checksum(str(stage_root), split) == plain
    assert checksum(str(stage_root), split, owners=True) != owned


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, 3, 4
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_apply_layer_can_refuse_whiteouts(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    (target / "victim").write_text("keep")
    data = _tar([("a", b"a"), (".wh.victim", b"")])
    with pytest.raises(Unsafe, match="whiteout"):
        apply_layer(io.BytesIO(data), target, whiteouts="refuse")
    assert (target / "victim").read_text() == "keep"
    apply_layer(io.BytesIO(data), target)  # a layer: the whiteout deletes
    assert not (target / "victim").exists()


@pytest.mark.root
def test_apply_layer_owner_overrides_the_tar(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    apply_layer(io.BytesIO(_tar([("f", b"f")])), target, owner=(11, 12))
    assert _ids(target / "f") == (11, 12)
    apply_layer(io.BytesIO(_tar([("g", b"g")])), target)
    assert _ids(target / "g") == (3, 4)


def test_archive_module_uses_no_private_applier() -> None:
    import lamina.builder.files.archive as archive

    text = Path(archive.__file__).read_text()
    assert "_Applier" not in text


# ---------------------------------------------------------------------- lamina build

STAGES = """\
FROM busybox AS a
ARG NOISE=0
RUN mkdir -p /out/sub && echo b > /out/sub/b && ln /out/sub/b /out/hard \\
 && chown -R 1:2 /out/sub && echo $NOISE > /noise
FROM busybox
COPY --from=a /out /copied
RUN echo after > /after
"""


def _setup(lamina: Lamina, tmp_path: Path, dockerfile: str) -> Path:
    lamina("bootstrap", "busybox", "-t", "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def _build(lamina: Lamina, ctx: Path, *args: str) -> dict[str, str]:
    """Build with JSON progress; {step text: "cached" | "done"}."""
    proc = lamina("build", "--progress", "json", *args, str(ctx))
    names: dict[int, str] = {}
    steps: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["kind"] == "start":
            names[event["vertex"]] = event["name"]
        elif event["kind"] in ("cached", "done"):
            name = names[event["vertex"]]
            if "] " in name:
                steps[name.split("] ", 1)[1]] = event["kind"]
    return steps


def _layers(lamina: Lamina, ref: str) -> list[list[tarfile.TarInfo]]:
    """The members of each layer of ``ref``, read with Python's tarfile (a peer)."""
    manifest = json.loads(lamina("inspect", "--raw", "manifest", ref).stdout)
    root = Path(lamina.root)  # type: ignore[attr-defined]
    out = []
    for layer in manifest["layers"]:
        path = root / "blobs" / "sha256" / layer["digest"].split(":")[1]
        with tarfile.open(path) as tar:
            out.append(tar.getmembers())
    return out


def _step(steps: dict[str, str], prefix: str) -> str:
    found = [v for k, v in steps.items() if k.startswith(prefix)]
    assert len(found) == 1, (prefix, steps)
    return found[0]


@pytest.mark.root
def test_build_copy_from_keeps_owners_and_hardlinks(lamina: Lamina, tmp_path: Path) -> None:
    ctx = _setup(lamina, tmp_path, STAGES)
    lamina("build", "-q", "-t", "kept", str(ctx))
    copy_layer = {m.name.rstrip("/"): m for m in _layers(lamina, "kept")[-2]}
    sub, b, hard = copy_layer["copied/sub"], copy_layer["copied/sub/b"], copy_layer["copied/hard"]
    assert (sub.uid, sub.gid, b.uid, b.gid) == (1, 2, 1, 2)
    assert copy_layer["copied"].uid == 0
    # one of the two names is the file, the other a hardlink to it
    assert {hard.type, b.type} == {tarfile.REGTYPE, tarfile.LNKTYPE}


@pytest.mark.root
def test_build_copy_from_cached_by_content(lamina: Lamina, tmp_path: Path) -> None:
    ctx = _setup(lamina, tmp_path, STAGES)
    first = _build(lamina, ctx, "--build-arg", "NOISE=1", "-t", "one")
    assert _step(first, "COPY --from=a") == "done"
    # stage a runs again (its RUN sees another NOISE, and its files get new mtimes), but
    # what the COPY selects is the same: the COPY and the RUN after it stay cached
    second = _build(lamina, ctx, "--build-arg", "NOISE=2", "-t", "two")
    assert _step(second, "RUN mkdir") == "done"
    assert _step(second, "COPY --from=a") == "cached"
    assert _step(second, "RUN echo after") == "cached"
    # a change to the selected files busts it
    (ctx / "Dockerfile").write_text(STAGES.replace("echo b >", "echo c >"))
    third = _build(lamina, ctx, "--build-arg", "NOISE=2", "-t", "three")
    assert _step(third, "COPY --from=a") == "done"
    # and so does a change of owner alone (COPY --from keeps owners)
    (ctx / "Dockerfile").write_text(STAGES.replace("chown -R 1:2", "chown -R 1:3"))
    fourth = _build(lamina, ctx, "--build-arg", "NOISE=2", "-t", "four")
    assert _step(fourth, "COPY --from=a") == "done"


LINKED = """\
FROM busybox
RUN mkdir -p /opt/real /existing && ln -s /opt/real /opt/link && ln -s real /opt/link2 \
 && echo {base} > /base
COPY --link a.txt /opt/link/
COPY --link a.txt /existing
COPY --link --chown=5:6 a.txt /deep/er/f
COPY a.txt /opt/link2/
"""


def _names(layer: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    return {m.name.rstrip("/"): m for m in layer}


@pytest.mark.root
def test_copy_link_makes_an_independent_layer(lamina: Lamina, tmp_path: Path) -> None:
    import time

    ctx = _setup(lamina, tmp_path, LINKED.format(base=1))
    (ctx / "a.txt").write_text("a\n")
    lamina("build", "-q", "-t", "linked", str(ctx))
    layers = _layers(lamina, "linked")
    into_link, onto_dir, deep, plain = (_names(x) for x in layers[-4:])
    # nothing of the image below is read: the symlink /opt/link is not followed (the
    # layer has a directory there), and /existing (no trailing /) becomes the file
    assert set(into_link) == {"opt", "opt/link", "opt/link/a.txt"}
    assert into_link["opt/link"].isdir() and into_link["opt/link/a.txt"].isfile()
    assert set(onto_dir) == {"existing"} and onto_dir["existing"].isfile()
    # the parents are made in the layer, with the --chown ids (as on a scratch stage)
    assert set(deep) == {"deep", "deep/er", "deep/er/f"}
    assert [(deep[n].uid, deep[n].gid, deep[n].mode) for n in ("deep", "deep/er")] == [
        (5, 6, 0o755),
        (5, 6, 0o755),
    ]
    assert (deep["deep/er/f"].uid, deep["deep/er/f"].gid) == (5, 6)
    # a plain COPY follows the symlink of the image below
    assert set(plain) == {"opt", "opt/real", "opt/real/a.txt"}
    out = lamina("run", "--rm", "linked", "sh", "-c", "cat /existing; ls -ld /opt/link").stdout
    assert out.startswith("a\nd")
    # A changed base keeps the --link layers (BuildKit rebases them): the same blobs,
    # though their directories' mtimes would differ if they were made again.
    time.sleep(1.1)
    (ctx / "Dockerfile").write_text(LINKED.format(base=2))
    lamina("build", "-q", "-t", "rebased", str(ctx))
    manifests = [
        json.loads(lamina("inspect", "--raw", "manifest", ref).stdout)["layers"]
        for ref in ("linked", "rebased")
    ]
    digests = [[layer["digest"] for layer in m] for m in manifests]
    assert digests[0][-5] != digests[1][-5]  # the RUN below changed
    assert digests[0][-4:-1] == digests[1][-4:-1]  # the --link layers are reused
    assert digests[0][-1] != digests[1][-1]  # the plain COPY is made again
