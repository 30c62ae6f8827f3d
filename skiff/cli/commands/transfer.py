"""cp and commit: files in and out of containers, containers into images."""

from __future__ import annotations

import io
import os
import sys
import tarfile

from skiff.cli.client import path_arg
from skiff.cli.exits import ExitStatus, UsageError
from skiff.cli.parsing import parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from skiff.cli.main import Cli


def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a local path (absolute, or ./x) -> (None, path)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    container, _, path = arg.partition(":")
    return container, path


def cmd_cp(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff cp", "Copy files/folders between a container and the local filesystem")
    p.flag("-a", "--archive")
    p.flag("-L", "--follow-link")
    p.flag("-q", "--quiet")
    p.add_argument("src")
    p.add_argument("dest")
    args = p.parse(argv)
    src_c, src = split_cp_arg(args.src)
    dst_c, dst = split_cp_arg(args.dest)
    if src_c is not None and dst_c is not None:  # the docker CLI's words and status
        sys.stderr.write("copying between containers is not supported\n")
        raise ExitStatus(1)
    if src_c is None and dst_c is None:
        sys.stderr.write("must specify at least one container source\n")
        raise ExitStatus(1)
    if src_c is not None:
        resp = cli.client.call("GET", f"/containers/{path_arg(src_c)}/archive",
                               {"path": src})
        data = resp.read()
        resp.close()
        if dst == "-":
            sys.stdout.buffer.write(data)
            return 0
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            if os.path.isdir(dst):
                tar.extractall(dst, filter="tar")
            else:
                # Copy to a new name: the archive's top entry becomes dst.
                top = members[0].name.split("/", 1)[0] if members else ""
                for m in members:
                    m.name = dst + m.name[len(top):]
                tar.extractall("/" if os.path.isabs(dst) else ".", members, filter="tar")
        return 0
    buf = io.BytesIO()
    if src == "-":
        buf.write(sys.stdin.buffer.read())
    else:
        if not os.path.exists(src):
            raise UsageError(f"could not find the file {src} in the local filesystem")
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=os.path.basename(os.path.normpath(src)))
    assert dst_c is not None
    cli.client.call("PUT", f"/containers/{path_arg(dst_c)}/archive", {"path": dst},
                    data=buf.getvalue(), headers={"Content-Type": "application/x-tar"}).close()
    return 0


def cmd_commit(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff commit", "Create a new image from a container's changes")
    p.add_argument("-a", "--author", default="")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message", default="")
    p.flag("-p", "--pause", default=True)
    p.add_argument("container")
    p.add_argument("repository", nargs="?")
    args = p.parse(argv)
    repo, tag = "", ""
    if args.repository:
        from skiff.cli.commands.lifecycle import split_reference

        repo, tag = split_reference(args.repository)
    query = {"container": args.container, "repo": repo or None, "tag": tag or None,
             "comment": args.message or None, "author": args.author or None,
             "pause": args.pause, "changes": args.change or None}
    result = cli.client.post("/commit", query)
    print(result.get("Id", ""))
    return 0
