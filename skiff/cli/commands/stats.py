"""``skiff stats``: one ``/containers/{id}/stats?stream=1`` per container, read by a thread
each, and the table redrawn twice a second from the latest samples, as the docker CLI does.
``--no-stream`` takes one sample each (``stream=0``) and prints once."""

from __future__ import annotations

import sys
import threading
import time

from skiff.cli.client import APIError, path_arg
from skiff.cli.commands.containers import STATS_HEADERS, STATS_TABLE, stats_row
from skiff.cli.exits import ExitStatus
from skiff.cli.formatting import render
from skiff.cli.parsing import parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from typing import Any

    from skiff.cli.client import Client
    from skiff.cli.main import Cli

REDRAW_SECONDS = 0.5


class Feed:
    """The latest sample of one container's stats stream (written by its reader thread)."""

    def __init__(self, client: Client, name: str) -> None:
        self.name = name
        self.row: dict[str, Any] | None = None
        self.error = ""
        self.done = threading.Event()
        self._client = client
        self._thread = threading.Thread(target=self._read, name=f"stats-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        try:
            for sample in self._client.stream_json(
                    "GET", f"/containers/{path_arg(self.name)}/stats", {"stream": True}):
                self.row = stats_row(self.name, sample)
        except APIError as exc:
            self.error = exc.message
        except Exception as exc:  # the connection broke: the row stays at its last sample
            self.error = str(exc)
        finally:
            self.done.set()


def _names(cli: Cli, args: Any) -> list[str]:
    if args.containers:
        return list(args.containers)
    listed = cli.client.get("/containers/json", {"all": args.all or None}) or []
    return [str(c["Id"]) for c in listed]


def _once(cli: Cli, names: list[str], fmt: str) -> int:
    rows, failed = [], False
    for name in names:
        try:
            sample = cli.client.get(f"/containers/{path_arg(name)}/stats", {"stream": False})
        except APIError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            failed = True
            continue
        rows.append(stats_row(name, sample))
    render(rows, fmt, STATS_HEADERS)
    if failed:
        raise ExitStatus(1)
    return 0


def stats(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff stats", "Display a live stream of container resource usage statistics")
    p.flag("-a", "--all")
    p.flag("--no-stream")
    p.flag("--no-trunc")
    p.add_argument("--format", default="")
    p.add_argument("containers", nargs="*")
    args = p.parse(argv)
    names = _names(cli, args)
    fmt = args.format or STATS_TABLE
    if args.no_stream:
        return _once(cli, names, fmt)
    feeds = [Feed(cli.client, n) for n in names]
    for feed in feeds:
        feed.start()
    tty = sys.stdout.isatty()
    while True:
        time.sleep(REDRAW_SECONDS)
        if tty:
            sys.stdout.write("\x1b[2J\x1b[H")  # clear and home, then the table anew
        render([f.row for f in feeds if f.row is not None], fmt, STATS_HEADERS)
        sys.stdout.flush()
        if feeds and all(f.done.is_set() for f in feeds):
            # Every stream ended (the containers are gone or the daemon went away): nothing
            # will change any more, so stop instead of redrawing the same table forever.
            errors = [f"Error response from daemon: {f.error}" for f in feeds if f.error]
            for line in errors:
                sys.stderr.write(line + "\n")
            return 1 if errors else 0
