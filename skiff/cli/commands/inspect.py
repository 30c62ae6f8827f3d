"""inspect: containers and images (and what the daemon adds later), JSON or a template."""

from __future__ import annotations

import json
import sys

from skiff.cli.client import APIError, path_arg
from skiff.cli.exits import ExitStatus
from skiff.cli.formatting import unescape
from skiff.cli.parsing import parser
from skiff.cli.template import Template

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from typing import Any

    from skiff.cli.main import Cli

_PATHS = {"container": "/containers/{}/json", "image": "/images/{}/json",
          "network": "/networks/{}", "volume": "/volumes/{}"}


def lookup(cli: Cli, name: str, kind: str | None) -> Any:
    """The object called ``name``: of ``kind``, or a container, else an image. LookupError
    carries the message to print when there is none."""
    for candidate in ([kind] if kind else ["container", "image", "network", "volume"]):
        try:
            return cli.client.get(_PATHS[candidate].format(path_arg(name)))
        except APIError as exc:
            if exc.status != 404:
                raise
            if kind:  # the docker CLI passes the daemon's own words on
                raise LookupError(f"Error response from daemon: {exc.message}") from exc
    raise LookupError(f"Error: No such object: {name}")


def cmd_inspect(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff inspect", "Return low-level information on skiff objects")
    p.add_argument("-f", "--format", default="")
    p.add_argument("--type", choices=sorted(_PATHS))
    p.flag("-s", "--size")
    p.add_argument("names", nargs="+")
    args = p.parse(argv)
    found, missing = [], []
    for name in args.names:
        try:
            found.append(lookup(cli, name, args.type))
        except LookupError as exc:
            missing.append(str(exc.args[0]))
    if args.format:
        tmpl = Template(unescape(args.format))
        sys.stdout.write("".join(tmpl.render(obj) + "\n" for obj in found))
    else:
        sys.stdout.write(json.dumps(found, indent=4, ensure_ascii=False) + "\n")
    for message in missing:
        sys.stderr.write(message + "\n")
    if missing:
        raise ExitStatus(1)
    return 0
