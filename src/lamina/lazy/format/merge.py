"""Layers, in order, -> the merged tree overlayfs would show (image-spec layer.md).

The same rules as lamina's applier in tree mode (:mod:`lamina.layers.apply`), on an
in-memory tree instead of a directory: an entry replaces what is at its path (a
directory over a directory merges and takes the new metadata), missing parents are
made (0755, root), ``.wh.NAME`` removes NAME from the layers below and
``.wh..wh..opq`` empties its directory of them, but neither touches what the same
layer made (whatever the order of the entries); a hardlink names the inode of an
existing non-directory; parents that are symlinks are followed inside the tree, never
out of it. File contents go to a :class:`~.packer.Packer` as they stream by.

xattrs kept are those an image may carry into a mount: ``trusted.*`` and overlayfs's
own (``*.overlay.*``) are dropped here, as the applier drops them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from lamina.errors import InvalidFormat, Unsafe
from lamina.layers.api import (
    OPAQUE_WHITEOUT,
    OVERLAY_XATTR_PREFIXES,
    WHITEOUT_PREFIX,
    Entry,
    EntryType,
)
from lamina.lazy.format.layout import INODE_PREFETCH, InodeType
from lamina.lazy.format.model import Inode, Node, new_dir
from lamina.lazy.format.packer import Packer, Readable

_MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS
_AUFS_META = WHITEOUT_PREFIX + WHITEOUT_PREFIX
_TYPES = {
    EntryType.FILE: InodeType.FILE,
    EntryType.DIR: InodeType.DIR,
    EntryType.SYMLINK: InodeType.SYMLINK,
    EntryType.CHAR: InodeType.CHAR,
    EntryType.BLOCK: InodeType.BLOCK,
    EntryType.FIFO: InodeType.FIFO,
}

# The slot (data blob) a file's chunks go to, by its path.
SlotFor = Callable[[str], int]


def _fs(name: str) -> bytes:
    return os.fsencode(name)


def _keep_xattr(key: str) -> bool:
    return not key.startswith("trusted.") and not key.startswith(OVERLAY_XATTR_PREFIXES)


class TreeBuilder:
    def __init__(
        self, packer: Packer, slot_for: SlotFor, prefetch: frozenset[str] = frozenset()
    ) -> None:
        self.root = new_dir()
        self.packer = packer
        self._slot_for = slot_for
        self._prefetch = prefetch
        self.layer = -1
        self.entries = 0
        self.whiteouts = 0

    def begin_layer(self) -> None:
        self.layer += 1

    # ------------------------------------------------------------------ lookup

    def _walk(self, parts: list[bytes], create: bool) -> Node | None:
        """The directory at ``parts`` (symlinks followed inside the tree), made when
        missing if ``create``; None when missing. InvalidFormat below a non-directory."""
        todo = list(reversed(parts))
        stack: list[Node] = [self.root]
        links = 0
        while todo:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                if len(stack) > 1:
                    stack.pop()
                continue
            cur = stack[-1]
            assert cur.children is not None
            child = cur.children.get(part)
            if child is None:
                if not create:
                    return None
                child = cur.children[part] = new_dir()
            if child.inode.type is InodeType.SYMLINK:
                links += 1
                if links > _MAX_SYMLINKS:
                    raise Unsafe(f"too many levels of symbolic links at {part!r}")
                target = child.inode.link
                if target.startswith(b"/"):
                    del stack[1:]
                todo.extend(reversed(target.split(b"/")))
                continue
            if not child.is_dir:
                raise InvalidFormat(
                    f"{b'/'.join(parts).decode(errors='replace')!r}: "
                    f"{part.decode(errors='replace')!r} is not a directory",
                    hint="the layer puts entries below a file",
                )
            stack.append(child)
        return stack[-1]

    def _parent(self, name: str, create: bool = True) -> tuple[Node | None, bytes]:
        parts = _fs(name).split(b"/")
        return self._walk(parts[:-1], create), parts[-1]

    def _mark(self, name: str, node: Node) -> None:
        node.layer = self.layer
        parts = _fs(name).split(b"/")[:-1]
        cur = self.root
        for part in parts:  # entries below symlinked parents mark the real path's dirs
            assert cur.children is not None
            nxt = cur.children.get(part)
            if nxt is None or not nxt.is_dir:
                return
            nxt.touched = self.layer
            cur = nxt

    # ------------------------------------------------------------------ entries

    def add(self, entry: Entry, content: Readable) -> None:
        self.entries += 1
        if entry.basename.startswith(WHITEOUT_PREFIX):
            self.whiteouts += 1
            self._whiteout(entry)
            return
        if entry.type is EntryType.HARDLINK:
            self._hardlink(entry)
            return
        parent, leaf = self._parent(entry.name)
        assert parent is not None and parent.children is not None
        xattrs = {_fs(k): v for k, v in sorted(entry.xattrs.items()) if _keep_xattr(k)}
        existing = parent.children.get(leaf)
        if entry.type is EntryType.DIR and existing is not None and existing.is_dir:
            inode = existing.inode
            inode.mode, inode.uid, inode.gid = entry.mode, entry.uid, entry.gid
            inode.mtime_ns, inode.xattrs = entry.mtime_ns, xattrs
            self._mark(entry.name, existing)
            return
        kind = _TYPES[entry.type]
        inode = Inode(
            kind,
            mode=entry.mode,
            uid=entry.uid,
            gid=entry.gid,
            mtime_ns=entry.mtime_ns,
            devmajor=entry.devmajor,
            devminor=entry.devminor,
            xattrs=xattrs,
        )
        node = Node(inode, {} if kind is InodeType.DIR else None)
        if kind is InodeType.SYMLINK:
            inode.link = _fs(entry.linkname)
            if not inode.link:
                raise InvalidFormat(f"symlink {entry.name!r} has no target")
            inode.size = len(inode.link)
        elif kind is InodeType.FILE:
            if entry.name in self._prefetch:
                inode.flags |= INODE_PREFETCH
            self.packer.add_file(inode, entry.size, content, self._slot_for(entry.name))
        parent.children[leaf] = node
        self._mark(entry.name, node)

    def _hardlink(self, entry: Entry) -> None:
        tparent, tleaf = self._parent(entry.linkname, create=False)
        target = (
            None if tparent is None or tparent.children is None else tparent.children.get(tleaf)
        )
        if target is None:
            raise InvalidFormat(
                f"hardlink {entry.name!r} points at {entry.linkname!r}, which does not exist",
                hint="the layer is corrupt: a hardlink must follow its target",
            )
        if target.is_dir:
            raise InvalidFormat(
                f"hardlink {entry.name!r} points at the directory {entry.linkname!r}"
            )
        if entry.linkname == entry.name:
            return
        parent, leaf = self._parent(entry.name)
        assert parent is not None and parent.children is not None
        node = Node(target.inode)
        parent.children[leaf] = node
        self._mark(entry.name, node)

    # ------------------------------------------------------------------ whiteouts

    def _whiteout(self, entry: Entry) -> None:
        parent_name, _, base = entry.name.rpartition("/")
        if base == OPAQUE_WHITEOUT:
            parent, _ = self._parent(entry.name)
            assert parent is not None
            self._clear_lower(parent)
            if parent_name:
                self._mark(parent_name, parent)
            return
        if base.startswith(_AUFS_META):
            return  # AUFS bookkeeping (.wh..wh.plnk and friends): nothing to show
        victim = base[len(WHITEOUT_PREFIX) :]
        if victim in ("", ".", ".."):
            raise Unsafe(
                f"whiteout {entry.name!r} does not name a file",
                hint="the layer is hostile or corrupt; do not use this image",
            )
        path = f"{parent_name}/{victim}" if parent_name else victim
        parent, _ = self._parent(path, create=False)
        if parent is None or parent.children is None:
            return  # nothing below to hide
        node = parent.children.get(_fs(victim))
        if node is None or node.layer == self.layer:
            return  # whiteouts hide lower layers only, never this layer's own paths
        if node.is_dir and node.touched == self.layer:
            self._clear_lower(node)
        else:
            del parent.children[_fs(victim)]

    def _clear_lower(self, directory: Node) -> None:
        """Remove what lower layers put below ``directory``; keep this layer's entries
        (and the directories leading to them)."""
        assert directory.children is not None
        for name, child in list(directory.children.items()):
            if child.is_dir and self.layer in (child.touched, child.layer):
                self._clear_lower(child)
            elif child.layer != self.layer:
                del directory.children[name]
