"""The Containerfile parser, then each stage's instructions applied as the builder
does: ARG/ENV scoping, word expansion, metadata changes to the image config."""

from __future__ import annotations

from lamina.dockerfile import StageScope, apply, expand_at, global_scope, parse
from lamina.dockerfile.instructions import Add, Arg, Cmd, Copy, From, Run
from lamina.oci.config import ImageConfig
from lamina.oci.platform import Platform

_BASE = ImageConfig.new(Platform("linux", "amd64"))
_BUILD_ARGS = {"BUILD_ARG": "x"}


def one_input(data: bytes) -> None:
    dockerfile = parse(data.decode("utf-8", "replace"))
    escape = dockerfile.escape
    globals_ = global_scope(dockerfile, _BUILD_ARGS)
    for stage in dockerfile.stages:
        expand_at(stage.base.location, stage.base.image, globals_, escape=escape)
        scope = StageScope(_BUILD_ARGS, globals_, escape=escape)
        config = _BASE
        cmd_set = False
        for node in stage.instructions:
            if isinstance(node, Arg):
                scope.apply(node)
            elif isinstance(node, Copy | Add):
                for word in (*node.sources, node.dest):
                    expand_at(node.location, word, scope.variables(), escape=escape)
            elif not isinstance(node, From | Run):
                config, _ = apply(node, config, scope, escape=escape, cmd_set=cmd_set)
                cmd_set = cmd_set or isinstance(node, Cmd)
