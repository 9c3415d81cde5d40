"""More of `lamina build`: heredoc RUNs, networks, --from an image, bind mounts from a
stage, ADD of a URL, USER and WORKDIR chains, ENTRYPOINT/CMD rules."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
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
        (ctx / name).write_text(text)
    return ctx


def config(lamina: Lamina, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lamina("inspect", "--raw", "config", ref).stdout)
    return doc


def test_heredoc_runs(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
RUN <<EOF
echo first > /a
echo second >> /a
EOF
RUN cat > /b <<EOT && echo done >> /b
inside
EOT
""",
    )
    lamina("build", "-q", "-t", "heredoc", str(ctx))
    out = lamina("run", "--rm", "heredoc", "cat", "/a", "/b").stdout
    assert out == "first\nsecond\ninside\ndone\n"


def test_network_none_isolates_a_step(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
RUN --network=none ls /sys/class/net > /isolated
RUN ls /sys/class/net > /host
""",
    )
    lamina("build", "-q", "-t", "net", str(ctx))
    isolated = lamina("run", "--rm", "net", "cat", "/isolated").stdout.split()
    host = lamina("run", "--rm", "net", "cat", "/host").stdout.split()
    assert isolated == ["lo"]
    assert len(host) > 1  # the default is the host's network (documented)


def test_copy_from_an_image_and_bind_from_a_stage(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox AS tools
RUN echo tool-output > /tool.txt
FROM scratch
COPY --from=busybox /etc/passwd /passwd
COPY --from=tools /bin/busybox /bin/busybox
RUN ["/bin/busybox", "true"]
""",
    )
    # a RUN on scratch + one binary: the step runs with no /etc, /proc, /dev of its own
    lamina("build", "-q", "-t", "fromimg", str(ctx))
    out = tmp_path / "out"
    lamina("unpack", "fromimg", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["bin", "passwd"]
    assert (out / "passwd").read_text().startswith("root:x:0:0:")
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS tools\nRUN echo tool-output > /tool.txt\n"
        "FROM busybox\nRUN --mount=type=bind,from=tools,source=/tool.txt,target=/mnt/t "
        "cp /mnt/t /copied\n"
    )
    lamina("build", "-q", "-t", "bound", str(ctx))
    assert lamina("run", "--rm", "bound", "cat", "/copied").stdout == "tool-output\n"


@pytest.fixture
def http_file(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    body = b"downloaded content\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/files/data.txt", body
    finally:
        server.shutdown()
        server.server_close()


def test_add_of_a_url_with_checksum(
    lamina: Lamina, tmp_path: Path, http_file: tuple[str, bytes]
) -> None:
    url, body = http_file
    digest = hashlib.sha256(body).hexdigest()
    ctx = setup(lamina, tmp_path, f"FROM busybox\nADD --checksum=sha256:{digest} {url} /dl/\n")
    lamina("build", "-q", "-t", "url", str(ctx))
    assert lamina("run", "--rm", "url", "cat", "/dl/data.txt").stdout == body.decode()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url} /dl/\n")
    proc = lamina("build", "-q", "-t", "url2", str(ctx), check=False)
    assert proc.returncode != 0 and "Dockerfile:2:1:" in proc.stderr


def test_user_workdir_entrypoint_and_cmd_rules(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox AS base
CMD ["base-cmd"]
FROM base
WORKDIR /a
WORKDIR b
WORKDIR ../c
RUN pwd > /tmp/pwd
USER nobody
RUN id -u > /tmp/uid
ENTRYPOINT ["/bin/echo"]
""",
    )
    lamina("build", "-q", "-t", "rules", str(ctx))
    cfg = config(lamina, "rules")["config"]
    assert cfg["WorkingDir"] == "/a/c"
    assert cfg["Entrypoint"] == ["/bin/echo"]
    assert "Cmd" not in cfg  # an ENTRYPOINT resets the CMD inherited from the base
    out = lamina("run", "--rm", "--entrypoint", "cat", "rules", "/tmp/pwd", "/tmp/uid").stdout
    assert out == "/a/c\n65534\n"
    (ctx / "Dockerfile").write_text('FROM busybox\nCMD ["x"]\nENTRYPOINT ["/bin/echo"]\n')
    lamina("build", "-q", "-t", "rules2", str(ctx))
    cfg = config(lamina, "rules2")["config"]
    assert cfg["Cmd"] == ["x"]  # a CMD of the same stage stays


def test_workdir_made_for_a_user_belongs_to_it(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox
RUN echo 'app:x:1001:100:app:/home/app:/bin/sh' >> /etc/passwd
USER app
WORKDIR /made/by/app
RUN id > /tmp/id
USER 1002:1003
WORKDIR rel
""",
    )
    lamina("build", "-q", "-t", "owned", str(ctx))
    out = lamina(
        "run", "--rm", "-u", "0", "owned", "sh", "-c",
        "stat -c '%n %u:%g' /made /made/by /made/by/app /made/by/app/rel; cat /tmp/id",
    ).stdout  # fmt: skip
    assert out.splitlines() == [
        "/made 1001:100",
        "/made/by 1001:100",
        "/made/by/app 1001:100",
        "/made/by/app/rel 1002:1003",
        "uid=1001(app) gid=100(users) groups=100(users)",  # as Docker and buildah show it
    ]


def test_independent_stages_build_at_once(lamina: Lamina, tmp_path: Path) -> None:
    ctx = setup(
        lamina,
        tmp_path,
        """\
FROM busybox AS left
RUN sleep 1; echo left > /left
FROM busybox AS right
RUN sleep 1; echo right > /right
FROM busybox
COPY --from=left /left /
COPY --from=right /right /
""",
    )
    proc = lamina("build", "--progress", "json", "-t", "both", str(ctx))
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    names = {e["vertex"]: e["name"] for e in events if e["kind"] == "start"}
    order = [
        (e["kind"], names[e["vertex"]].split("]")[0] + "]")
        for e in events
        if e["kind"] in ("start", "done") and "RUN" in names.get(e["vertex"], "")
    ]
    # both RUNs start before either is done
    assert sorted(order[:2]) == [("start", "[left 2/2]"), ("start", "[right 2/2]")]
    assert lamina("run", "--rm", "both", "cat", "/left", "/right").stdout == "left\nright\n"
    proc = lamina("build", "--progress", "json", "--jobs", "1", "--no-cache", str(ctx))
    events = [json.loads(line) for line in proc.stdout.splitlines()][:-1]  # not the result
    names = {e["vertex"]: e["name"] for e in events if e["kind"] == "start"}
    runs = [e["kind"] for e in events if "RUN" in names[e["vertex"]] and e["kind"] != "log"]
    assert runs == ["start", "done", "start", "done"]  # --jobs 1: one after the other
