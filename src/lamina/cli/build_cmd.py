"""``lamina build``: a Containerfile and a context directory become an image.

Progress goes to stderr in BuildKit's plain form (``#3 [2/5] RUN make``, its output,
``#3 CACHED`` or ``#3 DONE 1.2s``); ``--progress json`` writes one JSON object per event
to stdout instead, ending with ``{"kind": "result", ...}``. The image ID is printed on
stdout (as ``buildah build`` does), and written to ``--iidfile``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from lamina.errors import InvalidArgument, NotFound

_MAX_DOCKERFILE = 4 << 20  # as BuildKit's frontend: a Dockerfile is not a data file


def _pairs(items: list[str], what: str, env: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"{what} {item!r} is not KEY=VALUE")
        if not eq:
            # `--build-arg NAME` takes the value from the environment (docker build).
            if key not in env:
                continue
            value = env[key]
        out[key] = value
    return out


def _secrets(items: list[str], stack: contextlib.ExitStack) -> dict[str, str]:
    """``id=ID,src=FILE`` (``type=file``), or ``id=ID,env=VAR`` (``type=env``: the value
    goes to a private temp file, removed when the build ends)."""
    out: dict[str, str] = {}
    for item in items:
        fields = dict(part.partition("=")[::2] for part in item.split(","))
        ident = fields.get("id")
        src = fields.get("src") or fields.get("source")
        var = fields.get("env")
        kind = fields.get("type", "env" if var and not src else "file")
        if not ident or kind not in ("file", "env") or not (src if kind == "file" else var):
            raise InvalidArgument(
                f"--secret {item!r} needs id= and src=FILE (or env=VAR)",
                hint="--secret id=mytoken,src=token.txt",
            )
        if kind == "env":
            assert var is not None
            value = os.environ.get(var)
            if value is None:
                raise NotFound(f"--secret {ident}: the environment has no {var}")
            import tempfile

            fd, path = tempfile.mkstemp(prefix="lamina-secret-")
            stack.callback(os.unlink, path)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(value)
            out[ident] = path
            continue
        assert src is not None
        if not os.path.isfile(src):
            raise NotFound(f"--secret {ident}: {src} is not a file")
        out[ident] = os.path.abspath(src)
    return out


def _dockerfile(context: str, given: str | None) -> str:
    if given:
        return given
    for name in ("Dockerfile", "Containerfile"):
        path = os.path.join(context, name)
        if os.path.isfile(path):
            return path
    raise NotFound(
        f"no Dockerfile or Containerfile in {context}", hint="give the file with -f FILE"
    )


class _Plain:
    """BuildKit's plain progress, on stderr."""

    def __init__(self, json_mode: bool, quiet: bool) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.lock = threading.Lock()
        self.names: dict[int, str] = {}
        self.partial: dict[int, str] = {}

    def close(self) -> None:
        pass

    def __call__(self, event: object) -> None:
        from lamina.builder.api import Event

        assert isinstance(event, Event)
        with self.lock:
            if event.kind == "start":
                self.names[event.vertex] = event.name
            if self.json:
                sys.stdout.write(json.dumps(event.to_json()) + "\n")
                sys.stdout.flush()
                return
            if self.quiet:
                return
            self._plain(event)

    def _plain(self, event: object) -> None:
        from lamina.builder.api import Event

        assert isinstance(event, Event)
        out = sys.stderr
        v = event.vertex
        if event.kind == "start":
            out.write(f"#{v} {event.name}\n")
        elif event.kind == "log":
            text = self.partial.pop(v, "") + event.text
            *lines, rest = text.split("\n")
            for line in lines:
                out.write(f"#{v} {event.seconds:.3f} {line}\n")
            if rest:
                self.partial[v] = rest
        elif event.kind == "info":
            out.write(f"#{v} {event.text}\n")
        elif event.kind in ("cached", "done", "error"):
            rest = self.partial.pop(v, "")
            if rest:
                out.write(f"#{v} {event.seconds:.3f} {rest}\n")
            if event.kind == "cached":
                out.write(f"#{v} CACHED\n\n")
            elif event.kind == "done":
                out.write(f"#{v} DONE {event.seconds:.1f}s\n\n")
            else:
                out.write(f"#{v} ERROR: {event.text}\n\n")
        elif event.kind == "warning":
            out.write(f"WARNING: {event.text}\n")
        out.flush()


class _Live(_Plain):
    """``--progress auto`` on a terminal: one live line per step (rich), the running
    step's last output lines under it; the plain lines are kept for a failure."""

    TAIL = 5

    def __init__(self) -> None:
        super().__init__(False, False)
        from rich.console import Console
        from rich.live import Live

        self.started = time.monotonic()
        self.rows: dict[int, list[Any]] = {}  # vertex -> [name, status, seconds, start]
        self.logs: dict[int, list[str]] = {}
        self.live = Live(console=Console(stderr=True), refresh_per_second=8, transient=False)
        self.live.start()

    def __call__(self, event: object) -> None:
        from lamina.builder.api import Event

        assert isinstance(event, Event)
        with self.lock:
            v = event.vertex
            if event.kind == "start":
                self.names[v] = event.name
                self.rows[v] = [event.name, "", 0.0, time.monotonic()]
            elif event.kind == "log":
                lines = self.logs.setdefault(v, [""])
                first, *more = event.text.split("\n")
                lines[-1] += first
                lines.extend(more)
                del lines[: -self.TAIL - 1]
            elif event.kind in ("cached", "done", "error") and v in self.rows:
                row = self.rows[v]
                row[1] = {"cached": "CACHED ", "done": "", "error": "ERROR "}[event.kind]
                row[2] = event.seconds
                row[3] = None
                if event.kind != "error":
                    self.logs.pop(v, None)
            elif event.kind == "warning":
                self.live.console.print(f"WARNING: {event.text}")
            self.live.update(self._render())

    def _render(self) -> Any:
        from rich.text import Text

        now = time.monotonic()
        done = sum(1 for row in self.rows.values() if row[3] is None)
        out = Text(f"[+] Building {now - self.started:.1f}s ({done}/{len(self.rows)})\n")
        width = max(40, self.live.console.width - 8)
        for v, (name, status, seconds, start) in self.rows.items():
            elapsed = now - start if start is not None else seconds
            style = "red" if status == "ERROR " else ("blue" if status == "CACHED " else "")
            line = f" => {status}{name}"[:width].ljust(width)
            out.append(f"{line} {elapsed:.1f}s\n", style=style)
            for log in self.logs.get(v, [])[-self.TAIL :]:
                if log:
                    out.append(f" => => # {log}"[: width + 7] + "\n", style="dim")
        return out

    def close(self) -> None:
        with self.lock:
            if not self.live.is_started:
                return
            self.live.update(self._render())
        self.live.stop()


def cmd_build(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        return _build(args, stack)


def _build(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    from lamina.builder.api import BuildOptions, Event, StepFailed
    from lamina.builder.executor import Builder
    from lamina.builder.plan import automatic_args, plan
    from lamina.cli.output import open_store
    from lamina.dockerfile.parser import parse
    from lamina.errors import LaminaError
    from lamina.oci.platform import Platform

    context = args.context
    if not os.path.isdir(context):
        raise NotFound(f"build context {context!r} is not a directory")
    path = _dockerfile(context, args.file)
    try:
        if path == "-":  # the Containerfile on stdin (docker build -f -)
            text = sys.stdin.read(_MAX_DOCKERFILE + 1)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(_MAX_DOCKERFILE + 1)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file", hint="give the Containerfile with -f") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc}") from exc
    if len(text) > _MAX_DOCKERFILE:
        raise InvalidArgument(f"{path} is larger than {_MAX_DOCKERFILE} characters")
    build_args = _pairs(args.build_arg, "--build-arg", os.environ)
    epoch_text = build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    epoch = None
    if epoch_text:
        if not epoch_text.isdigit():
            raise InvalidArgument(f"SOURCE_DATE_EPOCH={epoch_text!r} is not a number of seconds")
        epoch = int(epoch_text)
    store = open_store(args)
    options = BuildOptions(
        context=context,
        dockerfile="" if path == "-" else path,
        build_args=build_args,
        target=args.target,
        tags=tuple(args.tags),
        no_cache=args.no_cache,
        secrets=_secrets(args.secret, stack),
        labels=_pairs(args.label, "--label", {}),
        network=args.network,
        source_date_epoch=epoch,
        jobs=args.jobs,
    )
    quiet = args.quiet or args.progress == "quiet"
    printer: _Plain
    if args.progress == "auto" and not quiet and sys.stderr.isatty():
        printer = _Live()
    else:
        printer = _Plain(args.progress == "json", quiet)

    def image_exists(name: str) -> bool:
        from lamina.image.images import resolve

        try:
            resolve(store, name)
        except (NotFound, InvalidArgument):
            return False
        return True

    shown = "Dockerfile" if path == "-" else path
    dockerfile = parse(text, os.path.basename(path) if args.file is None else shown)
    host = Platform.host()
    the_plan = plan(
        dockerfile,
        build_args,
        args.target,
        automatic=automatic_args(host.os, host.architecture, host.variant),
        image_exists=image_exists,
    )
    builder = Builder(store, options, printer)
    try:
        result = builder.build(the_plan)
    except LaminaError as exc:
        if builder.failed_vertex:
            printer(Event("error", builder.failed_vertex, text=exc.message))
        printer.close()
        if isinstance(exc, StepFailed) and not printer.json:
            sys.stderr.write(f"------\n > {exc.step}:\n")
            for line in exc.tail:
                sys.stderr.write(f"{line}\n")
            sys.stderr.write("------\n")
        raise
    finally:
        printer.close()
    if args.iidfile:
        from lamina.atomic import write_atomic

        write_atomic(os.path.abspath(args.iidfile), f"{result.image_id}\n".encode(), 0o644)
    if printer.json:
        doc = {
            "kind": "result",
            "id": str(result.image_id),
            "manifest": str(result.manifest.digest),
            "names": list(result.names),
            "steps": result.steps,
            "cached": result.cached,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        sys.stdout.write(f"{result.image_id}\n")
    return 0
