"""Same result as buildah: each Containerfile below is built by `lamina build` and by
`buildah build` from the same context on the same busybox base; both images are exported
as OCI layouts, unpacked by umoci (a third party to both), and must give the same tree
(contents, modes, owners, symlink targets, hardlinks) and the same config (Env, Cmd,
Entrypoint, WorkingDir, User, ExposedPorts, Labels, Volumes).

buildah runs with its overlay storage driver and runc (crun fails on this host's hybrid
cgroups). Debian's buildah 1.28 predates heredoc support: for heredocs lamina's tree is
checked against what BuildKit's reference documents instead.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import LAMINA
from helpers.tree import (
    Dir,
    File,
    Snap,
    Snapshot,
    Symlink,
    build_tree,
    diff_snapshots,
    snapshot_tree,
)

pytestmark = [pytest.mark.interop, pytest.mark.root]

CONFIG_FIELDS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
)


def _tar(members: list[tuple[str, bytes | None, int, int, int, str | None]], gz: bool) -> bytes:
    """A tar (optionally gzipped) of (name, data or None for a dir, mode, uid, gid, link)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode, uid, gid, link in members:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_600_000_000
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


TAR_MEMBERS = [
    ("d/", None, 0o750, 5, 6, None),
    ("d/f", b"in the tar\n", 0o640, 5, 6, None),
    ("d/l", None, 0o777, 5, 6, "f"),
    ("top.txt", b"top\n", 0o600, 0, 0, None),
]


@dataclass(frozen=True)
class Case:
    containerfile: str
    context: Mapping[str, Any] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    buildah_can: bool = True  # False: the Containerfile uses syntax buildah 1.28 lacks
    lamina_bug: str | None = None  # lamina differs from BuildKit here: xfail until fixed
    # Differences where buildah, not lamina, departs from BuildKit (diff_snapshots lines,
    # buildah's tree first).
    buildah_differs: tuple[str, ...] = ()


CASES: dict[str, Case] = {
    "copy-chown-chmod": Case(
        """\
FROM busybox
RUN echo 'app:x:1001:100:app:/home/app:/bin/sh' >> /etc/passwd
COPY --chown=1000:1000 a.txt /data/a.txt
COPY --chmod=640 b.txt /data/
COPY --chown=nobody:nogroup --chmod=755 dir/ /opt/dir/
COPY --chown=1234 sub /srv/sub
COPY --chown=app:users a.txt b.txt /app/
COPY --chown=app a.txt /app-only-user/
COPY dir /plain/
""",
        {
            "a.txt": File(b"a\n", mode=0o600, uid=7, gid=8),
            "b.txt": File(b"b\n", mode=0o755),
            "dir/x": File(b"x\n"),
            "dir/y/z": File(b"z\n", mode=0o600),
            "dir/exec.sh": File(b"#!/bin/sh\n", mode=0o755),
            "dir/link": Symlink("x"),
            "dir/empty/": Dir(mode=0o700),
            "sub/f": File(b"f\n", mode=0o4755),
        },
        # buildah chowns after setting the mode, and the kernel clears setuid on chown;
        # BuildKit's copier chowns first, then chmods (the bit stays), as lamina does.
        buildah_differs=("~ srv/sub/f: mode '0o755' != '0o4755'",),
    ),
    "copy-globs-and-args": Case(
        """\
FROM busybox
ARG DEST=/argdest
ENV SUB=envsub
COPY *.txt /g/
COPY dir/*/z /h/
COPY ["sp ace.txt", "/s/"]
COPY a.txt ${DEST}/$SUB/
COPY dir/ /i/
COPY dir /j
COPY a.txt /k
COPY a.txt b.txt /l/
WORKDIR /rel
COPY a.txt rel-dest
COPY dir/y/ ./y-contents/
""",
        {
            "a.txt": File(b"a\n"),
            "b.txt": File(b"b\n", mode=0o600),
            "sp ace.txt": File(b"space\n"),
            "c.md": File(b"not a txt\n"),
            "dir/x/z": File(b"xz\n"),
            "dir/y/z": File(b"yz\n", mode=0o640),
            "dir/y/deeper/w": File(b"w\n"),
        },
    ),
    "dockerignore": Case(
        """\
FROM busybox
COPY . /ctx/
""",
        {
            ".dockerignore": File(
                b"*.log\n!keep.log\n**/tmp\nsecret/\ndocs/**/*.md\n!docs/README.md\n"
                b"Containerfile\n# a comment\n./dot/slash\n"
            ),
            "a.log": File(b"a\n"),
            "keep.log": File(b"keep\n"),
            "b.txt": File(b"b\n"),
            "x/tmp/junk": File(b"j\n"),
            "x/y.log": File(b"deep log\n"),
            "tmp/junk2": File(b"j2\n"),
            "secret/key": File(b"k\n"),
            "docs/README.md": File(b"r\n"),
            "docs/a/b.md": File(b"b\n"),
            "docs/a/c.txt": File(b"c\n"),
            "dot/slash": File(b"ds\n"),
            "dot/other": File(b"do\n"),
        },
    ),
    "arg-scoping": Case(
        """\
ARG BASE=busybox
ARG VERSION=1.0
ARG UNUSED=x
FROM ${BASE} AS first
ARG VERSION
ARG LOCAL=loc
RUN echo "v=${VERSION} l=${LOCAL} u=${UNUSED}" > /first.txt

FROM ${BASE}
ARG LOCAL
ARG VERSION=2.0
ARG FROMCLI
ENV FROM_ARG=${VERSION} CLI=${FROMCLI}
RUN echo "v=${VERSION} l=${LOCAL} c=${FROMCLI}" > /second.txt
COPY --from=first /first.txt /
""",
        build_args={"FROMCLI": "given"},
    ),
    "env-expansion": Case(
        """\
FROM busybox
ENV A=one B="${A} two" C=${A:-unset}-${NOPE:-dflt}-${A:+set}
ENV D=$A\\ escaped E='$A single' F="$A \\$A"
ENV legacy form with spaces
WORKDIR /w/${A}
LABEL combo="${B} ${C}" plain=x
EXPOSE 8080 ${PORT:-9090}/udp
RUN echo "$A|$B|$C|$D|$E|$F|$legacy" > env.txt
"""
    ),
    "workdir-user": Case(
        """\
FROM busybox
RUN echo 'app:x:1001:100:app:/home/app:/bin/sh' >> /etc/passwd
WORKDIR /a
WORKDIR b
WORKDIR ../c/./d
RUN pwd > here.txt
COPY f.txt .
USER app
RUN id -u > /tmp/uid.txt && id -g > /tmp/gid.txt && id -un > /tmp/name.txt
COPY --chown=app f.txt owned.txt
USER 1002:1003
RUN touch /tmp/by-1002
""",
        {"f.txt": File(b"f\n")},
    ),
    # BuildKit creates WORKDIR directories (and the parents it makes) owned by USER
    # (dockerfile2llb dispatchWorkdir: llb.Mkdir(..., WithParents, WithUser(user))).
    "workdir-owner": Case(
        """\
FROM busybox
RUN echo 'app:x:1001:100:app:/home/app:/bin/sh' >> /etc/passwd
USER app
WORKDIR /made/by/app
USER 1002:1003
WORKDIR rel
USER 1:2
WORKDIR /srv
"""
    ),
    "multistage-from": Case(
        """\
FROM busybox AS a
RUN mkdir -p /out/sub && echo a > /out/a && echo b > /out/sub/b && chmod 600 /out/sub/b \\
 && ln -s a /out/link
FROM busybox AS b
RUN echo b > /b.txt
FROM busybox
COPY --from=a /out /copied
COPY --from=a /out/ /copied2/
COPY --from=1 /b.txt /
COPY --from=a --chown=2:2 /out/sub /sub
COPY --from=a /out/link /deref
"""
    ),
    # Without --chown, COPY --from keeps the owners the files have in the source stage
    # (BuildKit sends no ChownOpt; only the local context is reset to 0:0).
    "copy-from-owners": Case(
        """\
FROM busybox AS a
RUN mkdir -p /out/sub && echo b > /out/sub/b && chown -R 1:1 /out/sub
FROM busybox
COPY --from=a /out /copied
""",
    ),
    # BuildKit's copier (fsutil copy, getLinkSource) keeps hardlinks within one COPY.
    "copy-from-hardlinks": Case(
        """\
FROM busybox AS a
RUN mkdir /out && echo a > /out/a && ln /out/a /out/hard
FROM busybox
COPY --from=a /out /copied
""",
    ),
    "add-tar": Case(
        """\
FROM busybox
ADD plain.tar /x/
ADD archive.tgz /y/
ADD not-a-tar.txt /z/
ADD renamed.bin /w/
""",
        {
            "plain.tar": File(_tar(TAR_MEMBERS, gz=False)),
            "archive.tgz": File(_tar(TAR_MEMBERS, gz=True)),
            "not-a-tar.txt": File(b"plain text\n", mode=0o640),
            # A tar by content under a name that does not say so: still extracted.
            "renamed.bin": File(_tar(TAR_MEMBERS[3:], gz=True)),
        },
    ),
    "chown-chmod-trees": Case(
        """\
FROM busybox
ADD --chown=1:1 archive.tgz /owned/
COPY --chmod=700 dir/ /m/
COPY --chown=2:3 --chmod=640 dir /n/
""",
        {
            "archive.tgz": File(_tar(TAR_MEMBERS, gz=True)),
            "dir/x": File(b"x\n"),
            "dir/y/z": File(b"z\n", mode=0o600),
        },
        # ADD --chown of a local archive: BuildKit's unpack passes ChownOpts to Untar, so
        # every extracted entry gets the owner (solver/llbsolver/file/unpack.go), as in
        # lamina; buildah 1.28 keeps the owners in the tar headers.
        buildah_differs=tuple(
            f"~ owned/{path}: {field} {was} != 1"
            for path, uid, gid in (("d", 5, 6), ("d/f", 5, 6), ("d/l", 5, 6), ("top.txt", 0, 0))
            for field, was in (("uid", uid), ("gid", gid))
        ),
    ),
    "metadata": Case(
        """\
FROM busybox
ENTRYPOINT ["/bin/echo", "e"]
CMD ["c1", "c2"]
EXPOSE 80 443/tcp 53/udp
VOLUME ["/data", "/logs"]
VOLUME /more
LABEL a=1 "b c"="d e"
WORKDIR /srv
USER 1:2
ENV X=1 Y=2
"""
    ),
    "shell-cmd": Case(
        """\
FROM busybox
CMD echo "shell form"
ENTRYPOINT exec /bin/sh -c "$0"
"""
    ),
    "heredocs": Case(
        """\
# syntax=docker/dockerfile:1
FROM busybox
ENV NAME=heredoc
RUN <<EOT
echo "hello $HOME" > /h1
printf 'a\\nb\\n' > /h2
EOT
COPY <<EOF /etc/greeting
Hi ${NAME:-there}
EOF
COPY <<-"EOF" /quoted
\tno $expansion here
\tEOF
RUN <<ONE cat > /two && cat /two > /three
line $NAME
ONE
""",
        buildah_can=False,
    ),
}

# What BuildKit's reference says the heredoc case gives (buildah 1.28 cannot build it).
HEREDOC_FILES = {
    "h1": b"hello /root\n",
    "h2": b"a\nb\n",
    "etc/greeting": b"Hi heredoc\n",
    "quoted": b"no $expansion here\n",
    "two": b"line heredoc\n",
    "three": b"line heredoc\n",
}


def _run(cmd: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


@dataclass
class Peers:
    """A lamina root and a buildah storage, both holding the same busybox image."""

    work: Path
    lamina_root: Path
    buildah: list[str]

    def lamina(self, *args: str) -> str:
        return _run([*LAMINA, "--root", str(self.lamina_root), *args])

    def build_both(self, name: str, case: Case) -> tuple[Path, Path | None]:
        """Build ``case`` with both; return the rootfs umoci unpacked from each."""
        base = self.work / name
        ctx = base / "ctx"
        build_tree(ctx, case.context)
        (ctx / "Containerfile").write_text(case.containerfile)
        args = [a for k, v in case.build_args.items() for a in ("--build-arg", f"{k}={v}")]
        tag = f"parity-{name}"
        self.lamina("build", "-q", "-t", tag, *args, "-f", str(ctx / "Containerfile"), str(ctx))
        self.lamina("save", "--format", "oci-dir", "-o", str(base / "lamina-oci"), tag)
        lamina_tree = _unpack(base / "lamina-oci", base / "lamina-bundle")
        if not case.buildah_can:
            return lamina_tree, None
        _run(
            [
                *self.buildah,
                "build",
                "-q",
                "--runtime",
                "runc",
                "--pull=never",
                *args,
                "-f",
                str(ctx / "Containerfile"),
                "-t",
                tag,
                str(ctx),
            ]
        )
        _run([*self.buildah, "push", "-q", tag, f"oci:{base / 'buildah-oci'}:{tag}"])
        return lamina_tree, _unpack(base / "buildah-oci", base / "buildah-bundle")


def _unpack(layout: Path, bundle: Path) -> Path:
    index = json.loads((layout / "index.json").read_text())
    name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    _run(["umoci", "unpack", "--image", f"{layout}:{name}", str(bundle)])
    return bundle / "rootfs"


def _config(rootfs: Path) -> dict[str, Any]:
    """The image config of an unpacked bundle, from umoci's own record of it."""
    bundle = rootfs.parent
    meta = json.loads((bundle / "umoci.json").read_text())
    layout = bundle.parent / ("lamina-oci" if bundle.name.startswith("lamina") else "buildah-oci")
    manifest = _blob(layout, meta["from_descriptor_path"]["descriptor_walk"][-1]["digest"])
    config = _blob(layout, manifest["config"]["digest"])
    cc = config.get("config") or {}
    out = {f: cc.get(f) or None for f in CONFIG_FIELDS}
    # buildah stamps its own version in a label; that is buildah's, not the file's.
    labels = {k: v for k, v in (out["Labels"] or {}).items() if not k.startswith("io.buildah.")}
    out["Labels"] = labels or None
    return out


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algo, hexd = digest.split(":")
    value: dict[str, Any] = json.loads((layout / "blobs" / algo / hexd).read_bytes())
    return value


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    for tool in ("buildah", "umoci", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    work = tmp_path_factory.mktemp("parity")
    storage = work / "buildah"
    buildah = [
        "buildah",
        "--storage-driver",
        "overlay",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
    ]
    peers = Peers(work, work / "lamina-root", buildah)
    peers.lamina("bootstrap", "busybox", "-t", "busybox")
    peers.lamina("save", "--format", "oci", "-o", str(work / "busybox.tar"), "busybox")
    _run([*buildah, "pull", "-q", f"oci-archive:{work / 'busybox.tar'}"])
    smoke = work / "smoke"
    smoke.mkdir()
    (smoke / "Containerfile").write_text("FROM busybox\nRUN true\n")
    proc = subprocess.run(
        [*buildah, "build", "-q", "--runtime", "runc", "--pull=never", "-t", "smoke", str(smoke)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"buildah cannot build here: {proc.stderr.strip()[-500:]}")
    yield peers
    # buildah's overlay storage leaves mounts behind: unmount before pytest deletes it.
    subprocess.run([*buildah, "rm", "--all"], capture_output=True, check=False)
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4]
        if point.startswith(str(work)):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# buildah leaves the mount points of its RUN containers in the layer; BuildKit removes
# such stubs (and lamina never makes them in the image's tree).
BUILDAH_RUN_STUBS = ("etc/resolv.conf", "etc/hosts", "etc/hostname", "run")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _without_stubs(buildah: Snapshot, lamina: Snapshot) -> Snapshot:
    out = dict(buildah)
    for rel in BUILDAH_RUN_STUBS:
        snap = out.get(rel)
        if rel in lamina or snap is None:
            continue
        empty_dir = snap.kind == "dir" and not any(p.startswith(rel + "/") for p in out)
        if empty_dir or (snap.kind == "file" and snap.size == 0):
            del out[rel]
    return out


def _as_buildkit(config: dict[str, Any]) -> dict[str, Any]:
    """buildah's config as BuildKit would have it: BuildKit sets PATH in every stage's
    image config that lacks it (dockerfile2llb: "make sure that PATH is always set");
    buildah 1.28 does so only for stages that RUN something."""
    env = list(config["Env"] or [])
    if not any(e.startswith("PATH=") for e in env):
        env.append(DEFAULT_PATH)
    return {**config, "Env": env}


def _params() -> list[Any]:
    out = []
    for name, case in CASES.items():
        if not case.buildah_can:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=case.lamina_bug)] if case.lamina_bug else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_same_tree_and_config_as_buildah(peers: Peers, name: str) -> None:
    case = CASES[name]
    lamina_tree, buildah_tree = peers.build_both(name, case)
    assert buildah_tree is not None
    lamina_snap = snapshot_tree(lamina_tree)
    buildah_snap = _without_stubs(snapshot_tree(buildah_tree), lamina_snap)
    differences = diff_snapshots(buildah_snap, lamina_snap)
    assert differences == list(case.buildah_differs), (
        "buildah (first) vs lamina (second):\n" + "\n".join(differences)
    )
    assert _config(lamina_tree) == _as_buildkit(_config(buildah_tree))


def test_heredocs_give_what_buildkit_documents(peers: Peers) -> None:
    lamina_tree, _ = peers.build_both("heredocs", CASES["heredocs"])
    snap = snapshot_tree(lamina_tree)
    for rel, data in HEREDOC_FILES.items():
        assert (lamina_tree / rel).read_bytes() == data, rel
    # COPY <<EOF makes a root-owned 0644 file, as a COPY from the context does.
    for rel in ("etc/greeting", "quoted"):
        assert snap[rel] == Snap("file", 0o644, 0, 0, *snap[rel][4:6], None, None, None, (), None)
