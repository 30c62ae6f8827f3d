"""run, create, start, attach, exec: making containers and wiring a terminal to them."""

from __future__ import annotations

import argparse
import os
import sys

from skiff.cli.client import APIError, path_arg
from skiff.cli.exits import ExitStatus, UsageError, start_failure_code
from skiff.cli.parsing import parser
from skiff.cli.runflags import add_create_flags, add_run_flags, create_body

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from typing import Any

    from skiff.cli.client import Client
    from skiff.cli.main import Cli

# skiff.cli.session (threads, signals, terminal) is imported where a terminal is wired to a
# container, after the first request: `run -d` and `create` never need it.


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


def attach_and_start(cli: Cli, cid: str, *, tty: bool, stdin: bool, stdout: bool,
                     stderr: bool, keys: str, sig_proxy: bool, condition: str,
                     start: bool = True) -> int:
    """The docker CLI's order: attach, ask for the exit, start, copy, then the status."""
    from skiff.cli.session import Session

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
    from skiff.cli.session import Session

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
    from skiff.cli.session import Session

    session = Session(cli, args.container, tty=args.tty, stdin=args.interactive,
                      keys=args.detach_keys, sig_proxy=False, exec_id=exec_id)
    session.connect({"Detach": False, "Tty": args.tty})
    if session.pump():
        return 0
    info = client.get(f"/exec/{exec_id}/json")
    code = info.get("ExitCode")
    return int(code) if code is not None else 0
