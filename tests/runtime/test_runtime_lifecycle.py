"""Detached containers, logs, stop/kill, exec, signals, rm after a crash, crun, tty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.errors import Conflict, InvalidArgument, NotFound, ToolError
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.spec import RunOptions, Volume
from lamina.runtime.driver.runc import OCIRuntime, find_binary, select_runtime
from lamina.runtime.lifecycle import (
    exec_in,
    get,
    iter_logs,
    kill,
    list_containers,
    prepare_bundle,
    refresh,
    remove,
    run_foreground,
    start_detached,
    start_time,
    stop,
    wait_exited,
)
from lamina.runtime.records.containers import Container, ContainerStore

pytestmark = [pytest.mark.root, pytest.mark.interop]

Prepare = Callable[..., Container]
LOOP = "while :; do sleep 0.05; done"


@pytest.fixture
def prepared(cstore: ContainerStore, rootfs: Path) -> Prepare:
    """A created container with its bundle written (not started)."""

    def make(
        *args: str, name: str | None = None, runtime: str = "runc", **fields: object
    ) -> Container:
        c = cstore.create(
            image_ref="busybox:test",
            image_id="sha256:" + "1" * 64,
            runtime=runtime,
            name=name,
            rootfs=str(rootfs),
            command=args,
        )
        prepare_bundle(cstore, c, ContainerConfig(cmd=("sh",)), RunOptions(args=args, **fields))  # type: ignore[arg-type]
        return c

    return make


@pytest.fixture(autouse=True)
def _cleanup(cstore: ContainerStore) -> object:
    yield
    for c in cstore.list():
        remove(cstore, c, force=True)


def logs(cstore: ContainerStore, c: Container) -> str:
    return b"".join(iter_logs(cstore, c)).decode()


def wait_for_log(cstore: ContainerStore, c: Container, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in logs(cstore, c):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {logs(cstore, c)!r}"
        time.sleep(0.02)


def test_detached_logs_and_stop_escalates(cstore: ContainerStore, prepared: Prepare) -> None:
    # pid 1 of a pid namespace ignores SIGTERM it has no handler for: stop must kill
    c = prepared("sh", "-c", f"echo started; echo to-stderr >&2; {LOOP}")
    c = start_detached(cstore, c)
    assert c.status == "running" and c.pid > 0 and c.keeper_pid > 0
    wait_for_log(cstore, c, "to-stderr")
    assert "started\n" in logs(cstore, c)
    assert [x.id for x in list_containers(cstore)] == [c.id]
    t0 = time.monotonic()
    c = stop(cstore, c, timeout=0.5)
    assert time.monotonic() - t0 >= 0.5
    assert c.status == "exited"
    assert c.exit_code == 128 + signal.SIGKILL
    assert list_containers(cstore) == []
    assert [x.id for x in list_containers(cstore, all=True)] == [c.id]
    assert stop(cstore, c).status == "exited"  # stopping a stopped container is fine
    with pytest.raises(Conflict, match="not running"):
        kill(cstore, c)


def test_stop_with_a_term_handler(cstore: ContainerStore, prepared: Prepare) -> None:
    c = prepared("sh", "-c", f"trap 'echo got-term; exit 42' TERM; echo ready; {LOOP}")
    c = start_detached(cstore, c)
    wait_for_log(cstore, c, "ready")
    t0 = time.monotonic()
    c = stop(cstore, c, timeout=10)
    assert time.monotonic() - t0 < 5
    assert (c.status, c.exit_code) == ("exited", 42)
    assert "got-term" in logs(cstore, c)


def test_kill_with_a_signal(cstore: ContainerStore, prepared: Prepare) -> None:
    c = start_detached(cstore, prepared("sh", "-c", f"trap 'exit 7' USR1; echo ready; {LOOP}"))
    wait_for_log(cstore, c, "ready")
    kill(cstore, c, "usr1")
    assert wait_exited(cstore, c, 10).exit_code == 7
    with pytest.raises(InvalidArgument, match="invalid signal"):
        kill(cstore, c, "NOSUCHSIG")


def test_detached_quick_exit(cstore: ContainerStore, prepared: Prepare) -> None:
    c = start_detached(cstore, prepared("sh", "-c", "echo bye; exit 5"))
    c = wait_exited(cstore, c, 10)
    assert (c.status, c.exit_code) == ("exited", 5)
    assert logs(cstore, c) == "bye\n"
    runtime = OCIRuntime("runc", cstore.root)
    deadline = time.monotonic() + 5
    while runtime.state(c.id) is not None:  # the monitor deletes the runtime's state
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_detached_start_failure(cstore: ContainerStore, prepared: Prepare) -> None:
    c = prepared("/no/such/binary")
    with pytest.raises(ToolError, match="no/such/binary"):
        start_detached(cstore, c)
    c = get(cstore, c.id)
    assert c.status == "exited"
    remove(cstore, c)
    assert cstore.list() == []


def test_logs_follow(cstore: ContainerStore, prepared: Prepare) -> None:
    c = prepared("sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.1; done")
    c = start_detached(cstore, c)
    out = b"".join(iter_logs(cstore, c, follow=True, poll=0.02)).decode()
    assert out == "line1\nline2\nline3\n"
    assert refresh(cstore, c).status == "exited"


def test_detached_tty(cstore: ContainerStore, prepared: Prepare) -> None:
    c = start_detached(cstore, prepared("sh", "-c", "tty; echo hi", tty=True), tty=True)
    c = wait_exited(cstore, c, 10)
    assert c.exit_code == 0
    out = logs(cstore, c)
    assert "/dev/pts/0" in out and "hi" in out


def test_on_exit_command(cstore: ContainerStore, prepared: Prepare, tmp_path: Path) -> None:
    marker = tmp_path / "on-exit"
    c = prepared("true")
    start_detached(cstore, c, on_exit=["touch", str(marker)])
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_exec(cstore: ContainerStore, prepared: Prepare, tmp_path: Path) -> None:
    c = start_detached(cstore, prepared("sh", "-c", f"echo ready; {LOOP}", env=("A=1",)))
    wait_for_log(cstore, c, "ready")
    out = tmp_path / "exec-out"
    with open(out, "wb") as f:
        result = exec_in(
            cstore,
            c,
            ["sh", "-c", "echo $A $B; pwd; id -u; cat /proc/1/cmdline | tr '\\0' ' '; exit 9"],
            env=["B=2"],
            workdir="/tmp",
            user="65534",
            stdout=f.fileno(),
        )
    assert result.exit_code == 9
    lines = out.read_text().splitlines()
    assert lines[:3] == ["1 2", "/tmp", "65534"]
    assert lines[3].startswith("sh -c echo ready")  # the same pid namespace
    assert exec_in(cstore, c, ["/nonexistent"], stderr=subprocess.DEVNULL).exit_code == 127
    with pytest.raises(InvalidArgument):
        exec_in(cstore, c, [])
    stop(cstore, c, timeout=0.2)
    with pytest.raises(Conflict, match="not running"):
        exec_in(cstore, c, ["true"])


def test_names_and_lookup(cstore: ContainerStore, prepared: Prepare) -> None:
    a = prepared("true", name="alpha")
    b = prepared("true")
    assert "_" in b.name
    assert get(cstore, "alpha").id == a.id
    assert get(cstore, a.id[:12]).id == a.id
    assert get(cstore, b.name).id == b.id
    with pytest.raises(NotFound, match="no such container"):
        get(cstore, "nope")
    assert {c.status for c in list_containers(cstore, all=True)} == {"created"}
    remove(cstore, a)  # a created container that never ran
    with pytest.raises(NotFound):
        get(cstore, "alpha")


def test_rm_running(cstore: ContainerStore, prepared: Prepare) -> None:
    c = start_detached(cstore, prepared("sh", "-c", LOOP))
    with pytest.raises(Conflict, match="cannot remove running") as info:
        remove(cstore, c)
    assert info.value.hint and "rm -f" in info.value.hint
    pid = c.pid
    remove(cstore, c, force=True)
    assert not os.path.exists(cstore.path(c.id))
    assert OCIRuntime("runc", cstore.root).state(c.id) is None
    deadline = time.monotonic() + 5
    while start_time(pid) is not None:
        assert time.monotonic() < deadline, "the container's process survived rm -f"
        time.sleep(0.02)


# ---------------------------------------------------------------------- in a subprocess

KEEPER = """
import sys
from lamina.runtime.records.containers import ContainerStore
from lamina.runtime.lifecycle import exec_in, run_foreground
store = ContainerStore(sys.argv[1])
c = store.get(sys.argv[2])
tty, interactive = "t" in sys.argv[3], "i" in sys.argv[3]
if sys.argv[4:]:
    result = exec_in(store, c, sys.argv[4:], tty=tty, interactive=interactive)
else:
    result = run_foreground(store, c, tty=tty, interactive=interactive)
sys.exit(result.exit_code)
"""


def keeper(
    cstore: ContainerStore, c: Container, flags: str = "-", exec_args: tuple[str, ...] = ()
) -> list[str]:
    """A lamina-like process running (or exec'ing in) ``c`` in the foreground."""
    return [sys.executable, "-c", KEEPER, cstore.root, c.id, flags, *exec_args]


def wait_file(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_signal_forwarding(cstore: ContainerStore, prepared: Prepare, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    script = f"trap 'exit 42' TERM; trap 'echo hup >> /s/log' HUP; touch /s/ready; {LOOP}"
    c = prepared("sh", "-c", script, volumes=(Volume(str(shared), "/s"),))
    proc = subprocess.Popen(keeper(cstore, c))
    try:
        wait_file(shared / "ready")
        proc.send_signal(signal.SIGHUP)
        wait_file(shared / "log")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 42
    finally:
        proc.kill()
        proc.wait()
    c = get(cstore, c.id)
    assert (c.status, c.exit_code) == ("exited", 42)


def test_lamina_killed_mid_run(cstore: ContainerStore, prepared: Prepare, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    c = prepared("sh", "-c", f"touch /s/ready; {LOOP}", volumes=(Volume(str(shared), "/s"),))
    proc = subprocess.Popen(keeper(cstore, c))
    wait_file(shared / "ready")
    proc.kill()  # kill -9 of lamina: the container lives on, orphaned
    proc.wait()
    c = get(cstore, c.id)
    assert c.status == "running"  # its process is alive: ps tells the truth
    runtime = OCIRuntime("runc", cstore.root)
    state = runtime.state(c.id)
    assert state is not None and state.status == "running"
    with pytest.raises(Conflict):
        remove(cstore, c)
    remove(cstore, c, force=True)
    assert runtime.state(c.id) is None
    assert not os.path.exists(cstore.path(c.id))
    assert not os.path.exists(os.path.join(runtime.state_dir, c.id))


def test_foreground_tty(cstore: ContainerStore, prepared: Prepare) -> None:
    c = prepared("sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; exit 4", tty=True)
    cmd = " ".join(f"'{a}'" for a in keeper(cstore, c, "t"))
    proc = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "/dev/pts/" in proc.stdout and "stdin-is-a-tty" in proc.stdout


def test_exec_tty(cstore: ContainerStore, prepared: Prepare) -> None:
    c = start_detached(cstore, prepared("sh", "-c", f"echo ready; {LOOP}"))
    wait_for_log(cstore, c, "ready")
    args = ("sh", "-c", "tty; echo $TERM; exit 3")
    cmd = " ".join(f"'{a}'" for a in keeper(cstore, c, "it", args))
    proc = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "/dev/pts/" in proc.stdout and "xterm" in proc.stdout


def test_interactive_stdin(cstore: ContainerStore, prepared: Prepare) -> None:
    c = prepared("sh", "-c", "read line; echo got:$line; cat")
    proc = subprocess.run(
        keeper(cstore, c, "i"),
        input="hello\nmore\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "got:hello\nmore\n")
    # without -i the container's stdin is empty
    d = prepared("sh", "-c", "cat; echo end")
    proc = subprocess.run(
        keeper(cstore, d),
        input="ignored\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout == "end\n"


def test_tty_needs_a_terminal(cstore: ContainerStore, prepared: Prepare) -> None:
    c = prepared("true", tty=True)
    with open(os.devnull) as null:
        saved = os.dup(0)
        os.dup2(null.fileno(), 0)
        try:
            with pytest.raises(InvalidArgument, match="not a TTY"):
                run_foreground(cstore, c, tty=True)
        finally:
            os.dup2(saved, 0)
            os.close(saved)


# ---------------------------------------------------------------------- runtimes


def test_crun_or_its_fallback(cstore: ContainerStore, prepared: Prepare, tmp_path: Path) -> None:
    try:
        find_binary("crun")
    except NotFound:
        pytest.skip("crun is not installed")
    runtime, warning = select_runtime("crun", cstore.root)
    if runtime.name == "runc":
        assert warning and "crun" in warning and "runc" in warning
    else:
        assert warning is None
    c = prepared("sh", "-c", "echo from-$0; exit 6", runtime=runtime.name)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        result = run_foreground(cstore, c, stdout=f.fileno())
    assert result.exit_code == 6
    assert out.read_text() == "from-sh\n"
    # and detached, with stop
    d = start_detached(cstore, prepared("sh", "-c", f"echo up; {LOOP}", runtime=runtime.name))
    wait_for_log(cstore, d, "up")
    assert stop(cstore, d, timeout=0.2).exit_code == 137


def test_missing_runtime_binary(cstore: ContainerStore) -> None:
    with pytest.raises(NotFound, match="not installed") as info:
        select_runtime("runc", cstore.root, search_path="/nonexistent")
    assert info.value.hint == "install it: apt-get install runc"
    with pytest.raises(InvalidArgument, match="unknown OCI runtime"):
        select_runtime("kata", cstore.root)
