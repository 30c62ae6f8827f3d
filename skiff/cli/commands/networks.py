"""``skiff network``: create, ls, inspect, rm, prune, connect, disconnect (docker's flags)."""

from __future__ import annotations

from skiff.cli.client import filters_json, path_arg
from skiff.cli.exits import UsageError
from skiff.cli.formatting import render, short_id
from skiff.cli.parsing import key_values, parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from skiff.cli.main import Cli

NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                   "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                   "CreatedAt": "CREATED AT"}
NETWORK_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def _one(values: list[str], flag: str) -> str:
    # The daemon takes one IPv4 pool per network; docker would pair several by position.
    if len(values) > 1:
        raise UsageError(f"only one {flag} is supported (one IPv4 pool per network)")
    return values[0] if values else ""


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """``network create`` flags -> the ``POST /networks/create`` body."""
    subnet = _one(args.subnet, "--subnet")
    gateway, ip_range = _one(args.gateway, "--gateway"), _one(args.ip_range, "--ip-range")
    if (gateway or ip_range) and not subnet:
        raise UsageError("every ip-range or gateway must have a corresponding subnet")
    pool = {k: v for k, v in (("Subnet", subnet), ("Gateway", gateway),
                              ("IPRange", ip_range)) if v}
    return {
        "Name": args.name, "Driver": args.driver, "Internal": args.internal,
        "Attachable": args.attachable, "EnableIPv6": args.ipv6,
        "IPAM": {"Driver": args.ipam_driver, "Config": [pool] if pool else [],
                 "Options": key_values(args.ipam_opt, "ipam-opt")},
        "Options": key_values(args.opt, "option"), "Labels": key_values(args.label, "label"),
    }


def cmd_network_create(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff network create", "Create a network")
    a = p.add_argument
    many: dict[str, Any] = {"action": "append", "default": []}
    a("-d", "--driver", default="bridge")
    a("--subnet", **many)
    a("--gateway", **many)
    a("--ip-range", **many)
    a("--ipam-driver", default="default")
    a("--ipam-opt", **many)
    p.flag("--internal")
    p.flag("--attachable")
    p.flag("--ipv6")
    a("--label", **many)
    a("-o", "--opt", **many)
    a("name")
    args = p.parse(argv)
    created = cli.client.post("/networks/create", None, create_body(args))
    print(created["Id"])
    return 0


def network_row(net: dict[str, Any], trunc: bool) -> dict[str, Any]:
    labels = net.get("Labels") or {}
    return {"ID": short_id(str(net.get("Id", "")), trunc), "Name": net.get("Name", ""),
            "Driver": net.get("Driver", ""), "Scope": net.get("Scope", "local"),
            "IPv6": str(bool(net.get("EnableIPv6"))).lower(),
            "Internal": str(bool(net.get("Internal"))).lower(),
            "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
            "CreatedAt": net.get("Created", "")}


def cmd_network_ls(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff network ls", "List networks")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    p.flag("--no-trunc")
    p.flag("-q", "--quiet")
    args = p.parse(argv)
    nets = sorted(cli.client.get("/networks", {"filters": filters_json(args.filter)}) or [],
                  key=lambda n: str(n.get("Name", "")))
    fmt = "{{.ID}}" if args.quiet else (args.format or NETWORK_TABLE)
    render([network_row(n, not args.no_trunc) for n in nets], fmt, NETWORK_HEADERS)
    return 0


def cmd_network_inspect(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.inspect import cmd_inspect

    return cmd_inspect(cli, ["--type", "network", *argv])


def cmd_network_rm(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.containers import each

    p = parser("skiff network rm", "Remove one or more networks")
    p.flag("-f", "--force")
    p.add_argument("names", nargs="+")
    args = p.parse(argv)
    return each(cli, args.names, lambda n: cli.client.delete(f"/networks/{path_arg(n)}"))


def cmd_network_prune(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.images import _confirm, _prune

    p = parser("skiff network prune", "Remove all unused networks")
    p.flag("-f", "--force")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse(argv)
    if _confirm(args.force, "This will remove all custom networks not used by at least one "
                            "container."):
        _prune(cli, "/networks/prune", args.filter, "Deleted Networks", "NetworksDeleted")
    return 0


def endpoint_config(ip: str, aliases: list[str], links: list[str]) -> dict[str, Any]:
    """An EndpointSettings for connect (and for ``run --network N --ip --network-alias``)."""
    cfg: dict[str, Any] = {}
    if ip:
        cfg["IPAMConfig"] = {"IPv4Address": ip}
    if aliases:
        cfg["Aliases"] = aliases
    if links:
        cfg["Links"] = links
    return cfg


def cmd_network_connect(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff network connect", "Connect a container to a network")
    p.add_argument("--ip", default="")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--link", action="append", default=[])
    p.add_argument("network")
    p.add_argument("container")
    args = p.parse(argv)
    body = {"Container": args.container,
            "EndpointConfig": endpoint_config(args.ip, args.alias, args.link)}
    cli.client.call("POST", f"/networks/{path_arg(args.network)}/connect", body=body).close()
    return 0


def cmd_network_disconnect(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff network disconnect", "Disconnect a container from a network")
    p.flag("-f", "--force")
    p.add_argument("network")
    p.add_argument("container")
    args = p.parse(argv)
    body = {"Container": args.container, "Force": args.force}
    cli.client.call("POST", f"/networks/{path_arg(args.network)}/disconnect",
                    body=body).close()
    return 0
