"""run, create, start, attach, exec: making containers and wiring a terminal to them."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skiff.cli.client import APIError, Client, path_arg
from skiff.cli.exits import ExitStatus, UsageError, start_failure_code
from skiff.cli.parsing import detach_keys, parser
from skiff.cli.runflags import add_create_flags, add_run_flags, create_body
from skiff.cli.streams import pump_input, raw_terminal, read_output, start_thread, terminal_size
from skiff.errors import SkiffError

if TYPE_CHECKING:
    from skiff.cli.main import Cli

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2)


def split_reference(image: str) -> tuple[str, str]:
    """``name[:tag][@digest]`` -> (name, tag or digest) for ``/images/create``."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, digest
    name, colon, tag = image.rpartition(":")
    if colon and "/" not in tag:
        return name, tag
    return image, "latest"


def pull(client: Client, image: str, quiet: bool = False, out: Any = None,
         all_tags: bool = False) -> None:
    """``POST /images/create?fromImage=``, its progress drawn like the docker CLI's; with
    ``all_tags`` the tag is left out, which asks for every tag of the repository."""
    from skiff.core.progress import Renderer, StreamError

    stream = out or sys.stdout
    name, tag = (image, None) if all_tags else split_reference(image)
    renderer = Renderer(stream, tty=stream.isatty())
    try:
        for msg in client.stream_json("POST", "/images/create",
                                      {"fromImage": name, "tag": tag}):
            if quiet:
                if msg.get("error") or msg.get("errorDetail"):
                    renderer.feed(msg)
                continue
            renderer.feed(msg)
    except StreamError as exc:
        raise APIError(500, exc.message) from exc


def create(cli: Cli, body: dict[str, Any], name: str, pull_policy: str = "missing",
           quiet: bool = False) -> str:
    """Create the container, pulling the image first when it is missing (or always)."""
    client = cli.client
    image = body["Image"]
    if pull_policy == "always":
        pull(client, image, quiet, sys.stderr)
    query = {"name": name or None}
    try:
        created = client.post("/containers/create", query, body)
    except APIError as exc:
        if exc.status != 404 or pull_policy == "never" or "image" not in exc.message.lower():
            raise
        sys.stderr.write(f"Unable to find image '{image}' locally\n")
        pull(client, image, quiet, sys.stderr)
        created = client.post("/containers/create", query, body)
    for warning in created.get("Warnings") or []:
        sys.stderr.write(f"WARNING: {warning}\n")
    return str(created["Id"])


class Session:
    """One attached connection: output to our stdout/stderr, our stdin to the container,
    the terminal in raw mode and sized, signals forwarded."""

    def __init__(self, cli: Cli, cid: str, *, tty: bool, stdin: bool, stdout: bool = True,
                 stderr: bool = True, keys: str = "", sig_proxy: bool = True,
                 exec_id: str | None = None) -> None:
        self.cli, self.cid, self.tty, self.stdin = cli, cid, tty, stdin
        self.stdout, self.stderr = stdout, stderr
        self.keys_text = keys  # sent to the daemon only when the user chose keys
        self.keys = detach_keys(keys or DEFAULT_DETACH_KEYS)
        self.sig_proxy = sig_proxy and not tty
        self.exec_id = exec_id
        self.detached = threading.Event()
        self.started = threading.Event()
        self.sock: socket.socket | None = None
        self.early = b""

    def connect(self, exec_body: dict[str, Any] | None = None) -> None:
        client = self.cli.client
        if self.exec_id is not None:
            self.sock, self.early, _ = client.hijack(f"/exec/{self.exec_id}/start",
                                                     body=exec_body)
            return
        self.sock, self.early, _ = client.hijack(
            f"/containers/{path_arg(self.cid)}/attach",
            {"stream": True, "stdin": self.stdin, "stdout": self.stdout,
             "stderr": self.stderr, "detachKeys": self.keys_text or None})

    def resize(self) -> None:
        size = terminal_size()
        if not size or not self.tty:
            return
        h, w = size
        path = (f"/exec/{self.exec_id}/resize" if self.exec_id
                else f"/containers/{path_arg(self.cid)}/resize")
        try:
            self.cli.client.post(path, {"h": h, "w": w})
        except APIError:
            pass  # a container that just exited cannot be resized: nothing to do

    def _detach(self) -> None:
        self.detached.set()
        if self.sock is not None:
            try:
                # the plain socket's shutdown: SSLSocket's would leave the output thread
                # reading raw TLS records (see streams.pump_input)
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def _forward(self, signum: int, _frame: object) -> None:
        def send() -> None:
            # A signal can come before the start was even asked for: the container is only
            # "created" then and a kill would be refused as "not running". (A kill while
            # the start is under way is fine: skiffd waits for the start to finish.)
            self.started.wait(60)
            try:
                self.cli.client.post(f"/containers/{path_arg(self.cid)}/kill",
                                     {"signal": str(signum)})
            except SkiffError:
                pass  # it exited meanwhile: nothing left to signal
        start_thread(send)

    def pump(self, start: Callable[[], None] | None = None) -> bool:
        """Copy streams until the container's output ends; True if the user detached.

        ``start`` (the container's start) runs once signals are forwarded and the terminal
        is raw, so nothing that happens right after the start is missed."""
        assert self.sock is not None
        sock = self.sock
        old_handlers: dict[signal.Signals, Any] = {}
        stdin_fd = sys.stdin.fileno() if self.stdin else -1
        main = threading.current_thread() is threading.main_thread()
        with raw_terminal(stdin_fd) if self.tty and self.stdin else _null():
            try:
                if self.tty and main:
                    old_handlers[signal.SIGWINCH] = signal.signal(
                        signal.SIGWINCH, lambda *_: start_thread(self.resize))
                if self.sig_proxy and main:
                    for sig in _PROXIED:
                        old_handlers[sig] = signal.signal(sig, self._forward)
                out = start_thread(read_output, sock, self.early, self.tty,
                                   sys.stdout.buffer, sys.stderr.buffer)
                if start is not None:
                    start()
                self.started.set()
                if self.tty:
                    self.resize()
                if self.stdin:
                    start_thread(pump_input, sock, stdin_fd, self.keys, self._detach)
                while out.is_alive():
                    out.join(0.2)  # short joins: signal handlers run between them
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                sock.close()
        return self.detached.is_set()


class _null:
    def __enter__(self) -> bool:
        return False

    def __exit__(self, *exc: object) -> None:
        return None


def attach_and_start(cli: Cli, cid: str, *, tty: bool, stdin: bool, stdout: bool,
                     stderr: bool, keys: str, sig_proxy: bool, condition: str,
                     start: bool = True) -> int:
    """The docker CLI's order: attach, ask for the exit, start, copy, then the status."""
    client = cli.client
    session = Session(cli, cid, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr,
                      keys=keys, sig_proxy=sig_proxy)
    session.connect()
    waiter = client.call("POST", f"/containers/{path_arg(cid)}/wait",
                         {"condition": condition})

    def do_start() -> None:
        client.call("POST", f"/containers/{path_arg(cid)}/start").close()

    try:
        detached = session.pump(do_start if start else None)
    except APIError as exc:
        waiter.close()
        sys.stderr.write(f"Error response from daemon: {exc.message}\n")
        return start_failure_code(exc.message)
    if detached:
        waiter.close()
        return 0
    import json

    try:
        result = json.loads(waiter.read() or b"{}")
    finally:
        waiter.close()
    err = (result.get("Error") or {}).get("Message") if isinstance(result, dict) else None
    if err:
        sys.stderr.write(f"Error response from daemon: {err}\n")
    return int(result.get("StatusCode", 125))


def cmd_run(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff run", "Create and run a new container from an image")
    add_run_flags(p)
    args = p.parse(argv)
    body = create_body(args, cli.env, detach=args.detach, auto_remove=args.rm)
    try:
        cid = create(cli, body, args.name, args.pull, args.quiet)
    except APIError as exc:  # the runtime may refuse the command already at create
        sys.stderr.write(f"Error response from daemon: {exc.message}\n")
        return start_failure_code(exc.message)
    if args.detach:
        cli.client.call("POST", f"/containers/{cid}/start").close()
        print(cid)
        return 0
    return attach_and_start(
        cli, cid, tty=args.tty, stdin=body["AttachStdin"], stdout=body["AttachStdout"],
        stderr=body["AttachStderr"], keys=args.detach_keys, sig_proxy=args.sig_proxy,
        condition="removed" if args.rm else "next-exit")


def cmd_create(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff create", "Create a new container")
    add_create_flags(p)
    args = p.parse(argv)
    body = create_body(args, cli.env)
    print(create(cli, body, args.name, args.pull, args.quiet))
    return 0


def cmd_start(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff start", "Start one or more stopped containers")
    p.flag("-a", "--attach")
    p.flag("-i", "--interactive")
    p.add_argument("--detach-keys", default="")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)
    if args.attach or args.interactive:
        if len(args.containers) > 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        info = cli.client.get(f"/containers/{path_arg(args.containers[0])}/json")
        cfg = info["Config"]
        return attach_and_start(
            cli, info["Id"], tty=bool(cfg.get("Tty")),
            stdin=bool(args.interactive and cfg.get("OpenStdin")), stdout=True, stderr=True,
            keys=args.detach_keys, sig_proxy=True, condition="next-exit")
    failed = False
    for name in args.containers:
        try:
            cli.client.call("POST", f"/containers/{path_arg(name)}/start").close()
            print(name)
        except APIError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            failed = True
    if failed:
        sys.stderr.write("Error: failed to start containers: "
                         f"{', '.join(args.containers)}\n")
        raise ExitStatus(1)
    return 0


def cmd_attach(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff attach", "Attach local standard input, output, and error streams")
    p.flag("--no-stdin")
    p.flag("--sig-proxy", default=True)
    p.add_argument("--detach-keys", default="")
    p.add_argument("container")
    args = p.parse(argv)
    info = cli.client.get(f"/containers/{path_arg(args.container)}/json")
    if not info["State"].get("Running"):
        raise UsageError("You cannot attach to a stopped container, start it first")
    cfg = info["Config"]
    session = Session(cli, info["Id"], tty=bool(cfg.get("Tty")),
                      stdin=bool(cfg.get("OpenStdin")) and not args.no_stdin,
                      keys=args.detach_keys, sig_proxy=args.sig_proxy)
    session.connect()
    if session.pump():
        return 0
    state = cli.client.get(f"/containers/{path_arg(info['Id'])}/json")["State"]
    return int(state.get("ExitCode", 0))


def exec_config(args: argparse.Namespace) -> dict[str, Any]:
    from skiff.cli.runflags import _env

    env = _env(argparse.Namespace(env=args.env, env_file=args.env_file), os.environ)
    return {"AttachStdin": args.interactive and not args.detach,
            "AttachStdout": not args.detach, "AttachStderr": not args.detach,
            "Tty": args.tty, "Cmd": args.command, "Env": env, "WorkingDir": args.workdir,
            "User": args.user, "Privileged": args.privileged,
            "DetachKeys": args.detach_keys}


def cmd_exec(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff exec", "Execute a command in a running container")
    p.flag("-d", "--detach")
    p.flag("-i", "--interactive")
    p.flag("-t", "--tty")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-u", "--user", default="")
    p.flag("--privileged")
    p.add_argument("--detach-keys", default="")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse(argv)
    if not args.command:
        raise UsageError("\"skiff exec\" requires at least 2 arguments.\n"
                         "See 'skiff exec --help'.")
    client = cli.client
    created = client.post(f"/containers/{path_arg(args.container)}/exec", None,
                          exec_config(args))
    exec_id = created["Id"]
    if args.detach:
        client.call("POST", f"/exec/{exec_id}/start", body={"Detach": True,
                                                            "Tty": args.tty}).close()
        return 0
    session = Session(cli, args.container, tty=args.tty, stdin=args.interactive,
                      keys=args.detach_keys, sig_proxy=False, exec_id=exec_id)
    session.connect({"Detach": False, "Tty": args.tty})
    if session.pump():
        return 0
    info = client.get(f"/exec/{exec_id}/json")
    code = info.get("ExitCode")
    return int(code) if code is not None else 0
