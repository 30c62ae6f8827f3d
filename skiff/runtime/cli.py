"""skiff-runtime: an OCI runtime with runc's command line.

Anything that drives runc (containerd's shim, dockerd, podman, skiffd) can drive this. Start-up
time is part of container start latency, so this module imports only what parsing needs; each
command imports its machinery when it runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

from skiff.errors import InvalidArgument, SkiffError
from skiff.runtime.records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"


@record
class Flag:
    names: tuple[str, ...]
    value: bool = False  # takes a value
    multi: bool = False  # may repeat; collected into a list
    help: str = ""

    @property
    def key(self) -> str:
        return self.names[0].lstrip("-").replace("-", "_")


@record
class Command:
    name: str
    usage: str
    summary: str
    flags: list[Flag] = field(default_factory=list)
    min_args: int = 1
    max_args: int | None = 1


GLOBAL_FLAGS = [
    Flag(("--root",), True, help="root directory for container state"),
    Flag(("--log",), True, help="log file (errors are written there too)"),
    Flag(("--log-format",), True, help="text or json"),
    Flag(("--debug",), help="debug logging"),
    Flag(("--systemd-cgroup",), help="cgroupsPath is slice:prefix:name (cgroupfs does the work)"),
    Flag(("--rootless",), True, help="accepted for compatibility"),
    Flag(("--criu",), True, help="accepted for compatibility"),
    Flag(("--help", "-h"), help="show help"),
    Flag(("--version", "-v"), help="print the version"),
]

_PID_FILE = Flag(("--pid-file",), True, help="write the container process's pid here")
_CONSOLE = Flag(("--console-socket",), True, help="unix socket to send the pty master to")
_PRESERVE = Flag(("--preserve-fds",), True, help="pass N extra fds (from 3) to the process")
_FORMAT = Flag(("--format", "-f"), True, help="table or json")

COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("spec", "spec [--bundle DIR]", "write a new config.json", [
        Flag(("--bundle", "-b"), True, help="where to write config.json"),
        Flag(("--rootless",), help="accepted; writes the same spec")], 0, 0),
    Command("create", "create [options] ID", "create a container (its process waits for start)", [
        Flag(("--bundle", "-b"), True, help="bundle directory (default: cwd)"), _PID_FILE,
        _CONSOLE, Flag(("--no-pivot",), help="use MS_MOVE+chroot instead of pivot_root"),
        Flag(("--no-new-keyring",), help="accepted"), _PRESERVE]),
    Command("start", "start ID", "start a created container"),
    Command("run", "run [options] ID", "create and start a container, wait for it", [
        Flag(("--bundle", "-b"), True), _PID_FILE, _CONSOLE, Flag(("--detach", "-d")),
        Flag(("--no-pivot",)), Flag(("--no-new-keyring",)), _PRESERVE,
        Flag(("--keep",), help="do not delete the container after it exits")]),
    Command("state", "state ID", "print the container's state as JSON"),
    Command("kill", "kill [--all] ID [SIGNAL]", "send a signal (default SIGTERM)", [
        Flag(("--all", "-a"), help="signal every process in the container")], 1, 2),
    Command("delete", "delete [--force] ID", "delete a container", [
        Flag(("--force", "-f"), help="kill it first if running")]),
    Command("exec", "exec [options] ID [COMMAND [ARG...]]", "run a process in a container", [
        Flag(("--process", "-p"), True, help="process.json"), Flag(("--tty", "-t")),
        Flag(("--detach", "-d")), _PID_FILE, _CONSOLE, Flag(("--env", "-e"), True, True),
        Flag(("--cwd",), True), Flag(("--user", "-u"), True, help="UID[:GID]"),
        Flag(("--additional-gids", "-g"), True, True), Flag(("--cap", "-c"), True, True),
        Flag(("--no-new-privs",)), Flag(("--apparmor",), True), Flag(("--process-label",), True),
        _PRESERVE, Flag(("--ignore-paused",)), Flag(("--cgroup",), True, True)], 1, None),
    Command("ps", "ps [--format table|json] ID [PS OPTIONS]", "list the container's processes",
            [_FORMAT], 1, None),
    Command("list", "list [--format table|json] [-q]", "list containers",
            [_FORMAT, Flag(("--quiet", "-q"))], 0, 0),
    Command("pause", "pause ID", "freeze every process in the container"),
    Command("resume", "resume ID", "thaw a paused container"),
    Command("events", "events [--stats] [--interval 5s] ID", "container stats and OOM events", [
        Flag(("--stats",), help="print stats once and exit"),
        Flag(("--interval",), True, help="stats interval (default 5s)")]),
    Command("update", "update [options] ID", "update the container's resource limits", [
        Flag(("--resources", "-r"), True, help="resources JSON file, or - for stdin"),
        Flag(("--memory",), True), Flag(("--memory-reservation",), True),
        Flag(("--memory-swap",), True), Flag(("--kernel-memory",), True),
        Flag(("--kernel-memory-tcp",), True), Flag(("--cpu-shares",), True),
        Flag(("--cpu-quota",), True), Flag(("--cpu-period",), True),
        Flag(("--cpu-rt-period",), True), Flag(("--cpu-rt-runtime",), True),
        Flag(("--cpuset-cpus",), True), Flag(("--cpuset-mems",), True),
        Flag(("--pids-limit",), True), Flag(("--blkio-weight",), True),
        Flag(("--l3-cache-schema",), True), Flag(("--mem-bw-schema",), True)]),
    Command("features", "features", "print what this runtime supports, as JSON", [], 0, 0),
]}


class UsageError(InvalidArgument):
    pass


def _find(flags: list[Flag], name: str) -> Flag | None:
    for f in flags:
        if name in f.names or (name.startswith("-") and not name.startswith("--")
                               and f"-{name}" in f.names):
            return f
    return None


def parse_flags(flags: list[Flag], argv: list[str], stop_at_positional: bool
                ) -> tuple[dict[str, Any], list[str]]:
    """Go-style flags: ``--x v``, ``--x=v``, ``-x v``, single-dash long names; booleans take
    ``=true/false``. Parsing stops at the first positional argument (the container id), as
    urfave/cli does, so ``exec ID sh -c ...`` keeps ``-c`` for the command."""
    opts: dict[str, Any] = {}
    for f in flags:
        opts[f.key] = [] if f.multi else (None if f.value else False)
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            if stop_at_positional:
                rest.extend(argv[i + 1:])
                break
            i += 1
            continue
        name, eq, val = arg.partition("=")
        found = _find(flags, name)
        if found is None:
            raise UsageError(f"flag provided but not defined: {name}")
        f = found
        if f.value:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                val = argv[i]
            if f.multi:
                opts[f.key].append(val)
            else:
                opts[f.key] = val
        else:
            if eq and val.lower() not in ("true", "false", "1", "0"):
                raise UsageError(f"invalid boolean value {val!r} for flag {name}")
            opts[f.key] = not eq or val.lower() in ("true", "1")
        i += 1
    return opts, rest


class Runtime:
    """Global options and the helpers every command needs."""

    def __init__(self, gopts: dict[str, Any]) -> None:
        from skiff.runtime.state import DEFAULT_ROOT, Store

        self.root = gopts["root"] or os.environ.get("SKIFF_RUNTIME_ROOT") or DEFAULT_ROOT
        self.store = Store(self.root)
        self.log_path: str | None = gopts["log"]
        self.log_format: str = gopts["log_format"] or "text"
        self.debug: bool = gopts["debug"]
        self.systemd: bool = gopts["systemd_cgroup"]

    def log(self, level: str, msg: str) -> None:
        if not self.log_path:
            return
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.log_format == "json":
            line = json.dumps({"level": level, "msg": msg, "time": ts})
        else:
            line = f'time="{ts}" level={level} msg={json.dumps(msg)}'
        try:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass

    def log_warning(self, msg: str) -> None:
        self.log("warning", msg)

    def warn(self, msg: str) -> None:
        self.log("warning", msg)
        sys.stderr.write(f"skiff-runtime: warning: {msg}\n")


def _print_help(cmd: Command | None = None) -> None:
    if cmd is None:
        lines = ["usage: skiff-runtime [global options] COMMAND [options] [args]", "",
                 "An OCI runtime with runc's command line.", "", "Commands:"]
        lines += [f"  {c.name:<10} {c.summary}" for c in COMMANDS.values()]
        lines += ["", "Global options:"]
        lines += [f"  {', '.join(f.names):<22} {f.help}" for f in GLOBAL_FLAGS]
    else:
        lines = [f"usage: skiff-runtime {cmd.usage}", "", cmd.summary, ""]
        lines += [f"  {', '.join(f.names):<22} {f.help}" for f in cmd.flags]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rt: Runtime | None = None
    try:
        gopts, rest = parse_flags(GLOBAL_FLAGS, argv, stop_at_positional=True)
        if gopts["version"]:
            print(f"skiff-runtime version {VERSION}\nspec: {SPEC_VERSION}")
            return 0
        if not rest or gopts["help"] or rest[0] == "help":
            _print_help(COMMANDS.get(rest[1]) if len(rest) > 1 else None)
            return 0 if (gopts["help"] or rest) else 1
        name, args = rest[0], rest[1:]
        cmd = COMMANDS.get(name)
        if cmd is None:
            raise UsageError(f"unknown command {name!r} (see skiff-runtime --help)")
        if "--help" in args[:1] or "-h" in args[:1]:
            _print_help(cmd)
            return 0
        opts, pos = parse_flags(cmd.flags, args, stop_at_positional=True)
        if len(pos) < cmd.min_args or (cmd.max_args is not None and len(pos) > cmd.max_args):
            raise UsageError(f"{name}: wrong number of arguments; usage: skiff-runtime "
                             f"{cmd.usage}")
        rt = Runtime(gopts)
        if rt.log_path:
            from skiff.runtime import capabilities

            capabilities.on_warning = rt.log_warning
        handler: Callable[[Runtime, dict[str, Any], list[str]], int] = getattr(
            _commands(), f"cmd_{name}")
        return handler(rt, opts, pos)
    except SkiffError as exc:
        if rt is not None:
            rt.log("error", str(exc))
        sys.stderr.write(f"skiff-runtime: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # A system error no layer below translated: still one line, naming what failed.
        where = f" ({exc.filename})" if exc.filename else ""
        msg = f"{exc.strerror or exc}{where}"
        if rt is not None:
            rt.log("error", msg)
        sys.stderr.write(f"skiff-runtime: {msg}\n")
        return 1


def _commands() -> Any:
    from skiff.runtime import commands

    return commands


def entry() -> None:
    """The console-script entry point: main(), then exit without interpreter teardown.

    Tearing down the interpreter (module dicts, GC) costs a few ms of container start and
    stop latency and does nothing for a process about to exit: flush and go.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    entry()
