"""A build's RUN steps are confined as `lamina run` is: Docker's seccomp policy and
capabilities (real runc, a busybox base, a static probe copied into the image)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers.cli import Lamina
from helpers.probes import build_probe, parse, status

pytestmark = [pytest.mark.root, pytest.mark.interop]


def test_run_steps_get_the_default_seccomp_profile(lamina: Lamina, tmp_path: Path) -> None:
    lamina("bootstrap", "busybox", "-t", "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    build_probe(ctx / "probe")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY probe /probe\n"
        "RUN (grep -E '^(Seccomp|CapEff):' /proc/self/status; /probe) > /result\n"
    )
    lamina("build", "-q", "-t", "probed", str(ctx))
    out = lamina("run", "--rm", "--security-opt", "seccomp=unconfined", "probed", "cat", "/result")
    assert status(out.stdout, "Seccomp") == "2"
    assert status(out.stdout, "CapEff") == "00000000a80425fb"
    assert set(parse(out.stdout).values()) == {"EPERM"}
    assert len(parse(out.stdout)) == 6
    # and `run` of the image itself, through the CLI: confined by default, unconfined asked
    out = lamina("run", "--rm", "probed", "/probe")
    assert set(parse(out.stdout).values()) == {"EPERM"}
    # the run plan that run cached holds the filter too (the warm fast path)
    out = lamina("run", "--rm", "probed", "/probe", env={"LAMINA_FASTRUN": "require"})
    assert set(parse(out.stdout).values()) == {"EPERM"}
    out = lamina("run", "--rm", "--security-opt", "seccomp=unconfined", "probed", "/probe")
    assert parse(out.stdout)["keyctl"] == "OK"
    out = lamina(
        "run",
        "--rm",
        "--cap-drop",
        "all",
        "--cap-add",
        "kill",
        "probed",
        "grep",
        "CapEff",
        "/proc/self/status",
    )
    assert status(out.stdout, "CapEff") == f"{1 << 5:016x}"
    shutil.rmtree(ctx)


def test_cli_refuses_bad_security_options(lamina: Lamina) -> None:
    lamina("bootstrap", "busybox", "-t", "busybox")
    for args, message in (
        (["--cap-add", "CAP_WIZARDRY"], "unknown capability"),
        (["--security-opt", "seccomp=/no/such.json"], "does not exist"),
        (["--security-opt", "label=disable"], "not supported"),
        (["--device", "/dev/no-such-device"], "does not exist"),
    ):
        proc = lamina("run", "--rm", *args, "busybox", "true", check=False)
        assert proc.returncode != 0
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
