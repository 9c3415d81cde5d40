"""`lamina build` as a command: progress formats, names, ID output, errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina

pytestmark = [pytest.mark.root]

DOCKERFILE = """\
FROM busybox
COPY hello.txt /hello.txt
RUN echo one; echo two >&2
CMD ["cat", "/hello.txt"]
"""


@pytest.fixture
def ctx(lamina: Lamina, tmp_path: Path) -> Path:
    lamina("bootstrap", "busybox", "-t", "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def test_plain_progress_like_buildkit(lamina: Lamina, ctx: Path) -> None:
    proc = lamina("build", "--progress", "plain", "-t", "demo:1", "-t", "demo:2", str(ctx))
    err = proc.stderr
    assert "#1 [1/3] FROM busybox\n#1 DONE " in err
    assert "#2 [2/3] COPY hello.txt /hello.txt\n" in err
    assert re.search(r"#3 \[3/3\] RUN echo one; echo two >&2\n(#3 \d+\.\d{3} (one|two)\n){2}", err)
    assert re.search(r"#3 DONE \d+\.\ds\n", err)
    assert "#4 exporting to image\n#4 writing image sha256:" in err
    assert "#4 naming to docker.io/library/demo:1\n#4 naming to docker.io/library/demo:2\n" in err
    image_id = proc.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    images = {i["name"]: i["id"] for i in json.loads(lamina("images", "--json").stdout)}
    assert images["docker.io/library/demo:1"] == images["docker.io/library/demo:2"] == image_id
    assert lamina("run", "--rm", "demo:2").stdout == "hello\n"
    again = lamina("build", "--progress", "plain", "-t", "demo:1", str(ctx))
    assert "#2 CACHED\n" in again.stderr and "#3 CACHED\n" in again.stderr
    assert again.stdout.strip() == image_id


def test_json_progress_is_one_event_per_line(lamina: Lamina, ctx: Path, tmp_path: Path) -> None:
    iid = tmp_path / "iid"
    proc = lamina("build", "--progress", "json", "--iidfile", str(iid), str(ctx))
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "result"
    logs = "".join(e["text"] for e in events if e["kind"] == "log")
    assert sorted(logs.split()) == ["one", "two"]
    result = events[-1]
    assert result["names"] == [] and result["steps"] == 2 and result["cached"] == 0
    assert iid.read_text().strip() == result["id"]
    # untagged: kept (and found) by its ID
    assert lamina("run", "--rm", result["id"]).stdout == "hello\n"


def test_labels_and_quiet(lamina: Lamina, ctx: Path) -> None:
    proc = lamina("build", "-q", "--label", "a=b", "--label", "c=d=e", "-t", "lab", str(ctx))
    assert proc.stderr == ""
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", proc.stdout)
    cfg = json.loads(lamina("inspect", "--raw", "config", "lab").stdout)
    assert cfg["config"]["Labels"] == {"a": "b", "c": "d=e"}


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM nosuchimage\n", "Dockerfile:1:1: FROM nosuchimage: no such local image"),
        ("FROM busybox\nCOPY missing.txt /\n", "Dockerfile:2:1: COPY failed: file not found"),
        ("FROM busybox\nCOPY ../outside /\n", "Dockerfile:2:1: "),
        ("FROM busybox AS a\nFROM scratch\nCOPY --from=aa /x /x\n", "--from=aa: no stage"),
        ("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /x /x\n",
         "circular dependency detected"),
        ("FROM busybox\nRUN --mount=type=secret,id=k,required=true cat /run/secrets/k\n",
         "secret 'k' is required"),
        ("FROM busybox\nRUN --mount=type=bind,source=../..,target=/x ls /x\n",
         "Dockerfile:2:1: --mount source '../..' leaves the build context"),
        ("FROM busybox\nRUN --mount=type=bind,source=up,target=/x ls /x\n",
         "Dockerfile:2:1: --mount source 'up' leaves the build context"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(
    lamina: Lamina, ctx: Path, dockerfile: str, message: str
) -> None:
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "up").symlink_to("/etc")
    proc = lamina("build", "-t", "bad", str(ctx), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stderr.count("error: ") == 1
    assert "bad" not in lamina("images").stdout


def test_symlink_out_of_the_context_is_refused(lamina: Lamina, ctx: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host secret\n")
    (ctx / "link").symlink_to(tmp_path / "secret")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY link /link\n")
    proc = lamina("build", "-t", "bad", str(ctx), check=False)
    assert proc.returncode != 0
    assert "Dockerfile:2:1:" in proc.stderr


def test_target_file_and_build_arg_from_the_environment(
    lamina: Lamina, ctx: Path, tmp_path: Path
) -> None:
    other = tmp_path / "Other.Dockerfile"
    other.write_text(
        "FROM busybox AS one\nARG WHO\nRUN echo $WHO > /who\nFROM scratch AS two\nCOPY x /x\n"
    )
    proc = lamina(
        "build", "-q", "-f", str(other), "--target", "one", "--build-arg", "WHO",
        "-t", "who", str(ctx), env={"WHO": "from-env"},
    )  # fmt: skip
    assert proc.returncode == 0
    assert lamina("run", "--rm", "who", "cat", "/who").stdout == "from-env\n"
    proc = lamina("build", "-f", str(other), "--target", "three", str(ctx), check=False)
    assert "target stage 'three' could not be found" in proc.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script is not installed")
def test_auto_progress_on_a_terminal_is_a_live_view(lamina: Lamina, ctx: Path) -> None:
    lamina("build", "-q", "-t", "tty", str(ctx))
    root = lamina.root  # type: ignore[attr-defined]
    command = " ".join([*LAMINA, "--root", str(root), "build", "-t", "tty", str(ctx)])
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    assert "[+] Building" in proc.stdout
    assert re.search(r"=> CACHED \[3/3\] RUN echo one; echo two >&2 +\d+\.\ds", proc.stdout)


def test_secret_from_an_environment_variable(lamina: Lamina, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok > /s\n"
    )
    lamina(
        "build", "-q", "--secret", "id=tok,env=TOKVAR", "-t", "sec", str(ctx), env={"TOKVAR": "v1"}
    )
    assert lamina("run", "--rm", "sec", "cat", "/s").stdout == "v1"
    proc = lamina("build", "--secret", "id=tok,env=NOPE_NOT_SET", str(ctx), check=False)
    assert "the environment has no NOPE_NOT_SET" in proc.stderr


def test_containerfile_on_stdin_and_its_own_dockerignore(
    lamina: Lamina, ctx: Path, tmp_path: Path
) -> None:
    (ctx / "secret.key").write_text("k\n")
    (ctx / "notes.txt").write_text("n\n")
    (ctx / ".dockerignore").write_text("notes.txt\n")
    proc = lamina(
        "build", "-q", "-f", "-", "-t", "stdin", str(ctx), input="FROM busybox\nCOPY . /c/\n"
    )
    assert proc.returncode == 0
    listing = lamina("run", "--rm", "stdin", "ls", "/c").stdout.split()
    assert "notes.txt" not in listing and "secret.key" in listing
    # App.Dockerfile.dockerignore next to App.Dockerfile wins over CONTEXT/.dockerignore
    own = tmp_path / "App.Dockerfile"
    own.write_text("FROM busybox\nCOPY . /c/\n")
    (tmp_path / "App.Dockerfile.dockerignore").write_text("secret.key\n")
    lamina("build", "-q", "-f", str(own), "-t", "own", str(ctx))
    listing = lamina("run", "--rm", "own", "ls", "/c").stdout.split()
    assert "secret.key" not in listing and "notes.txt" in listing
