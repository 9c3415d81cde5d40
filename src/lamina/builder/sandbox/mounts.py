"""``RUN --mount``: cache, bind, secret and tmpfs mounts (BuildKit's reference, "RUN
--mount"), each as a cache-key part and a runtime-spec mount.

- ``type=cache``: a directory kept across builds under
  ``<root>/cache/build-mounts/<sha256 of id>`` (``id`` defaults to the target), created
  with ``mode`` (0755), ``uid`` and ``gid`` (0). ``sharing=shared`` (default) lets
  concurrent builds use it at once, ``locked`` makes them wait for each other (an
  flock held during the step), ``private`` gives a busy cache's second user a fresh
  empty directory. Its content is not part of any key or layer.
- ``type=bind``: read-only; ``source`` (default the root) inside the build context, or
  inside the stage or image ``from`` names, resolved without leaving that root. Its
  content is part of the key (the context's files by checksum, a stage by its key).
- ``type=secret``: the file given with ``--secret id=ID,src=FILE``, bound read-only at
  ``target`` (default ``/run/secrets/ID``); only id and target enter the key, never the
  content, and the mount point is removed from the layer. A missing secret is skipped,
  or an error with ``required=true``.
- ``type=tmpfs``: an empty tmpfs (``size`` bytes, default unlimited).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamina.builder.sandbox.runner import SpecMount
from lamina.dockerfile.instructions import Mount, ParseError, Run
from lamina.errors import InvalidArgument, LaminaError, NotFound, Unsafe, Unsupported
from lamina.stateroot import build_mount_caches_dir

if TYPE_CHECKING:
    from lamina.builder.executor import StageState
    from lamina.builder.steps import Steps

_TRUE = ("", "true", "1")


@dataclass(frozen=True, slots=True)
class MountPlan:
    key: Any
    resolve: Callable[[ExitStack], SpecMount | None]


def _flag(mount: Mount, name: str, default: bool = False) -> bool:
    value = mount.get(name)
    return default if value is None else value.lower() in _TRUE


def _int(node: Run, mount: Mount, name: str, default: int, base: int = 10) -> int:
    value = mount.get(name)
    if value is None:
        return default
    try:
        return int(value, base)
    except ValueError:
        raise ParseError(node.location, f"--mount {name}={value!r} is not a number") from None


def _target(node: Run, mount: Mount, workdir: str) -> str:
    target = mount.get("target")
    if not target:
        raise ParseError(node.location, f"--mount=type={mount.type} requires target=")
    return posixpath.normpath(posixpath.join(workdir or "/", target))


def _inside(root: str, rel: str, what: str) -> str:
    """``rel`` resolved inside ``root`` (symlinks included) without leaving it."""
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, rel.lstrip("/")))
    if path != real_root and not path.startswith(real_root + "/"):
        raise Unsafe(f"--mount source {rel!r} leaves the {what}", hint="mount a path inside it")
    if not os.path.exists(path):
        raise NotFound(f"--mount source {rel!r} does not exist in the {what}")
    return path


def plan_mounts(steps: Steps, st: StageState, node: Run) -> list[MountPlan]:
    workdir = st.config.config.working_dir or "/"
    out: list[MountPlan] = []
    for mount in node.mounts:
        if mount.type == "cache":
            out.append(_cache(steps, node, mount, workdir))
        elif mount.type == "bind":
            out.append(_bind(steps, node, mount, workdir))
        elif mount.type == "secret":
            out.append(_secret(steps, node, mount))
        elif mount.type == "tmpfs":
            target = _target(node, mount, workdir)
            size = mount.get("size")
            options = ("nosuid", "nodev", *((f"size={size}",) if size else ()))

            def tmpfs(stack: ExitStack, t: str = target, o: tuple[str, ...] = options) -> SpecMount:
                return SpecMount(t, "tmpfs", "tmpfs", o)

            out.append(MountPlan({"type": "tmpfs", "target": target, "size": size}, tmpfs))
        else:
            raise Unsupported(
                f"RUN --mount=type={mount.type}", hint="use cache, bind, secret or tmpfs"
            )
    return out


def _cache(steps: Steps, node: Run, mount: Mount, workdir: str) -> MountPlan:
    target = _target(node, mount, workdir)
    ident = mount.get("id") or target
    sharing = mount.get("sharing") or "shared"
    mode = _int(node, mount, "mode", 0o755, 8)
    uid, gid = _int(node, mount, "uid", 0), _int(node, mount, "gid", 0)
    readonly = _flag(mount, "readonly")
    if mount.get("from"):
        raise Unsupported("RUN --mount=type=cache,from=...", hint="drop from=: caches start empty")
    name = hashlib.sha256(ident.encode()).hexdigest()[:32]
    base = build_mount_caches_dir(steps.root)

    def resolve(stack: ExitStack) -> SpecMount:
        path = os.path.join(base, name)
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            if not os.path.isdir(path):
                tmp = f"{path}.{os.urandom(4).hex()}.tmp"
                os.mkdir(tmp, mode)
                os.chmod(tmp, mode)
                os.chown(tmp, uid, gid)
                try:
                    os.rename(tmp, path)
                except OSError:
                    os.rmdir(tmp)  # another build made it first
            if sharing != "shared":
                fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                stack.callback(os.close, fd)
                if sharing == "locked":
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        path = steps.tempdir()  # private and busy: a fresh one
                        os.chmod(path, mode)
                        os.chown(path, uid, gid)
        except OSError as exc:
            raise LaminaError(f"cannot prepare the cache mount {ident!r}: {exc}") from exc
        options = ("rbind", "rprivate", *(("ro",) if readonly else ()))
        return SpecMount(target, "bind", path, options)

    key = {"type": "cache", "target": target, "id": ident, "readonly": readonly}
    return MountPlan(key, resolve)


def _bind(steps: Steps, node: Run, mount: Mount, workdir: str) -> MountPlan:
    target = _target(node, mount, workdir)
    source = mount.get("source") or "/"
    if _flag(mount, "readwrite"):
        raise Unsupported(
            "RUN --mount=type=bind,rw", hint="bind mounts are read-only in lamina builds"
        )
    options = ("rbind", "rprivate", "ro")
    raw_from = mount.get("from")
    if raw_from is None:
        from lamina.builder.files.context import select

        rel = source.lstrip("/") or "."
        _inside(steps.context, rel, "build context")
        sources = select(steps.context, [rel], ignore=steps.ignore, instruction="RUN --mount")
        key = {
            "type": "bind",
            "target": target,
            "source": rel,
            "context": steps.context_checksum(sources),
        }

        def from_context(stack: ExitStack) -> SpecMount:
            return SpecMount(target, "bind", _inside(steps.context, rel, "build context"), options)

        return MountPlan(key, from_context)
    chain = steps.from_chain(node, raw_from, "--mount from")

    def from_chain(stack: ExitStack) -> SpecMount:
        view = stack.enter_context(steps.b.bench.view(chain.layers, chain.config))
        return SpecMount(target, "bind", _inside(view, source, "mounted stage"), options)

    return MountPlan(
        {"type": "bind", "target": target, "source": source, "from": chain.key}, from_chain
    )


def _secret(steps: Steps, node: Run, mount: Mount) -> MountPlan:
    target = mount.get("target")
    ident = mount.get("id") or (posixpath.basename(target) if target else None)
    if not ident:
        raise ParseError(node.location, "--mount=type=secret needs id= or target=")
    if mount.get("env"):
        raise Unsupported("RUN --mount=type=secret,env=", hint="read the file at its target")
    target = target or f"/run/secrets/{ident}"
    required = _flag(mount, "required")
    src = steps.options.secrets.get(ident)
    if src is None and required:
        raise NotFound(
            f"secret {ident!r} is required but was not given",
            hint=f"pass --secret id={ident},src=FILE",
        )

    def resolve(stack: ExitStack) -> SpecMount | None:
        if src is None:
            return None
        if not os.path.isfile(src):
            raise InvalidArgument(f"secret {ident!r}: {src} is not a file")
        return SpecMount(target, "bind", os.path.abspath(src), ("rbind", "rprivate", "ro"))

    return MountPlan({"type": "secret", "id": ident, "target": target}, resolve)
