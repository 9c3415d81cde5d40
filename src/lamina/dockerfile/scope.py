"""ARG and ENV scoping, pure (Dockerfile reference, "ARG", "Scope", "Using ARG
variables", "Predefined ARGs").

- ARGs before the first FROM are *global*: usable only in FROM lines, unless a stage
  re-declares them (``ARG NAME`` without a value takes the global value).
- Inside a stage an ARG is visible from its declaration to the end of the stage; a
  ``--build-arg`` overrides its default; ENV of the same name wins over an ARG.
- Values are expanded when declared, against what is visible at that point.
- The proxy ARGs are predefined: usable without a declaration when passed.

What a stage adds to its image config is bounded by :data:`MAX_STAGE_BYTES` (the
config cap, :data:`lamina.oci.canonical.MAX_DOCUMENT_BYTES`), checked as each
instruction is applied, so ``ENV a=$a$a`` forty times over (or a hundred ``ENV bN=$a``
of 1 MiB each) stops at the line that crosses it, long before memory runs out. What
counts: the ENV as it stands (the base image's included), every history line the
stage writes (each ARG, ENV, LABEL... recorded as expanded), and LABEL values.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.dockerfile.instructions import Arg, Dockerfile, Env, Location
from lamina.dockerfile.words import LIMIT_HINT, expand, expand_pairs, limit_at
from lamina.errors import LimitExceeded
from lamina.oci.canonical import MAX_DOCUMENT_BYTES

MAX_STAGE_BYTES = MAX_DOCUMENT_BYTES

PREDEFINED_ARGS = frozenset(
    {
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    }
)


def global_scope(
    dockerfile: Dockerfile, build_args: Mapping[str, str], automatic: Mapping[str, str] = {}
) -> dict[str, str]:
    """The values of the global ARGs (for expanding FROM lines). ``automatic`` holds the
    platform ARGs (``TARGETPLATFORM``, ``BUILDARCH``, ...), in scope without declaring."""
    scope = dict(automatic)
    spent = 0
    for arg in dockerfile.global_args:
        for decl in arg.args:
            if decl.name in build_args:
                scope[decl.name] = build_args[decl.name]
            elif decl.default is not None:
                try:
                    scope[decl.name] = expand(decl.default, scope, escape=dockerfile.escape)
                except LimitExceeded as exc:
                    raise limit_at(arg.location, exc) from exc
                spent = _check(arg.location, spent + len(decl.name) + len(scope[decl.name]))
    return scope


def _size(pairs: Mapping[str, str] | list[tuple[str, str]]) -> int:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return sum(len(k) + len(v) + 2 for k, v in items)  # "k=v" and a separator


def _check(location: Location, spent: int) -> int:
    if spent > MAX_STAGE_BYTES:
        raise LimitExceeded(
            f"{location}: the stage's ARG, ENV and LABEL values would make its image "
            f"config larger than {MAX_STAGE_BYTES} bytes",
            hint=LIMIT_HINT,
        )
    return spent


class StageScope:
    """What a stage's instructions see: call :meth:`apply` for each ARG/ENV in order and
    expand words with :meth:`variables`."""

    __slots__ = (
        "_args",
        "_build_args",
        "_env",
        "_env_size",
        "_escape",
        "_globals",
        "_spent",
        "used_build_args",
    )

    def __init__(
        self,
        build_args: Mapping[str, str],
        globals_: Mapping[str, str],
        env: Mapping[str, str] = {},
        escape: str = "\\",
        inherited_args: Mapping[str, str] = {},
    ) -> None:
        """``env``: the base image's ENV; ``inherited_args``: the ARGs of the stage this
        one is ``FROM`` (they stay in scope, as BuildKit does)."""
        self._build_args = dict(build_args)
        self._globals = dict(globals_)
        self._env = dict(env)  # inherited from the base image config
        self._args = {k: v for k, v in build_args.items() if k in PREDEFINED_ARGS}
        self._args.update(inherited_args)
        self._escape = escape
        self.used_build_args: set[str] = set()
        # bytes against MAX_STAGE_BYTES: the ENV now, and what only grows (history, labels)
        self._env_size = _size(self._env)
        self._spent = 0

    def charge(self, location: Location, nbytes: int, *, env_delta: int = 0) -> None:
        """Count ``nbytes`` more of config (a history line, a label; ``env_delta``: the
        change in ENV size) against :data:`MAX_STAGE_BYTES`; LimitExceeded naming
        ``location`` past it (and nothing counted)."""
        _check(location, self._env_size + env_delta + self._spent + nbytes)
        self._env_size += env_delta
        self._spent += nbytes

    def apply(self, node: Arg | Env) -> None:
        try:
            self._apply(node)
        except LimitExceeded as exc:
            raise limit_at(node.location, exc) from exc

    def _apply(self, node: Arg | Env) -> None:
        if isinstance(node, Env):
            pairs = expand_pairs(node.pairs, self.variables(), escape=self._escape)
            new = dict(pairs)
            old = _size({k: self._env[k] for k in new if k in self._env})
            self.charge(node.location, _size(pairs), env_delta=_size(new) - old)  # + history
            self._env.update(new)
            return
        for decl in node.args:
            if decl.name in self._build_args:
                self._args[decl.name] = self._build_args[decl.name]
                self.used_build_args.add(decl.name)
            elif decl.default is not None:
                value = expand(decl.default, self.variables(), escape=self._escape)
                self.charge(node.location, len(decl.name) + len(value) + 2)  # history
                self._args[decl.name] = value
            elif decl.name in self._globals:
                self._args[decl.name] = self._globals[decl.name]
            else:
                self._args.pop(decl.name, None)  # declared, no value: expands to ""

    def variables(self) -> dict[str, str]:
        """ARGs then ENV (ENV wins), for expanding an instruction's words."""
        return {**self._args, **self._env}

    @property
    def args(self) -> dict[str, str]:
        """The ARGs in scope with a value (exported to RUN steps, part of their cache key)."""
        return dict(self._args)

    @property
    def env(self) -> dict[str, str]:
        return dict(self._env)
