"""The `skiff` command: global flags, the daemon endpoint, and dispatch to command modules.

Command modules are imported only when their command runs, so ``skiff --version`` and
``skiff ps`` load little beyond the standard library's socket and json.
"""

from __future__ import annotations

import os
import sys

from skiff import __version__
from skiff.errors import SkiffError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from skiff.cli.client import Client

_VOLUME_SUBCOMMANDS = ["create", "ls", "inspect", "rm", "prune", "export", "import", "rename"]
_NETWORK_SUBCOMMANDS = ["create", "ls", "inspect", "rm", "prune", "connect", "disconnect"]

# command -> module under skiff.cli.commands (the function is cmd_<command>)
COMMANDS: dict[str, str] = {
    **dict.fromkeys(["run", "create", "start", "attach", "exec"], "lifecycle"),
    **dict.fromkeys(["ps", "logs", "stop", "kill", "rm", "wait", "restart", "rename", "pause",
                     "unpause", "top", "stats", "diff", "export", "update", "port"],
                    "containers"),
    **dict.fromkeys(["cp", "commit"], "transfer"),
    "inspect": "inspect",
    **dict.fromkeys(["images", "pull", "push", "tag", "rmi", "save", "load", "import",
                     "history", "image_prune", "container_prune", "system_prune"], "images"),
    **dict.fromkeys(["login", "logout"], "auth"),
    **dict.fromkeys(["events", "info", "version", "system_df"], "system"),
    "build": "build",
    **{f"volume_{c}": "volumes" for c in _VOLUME_SUBCOMMANDS},
    **{f"network_{c}": "networks" for c in _NETWORK_SUBCOMMANDS},
}

# `skiff container ls` and friends: management command -> {subcommand: command}
MANAGEMENT: dict[str, dict[str, str]] = {
    "container": {**{c: c for c in COMMANDS if COMMANDS[c] in ("lifecycle", "containers",
                                                                  "transfer")},
                  "ls": "ps", "list": "ps", "rm": "rm", "remove": "rm", "inspect": "inspect",
                  "prune": "container_prune"},
    "image": {"ls": "images", "list": "images", "pull": "pull", "push": "push", "tag": "tag",
              "rm": "rmi", "remove": "rmi", "save": "save", "load": "load", "import": "import",
              "history": "history", "inspect": "inspect", "prune": "image_prune",
              "build": "build"},
    "volume": {**{c: f"volume_{c}" for c in _VOLUME_SUBCOMMANDS}, "list": "volume_ls",
               "remove": "volume_rm"},
    "network": {**{c: f"network_{c}" for c in _NETWORK_SUBCOMMANDS}, "list": "network_ls",
                "remove": "network_rm"},
    "system": {"df": "system_df", "prune": "system_prune", "info": "info", "events": "events"},
}

USAGE = """Usage:  skiff [OPTIONS] COMMAND

A container engine (the client of skiffd)

Options:
  -H, --host string      daemon socket (unix:///path or tcp://host:port); else $SKIFF_HOST,
                         $DOCKER_HOST, unix:///run/skiff/skiff.sock
      --tls, --tlsverify, --tlscacert FILE, --tlscert FILE, --tlskey FILE
      --config DIR       client config directory (registry credentials)
  -v, --version          print the version

Commands:
  run create start attach exec ps logs stop kill rm wait restart rename pause unpause top
  stats port cp diff export commit update inspect images pull push tag rmi save load import
  history build login logout events info version
Management commands:
  container, image, system (e.g. skiff container ls, skiff image prune, skiff system df)
  volume create|ls|inspect|rm|prune|export|import|rename
  network create|ls|inspect|rm|prune|connect|disconnect
  registry serve|gc      run the OCI distribution registry
"""

_VALUE_FLAGS = {"-H", "--host", "--tlscacert", "--tlscert", "--tlskey", "--config",
                "-l", "--log-level", "-c", "--context"}


class Globals:
    """The global flags before the command name."""

    def __init__(self) -> None:
        self.host: str | None = None
        self.tls = False
        self.tlsverify = False
        self.tlscacert: str | None = None
        self.tlscert: str | None = None
        self.tlskey: str | None = None
        self.config: str | None = None


def parse_globals(argv: list[str]) -> tuple[Globals, list[str]]:
    g = Globals()
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-v", "--version",
                                                                         "-h", "--help"):
        name, eq, value = argv[i].partition("=")
        if name in _VALUE_FLAGS and not eq:
            if i + 1 >= len(argv):
                raise UsageErrorLazy(f"flag needs an argument: {name}")
            value = argv[i + 1]
            i += 1
        i += 1
        if name in ("-H", "--host"):
            g.host = value
        elif name == "--tls":
            g.tls = True
        elif name == "--tlsverify":
            g.tls = g.tlsverify = True
        elif name == "--tlscacert":
            g.tlscacert = value
        elif name == "--tlscert":
            g.tlscert = value
        elif name == "--tlskey":
            g.tlskey = value
        elif name == "--config":
            g.config = value
        elif name in ("-D", "--debug", "-l", "--log-level", "-c", "--context"):
            pass  # accepted for docker compatibility; nothing to tune
        else:
            raise UsageErrorLazy(f"unknown flag: {name}\nSee 'skiff --help'.")
    return g, argv[i:]


class UsageErrorLazy(SkiffError):
    """A usage error found before any command module is loaded."""


class Cli:
    """What every command gets: the daemon client (made on first use) and the environment."""

    def __init__(self, g: Globals, env: Mapping[str, str]) -> None:
        self.globals = g
        self.env = env
        self._client: Client | None = None
        if g.config:
            os.environ["DOCKER_CONFIG"] = g.config

    @property
    def client(self) -> Client:
        if self._client is None:
            from skiff.cli.client import Client
            from skiff.cli.hosts import select_host
            from skiff.cli.transport import TLSOptions

            g = self.globals
            tls_wanted = g.tls or bool(g.tlscert or g.tlscacert)
            endpoint = select_host(g.host, self.env, tls=tls_wanted)
            tls = TLSOptions(verify=g.tlsverify or bool(self.env.get("DOCKER_TLS_VERIFY")),
                             ca=g.tlscacert, cert=g.tlscert, key=g.tlskey)
            self._client = Client(endpoint, tls)
        return self._client


def resolve(args: list[str]) -> tuple[str, list[str]]:
    """(command, its arguments) with management aliases resolved."""
    name, rest = args[0], args[1:]
    if name in MANAGEMENT:
        if not rest or rest[0] in ("-h", "--help"):
            subs = ", ".join(sorted(MANAGEMENT[name]))
            raise UsageErrorLazy(f"Usage: skiff {name} COMMAND\nCommands: {subs}")
        sub = MANAGEMENT[name].get(rest[0])
        if sub is None:
            raise UsageErrorLazy(f"skiff: '{name} {rest[0]}' is not a skiff command.\n"
                                 f"See 'skiff {name} --help'")
        return sub, rest[1:]
    if name not in COMMANDS or "_" in name:
        raise UsageErrorLazy(f"skiff: '{name}' is not a skiff command.\nSee 'skiff --help'")
    return name, rest


def command(name: str) -> Callable[[Cli, list[str]], int]:
    # __import__ and sys.modules rather than importlib.import_module: the importlib package
    # (and the warnings module it loads) is not otherwise needed by a CLI run.
    qualified = f"skiff.cli.commands.{COMMANDS[name]}"
    __import__(qualified)
    module = sys.modules[qualified]
    fn: Callable[[Cli, list[str]], int] = getattr(module, f"cmd_{name}")
    return fn


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        g, args = parse_globals(args)
        if not args or args[0] in ("-h", "--help", "help"):
            sys.stdout.write(USAGE)
            return 0
        if args[0] in ("-v", "--version"):
            print(f"skiff version {__version__}")
            return 0
        if args[0] == "registry":
            from skiff.cli import registry

            return registry.main(args[1:])
        name, rest = resolve(args)
        return command(name)(Cli(g, os.environ), rest)
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        return report(exc)


def report(exc: BaseException) -> int:
    from skiff.cli.client import APIError
    from skiff.cli.exits import CLI_FAILURE, ExitStatus

    if isinstance(exc, ExitStatus):
        return exc.code
    if isinstance(exc, APIError) and exc.status:
        sys.stderr.write(f"Error response from daemon: {exc.message}\n")
    elif isinstance(exc, SkiffError):
        sys.stderr.write(f"{exc.message}\n")
    else:
        raise exc
    return CLI_FAILURE


def entry() -> None:
    """The console script: main(), then exit without tearing the interpreter down.

    Finalisation (module dicts, the GC, thread bookkeeping) costs ~3 ms of every command and
    does nothing for a process about to exit; the CLI's threads are daemons and its terminal
    is restored before main returns. Flush what is written and go.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass  # a reader that went away (skiff ps | head): as main treats it
    except (OSError, ValueError):
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    entry()
