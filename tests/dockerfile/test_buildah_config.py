"""The parser + words + scope against buildah: the config a metadata-only Containerfile
gives (Env, Labels, User, WorkingDir, ExposedPorts, Cmd, Entrypoint) must be what
buildah computes from the same file."""

from __future__ import annotations

import json
import posixpath
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from lamina.dockerfile import parse
from lamina.dockerfile.instructions import (
    Arg,
    Cmd,
    Entrypoint,
    Env,
    ExecForm,
    Expose,
    Label,
    ShellForm,
    User,
    Workdir,
)
from lamina.dockerfile.scope import StageScope, global_scope
from lamina.dockerfile.words import expand, expand_pairs, expand_words

# No RUN and FROM scratch: buildah needs neither network nor a runtime.
CONTAINERFILE = """\
ARG G=global
ARG UNUSED=u
FROM scratch
ARG G
ARG L=local-${G}
ENV abc=hello
ENV abc=bye def=$abc ghi="${abc} x" \\
    # a comment inside the continuation
    path=/usr/${L} q1='$abc' q2="a\\"b" esc=a\\ b
ENV legacy value with  spaces
LABEL "com.example.vendor"="ACME Inc" v=${G:+set} w=${NOPE:-dflt} q='$abc'
LABEL multi="line one \\
line two"
EXPOSE 80/tcp 53/udp ${G:-x}
WORKDIR /a/$abc
WORKDIR b
USER ${L}:0
ENTRYPOINT ["/bin/tool", "$abc"]
CMD echo $abc
"""


def _lamina_config(source: str, build_args: dict[str, str]) -> dict[str, Any]:
    df = parse(source)
    scope = StageScope(build_args, global_scope(df, build_args))
    config: dict[str, Any] = {"Env": {}, "Labels": {}, "ExposedPorts": set()}
    workdir = "/"
    for node in df.stages[-1].instructions:
        variables = scope.variables()
        if isinstance(node, (Arg, Env)):
            scope.apply(node)
        elif isinstance(node, Label):
            config["Labels"].update(expand_pairs(node.pairs, variables))
        elif isinstance(node, Expose):
            for word in node.ports:
                for port in expand_words(word, variables):
                    config["ExposedPorts"].add(port if "/" in port else port + "/tcp")
        elif isinstance(node, Workdir):
            workdir = posixpath.join(workdir, expand(node.path, variables))
        elif isinstance(node, User):
            config["User"] = expand(node.user, variables)
        elif isinstance(node, (Cmd, Entrypoint)):
            command = node.command
            argv = (
                list(command.argv)
                if isinstance(command, ExecForm)
                else ["/bin/sh", "-c", command.script]
            )
            assert isinstance(command, (ExecForm, ShellForm))
            config[type(node).__name__] = argv
    config["Env"] = scope.env
    config["WorkingDir"] = workdir
    return config


def _buildah_config(tmp_path: Path, source: str, build_args: dict[str, str]) -> dict[str, Any]:
    (tmp_path / "Containerfile").write_text(source)
    tag = f"localhost/lamina-parser-test:{uuid.uuid4().hex[:12]}"
    argv = ["buildah", "build", "--layers=false", "-q", "-t", tag]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    done = subprocess.run(
        [*argv, str(tmp_path)], check=False, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        pytest.skip(f"buildah cannot build here: {done.stderr.strip()[-300:]}")
    try:
        out = subprocess.run(
            ["buildah", "inspect", "--type", "image", tag],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        subprocess.run(["buildah", "rmi", tag], check=False, capture_output=True, timeout=60)
    raw = json.loads(out)["OCIv1"]["config"]
    env = dict(item.split("=", 1) for item in raw.get("Env", []))
    env.pop("PATH", None)  # buildah adds a default PATH to FROM scratch
    labels = dict(raw.get("Labels", {}))
    labels.pop("io.buildah.version", None)
    config = {
        "Env": env,
        "Labels": labels,
        "ExposedPorts": set(raw.get("ExposedPorts", {})),
        "WorkingDir": raw.get("WorkingDir", "/"),
        "User": raw.get("User"),
        "Cmd": raw.get("Cmd"),
        "Entrypoint": raw.get("Entrypoint"),
    }
    return config


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed")
@pytest.mark.parametrize("build_args", [{}, {"G": "cli", "L": "from-cli"}])
def test_config_matches_buildah(tmp_path: Path, build_args: dict[str, str]) -> None:
    theirs = _buildah_config(tmp_path, CONTAINERFILE, build_args)
    ours = _lamina_config(CONTAINERFILE, build_args)
    assert ours == theirs
