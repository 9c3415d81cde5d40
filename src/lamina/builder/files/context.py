"""What a COPY or ADD selects from its source root, and the content digest of it.

A source root is the build context (a directory on the host, filtered by
.dockerignore) or another stage's or image's rootfs (``COPY --from``). :func:`select`
turns the instruction's source words into a list of :class:`Source` objects, in the
order they are to be copied; :func:`checksum` hashes exactly those objects for the build
cache (contents, types, permission bits, symlink targets; never mtimes or inodes).

The rules (Dockerfile reference, COPY; research note §3):

- Sources are relative to the root; a leading ``/`` is dropped. ``..`` that leaves the
  root is refused (``COPY ../x``) with the instruction's source named in the message.
- Wildcards are Go's ``filepath.Match`` per path component (``src/*/*.go``). A source
  that does not exist, and a wildcard that matches nothing, are errors (NotFound). In
  the context, ignored paths do not exist (BuildKit never sends them).
- A source path is followed through symlinks (BuildKit follows the source path; buildah
  too). In the *context* a symlink that leads outside the context is refused (Unsafe);
  in a *rootfs* symlinks resolve inside that root, chroot-style. Symlinks found while
  walking a source directory are not followed: they are copied as symlinks.
- A directory source selects the directory (``target`` ``""``: the destination itself)
  and everything below it; a file selects itself, named by its base name.
- ``--parents``: the target keeps the source's path, from the start or from a ``/./``
  pivot (``COPY --parents ./src/./app/*.py /dst/`` gives ``/dst/app/x.py``); the parent
  directories between are selected too.
- ``--exclude`` patterns (.dockerignore syntax) drop what they match, matched both
  against the path below the source and against the path in the root.
- Sockets are skipped (a tar cannot carry them; Docker skips them too); FIFOs and
  device nodes are refused: a build copies files, not devices.

Reading is done through ``O_PATH`` fds with no symlink crossing (``open_beneath``), so a
tree that changes between select and checksum or copy fails instead of leaking a file.
A file or directory that vanishes, is replaced, or changes size or mtime after it was
selected (or while it is hashed) stops the build with a :class:`Conflict` naming it
(:func:`changed`), never an OSError: the selection, its checksum and the copy must
describe the same files. (A name that vanishes before it is first stat'ed was simply
not there, as for BuildKit's walker.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lamina.atomic import write_atomic
from lamina.builder.files.ignore import IgnoreMatcher, has_magic
from lamina.builder.files.pathglob import compile_name
from lamina.errors import Conflict, InvalidArgument, LaminaError, NotFound, Unsafe, Unsupported
from lamina.layers import fsops

CHUNK = 1 << 20
MAX_LINKS = 40
RACY_NS = 100_000_000  # a timestamp tick is a few ms (kernel jiffies); see checksum()
RACY_COARSE_NS = 2_000_000_000  # filesystems with whole-second (FAT: 2 s) timestamps
_STATCACHE_VERSION = 1

FILE, DIR, SYMLINK = "file", "dir", "symlink"
# what an OSError on a path we have just seen means: it went away or was replaced
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.EINVAL, errno.ELOOP, errno.EXDEV)


def changed(relpath: str, how: str = "") -> Conflict:
    """The error for a source that changed under the build (``how``: what was seen)."""
    return Conflict(
        f"{relpath or '.'!r} changed while the build was reading it{how}",
        hint="the build context changed while it was read; retry",
    )


@dataclass(frozen=True, slots=True)
class Source:
    """One file system object selected by a COPY/ADD source.

    ``relpath``: where it is in the source root (symlinks of the source path resolved).
    ``target``: where it goes, relative to the destination directory (``""`` is the
    destination itself: a directory source copies its contents). ``top``: matched by a
    source word itself (not found inside a selected directory); ``operand``: the index
    of that word. ``mode`` holds the permission bits and setuid/setgid/sticky.
    """

    relpath: str
    target: str
    kind: str  # FILE, DIR or SYMLINK
    mode: int
    size: int = 0
    linkname: str = ""
    top: bool = False
    operand: int = 0
    wildcard: bool = False
    mtime_ns: int = 0
    dev: int = 0
    ino: int = 0
    ctime_ns: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1


class _Selector:
    def __init__(
        self,
        root: str,
        ignore: IgnoreMatcher | None,
        excludes: IgnoreMatcher | None,
        context: bool,
        instruction: str,
    ) -> None:
        self.root = os.path.realpath(root)
        self.ignore = ignore if ignore else None
        self.excludes = excludes
        self.context = context
        self.instruction = instruction
        self.out: list[Source] = []
        self.seen: dict[str, int] = {}  # target -> index in out (a later one wins)

    # ------------------------------------------------------------------ resolution

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self.root, rel) if rel else self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise fsops.os_error("stat", rel, exc) from exc

    def _ignored(self, rel: str) -> bool:
        return self.ignore is not None and bool(rel) and self.ignore.ignored(rel)

    def resolve(self, rel: str, word: str) -> tuple[str, os.stat_result] | None:
        """Follow symlinks in the root-relative ``rel``; (resolved path, lstat) or None."""
        todo = [p for p in rel.split("/") if p and p != "."][::-1]
        done: list[str] = []
        links = 0
        st = self._lstat("")
        assert st is not None
        while todo:
            part = todo.pop()
            if part == "..":
                if done:
                    done.pop()
                elif self.context:  # cannot happen: checked on the word and the links
                    raise self._escape(word)
                continue  # a rootfs: ".." at the root stays at the root (chroot-style)
            cur = "/".join([*done, part])
            if self._ignored(cur):
                return None
            nst = self._lstat(cur)
            if nst is None:
                return None
            if stat.S_ISLNK(nst.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise Unsafe(f"{self.instruction} source {word!r}: too many symlinks")
                target = self._readlink(cur)
                if target.startswith("/"):
                    if self.context:
                        raise self._link_escape(word, cur, target)
                    done = []
                elif self.context:
                    depth = len(done)
                    for comp in target.split("/"):
                        depth = depth - 1 if comp == ".." else depth + (comp not in ("", "."))
                        if depth < 0:
                            raise self._link_escape(word, cur, target)
                todo.extend(p for p in reversed(target.split("/")) if p and p != ".")
                continue
            if todo and not stat.S_ISDIR(nst.st_mode):
                return None
            done.append(part)
            st = nst
        return "/".join(done), st

    def _readlink(self, rel: str) -> str:
        try:
            return os.readlink(os.path.join(self.root, rel))
        except OSError as exc:  # lstat said symlink a moment ago
            if exc.errno in _GONE:
                raise changed(rel, " (a symlink vanished or was replaced)") from exc
            raise fsops.os_error("readlink", rel, exc) from exc

    def _escape(self, word: str) -> LaminaError:
        where = "the build context" if self.context else "the source image's root"
        return Unsafe(
            f"{self.instruction} failed: source {word!r} is outside {where}",
            hint="sources are relative to the context; move the file into it",
        )

    def _link_escape(self, word: str, link: str, target: str) -> LaminaError:
        return Unsafe(
            f"{self.instruction} failed: source {word!r}: symlink {link!r} -> {target!r} "
            "points outside the build context",
            hint="copy the file into the context instead of linking to it",
        )

    # ------------------------------------------------------------------ matching

    def expand(self, parts: list[str], word: str) -> list[tuple[str, str, os.stat_result]]:
        """(written path, resolved path, lstat) of every match of a cleaned pattern."""
        found: list[tuple[str, str, os.stat_result]] = [("", "", self._root_stat())]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: list[tuple[str, str, os.stat_result]] = []
            for written, resolved, st in found:
                if not stat.S_ISDIR(st.st_mode):
                    continue
                names = self._match(resolved, part) if has_magic(part) else [part]
                for name in names:
                    w = f"{written}/{name}" if written else name
                    if self._ignored(w):
                        continue
                    r = self.resolve(f"{resolved}/{name}" if resolved else name, word)
                    if r is None:
                        continue
                    if not last and not stat.S_ISDIR(r[1].st_mode):
                        continue
                    nxt.append((w, r[0], r[1]))
            found = nxt
        return found

    def _root_stat(self) -> os.stat_result:
        st = self._lstat("")
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise NotFound(f"{self.instruction} failed: source root {self.root!r} is missing")
        return st

    def _match(self, resolved: str, pattern: str) -> list[str]:
        glob = compile_name(pattern)  # an automaton: "*a*a*a*b" cannot backtrack
        path = os.path.join(self.root, resolved) if resolved else self.root
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise fsops.os_error("list", resolved or ".", exc) from exc
        return [n for n in names if glob.fullmatch(n)]

    # ------------------------------------------------------------------ emitting

    def excluded(self, below: str, in_root: str) -> bool:
        ex = self.excludes
        if ex is None:
            return False
        return (bool(below) and ex.ignored(below)) or (bool(in_root) and ex.ignored(in_root))

    def emit(self, src: Source) -> None:
        idx = self.seen.get(src.target)
        if idx is not None and src.target:
            prev = self.out[idx]
            if prev.kind == DIR and src.kind == DIR:
                return  # a directory met twice (two operands, --parents): keep the first
        self.seen[src.target] = len(self.out)
        self.out.append(src)

    def source(
        self,
        resolved: str,
        target: str,
        st: os.stat_result,
        *,
        top: bool,
        operand: int,
        wildcard: bool,
    ) -> Source | None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            kind = FILE
        elif stat.S_ISDIR(mode):
            kind = DIR
        elif stat.S_ISLNK(mode):
            kind = SYMLINK
        elif stat.S_ISSOCK(mode):
            return None
        else:
            raise Unsupported(
                f"{self.instruction} failed: {resolved!r} is a special file (FIFO or device)",
                hint="a build copies regular files, directories and symlinks only",
            )
        link = self._readlink(resolved) if kind == SYMLINK else ""
        return Source(
            relpath=resolved,
            target=target,
            kind=kind,
            mode=stat.S_IMODE(mode),
            size=st.st_size if kind == FILE else 0,
            linkname=link,
            top=top,
            operand=operand,
            wildcard=wildcard,
            mtime_ns=st.st_mtime_ns,
            dev=st.st_dev,
            ino=st.st_ino,
            ctime_ns=st.st_ctime_ns,
            uid=st.st_uid,
            gid=st.st_gid,
            nlink=st.st_nlink,
        )

    def walk(self, resolved: str, target: str, operand: int) -> None:
        """Emit everything below the directory ``resolved`` (not following symlinks)."""
        pending: list[tuple[str, str, os.stat_result]] = []  # ignored dirs not yet emitted
        self._walk(resolved, target, "", operand, pending)

    def _walk(
        self,
        resolved: str,
        target: str,
        below: str,
        operand: int,
        pending: list[tuple[str, str, os.stat_result]],
    ) -> None:
        path = os.path.join(self.root, resolved) if resolved else self.root
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:  # a directory we stat'ed (and maybe emitted) a moment ago
            if exc.errno in _GONE:
                raise changed(resolved, " (a directory vanished or was replaced)") from exc
            raise fsops.os_error("list", resolved or ".", exc) from exc
        ign, ex, S_ISDIR = self.ignore, self.excludes, stat.S_ISDIR
        for entry in entries:
            name = entry.name
            rel = f"{resolved}/{name}" if resolved else name
            tgt = f"{target}/{name}" if target else name
            blw = f"{below}/{name}" if below else name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = S_ISDIR(st.st_mode)
            if ex is not None and (ex.ignored(blw) or ex.ignored(rel)):
                if is_dir and ex.may_contain_included(blw):
                    # an exclude with "!" exceptions below: walk, emit the dir if needed
                    self._walk_pending((rel, tgt, st), blw, operand, pending)
                continue
            if ign is not None and ign.ignored(rel):
                if is_dir and ign.may_contain_included(rel):
                    self._walk_pending((rel, tgt, st), blw, operand, pending)
                continue
            src = self.source(rel, tgt, st, top=False, operand=operand, wildcard=False)
            if src is None:
                continue
            if pending:
                self._flush(pending, operand)
            self.emit(src)
            if is_dir:
                self._walk(rel, tgt, blw, operand, pending)

    def _walk_pending(
        self,
        item: tuple[str, str, os.stat_result],
        blw: str,
        operand: int,
        pending: list[tuple[str, str, os.stat_result]],
    ) -> None:
        """Walk an ignored directory ``(rel, target, stat)`` that may hold re-included
        paths; it is emitted (by :meth:`_flush`) only before the first of them."""
        pending.append(item)
        self._walk(item[0], item[1], blw, operand, pending)
        if pending and pending[-1] is item:
            pending.pop()

    def _flush(self, pending: list[tuple[str, str, os.stat_result]], operand: int) -> None:
        for rel, tgt, st in pending:
            src = self.source(rel, tgt, st, top=False, operand=operand, wildcard=False)
            if src is not None:
                self.emit(src)
        pending.clear()


def _split_word(word: str, parents: bool) -> tuple[str, str]:
    """(cleaned pattern, pivot) of a source word; the pivot is where --parents starts."""
    raw = word.lstrip("/")
    while raw.startswith("./"):
        raw = raw[2:].lstrip("/")
    pivot = ""
    if parents:
        probe = "/" + raw
        if "/./" in probe:
            head, _, _ = probe.partition("/./")
            pivot = posixpath.normpath(head.lstrip("/")) if head.strip("/") else ""
            raw = probe.replace("/./", "/", 1).lstrip("/")
    cleaned = posixpath.normpath(raw) if raw else "."
    return cleaned, "" if pivot == "." else pivot


def select(
    root: str,
    patterns: Sequence[str],
    *,
    ignore: IgnoreMatcher | None = None,
    excludes: Sequence[str] = (),
    parents: bool = False,
    context: bool | None = None,
    instruction: str = "COPY",
) -> list[Source]:
    """Resolve COPY/ADD source words inside ``root`` (see the module docstring).

    ``context`` (default: ``ignore is not None``) says that ``root`` is a build context:
    symlinks may not lead out of it. Otherwise it is a rootfs, where they resolve inside.
    """
    is_context = ignore is not None if context is None else context
    ex = IgnoreMatcher.parse("\n".join(excludes)) if excludes else None
    sel = _Selector(root, ignore, ex, is_context, instruction)
    for operand, word in enumerate(patterns):
        if "\0" in word:
            raise InvalidArgument(f"{instruction} source {word!r} contains a NUL byte")
        cleaned, pivot = _split_word(word, parents)
        if cleaned == ".." or cleaned.startswith("../"):
            raise sel._escape(word)
        parts = [] if cleaned == "." else cleaned.split("/")
        wildcard = any(has_magic(p) for p in parts)
        matches = sel.expand(parts, word)
        if not matches:
            where = "build context" if is_context else "source image"
            raise NotFound(
                f"{instruction} failed: file not found in {where}: {word}",
                hint="check the path (and .dockerignore, which hides files from COPY/ADD)"
                if is_context
                else "check the path inside the stage or image named by --from",
            )
        for written, resolved, st in matches:
            if parents:
                rel_to_pivot = written[len(pivot) + 1 :] if pivot else written
                if pivot and not (written == pivot or written.startswith(pivot + "/")):
                    rel_to_pivot = written
                target = "" if rel_to_pivot in ("", ".") else rel_to_pivot
                _emit_parents(sel, written, target, operand)
            else:
                target = "" if stat.S_ISDIR(st.st_mode) else written.rpartition("/")[2]
            if sel.excluded(target if parents else written.rpartition("/")[2], written):
                continue
            src = sel.source(resolved, target, st, top=True, operand=operand, wildcard=wildcard)
            if src is None:
                continue
            sel.emit(src)
            if src.kind == DIR:
                sel.walk(resolved, target, operand)
    return sel.out


def _emit_parents(sel: _Selector, written: str, target: str, operand: int) -> None:
    """--parents: select the directories between the pivot and a match."""
    if "/" not in target:
        return
    t_parts = target.split("/")[:-1]
    w_parts = written.split("/")
    base = w_parts[: len(w_parts) - len(target.split("/"))]
    for i in range(len(t_parts)):
        tgt = "/".join(t_parts[: i + 1])
        if tgt in sel.seen:
            continue
        w = "/".join([*base, *t_parts[: i + 1]])
        r = sel.resolve(w, w)
        if r is None:
            continue
        src = sel.source(r[0], tgt, r[1], top=False, operand=operand, wildcard=False)
        if src is not None:
            sel.emit(src)


# ---------------------------------------------------------------------- checksum


def checksum(
    root: str, sources: Sequence[Source], *, cache_dir: str | None = None, owners: bool = False
) -> str:
    """``sha256:…`` of what ``sources`` select: targets, types, permission bits, symlink
    targets and file contents (never mtimes or inode numbers; owners and which files are
    hardlinked to each other only with ``owners``, for ``COPY --from``, which keeps them).

    ``cache_dir``: keep a stat cache there, ``(dev, ino, size, mtime_ns, ctime_ns)`` ->
    content digest, so an unchanged file is not read again (ctime changes with every
    write, even one that forges the mtime back). Files changed within one timestamp tick
    of now are hashed but not remembered: a file rewritten within that tick (same inode
    reused, same size) would look unchanged (git's "racily clean" problem).
    """
    now = time.time_ns()
    cache = _StatCache(cache_dir, root) if cache_dir else None
    h = hashlib.sha256()
    h.update(b"lamina-context-v1\n")
    buf = bytearray(CHUNK)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    first_of: dict[tuple[int, int], int] = {}  # hardlinked files: (dev, ino) -> index
    try:
        for index, src in enumerate(sources):
            content = ""
            if src.kind == FILE:
                key = f"{src.dev}:{src.ino}:{src.size}:{src.mtime_ns}:{src.ctime_ns}"
                content = (cache.get(key) if cache else None) or ""
                if not content:
                    content = _hash_file(root_fd, src, buf)
                    if cache and not _racy(src, now):
                        cache.put(key, content)
                elif cache:
                    cache.keep(key)
            fields = [
                src.kind,
                src.target,
                src.relpath,
                "top" if src.top else "",
                f"{src.mode:o}",
                str(src.size),
                src.linkname,
                content,
            ]
            if owners:
                link = ""
                if src.kind == FILE and src.nlink > 1:
                    link = str(first_of.setdefault((src.dev, src.ino), index))
                fields += [str(src.uid), str(src.gid), link]
            record = "\0".join(fields)
            h.update(record.encode("utf-8", "surrogateescape") + b"\n")
    finally:
        os.close(root_fd)
    if cache:
        cache.save()
    return "sha256:" + h.hexdigest()


def _racy(src: Source, now: int) -> bool:
    newest = max(src.ctime_ns, src.mtime_ns)
    coarse = src.ctime_ns % 1_000_000_000 == 0 and src.mtime_ns % 1_000_000_000 == 0
    return newest >= now - (RACY_COARSE_NS if coarse else RACY_NS)


def open_source(root_fd: int, src: Source) -> int:
    """Open a selected regular file for reading, crossing no symlink; it must still be
    the same file, of the same size and mtime (Conflict if the context changed while
    the build ran)."""
    try:
        fd = fsops.open_beneath(root_fd, src.relpath, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in _GONE:
            raise changed(src.relpath, " (it vanished or was replaced)") from exc
        raise fsops.os_error("open", src.relpath, exc) from exc
    try:
        check_unchanged(fd, src)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_unchanged(fd: int, src: Source) -> None:
    """Conflict unless the open ``fd`` is still the file ``src`` describes (inode,
    size, mtime); for callers to ask again after reading it."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (src.ino and (st.st_ino, st.st_dev) != (src.ino, src.dev)):
        raise changed(src.relpath, " (it was replaced)")
    if src.mtime_ns and st.st_size != src.size:
        raise changed(src.relpath, f" (size {src.size} -> {st.st_size} bytes)")
    if src.mtime_ns and st.st_mtime_ns != src.mtime_ns:
        raise changed(src.relpath, " (it was written to)")


def _hash_file(root_fd: int, src: Source, buf: bytearray) -> str:
    fd = open_source(root_fd, src)
    try:
        h = hashlib.sha256()
        view = memoryview(buf)
        total = 0
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            total += n
            if total > src.size:
                raise changed(src.relpath, f" (it grew past {src.size} bytes)")
            h.update(view[:n])
        if total != src.size:
            raise changed(src.relpath, f" (read {total} of {src.size} bytes)")
        check_unchanged(fd, src)  # written to (same size) while it was hashed
        return h.hexdigest()
    except OSError as exc:
        raise fsops.os_error("read", src.relpath, exc) from exc
    finally:
        os.close(fd)


class _StatCache:
    """A JSON file per source root: stat key -> sha256 hex of the content."""

    def __init__(self, cache_dir: str, root: str) -> None:
        name = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:24]
        self.dir = cache_dir
        self.path = os.path.join(cache_dir, f"ctx-{name}.json")
        self.old: dict[str, str] = {}
        self.new: dict[str, str] = {}
        self.dirty = False
        try:
            with open(self.path, "rb") as fh:
                data = json.load(fh)
            if data.get("v") == _STATCACHE_VERSION and isinstance(data.get("files"), dict):
                self.old = {str(k): str(v) for k, v in data["files"].items()}
        except (OSError, ValueError, AttributeError):
            self.old = {}  # absent or damaged: start over

    def get(self, key: str) -> str | None:
        return self.old.get(key)

    def keep(self, key: str) -> None:
        self.new[key] = self.old[key]

    def put(self, key: str, value: str) -> None:
        self.new[key] = value
        self.dirty = True

    def save(self) -> None:
        # Unused entries are dropped only when something else changed: no write at all
        # on a fully cached run.
        if not self.dirty:
            return
        merged = {**self.old, **self.new} if len(self.old) < 4 * len(self.new) else self.new
        data = json.dumps({"v": _STATCACHE_VERSION, "files": merged}, separators=(",", ":"))
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            write_atomic(self.path, data.encode())
        except OSError:
            pass  # a cache that cannot be written only costs time
