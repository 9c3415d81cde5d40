"""`lamina bootstrap debian`: apt's mirror found, debootstrap run, tree tidied, image runs.

The image itself is made once per machine and day (helpers.debian); the tests here load
it into a fresh root and look at it from outside (the unpacked tree, the config) and
from inside (runc).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from helpers.debian import EPOCH, debian_image_fixture, load_debian  # noqa: F401  (fixture)
from lamina.errors import InvalidArgument, NotFound
from lamina.image.bootstrap.debian import (
    DebianOptions,
    find_debootstrap,
    host_mirror,
    parse_deb822_sources,
    parse_one_line_sources,
    remove_tree,
    tidy_rootfs,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main contrib
 non-free

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
"""


# --- apt's sources (pure) -------------------------------------------------------------


def test_deb822_stanzas_with_comments_continuations_and_enabled() -> None:
    sources = parse_deb822_sources(DEB822)
    assert [s.uris for s in sources] == [
        ("http://mirror.example/debian",),
        ("http://security.example/debian-security",),
        ("http://disabled.example/debian",),
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[1].types == ("deb", "deb-src")
    assert sources[1].components == ("main", "contrib", "non-free")
    assert [s.enabled for s in sources] == [True, True, False]


def test_one_line_sources_with_options_and_comments() -> None:
    text = (
        "# a comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main contrib\n"
        "deb-src http://a.example/debian bookworm main\n"
        "deb http://b.example/debian trixie main # trailing\n"
        "garbage line\n"
    )
    sources = parse_one_line_sources(text)
    assert [(s.types, s.uris[0], s.suites[0]) for s in sources] == [
        (("deb",), "http://a.example/debian", "bookworm"),
        (("deb-src",), "http://a.example/debian", "bookworm"),
        (("deb",), "http://b.example/debian", "trixie"),
    ]
    assert sources[0].components == ("main", "contrib")


def test_host_mirror_picks_the_suite_and_skips_disabled_and_other_suffixes(
    tmp_path: Path,
) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(DEB822)
    (d / "other.list.disabled-by-farm").write_text("deb http://off.example/debian trixie main\n")
    (d / "extra.list").write_text("deb http://extra.example/debian/ sid main\n")
    lst = tmp_path / "sources.list"
    assert host_mirror("bookworm", str(d), str(lst)) == "http://mirror.example/debian"
    assert host_mirror("sid", str(d), str(lst)) == "http://extra.example/debian"
    # trixie is listed only by a disabled stanza and a file apt ignores: fall back to the
    # first enabled Debian mirror.
    assert host_mirror("trixie", str(d), str(lst)) == "http://mirror.example/debian"
    assert host_mirror("bookworm", str(tmp_path / "none"), str(lst)) == (
        "http://deb.debian.org/debian"
    )
    lst.write_text("deb http://list.example/debian bookworm main\n")
    # sources.list comes first, as apt reads it first.
    assert host_mirror("bookworm", str(d), str(lst)) == "http://list.example/debian"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"suite": "--foo"},
        {"suite": "book worm"},
        {"variant": "maxbase"},
        {"include": ("gcc", "-x")},
        {"include": ("a/b",)},
        {"mirror": "ftp://x/debian"},
        {"mirror": "http://x/debian --foo"},
    ],
)
def test_options_refuse_what_would_become_a_bad_debootstrap_argument(
    kwargs: dict[str, object],
) -> None:
    with pytest.raises(InvalidArgument):
        DebianOptions(**kwargs)  # type: ignore[arg-type]


def test_split_include() -> None:
    assert DebianOptions.split_include(" gcc, libc6-dev,,") == ("gcc", "libc6-dev")
    assert DebianOptions.split_include(None) == ()


def test_missing_debootstrap_is_a_clear_error() -> None:
    with pytest.raises(NotFound) as info:
        find_debootstrap(search_path="/nonexistent")
    assert info.value.hint is not None and "apt-get install debootstrap" in info.value.hint


def test_tidy_removes_host_files_logs_caches_and_pins_shadow(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for rel, text in {
        "etc/hostname": "host\n",
        "etc/resolv.conf": "nameserver 10.0.0.1\n",
        "etc/shadow": "root:*:20785:0:99999:7:::\nnobody:*::0:99999:7:::\n",
        "var/cache/apt/archives/bash_5.2_amd64.deb": "deb",
        "var/cache/apt/pkgcache.bin": "bin",
        "var/lib/apt/lists/x_Packages": "list",
        "var/log/bootstrap.log": "log",
        "var/log/apt/eipp.log.xz": "xz",
        "var/log/wtmp": "utmp",
        "var/cache/ldconfig/aux-cache": "aux",
        "tmp/junk": "junk",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "var/cache/apt/archives/partial").mkdir()
    (root / "var/lib/apt/lists/partial").mkdir()
    (root / "dev").mkdir()
    if os.geteuid() == 0:
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "dev/pts").mkdir()
    os.chmod(root / "etc/shadow", 0o640)
    tidy_rootfs(str(root), EPOCH)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == [
        "dev",
        "etc",
        "etc/shadow",
        "tmp",
        "var",
        "var/cache",
        "var/cache/apt",
        "var/cache/apt/archives",
        "var/cache/apt/archives/partial",
        "var/cache/ldconfig",
        "var/lib",
        "var/lib/apt",
        "var/lib/apt/lists",
        "var/lib/apt/lists/partial",
        "var/log",
        "var/log/apt",
        "var/log/wtmp",
    ]
    assert (root / "var/log/wtmp").stat().st_size == 0
    day = EPOCH // 86400
    assert (root / "etc/shadow").read_text() == (
        f"root:*:{day}:0:99999:7:::\nnobody:*::0:99999:7:::\n"
    )
    assert (root / "etc/shadow").stat().st_mode & 0o777 == 0o640


@pytest.mark.root
def test_remove_tree_detaches_mounts_first(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "rootfs/proc").mkdir(parents=True)
    (tree / "rootfs/etc").mkdir()
    (tree / "rootfs/etc/f").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tree / "rootfs/proc")], check=True)
    (tree / "rootfs/proc/inside").write_text("y")
    remove_tree(str(tree))
    assert not tree.exists()
    assert str(tree) not in Path("/proc/self/mountinfo").read_text()


# --- the real thing -------------------------------------------------------------------


def _leftovers(root: Path) -> list[str]:
    found = [p.name for p in root.glob("debootstrap-*")] if root.exists() else []
    found += [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(root))
    ]
    return found


@pytest.mark.root
@pytest.mark.interop
def test_unreachable_mirror_is_a_clear_error_and_leaves_nothing(lamina: Lamina) -> None:
    proc = lamina(
        "bootstrap", "debian", "--mirror", "http://127.0.0.1:9/debian", "-t", "x", check=False
    )
    assert proc.returncode == 9, proc.stderr
    assert "mirror unreachable" in proc.stderr and "--mirror" in proc.stderr
    assert _leftovers(lamina.root) == []  # type: ignore[attr-defined]
    assert lamina("images", "-q").stdout.strip() == ""


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.interop
def test_debian_image_runs_with_runc(debian_image: Path, lamina: Lamina) -> None:
    load_debian(lamina, debian_image)
    out = lamina("run", "--rm", "debian:bookworm", "cat", "/etc/debian_version").stdout
    assert re.fullmatch(r"12\.\d+\n", out), out
    # No command: CMD ["bash"] reads an empty stdin and exits 0.
    assert lamina("run", "--rm", "debian:bookworm").returncode == 0
    out = lamina("run", "--rm", "debian:bookworm", "sh", "-c", "echo $PATH; id -u").stdout
    assert out == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n0\n"


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.interop
def test_debian_config_and_tree_are_tidy(
    debian_image: Path, lamina: Lamina, tmp_path: Path
) -> None:
    load_debian(lamina, debian_image)
    layout = tmp_path / "layout"
    lamina("save", "--format", "oci-dir", "-o", str(layout), "debian:bookworm")
    index = json.loads((layout / "index.json").read_text())
    manifest = _blob(layout, index["manifests"][0]["digest"])
    config = _blob(layout, manifest["config"]["digest"])
    assert config["config"]["Cmd"] == ["bash"]
    assert (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in (config["config"]["Env"])
    )
    assert len(manifest["layers"]) == 1
    assert config["created"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH of the helper
    comment = config["history"][-1]["comment"]
    assert comment.startswith("debootstrap --variant=minbase bookworm http")

    tree = tmp_path / "tree"
    lamina("unpack", "debian:bookworm", str(tree))
    assert os.listdir(tree / "dev") == []
    for rel in ("etc/hostname", "etc/resolv.conf", "var/log/bootstrap.log", "debootstrap"):
        assert not (tree / rel).exists(), rel
    assert [p.name for p in (tree / "var/cache/apt/archives").iterdir()] == ["partial"]
    assert [p.name for p in (tree / "var/lib/apt/lists").iterdir()] == ["partial"]
    assert (tree / "etc/shadow").read_text().startswith(f"root:*:{EPOCH // 86400}:")
    # apt's sources: the mirror this host's apt uses, for the suite, component main.
    sources = (tree / "etc/apt/sources.list").read_text().split()
    assert sources == ["deb", host_mirror("bookworm"), "bookworm", "main"]
    assert max(p.lstat().st_mtime for p in tree.rglob("*")) <= EPOCH


def _blob(layout: Path, digest: str) -> dict[str, object]:
    algo, hexd = digest.split(":")
    value: dict[str, object] = json.loads((layout / "blobs" / algo / hexd).read_bytes())
    return value


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.interop
def test_apt_works_inside(debian_image: Path, lamina: Lamina) -> None:
    load_debian(lamina, debian_image)
    proc = lamina(
        "run",
        "--rm",
        "debian:bookworm",
        "sh",
        "-c",
        "apt-get update -qq && apt-cache policy base-files"
        " && apt-get install -s -qq --no-install-recommends hello | grep '^Inst hello '",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert host_mirror("bookworm") in proc.stdout


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.interop
def test_ctrl_c_mid_bootstrap_stops_debootstrap_and_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = subprocess.Popen(
        [*LAMINA, "--root", str(root), "bootstrap", "debian", "-t", "x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        # Wait for the second stage: packages being configured in the chroot, with
        # /proc mounted inside it (in debootstrap's own mount namespace).
        while time.monotonic() < deadline and proc.poll() is None:
            infos = list(root.glob("debootstrap-*/rootfs/var/lib/dpkg/info/*.list"))
            if len(infos) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        targets = list(root.glob("debootstrap-*"))
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert targets and not any(t.exists() for t in targets)
    assert _leftovers(root) == []
    ps = subprocess.run(["ps", "-eo", "args"], check=False, capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if str(root) in line]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.interop
def test_same_epoch_same_digest(debian_image: Path, lamina: Lamina) -> None:
    """A second debootstrap with the same SOURCE_DATE_EPOCH gives the image the cached
    one is, byte for byte (the mirror's bookworm changes only at point releases)."""
    out = lamina(
        "bootstrap", "debian", "-t", "again", "--json", env={"SOURCE_DATE_EPOCH": str(EPOCH)}
    ).stdout
    with tarfile.open(debian_image) as tf:
        f = tf.extractfile("index.json")
        assert f is not None
        cached = json.loads(f.read())["manifests"][0]["digest"]
    assert json.loads(out)["digest"] == cached
