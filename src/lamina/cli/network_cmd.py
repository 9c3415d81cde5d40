"""Network commands: ``lamina network create|ls|rm|inspect`` and ``lamina port``.

Parsing and printing only; the networks are :class:`lamina.network.NetavarkNetworks`
of the state root.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lamina.cli.output import print_json, print_table
from lamina.sysinfo import default_root

if TYPE_CHECKING:
    from lamina.cli.main import Parsers
    from lamina.network.stack import NetavarkNetworks


def add_parsers(sub: Parsers) -> None:
    p = sub.add_parser("network", help="manage networks (bridges with NAT and DNS)")
    actions = p.add_subparsers(dest="network_action", metavar="ACTION", required=True)
    c = actions.add_parser(
        "create", help="make a bridge network; its containers know each other by name"
    )
    c.add_argument(
        "--subnet", default=None, help="IPv4 subnet, e.g. 10.89.7.0/24 (default: a free one)"
    )
    c.add_argument(
        "--internal", action="store_true", help="no NAT out: containers reach only each other"
    )
    c.add_argument("name", metavar="NAME")
    ls = actions.add_parser("ls", help="list networks")
    ls.add_argument("-q", "--quiet", action="store_true", help="names only")
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON")
    r = actions.add_parser("rm", help="remove networks no container uses")
    r.add_argument("names", nargs="+", metavar="NAME")
    i = actions.add_parser("inspect", help="a network's config and containers, as JSON")
    i.add_argument("names", nargs="+", metavar="NAME")

    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private", nargs="?", default=None, metavar="PORT[/PROTO]")


def _networks(args: argparse.Namespace) -> NetavarkNetworks:
    from lamina.network.stack import NetavarkNetworks

    return NetavarkNetworks(str(args.root or default_root()))


def cmd_network(args: argparse.Namespace) -> int:
    nets = _networks(args)
    action = args.network_action
    if action == "create":
        doc = nets.create(args.name, subnet=args.subnet, internal=args.internal)
        print(doc["name"])
    elif action == "ls":
        docs = nets.list()
        if args.quiet:
            for doc in docs:
                print(doc["name"])
        elif args.json:
            print_json(docs)
        else:
            rows = [
                [
                    doc["id"][:12],
                    doc["name"],
                    doc["driver"],
                    ",".join(s["subnet"] for s in doc["subnets"]),
                    "yes" if doc.get("dns_enabled") else "no",
                ]
                for doc in docs
            ]
            print_table(["NETWORK ID", "NAME", "DRIVER", "SUBNET", "DNS"], rows)
    elif action == "rm":
        for name in args.names:
            nets.remove(name)
            print(name)
    else:
        print_json([nets.inspect(name) for name in args.names])
    return 0


def cmd_port(args: argparse.Namespace) -> int:
    from lamina.errors import NotFound
    from lamina.network.ports import expand, format_mapping
    from lamina.runtime.lifecycle import get
    from lamina.runtime.records.containers import ContainerStore

    root = str(args.root or default_root())
    c = get(ContainerStore(root), args.container)
    record = _networks(args).attachment(c.id)
    mappings = [one for m in (record["ports"] if record else []) for one in expand(m)]
    if args.private is not None:
        port, _, proto = args.private.partition("/")
        mappings = [
            m
            for m in mappings
            if str(m["container_port"]) == port and m["protocol"] == (proto or "tcp")
        ]
        if not mappings:
            raise NotFound(f"no public port {args.private!r} published for {c.name}")
        for m in mappings:
            print(f"{m.get('host_ip') or '0.0.0.0'}:{m['host_port']}")
        return 0
    for m in mappings:
        print(format_mapping(m))
    return 0
