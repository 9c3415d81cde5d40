"""``lamina bootstrap debian``: a Debian base image from the host's apt mirror, no registry.

debootstrap installs a suite into a temporary directory under the lamina root; the tree
is tidied (host files and logs out, timestamps pinned) and imported as a one-layer image.

debootstrap mounts ``/proc`` and ``/sys`` (and, in a container, a ``/dev`` tmpfs) inside
its target. It runs here in a mount namespace of its own (``unshare --mount``) so those
mounts vanish with its last process, whatever kills it; before the temporary tree is
removed anything still mounted under it is detached, and nothing is deleted while a
mount remains (deleting through a bind mount of the host's ``/dev`` would be a disaster).

Reproducibility: debootstrap itself knows nothing of ``SOURCE_DATE_EPOCH``, so the tidy
step removes what differs from run to run (logs, apt's caches and lists, ldconfig's aux
cache, the host's ``/etc/hostname`` and ``/etc/resolv.conf``) and pins the password-age
fields in ``/etc/shadow``; the importer clamps mtimes. Two runs against an unchanged
mirror then give the same image digest; a mirror that moved gives newer packages.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from lamina.errors import InvalidArgument, LaminaError, NotFound, ToolError, Unsupported
from lamina.image.importer import ImportResult, import_rootfs
from lamina.store.api import Store

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOURCES_DIR = "/etc/apt/sources.list.d"
SOURCES_LIST = "/etc/apt/sources.list"

# Suite, variant and package names become debootstrap arguments: a strict shape keeps
# them from being read as options ("--foo") or paths.
_NAME = re.compile(r"[a-z0-9][a-z0-9.+~-]*\Z")
_VARIANTS = ("minbase", "buildd", "fakechroot", "-")

OnLine = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class AptSource:
    """One apt source: a deb822 stanza or a one-line ``deb`` entry."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DebianOptions:
    """What to bootstrap: ``debootstrap --variant=VARIANT [--include=...] SUITE DIR MIRROR``."""

    suite: str = "bookworm"
    variant: str = "minbase"
    mirror: str | None = None  # None: the mirror apt on this host uses for the suite
    include: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.suite):
            raise InvalidArgument(
                f"bad suite name {self.suite!r}", hint="give a suite like bookworm or trixie"
            )
        if self.variant not in _VARIANTS:
            raise InvalidArgument(
                f"unknown debootstrap variant {self.variant!r}",
                hint="use one of: " + ", ".join(_VARIANTS),
            )
        for name in self.include:
            if not _NAME.match(name):
                raise InvalidArgument(
                    f"bad package name {name!r} in --include",
                    hint="give Debian package names separated by commas, e.g. gcc,libc6-dev",
                )
        if self.mirror is not None and not re.match(r"(https?|file)://\S+\Z", self.mirror):
            raise InvalidArgument(
                f"bad mirror URL {self.mirror!r}",
                hint="give an http://, https:// or file:// URL of a Debian mirror",
            )

    @staticmethod
    def split_include(text: str | None) -> tuple[str, ...]:
        """``"gcc, libc6-dev"`` → ``("gcc", "libc6-dev")``."""
        if not text:
            return ()
        return tuple(p.strip() for p in text.split(",") if p.strip())


# --- apt's sources -------------------------------------------------------------------


def parse_deb822_sources(text: str) -> list[AptSource]:
    """The stanzas of a ``*.sources`` file (sources.list(5), DEB822-STYLE FORMAT)."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        last: str | None = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and last is not None:  # a folded continuation line
                fields[last] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                continue
            last = key.strip().lower()
            fields[last] = value.strip()
        if "uris" not in fields:
            continue
        out.append(
            AptSource(
                types=tuple(fields.get("types", "deb").split()),
                uris=tuple(fields["uris"].split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                enabled=fields.get("enabled", "yes").lower() not in ("no", "false", "0"),
            )
        )
    return out


def parse_one_line_sources(text: str) -> list[AptSource]:
    """The entries of a ``sources.list`` file: ``deb [options] URI SUITE COMPONENT...``."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line, count=1)  # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        out.append(AptSource((words[0],), (words[1],), (words[2],), tuple(words[3:])))
    return out


def host_apt_sources(
    sources_dir: str = SOURCES_DIR, sources_list: str = SOURCES_LIST
) -> list[AptSource]:
    """Every source apt on this host reads, in apt's order (sources.list, then the dir)."""
    found: list[AptSource] = []
    with contextlib.suppress(OSError), open(sources_list, encoding="utf-8") as f:
        found += parse_one_line_sources(f.read())
    for path in sorted(glob.glob(os.path.join(glob.escape(sources_dir), "*"))):
        # apt itself reads only these two suffixes; "*.disabled" and friends are off.
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if path.endswith(".sources"):
            found += parse_deb822_sources(text)
        elif path.endswith(".list"):
            found += parse_one_line_sources(text)
    return found


def host_mirror(
    suite: str, sources_dir: str = SOURCES_DIR, sources_list: str = SOURCES_LIST
) -> str:
    """The mirror apt on this host uses for ``suite`` (a binary ``deb`` source that lists
    the suite itself); else the first enabled Debian mirror; else deb.debian.org."""
    sources = [
        s for s in host_apt_sources(sources_dir, sources_list) if s.enabled and "deb" in s.types
    ]
    for source in sources:
        if suite in source.suites and "main" in source.components:
            return source.uris[0].rstrip("/")
    for source in sources:
        uri = source.uris[0].rstrip("/")
        if uri.endswith("/debian"):
            return uri
    return DEFAULT_MIRROR


# --- running debootstrap -------------------------------------------------------------


def find_debootstrap(search_path: str | None = None) -> str:
    """debootstrap's path: on ``search_path`` (default: $PATH, then the sbin dirs, which
    a non-login root shell may lack)."""
    if search_path is not None:
        path = shutil.which("debootstrap", path=search_path)
    else:
        path = shutil.which("debootstrap") or shutil.which(
            "debootstrap", path="/usr/sbin:/sbin:/usr/local/sbin"
        )
    if path is None:
        raise NotFound(
            "debootstrap is not installed on this host",
            hint="install it: apt-get install debootstrap",
        )
    return path


def remove_tree(path: str) -> None:
    """Detach every mount under ``path``, then delete it; refuse while a mount remains."""
    from lamina.snapshot.mount import unmount_all
    from lamina.snapshot.mountinfo import mounts_under

    if not os.path.lexists(path):
        return
    # Lazy when busy: a process that still holds a mount cannot keep the tree from going.
    with contextlib.suppress(LaminaError):
        unmount_all(path, lazy_fallback=True)
    left = mounts_under(path)
    if left:
        raise ToolError(
            f"{left[0]} is still mounted; not deleting {path}",
            hint=f"unmount it (umount -l {left[0]}) and remove {path} by hand",
        )
    shutil.rmtree(path)


@contextlib.contextmanager
def temporary_tree(parent: str, prefix: str = "debootstrap-") -> Iterator[str]:
    """A fresh directory under ``parent`` (0700: setuid binaries land in it), removed on
    the way out, whatever the way (error, KeyboardInterrupt)."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield tmp
    finally:
        remove_tree(tmp)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop debootstrap and everything it started (dpkg in the chroot...)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Children may outlive the leader; they are in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _failure(lines: Sequence[str], code: int, mirror: str, suite: str) -> ToolError:
    errors = [ln for ln in lines if ln.startswith("E:")]
    first = errors[0][2:].strip() if errors else (lines[-1] if lines else f"exit code {code}")
    tail = " | ".join(lines[-5:])
    if any("Release" in ln and ("Failed getting" in ln or "Couldn't" in ln) for ln in errors):
        return ToolError(
            f"debootstrap could not get {suite}'s Release file from {mirror}: mirror "
            "unreachable or suite unknown",
            hint="check the network and the suite name, or pass --mirror URL of a reachable "
            "Debian mirror",
        )
    if any("Couldn't find these debs" in ln or "Couldn't download" in ln for ln in errors):
        return ToolError(
            f"debootstrap failed: {first}",
            hint="check the package names given to --include, and that the mirror is reachable",
        )
    return ToolError(
        f"debootstrap exited {code}: {first}",
        hint=f"its last lines: {tail}" if tail else "run debootstrap by hand to see why",
    )


def run_debootstrap(
    target: str, options: DebianOptions, mirror: str, *, on_line: OnLine | None = None
) -> None:
    """debootstrap ``options.suite`` into the empty directory ``target``."""
    if os.geteuid() != 0:
        raise Unsupported(
            "bootstrapping Debian needs root (debootstrap chroots and makes device nodes)",
            hint="run lamina as root",
        )
    cmd = ["unshare", "--mount", "--propagation", "private", find_debootstrap()]
    if options.variant != "-":
        cmd.append(f"--variant={options.variant}")
    if options.include:
        cmd.append("--include=" + ",".join(options.include))
    cmd += [options.suite, target, mirror]
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "SOURCE_DATE_EPOCH", "http_proxy", "https_proxy", "no_proxy")
    }
    env.update(LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive", HOME="/root")
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own group: stopped as a whole on Ctrl-C
        )
    except OSError as exc:
        raise ToolError(f"cannot start debootstrap: {exc}") from exc
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            tail.append(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0:
        raise _failure(list(tail), code, mirror, options.suite)


# --- tidying the tree ----------------------------------------------------------------


def _clear_dir(path: str, keep: Sequence[str] = ()) -> None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        if name in keep:
            continue
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def _truncate_logs(path: str) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                # Empty files stay: packages expect wtmp, btmp, lastlog to exist.
                os.truncate(full, 0)


def _pin_shadow(path: str, epoch: int) -> None:
    """Field 3 of shadow(5) is the day of the last password change: the build's date
    unless pinned, so two bootstraps on different days would differ."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return
    day = str(epoch // 86400)
    out = []
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[2]:
            fields[2] = day
        out.append(":".join(fields))
    st = os.stat(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    os.chmod(path, st.st_mode & 0o7777)
    os.chown(path, st.st_uid, st.st_gid)


def tidy_rootfs(rootfs: str, source_date_epoch: int | None = None) -> None:
    """Remove what debootstrap leaves that does not belong in an image."""
    for rel in ("etc/hostname", "etc/resolv.conf", "var/cache/ldconfig/aux-cache"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rootfs, rel))
    # The runtime mounts a fresh /dev; device nodes in a layer are refused by careful
    # unpackers (lamina's own included) unless privileged.
    _clear_dir(os.path.join(rootfs, "dev"))
    _clear_dir(os.path.join(rootfs, "tmp"))
    _clear_dir(os.path.join(rootfs, "var/cache/apt/archives"), keep=("partial", "lock"))
    for name in glob.glob(os.path.join(glob.escape(rootfs), "var/cache/apt/*.bin")):
        os.unlink(name)
    _clear_dir(os.path.join(rootfs, "var/lib/apt/lists"), keep=("partial", "lock"))
    for rel in ("var/log/bootstrap.log", "var/log/dpkg.log", "var/log/alternatives.log"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rootfs, rel))
    _clear_dir(os.path.join(rootfs, "var/log/apt"))  # eipp.log.xz, history, term logs
    _truncate_logs(os.path.join(rootfs, "var/log"))
    if source_date_epoch is not None:
        _pin_shadow(os.path.join(rootfs, "etc/shadow"), source_date_epoch)


# --- the whole command ---------------------------------------------------------------


def bootstrap_debian(
    store: Store,
    name: str,
    options: DebianOptions,
    *,
    workdir: str,
    source_date_epoch: int | None = None,
    on_line: OnLine | None = None,
    progress: Callable[..., None] | None = None,
) -> ImportResult:
    """debootstrap into a temporary directory under ``workdir`` (the lamina root), tidy,
    import as ``name``; the temporary tree is gone when this returns or raises."""
    mirror = (options.mirror or host_mirror(options.suite)).rstrip("/")
    with temporary_tree(workdir) as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        os.mkdir(rootfs, 0o755)
        run_debootstrap(rootfs, options, mirror, on_line=on_line)
        tidy_rootfs(rootfs, source_date_epoch)
        included = f" --include={','.join(options.include)}" if options.include else ""
        return import_rootfs(
            store,
            rootfs,
            name,
            changes=[f"ENV PATH={DEFAULT_PATH}", 'CMD ["bash"]'],
            message=(f"debootstrap --variant={options.variant}{included} {options.suite} {mirror}"),
            source_date_epoch=source_date_epoch,
            progress=progress,
        )
