"""ARG and ENV scoping, pure (Dockerfile reference, "ARG", "Scope", "Using ARG
variables", "Predefined ARGs").

- ARGs before the first FROM are *global*: usable only in FROM lines, unless a stage
  re-declares them (``ARG NAME`` without a value takes the global value).
- Inside a stage an ARG is visible from its declaration to the end of the stage; a
  ``--build-arg`` overrides its default; ENV of the same name wins over an ARG.
- Values are expanded when declared, against what is visible at that point.
- The proxy ARGs are predefined: usable without a declaration when passed.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.dockerfile.instructions import Arg, Dockerfile, Env
from lamina.dockerfile.words import expand, expand_pairs

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
    for arg in dockerfile.global_args:
        for decl in arg.args:
            if decl.name in build_args:
                scope[decl.name] = build_args[decl.name]
            elif decl.default is not None:
                scope[decl.name] = expand(decl.default, scope, escape=dockerfile.escape)
    return scope


class StageScope:
    """What a stage's instructions see: call :meth:`apply` for each ARG/ENV in order and
    expand words with :meth:`variables`."""

    __slots__ = ("_args", "_build_args", "_env", "_escape", "_globals", "used_build_args")

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

    def apply(self, node: Arg | Env) -> None:
        if isinstance(node, Env):
            self._env.update(expand_pairs(node.pairs, self.variables(), escape=self._escape))
            return
        for decl in node.args:
            if decl.name in self._build_args:
                self._args[decl.name] = self._build_args[decl.name]
                self.used_build_args.add(decl.name)
            elif decl.default is not None:
                self._args[decl.name] = expand(decl.default, self.variables(), escape=self._escape)
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
