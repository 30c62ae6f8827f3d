"""``skiff volume``: create, ls, inspect, rm, prune as docker has them, and skiff's own
export (a tar of the volume), import (a tar into it) and rename."""

from __future__ import annotations

import sys

from skiff.cli.client import filters_json, path_arg
from skiff.cli.exits import UsageError
from skiff.cli.formatting import human_size, render
from skiff.cli.parsing import key_values, parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from typing import Any

    from skiff.cli.main import Cli

VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                  "Mountpoint": "MOUNTPOINT", "Labels": "LABELS"}
VOLUME_TABLE = "table {{.Driver}}\t{{.Name}}"


def create_body(name: str, driver: str, opts: list[str], labels: list[str]) -> dict[str, Any]:
    return {"Name": name, "Driver": driver, "DriverOpts": key_values(opts, "option"),
            "Labels": key_values(labels, "label")}


def cmd_volume_create(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff volume create", "Create a volume")
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("-o", "--opt", action="append", default=[])
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--name", dest="name_flag", default="")
    p.add_argument("name", nargs="?", default="")
    args = p.parse(argv)
    if args.name and args.name_flag and args.name != args.name_flag:
        raise UsageError("conflicting options: either specify --name or provide positional "
                         "arg, not both")
    vol = cli.client.post("/volumes/create", None, create_body(
        args.name or args.name_flag, args.driver, args.opt, args.label))
    print(vol["Name"])
    return 0


def volume_row(vol: dict[str, Any]) -> dict[str, Any]:
    labels = vol.get("Labels") or {}
    return {"Name": vol.get("Name", ""), "Driver": vol.get("Driver", ""),
            "Scope": vol.get("Scope", "local"), "Mountpoint": vol.get("Mountpoint", ""),
            "Labels": ",".join(f"{k}={v}" for k, v in labels.items())}


def cmd_volume_ls(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff volume ls", "List volumes")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    p.flag("-q", "--quiet")
    args = p.parse(argv)
    result = cli.client.get("/volumes", {"filters": filters_json(args.filter)}) or {}
    vols = sorted(result.get("Volumes") or [], key=lambda v: str(v.get("Name", "")))
    fmt = "{{.Name}}" if args.quiet else (args.format or VOLUME_TABLE)
    render([volume_row(v) for v in vols], fmt, VOLUME_HEADERS)
    return 0


def cmd_volume_inspect(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.inspect import cmd_inspect

    return cmd_inspect(cli, ["--type", "volume", *argv])


def cmd_volume_rm(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.containers import each

    p = parser("skiff volume rm", "Remove one or more volumes")
    p.flag("-f", "--force")
    p.add_argument("names", nargs="+")
    args = p.parse(argv)
    return each(cli, args.names, lambda n: cli.client.delete(
        f"/volumes/{path_arg(n)}", {"force": args.force or None}))


def cmd_volume_prune(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.images import _confirm, _prune

    p = parser("skiff volume prune", "Remove unused local volumes")
    p.flag("-a", "--all", help="remove all unused volumes, not just anonymous ones")
    p.flag("-f", "--force")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse(argv)
    warning = ("This will remove all local volumes not used by at least one container."
               if args.all else
               "This will remove anonymous local volumes not used by at least one container.")
    if not _confirm(args.force, warning):
        return 0
    filters = [*args.filter, *(["all=true"] if args.all else [])]
    total = _prune(cli, "/volumes/prune", filters, "Deleted Volumes", "VolumesDeleted")
    print(f"Total reclaimed space: {human_size(total)}")
    return 0


def cmd_volume_export(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.containers import copy_body

    p = parser("skiff volume export", "Write a volume's content as a tar archive")
    p.add_argument("-o", "--output")
    p.add_argument("name")
    args = p.parse(argv)
    resp = cli.client.call("GET", f"/volumes/{path_arg(args.name)}/export")
    return copy_body(resp, args.output, "output")


def cmd_volume_import(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff volume import", "Unpack a tar archive (a file or STDIN) into a volume")
    p.add_argument("name")
    p.add_argument("file", nargs="?", default="-")
    args = p.parse(argv)
    if args.file == "-":
        if sys.stdin.isatty():
            raise UsageError("refusing to read a tar archive from a terminal: give a FILE "
                             "or redirect STDIN")
        src: Any = sys.stdin.buffer
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise UsageError(f"open {args.file}: {exc.strerror}") from exc
    try:
        cli.client.call("PUT", f"/volumes/{path_arg(args.name)}/import", data=src,
                        headers={"Content-Type": "application/x-tar"}).close()
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    return 0


def cmd_volume_rename(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff volume rename", "Rename a volume")
    p.add_argument("old")
    p.add_argument("new")
    args = p.parse(argv)
    cli.client.post(f"/volumes/{path_arg(args.old)}/rename", {"name": args.new})
    return 0
