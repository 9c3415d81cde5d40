"""`lamina build` end to end: real overlay snapshots, real runc, a busybox base."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import Lamina

pytestmark = [pytest.mark.root]


def setup(lamina: Lamina, tmp_path: Path, dockerfile: str, **files: str) -> Path:
    lamina("bootstrap", "busybox", "-t", "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ctx


def config(lamina: Lamina, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lamina("inspect", "--raw", "config", ref).stdout)
    return doc


def layer_names(lamina: Lamina, ref: str) -> list[list[str]]:
    """The entry names of each layer of ``ref`` (read with Python's tarfile, a peer)."""
    manifest = json.loads(lamina("inspect", "--raw", "manifest", ref).stdout)
    root = Path(lamina.root)  # type: ignore[attr-defined]
    out = []
    for layer in manifest["layers"]:
        path = root / "blobs" / "sha256" / layer["digest"].split(":")[1]
        with tarfile.open(path) as tar:
            out.append(sorted(m.name.rstrip("/") for m in tar.getmembers()))
    return out


def test_metadata_instructions_make_the_config_and_empty_history(
    lamina: Lamina, tmp_path: Path
) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
ENV A=1 B="two words"
ENV C=${A}-x
LABEL org.example.v="$C" other=y
USER nobody:nogroup
EXPOSE 80 53/udp
VOLUME /data
VOLUME ["/logs"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD echo $A
""",
    )
    lamina("build", "-q", "-t", "meta", str(ctx))
    cfg = config(lamina, "meta")
    c = cfg["config"]
    assert [e for e in c["Env"] if not e.startswith("PATH=")] == ["A=1", "B=two words", "C=1-x"]
    assert c["Labels"] == {"org.example.v": "1-x", "other": "y"}
    assert c["User"] == "nobody:nogroup"
    assert set(c["ExposedPorts"]) == {"80/tcp", "53/udp"}
    assert set(c["Volumes"]) == {"/data", "/logs"}
    assert c["StopSignal"] == "SIGINT"
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["/bin/sh", "-c", "echo $A"]
    history = cfg["history"]
    assert len(cfg["rootfs"]["diff_ids"]) == 1  # only the base layer: nothing was written
    new = history[1:]
    keywords = [h["created_by"].split()[0] for h in new]
    assert " ".join(keywords) == "ENV ENV LABEL USER EXPOSE VOLUME VOLUME STOPSIGNAL ENTRYPOINT CMD"
    assert all(h["empty_layer"] for h in new)


def test_run_writes_a_layer_that_lamina_run_sees(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
WORKDIR /srv/app
RUN echo "built in $(pwd) as $(id -u)" > note && ls /etc/resolv.conf
CMD ["cat", "/srv/app/note"]
""",
    )
    lamina("build", "-q", "-t", "ran", str(ctx))
    assert lamina("run", "--rm", "ran").stdout == "built in /srv/app as 0\n"
    layers = layer_names(lamina, "ran")
    assert layers[1:] == [["srv", "srv/app"], ["srv", "srv/app", "srv/app/note"]]
    # the init files (/etc/resolv.conf was made as a mount point) left nothing behind
    assert not any(name.startswith(("etc", "proc", "dev", "sys")) for name in layers[2])
    history = config(lamina, "ran")["history"]
    assert history[-2]["created_by"].startswith("RUN /bin/sh -c echo")
    assert history[-2]["created_by"].endswith(" # buildkit")
    assert "empty_layer" not in history[-2]


def test_exec_form_shell_and_env_of_run(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
ARG TOOL=hammer
ENV GREETING=hello
SHELL ["/bin/sh", "-e", "-c"]
RUN ["/bin/sh", "-c", "echo exec:$GREETING > /exec"]
RUN echo "shell:$GREETING:$TOOL" > /shell
""",
    )
    lamina("build", "-q", "-t", "forms", "--build-arg", "TOOL=saw", str(ctx))
    out = lamina("run", "--rm", "forms", "cat", "/exec", "/shell").stdout
    assert out == "exec:hello\nshell:hello:saw\n"
    cfg = config(lamina, "forms")
    assert cfg["config"]["Shell"] == ["/bin/sh", "-e", "-c"]
    assert not any(e.startswith("TOOL=") for e in cfg["config"]["Env"])  # ARGs do not persist
    assert cfg["history"][-1]["created_by"].startswith("RUN |1 TOOL=saw /bin/sh -e -c ")
    # ARG is in the history (as BuildKit writes it), with its default, not the value given
    assert {"created_by": "ARG TOOL=hammer", "empty_layer": True}.items() <= next(
        h for h in cfg["history"] if h["created_by"].startswith("ARG")
    ).items()


def test_multi_stage_copies_only_the_artefact(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox AS builder
RUN mkdir -p /work/out && echo artefact > /work/out/app && echo junk > /work/junk
FROM busybox AS never
RUN exit 3
FROM scratch
COPY --from=builder /work/out/app /app
""",
    )
    proc = lamina("build", "--progress", "plain", "-t", "small", str(ctx))
    assert "never" not in proc.stderr  # the target does not need it: not built
    layers = layer_names(lamina, "small")
    assert layers == [["app"]]
    out = tmp_path / "unpacked"
    lamina("unpack", "small", str(out))
    assert (out / "app").read_text() == "artefact\n"


def test_arg_scoping_across_stages(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
ARG VERSION=1.0
ARG GLOBAL_ONLY=g
FROM busybox AS first
ARG VERSION
ARG LOCAL=l1
RUN echo "v=$VERSION g=$GLOBAL_ONLY l=$LOCAL" > /first
FROM first AS second
RUN echo "v=$VERSION l=$LOCAL" > /second
FROM busybox
RUN echo "v=$VERSION" > /third
COPY --from=second /first /second /
""",
    )
    lamina("build", "-q", "-t", "args", str(ctx))
    out = lamina("run", "--rm", "args", "cat", "/first", "/second", "/third").stdout
    # a global ARG is seen only where the stage re-declares it; a stage built FROM another
    # keeps that stage's ARGs (BuildKit)
    assert out == "v=1.0 g= l=l1\nv=1.0 l=l1\nv=\n"
    lamina("build", "-q", "-t", "args2", "--build-arg", "VERSION=2.0", str(ctx))
    out = lamina("run", "--rm", "args2", "cat", "/first", "/third").stdout
    assert out == "v=2.0 g= l=l1\nv=\n"


def test_failing_run_shows_exit_code_and_last_lines(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
RUN for i in $(seq 1 30); do echo line-$i; done; exit 7
""",
    )
    proc = lamina("build", "-t", "broken", str(ctx), check=False)
    assert proc.returncode != 0
    assert "Dockerfile:2:1" in proc.stderr
    assert "did not complete successfully: exit code: 7" in proc.stderr
    block = proc.stderr.split("------\n")[1]
    assert block.splitlines()[1:] == [f"line-{i}" for i in range(11, 31)]  # the last 20
    assert "broken" not in lamina("images").stdout  # nothing tagged
    root = Path(lamina.root)  # type: ignore[attr-defined]
    assert not list((root / "build" / "work").iterdir())  # workspace gone


def test_run_mounts_leave_no_trace_in_the_layer(lamina: Lamina, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
RUN --mount=type=cache,target=/var/cache/thing echo x >> /var/cache/thing/hits && \
    wc -l < /var/cache/thing/hits > /hits
RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-size
RUN --mount=type=tmpfs,target=/scratch echo gone > /scratch/f
RUN --mount=type=bind,source=data,target=/mnt/data cp /mnt/data/in /copied
""",
        **{"data/in": "bound\n"},
    )
    lamina("build", "-q", "-t", "mounts", "--secret", f"id=token,src={secret}", str(ctx))
    out = lamina("run", "--rm", "mounts", "cat", "/hits", "/secret-size", "/copied").stdout
    assert out == "1\n7\nbound\n"
    layers = layer_names(lamina, "mounts")[1:]
    assert layers == [["hits"], ["secret-size"], ["copied"]]  # the tmpfs step wrote nothing
    cfg = config(lamina, "mounts")
    assert cfg["history"][-2]["empty_layer"] is True
    root = Path(lamina.root)  # type: ignore[attr-defined]
    assert not list(root.rglob("*s3cr3t*"))
    blobs = b"".join(p.read_bytes() for p in (root / "blobs").rglob("*") if p.is_file())
    assert b"s3cr3t" not in blobs
    # the cache mount persists across builds (with --no-cache, the step runs again)
    lamina(
        "build", "-q", "--no-cache", "-t", "mounts", "--secret", f"id=token,src={secret}", str(ctx)
    )
    assert lamina("run", "--rm", "mounts", "cat", "/hits").stdout == "2\n"


def test_onbuild_triggers_of_the_base_run_first(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
ONBUILD RUN echo triggered > /trigger
""",
    )
    lamina("build", "-q", "-t", "parent", str(ctx))
    assert config(lamina, "parent")["config"]["OnBuild"] == ["RUN echo triggered > /trigger"]
    (ctx / "Dockerfile").write_text("FROM parent\nRUN cat /trigger > /seen\n")
    lamina("build", "-q", "-t", "child", str(ctx))
    assert lamina("run", "--rm", "child", "cat", "/seen").stdout == "triggered\n"
    assert "OnBuild" not in config(lamina, "child")["config"]


def test_copy_and_add_from_the_context(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
WORKDIR /app
COPY --chown=nobody:nogroup --chmod=0640 a.txt ./
COPY dir/ sub/
ADD bundle.tar /unpacked/
COPY <<EOF /inline.txt
hello $HOSTNAME_UNSET
EOF
""",
        **{
            "a.txt": "A\n",
            "dir/b.txt": "B\n",
            "ignored.txt": "no\n",
            ".dockerignore": "ignored.txt\n",
        },
    )
    src = tmp_path / "tarsrc"
    src.mkdir()
    (src / "t.txt").write_text("T\n")
    subprocess.run(["tar", "-C", str(src), "-cf", str(ctx / "bundle.tar"), "t.txt"], check=True)
    lamina("build", "-q", "-t", "copied", str(ctx))
    out = lamina(
        "run", "--rm", "copied", "sh", "-c",
        "stat -c '%U:%G %a' /app/a.txt; cat /app/sub/b.txt /unpacked/t.txt /inline.txt",
    ).stdout  # fmt: skip
    assert out == "nobody:nogroup 640\nB\nT\nhello \n"
