"""``lamina stats`` and ``lamina top``: parsing and printing only (the figures are
:mod:`lamina.runtime.stats`')."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lamina.cli.output import human_size, print_json, print_table, table_lines
from lamina.errors import InvalidArgument
from lamina.sysinfo import default_root

if TYPE_CHECKING:
    from lamina.cli.main import Parsers
    from lamina.runtime.records.containers import Container, ContainerStore
    from lamina.runtime.stats.containers import ContainerStats, StatsSampler

INTERVAL = 1.0  # seconds between the rounds of a stream, as Docker's

HEADERS = {
    "Container": "CONTAINER ID",
    "ID": "CONTAINER ID",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}
DEFAULT_COLUMNS = (
    "Container",
    "Name",
    "CPUPerc",
    "MemUsage",
    "MemPerc",
    "NetIO",
    "BlockIO",
    "PIDs",
)
_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def add_parsers(sub: Parsers) -> None:
    p = sub.add_parser("stats", help="show containers' CPU, memory, pids, network and block I/O")
    p.add_argument("containers", nargs="*", metavar="CONTAINER", help="default: every running one")
    p.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    p.add_argument("--no-stream", action="store_true", help="print one round and exit")
    p.add_argument(
        "--json", action="store_true", help="a JSON array (streaming: one line per round)"
    )
    p.add_argument(
        "--format",
        default=None,
        metavar="TEMPLATE",
        help="Docker's placeholders, e.g. 'table {{.Name}}\\t{{.CPUPerc}}' "
        "(Container, ID, Name, CPUPerc, MemUsage, MemPerc, NetIO, BlockIO, PIDs)",
    )

    p = sub.add_parser("top", help="show the processes of a running container")
    p.add_argument("--json", action="store_true", help="one JSON object per process")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument(
        "ps_args", nargs=argparse.REMAINDER, metavar="PS OPTIONS", help="for ps (default -ef)"
    )


def _store(args: argparse.Namespace) -> ContainerStore:
    from lamina.runtime.records.containers import ContainerStore

    return ContainerStore(str(args.root or default_root()))


def binary_size(n: float) -> str:
    """Docker's memory units: binary, four significant digits (``63.95MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}B"  # not reached


def cells(s: ContainerStats) -> dict[str, str]:
    """The columns of one container as Docker prints them (``--`` when it does not run)."""
    if not s.running:
        dash = "--"
        return {
            "Container": s.id[:12],
            "ID": s.id,
            "Name": s.name,
            "CPUPerc": dash,
            "MemUsage": "-- / --",
            "MemPerc": dash,
            "NetIO": "-- / --",
            "BlockIO": "-- / --",
            "PIDs": dash,
        }
    return {
        "Container": s.id[:12],
        "ID": s.id,
        "Name": s.name,
        "CPUPerc": f"{s.cpu_percent:.2f}%",
        "MemUsage": f"{binary_size(s.mem_usage_bytes)} / {binary_size(s.mem_limit_bytes)}",
        "MemPerc": f"{s.mem_percent:.2f}%",
        "NetIO": f"{human_size(s.net_rx_bytes)} / {human_size(s.net_tx_bytes)}",
        "BlockIO": f"{human_size(s.block_read_bytes)} / {human_size(s.block_write_bytes)}",
        "PIDs": str(s.pids),
    }


def _template(fmt: str) -> tuple[bool, str]:
    """(with a header, the row template) of ``--format``; every placeholder known."""
    table = fmt.startswith("table")
    body = fmt[len("table") :].lstrip() if table else fmt
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    for name in _PLACEHOLDER.findall(body):
        if name not in HEADERS:
            raise InvalidArgument(
                f"--format names an unknown field {name!r}",
                hint="use " + ", ".join(f"{{{{.{k}}}}}" for k in HEADERS),
            )
    return table, body


def _fill(body: str, row: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: row[m.group(1)], body)


def _render_lines(fmt: str, rounds: Sequence[ContainerStats]) -> list[str]:
    table, body = _template(fmt)
    lines = [_PLACEHOLDER.sub(lambda m: HEADERS[m.group(1)], body)] if table else []
    for s in rounds:
        lines.append(_fill(body, cells(s)))
    return lines


def _default_table(stats: Sequence[ContainerStats]) -> tuple[list[str], list[list[str]]]:
    rows = [[cells(s)[k] for k in DEFAULT_COLUMNS] for s in stats]
    return [HEADERS[k] for k in DEFAULT_COLUMNS], rows


def _print_round(args: argparse.Namespace, stats: Sequence[ContainerStats]) -> None:
    if args.json:
        if args.no_stream:
            print_json([s.to_json() for s in stats])
        else:  # ndjson: one round per line, for readers of a stream
            sys.stdout.write(json.dumps([s.to_json() for s in stats]) + "\n")
    elif args.format is not None:
        sys.stdout.write("".join(line + "\n" for line in _render_lines(args.format, stats)))
    else:
        print_table(*_default_table(stats))
    sys.stdout.flush()


def _targets(args: argparse.Namespace, store: ContainerStore) -> Callable[[], list[Container]]:
    """What each round shows: the named containers (resolved once: errors before any
    output), else the running ones (or all) of that moment."""
    from lamina.runtime.lifecycle import get, list_containers, refresh

    if args.containers:
        named = [get(store, ref) for ref in args.containers]
        return lambda: [refresh(store, c) for c in named]
    return lambda: list_containers(store, all=args.all)


def cmd_stats(args: argparse.Namespace) -> int:
    from lamina.runtime.stats.containers import StatsSampler

    if args.format is not None:
        _template(args.format)  # a bad template fails before the first round
    store = _store(args)
    targets = _targets(args, store)
    sampler = StatsSampler(store)
    if args.no_stream:
        _print_round(args, sampler.round(targets()))
        return 0
    try:
        if args.json or args.format is not None or not sys.stdout.isatty():
            while True:
                _print_round(args, sampler.round(targets()))
                time.sleep(INTERVAL)  # a round takes milliseconds (new containers: PRE_READ)
        else:
            _live(sampler, targets)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a stream ends
    return 0


def _live(sampler: StatsSampler, targets: Callable[[], list[Container]]) -> None:
    """The table redrawn in place every second (rich), until Ctrl-C; lines wider than
    the terminal are cut, as ``top`` does."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    with Live(console=Console(), auto_refresh=False) as live:
        while True:
            lines = table_lines(*_default_table(sampler.round(targets())))
            live.update(Text("\n".join(lines), no_wrap=True, overflow="crop"), refresh=True)
            time.sleep(INTERVAL)


def cmd_top(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import get
    from lamina.runtime.stats.containers import top

    store = _store(args)
    table = top(store, get(store, args.container), tuple(args.ps_args) or ("-ef",))
    if args.json:
        print_json(table.to_json())
    else:
        print_table(list(table.titles), [list(r) for r in table.rows])
    return 0
