"""``skiff build``: the context tar streamed to ``POST /build``, the answer printed the way
``DOCKER_BUILDKIT=0 docker build`` prints it (Step N/M, ---> lines, Successfully built)."""

from __future__ import annotations

import json
import sys

from skiff.cli.client import APIError
from skiff.cli.exits import ExitStatus, UsageError
from skiff.cli.parsing import Parser, key_values, parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Mapping
    from typing import Any

    from skiff.cli.main import Cli

BUILD_FAILURE = 1  # docker build exits 1 on any failure, daemon errors included


def build_parser() -> Parser:
    p = parser("skiff build", "Build an image from a Dockerfile")
    a = p.add_argument
    many: dict[str, Any] = {"action": "append", "default": []}
    a("-t", "--tag", **many)
    a("-f", "--file", default="")
    a("--build-arg", **many)
    a("--target", default="")
    p.flag("-q", "--quiet", help="print only the image ID")
    p.flag("--no-cache")
    p.flag("--pull")
    a("--label", **many)
    a("--network", default="")
    a("--platform", default="")
    a("--iidfile", default="")
    p.flag("--rm", default=True)
    p.flag("--force-rm")
    a("path")
    return p


def build_args(items: Iterable[str], environ: Mapping[str, str]) -> dict[str, str | None]:
    """``--build-arg K=V``; a bare ``K`` takes the caller's ``$K`` (null when unset), as
    docker does, so the Dockerfile's default applies."""
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid argument \"{item}\" for \"--build-arg\" flag")
        out[key] = value if sep else environ.get(key)
    return out


def build_query(args: argparse.Namespace, dockerfile: str,
                environ: Mapping[str, str]) -> dict[str, Any]:
    """The query of ``POST /build`` (JSON maps for build args and labels)."""
    query: dict[str, Any] = {"t": args.tag or None, "dockerfile": dockerfile or None,
                             "q": args.quiet or None, "nocache": args.no_cache or None,
                             "pull": args.pull or None, "rm": args.rm,
                             "forcerm": args.force_rm or None, "target": args.target or None,
                             "networkmode": args.network or None,
                             "platform": args.platform or None}
    if args.build_arg:
        query["buildargs"] = json.dumps(build_args(args.build_arg, environ))
    if args.label:
        query["labels"] = json.dumps(key_values(args.label, "label"))
    return query


def cmd_build(cli: Cli, argv: list[str]) -> int:
    args = build_parser().parse(argv)
    try:
        return _build(cli, args)
    except (APIError, UsageError) as exc:
        raise _failure(exc) from exc
    except ExitStatus:
        raise
    except Exception as exc:
        from skiff.errors import SkiffError

        if isinstance(exc, SkiffError):  # an unreadable context file, a missing Dockerfile
            raise _failure(exc) from exc
        raise


def _failure(exc: Any) -> ExitStatus:
    prefix = "Error response from daemon: " if isinstance(exc, APIError) and exc.status else ""
    sys.stderr.write(f"{prefix}{exc.message}\n")
    return ExitStatus(BUILD_FAILURE)


def _body(args: argparse.Namespace) -> tuple[Iterable[bytes], str]:
    """The request body (pieces) and the Dockerfile's name within it."""
    from skiff.cli import buildcontext as bc

    if args.path == "-":
        if args.file == "-":
            raise UsageError("invalid argument: can't use stdin for both build context and "
                             "dockerfile")
        stdin = sys.stdin.buffer
        head = stdin.read(512)
        if bc.is_archive(head):
            return bc.stdin_pieces(head, stdin), args.file
        return [bc.dockerfile_tar(head + stdin.read())], "Dockerfile"
    from_stdin = sys.stdin.buffer.read() if args.file == "-" else None
    ctx = bc.plan(args.path, args.file or None, from_stdin)
    return bc.tar_pieces(ctx), ctx.dockerfile or (ctx.extra[0] if ctx.extra else "")


def _build(cli: Cli, args: argparse.Namespace) -> int:
    from skiff.cli.buildcontext import Counted

    pieces, dockerfile = _body(args)
    query = build_query(args, dockerfile, cli.env)
    body = Counted(pieces)
    resp = cli.client.call("POST", "/build", query, data=body,
                           headers={"Content-Type": "application/x-tar"})
    out = sys.stdout
    if not args.quiet:
        from skiff.cli.formatting import human_size

        out.write(f"Sending build context to Docker daemon  {human_size(body.total)}\n")
    image_id = ""
    try:
        for line in resp.lines():
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("error") or msg.get("errorDetail"):
                detail = msg.get("errorDetail") or {}
                out.flush()
                sys.stderr.write(f"{detail.get('message') or msg.get('error')}\n")
                return int(detail.get("code") or BUILD_FAILURE)
            aux = msg.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            if not args.quiet and isinstance(msg.get("stream"), str):
                out.write(msg["stream"])
                out.flush()
    finally:
        resp.close()
    if args.quiet:
        out.write(image_id + "\n")
    if args.iidfile:
        _write_iidfile(args.iidfile, image_id)
    return 0


def _write_iidfile(path: str, image_id: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(image_id)
    except OSError as exc:
        raise UsageError(f"failed to write image ID to file {path}: {exc.strerror}") from exc


__all__ = ["build_args", "build_parser", "build_query", "cmd_build"]
