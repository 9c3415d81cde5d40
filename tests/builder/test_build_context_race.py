"""A build context that changes while it is read: a Conflict naming the file, never an
OSError, and never a checksum (or a copy) of something other than what was selected."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.cli import Lamina
from lamina.builder.files.context import checksum, open_source, select
from lamina.builder.files.ignore import IgnoreMatcher
from lamina.errors import Conflict, LaminaError

HINT = "the build context changed while it was read; retry"


def _ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    for d in range(10):
        (ctx / f"d{d}").mkdir(parents=True)
        for f in range(10):
            (ctx / f"d{d}" / f"f{f}").write_text("x" * (100 * f))
            os.symlink(f"f{f}", ctx / f"d{d}" / f"l{f}")
    (ctx / "log.txt").write_text("start\n")
    return ctx


@contextmanager
def _running(work: Callable[[], None]) -> Iterator[None]:
    """Run ``work`` over and over in a real thread until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            work()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _read(ctx: Path) -> str:
    return checksum(str(ctx), select(str(ctx), ["."], ignore=IgnoreMatcher.parse("")))


def test_file_grown_after_select_is_a_conflict(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    sources = select(str(ctx), ["."], ignore=IgnoreMatcher.parse(""))
    with open(ctx / "log.txt", "a") as fh:
        fh.write("more\n")
    with pytest.raises(Conflict, match=r"^'log\.txt' changed while the build was reading it") as e:
        checksum(str(ctx), sources)
    assert e.value.hint == HINT and "size 6 -> 11 bytes" in e.value.message


def test_same_size_rewrite_after_select_is_a_conflict(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    sources = select(str(ctx), ["."], ignore=IgnoreMatcher.parse(""))
    (ctx / "log.txt").write_text("START\n")  # same size, same inode, new mtime
    st = os.stat(ctx / "log.txt")
    os.utime(ctx / "log.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(Conflict, match=r"'log\.txt' changed") as e:
        checksum(str(ctx), sources)
    assert e.value.hint == HINT


def test_file_changed_before_copy_is_a_conflict(tmp_path: Path) -> None:
    """The copy opens each file with open_source: it checks the selection still holds."""
    ctx = _ctx(tmp_path)
    sources = select(str(ctx), ["d3/f5"], ignore=IgnoreMatcher.parse(""))
    checksum(str(ctx), sources)
    (ctx / "d3" / "f5").write_text("shorter")
    root_fd = os.open(ctx, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(Conflict, match=r"'d3/f5' changed.*size 500 -> 7 bytes"):
            os.close(open_source(root_fd, sources[0]))
    finally:
        os.close(root_fd)


@pytest.mark.timeout(120)
def test_concurrent_writer_is_caught(tmp_path: Path) -> None:
    """A real thread appends to a file (a log in the context) while the context is read
    again and again: the change is seen, and named."""
    ctx = _ctx(tmp_path)

    def append() -> None:
        with open(ctx / "log.txt", "a") as fh:
            fh.write("line\n")
        time.sleep(0.0002)

    seen: list[Conflict] = []
    with _running(append):
        for _ in range(200):
            try:
                _read(ctx)
            except Conflict as exc:
                seen.append(exc)
            if len(seen) >= 3:
                break
    assert len(seen) >= 3
    assert all("'log.txt' changed" in e.message and e.hint == HINT for e in seen)


@pytest.mark.timeout(120)
def test_concurrent_deleter_never_leaks_an_oserror(tmp_path: Path) -> None:
    """A real thread removes and recreates directories, files and symlinks while the
    context is walked and hashed: every failure is a Conflict naming a path."""
    ctx = _ctx(tmp_path)
    turn = [0]

    def churn() -> None:
        d = ctx / f"d{turn[0] % 10}"
        turn[0] += 1
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        for f in range(10):
            (d / f"f{f}").write_text("y" * (100 * f + 1))
            os.symlink(f"f{f}", d / f"l{f}")

    failures: list[LaminaError] = []
    deadline = time.monotonic() + 5
    with _running(churn):
        while time.monotonic() < deadline:
            try:
                _read(ctx)
            except LaminaError as exc:  # an OSError (or anything else) fails the test
                failures.append(exc)
    assert failures, "the churn never hit the reader"
    for exc in failures:
        assert isinstance(exc, Conflict), exc
        assert exc.hint == HINT and exc.message.startswith("'d"), exc


@pytest.mark.root
@pytest.mark.timeout(300)
def test_build_stops_cleanly_when_a_context_file_grows(lamina: Lamina, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY . /ctx/\n")

    def append() -> None:
        with open(ctx / "log.txt", "a") as fh:
            fh.write("line\n")
        time.sleep(0.0005)

    with _running(append):
        proc = lamina("build", "--no-cache", str(ctx), check=False)
    assert proc.returncode == Conflict.exit_code, proc.stderr
    assert "error: Containerfile:2:1: 'log.txt' changed while the build was reading it" in (
        proc.stderr
    )
    assert f"hint: {HINT}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_file_shrunk_during_copy_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cut short while its bytes are being copied: the copy checks the open file
    again once it is done, so the layer never holds a half file under a full file's key."""
    from lamina.builder.files import copy as copy_mod

    ctx = _ctx(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    sources = select(str(ctx), ["d3/f9"], ignore=IgnoreMatcher.parse(""))
    checksum(str(ctx), sources)
    real_copy = copy_mod.copy_data

    def copy_then_truncate(sfd: int, dfd: int, size_hint: int = -1) -> int:
        n = real_copy(sfd, dfd, size_hint)
        os.truncate(ctx / "d3" / "f9", 10)  # the writer races the copy: a real truncate
        return n

    monkeypatch.setattr(copy_mod, "copy_data", copy_then_truncate)
    with pytest.raises(Conflict, match=r"'d3/f9' changed"):
        copy_mod.copy_into(str(ctx), sources, str(dest), copy_mod.CopyOptions(dest="/"))
