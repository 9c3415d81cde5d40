"""Running the network stack's tools (netavark, unshare) without :mod:`subprocess`:
``posix_spawn`` with stdin, stdout and stderr on files, which is all these tools need
and costs the fast path of ``lamina run`` no import time (subprocess pulls in
threading, selectors and signal handling)."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence

_MAX_OUTPUT = 1 << 20


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    keep_fds: Sequence[int] = (),
) -> bytes:
    """Run ``argv`` to its end with ``stdin`` as its input; return its stdout.
    ``keep_fds`` are handed to the tool at their own numbers (with the flocks they hold:
    a lock then lasts as long as the tool runs, even if lamina is killed meanwhile).

    ToolError with the last line of its stderr when it fails or cannot start."""
    from lamina.errors import ToolError

    tmp = os.environ.get("TMPDIR", "/tmp")
    files = []
    try:
        for _ in range(3):
            fd = os.open(tmp, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            files.append(fd)
        if stdin:
            os.write(files[0], stdin)
            os.lseek(files[0], 0, os.SEEK_SET)
        try:
            pid = os.posix_spawnp(
                argv[0],
                list(argv),
                env if env is not None else os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, files[0], 0),
                    (os.POSIX_SPAWN_DUP2, files[1], 1),
                    (os.POSIX_SPAWN_DUP2, files[2], 2),
                    # dup2 of a descriptor onto itself clears its close-on-exec flag
                    *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in keep_fds),
                ],
            )
        except OSError as exc:
            raise ToolError(
                f"cannot start {what} ({argv[0]}): {exc.strerror or exc}",
                hint="install it (netavark: apt-get install netavark aardvark-dns)",
            ) from exc
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        outputs = []
        for fd in files[1:]:
            os.lseek(fd, 0, os.SEEK_SET)
            outputs.append(os.read(fd, _MAX_OUTPUT))
    finally:
        for fd in files:
            os.close(fd)
    if code != 0:
        lines = [line for line in outputs[1].decode("utf-8", "replace").splitlines() if line]
        last = lines[-1] if lines else f"exit status {code}"
        said = outputs[0].decode("utf-8", "replace").strip()
        raise ToolError(f"{what} failed: {last}" + (f" [stdout] {said[:2000]}" if said else ""))
    return outputs[0]
