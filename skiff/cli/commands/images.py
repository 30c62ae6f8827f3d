"""images, pull, push, tag, rmi, save, load, import, history and the prune commands."""

from __future__ import annotations

import sys
import time

from skiff.cli.client import APIError, filters_json, path_arg
from skiff.cli.exits import UsageError
from skiff.cli.formatting import human_size, render, short_id, since
from skiff.cli.parsing import parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from typing import Any

    from skiff.cli.main import Cli

IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                 "Digest": "DIGEST", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                 "Size": "SIZE", "Containers": "CONTAINERS"}
IMAGE_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def image_rows(images: list[dict[str, Any]], trunc: bool, now: float
               ) -> list[dict[str, Any]]:
    """One row per repository:tag (Docker's listing), ``<none>`` for untagged images."""
    from skiff.cli.commands.containers import go_time

    rows = []
    for img in images:
        tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]
        digests = {d.partition("@")[0]: d.partition("@")[2]
                   for d in img.get("RepoDigests") or [] if "@" in d}
        pairs = [(t.rpartition(":")[0], t.rpartition(":")[2]) for t in tags]
        pairs += [(repo, "<none>") for repo in digests if repo not in {r for r, _ in pairs}]
        for repo, tag in pairs or [("<none>", "<none>")]:
            rows.append({
                "Repository": repo, "Tag": tag, "ID": short_id(img["Id"], trunc),
                "Digest": digests.get(repo, "<none>"),
                "CreatedSince": since(img.get("Created", 0), now),
                "CreatedAt": go_time(img.get("Created", 0)),
                "Size": human_size(img.get("Size", 0)),
                "Containers": str(img.get("Containers", "N/A")),
            })
    return rows


def cmd_images(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff images", "List images")
    p.flag("-a", "--all")
    p.flag("-q", "--quiet")
    p.flag("--digests")
    p.flag("--no-trunc")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    p.add_argument("repository", nargs="?")
    args = p.parse(argv)
    filters = list(args.filter) + ([f"reference={args.repository}"] if args.repository else [])
    images = cli.client.get("/images/json", {"all": args.all or None,
                                             "digests": args.digests or None,
                                             "filters": filters_json(filters)})
    if args.quiet:
        seen: list[str] = []
        for img in images:
            ident = short_id(img["Id"], not args.no_trunc)
            if ident not in seen:
                seen.append(ident)
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    fmt = args.format or (IMAGE_TABLE.replace("{{.Tag}}", "{{.Tag}}\t{{.Digest}}")
                          if args.digests else IMAGE_TABLE)
    if fmt == "table":
        fmt = IMAGE_TABLE
    render(image_rows(images, not args.no_trunc, time.time()), fmt, IMAGE_HEADERS)
    return 0


def cmd_pull(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.lifecycle import pull

    p = parser("skiff pull", "Download an image from a registry")
    p.flag("-a", "--all-tags")
    p.flag("-q", "--quiet")
    p.add_argument("--platform", default="")
    p.add_argument("image")
    args = p.parse(argv)
    if args.all_tags:
        from skiff.cli.commands.lifecycle import split_reference

        name, tag = split_reference(args.image)
        if tag != "latest" or args.image.endswith(":latest") or "@" in args.image:
            raise UsageError("tag can't be used with --all-tags/-a")
        pull(cli.client, name, args.quiet, all_tags=True)
        print(qualified(name).rpartition(":")[0])  # docker names the repository alone
        return 0
    pull(cli.client, args.image, args.quiet)
    print(qualified(args.image))  # the docker CLI ends a pull with the full reference
    return 0


def qualified(image: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest``; a registry's names stay."""
    from skiff.cli.commands.lifecycle import split_reference

    name, tag = split_reference(image)
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name if '/' in name else 'library/' + name}"
    return f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"


def _auth_header(server: str) -> dict[str, str]:
    from skiff.cli.commands.auth import registry_auth_header

    return {"X-Registry-Auth": registry_auth_header(server)}


def cmd_push(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.lifecycle import split_reference
    from skiff.core.progress import Renderer, StreamError

    p = parser("skiff push", "Upload an image to a registry")
    p.flag("-a", "--all-tags")
    p.flag("-q", "--quiet")
    p.add_argument("image")
    args = p.parse(argv)
    name, tag = split_reference(args.image)
    server = name.split("/", 1)[0] if "/" in name and ("." in name.split("/")[0] or ":" in
                                                        name.split("/")[0]) else "docker.io"
    renderer = Renderer(sys.stdout, tty=sys.stdout.isatty())
    query = {"tag": None if args.all_tags else tag}
    try:
        for msg in cli.client.stream_json("POST", f"/images/{path_arg(name)}/push", query,
                                          headers=_auth_header(server)):
            if not args.quiet or msg.get("error"):
                renderer.feed(msg)
    except StreamError as exc:
        raise APIError(500, exc.message) from exc
    return 0


def cmd_tag(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.lifecycle import split_reference

    p = parser("skiff tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source")
    p.add_argument("target")
    args = p.parse(argv)
    repo, tag = split_reference(args.target)
    cli.client.call("POST", f"/images/{path_arg(args.source)}/tag",
                    {"repo": repo, "tag": tag}).close()
    return 0


def cmd_rmi(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.containers import each

    p = parser("skiff rmi", "Remove one or more images")
    p.flag("-f", "--force")
    p.flag("--no-prune")
    p.add_argument("images", nargs="+")
    args = p.parse(argv)

    def remove(name: str) -> None:
        for item in cli.client.delete(f"/images/{path_arg(name)}",
                                      {"force": args.force or None,
                                       "noprune": args.no_prune or None}) or []:
            for key in ("Untagged", "Deleted"):
                if key in item:
                    print(f"{key}: {item[key]}")
    return each(cli, args.images, remove, echo=False)


def cmd_save(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.containers import copy_body

    p = parser("skiff save", "Save one or more images to a tar archive")
    p.add_argument("-o", "--output")
    p.add_argument("images", nargs="+")
    args = p.parse(argv)
    resp = cli.client.call("GET", "/images/get", {"names": args.images})
    return copy_body(resp, args.output, "output")


def _print_stream(cli: Cli, stream: Any, quiet: bool = False) -> str:
    """Print a load/import message stream; the last ``status`` (import's image id)."""
    from skiff.core.progress import Renderer, StreamError

    renderer = Renderer(sys.stdout, tty=sys.stdout.isatty())
    last = ""
    try:
        for msg in stream:
            if "stream" in msg:
                if not quiet:
                    sys.stdout.write(msg["stream"])
            elif msg.get("error") or msg.get("errorDetail"):
                renderer.feed(msg)
            elif "status" in msg and "id" not in msg and "progressDetail" not in msg:
                last = str(msg["status"])
            elif not quiet:
                renderer.feed(msg)
    except StreamError as exc:
        raise APIError(500, exc.message) from exc
    return last


def _input(path: str | None) -> Any:
    if path and path != "-":
        try:
            return open(path, "rb")
        except OSError as exc:
            raise UsageError(f"open {path}: {exc.strerror}") from exc
    if sys.stdin.isatty():
        raise UsageError("requested load from stdin, but stdin is empty")
    return sys.stdin.buffer


def cmd_load(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff load", "Load an image from a tar archive or STDIN")
    p.add_argument("-i", "--input")
    p.flag("-q", "--quiet")
    args = p.parse(argv)
    src = _input(args.input)
    try:
        stream = cli.client.stream_json("POST", "/images/load", {"quiet": args.quiet},
                                        data=src,
                                        headers={"Content-Type": "application/x-tar"})
        _print_stream(cli, stream, quiet=False)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    return 0


def cmd_import(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.lifecycle import split_reference

    p = parser("skiff import", "Import the contents from a tarball to create a filesystem "
               "image")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message", default="")
    p.add_argument("--platform", default="")
    p.add_argument("file")
    p.add_argument("reference", nargs="?")
    args = p.parse(argv)
    repo, tag = split_reference(args.reference) if args.reference else ("", "")
    query: dict[str, Any] = {"repo": repo or None, "tag": tag or None,
                             "message": args.message or None, "changes": args.change or None}
    src: Any = None
    if args.file.startswith(("http://", "https://")):
        query["fromSrc"] = args.file
    else:
        query["fromSrc"] = "-"
        src = _input(args.file)
    try:
        stream = cli.client.stream_json("POST", "/images/create", query, data=src,
                                        headers={"Content-Type": "application/x-tar"})
        image_id = _print_stream(cli, stream)
    finally:
        if src is not None and src is not sys.stdin.buffer:
            src.close()
    if image_id:
        print(image_id)
    return 0


def cmd_history(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff history", "Show the history of an image")
    p.flag("-H", "--human", default=True)
    p.flag("--no-trunc")
    p.flag("-q", "--quiet")
    p.add_argument("--format", default="")
    p.add_argument("image")
    args = p.parse(argv)
    from skiff.cli.formatting import ellipsis

    now = time.time()
    rows = []
    for h in cli.client.get(f"/images/{path_arg(args.image)}/history") or []:
        ident = h.get("Id", "<missing>")
        created_by = h.get("CreatedBy", "")
        rows.append({
            "ID": ident if ident == "<missing>" else short_id(ident, not args.no_trunc),
            "CreatedSince": since(h.get("Created", 0), now) if args.human
            else str(h.get("Created", 0)),
            "CreatedBy": created_by if args.no_trunc else ellipsis(created_by, 45),
            "Size": human_size(h.get("Size", 0)) if args.human else str(h.get("Size", 0)),
            "Comment": h.get("Comment", ""),
        })
    if args.quiet:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    fmt = args.format or ("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t"
                          "{{.Comment}}")
    render(rows, fmt, {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedBy": "CREATED BY",
                       "Size": "SIZE", "Comment": "COMMENT"})
    return 0


def _confirm(force: bool, warning: str) -> bool:
    if force:
        return True
    sys.stdout.write(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _prune(cli: Cli, path: str, filters: list[str], title: str, key: str) -> int:
    result = cli.client.post(path, {"filters": filters_json(filters)}) or {}
    items = result.get(key) or []
    if items:
        print(f"{title}:")
        for item in items:
            if isinstance(item, dict):  # docker prints these keys in lower case
                for k, v in item.items():
                    print(f"{k.lower()}: {v}")
            else:
                print(item)
        print()
    reclaimed = int(result.get("SpaceReclaimed") or 0)
    return reclaimed


def cmd_container_prune(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff container prune", "Remove all stopped containers")
    p.flag("-f", "--force")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse(argv)
    if not _confirm(args.force, "This will remove all stopped containers."):
        return 0
    n = _prune(cli, "/containers/prune", args.filter, "Deleted Containers",
               "ContainersDeleted")
    print(f"Total reclaimed space: {human_size(n)}")
    return 0


def cmd_image_prune(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff image prune", "Remove unused images")
    p.flag("-a", "--all")
    p.flag("-f", "--force")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse(argv)
    warning = ("This will remove all images without at least one container associated to "
               "them." if args.all else "This will remove all dangling images.")
    if not _confirm(args.force, warning):
        return 0
    filters = [*args.filter, f"dangling={'false' if args.all else 'true'}"]
    n = _prune(cli, "/images/prune", filters, "Deleted Images", "ImagesDeleted")
    print(f"Total reclaimed space: {human_size(n)}")
    return 0


def cmd_system_prune(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff system prune", "Remove unused data")
    p.flag("-a", "--all")
    p.flag("-f", "--force")
    p.flag("--volumes")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse(argv)
    if not _confirm(args.force, "This will remove:\n  - all stopped containers\n  - all "
                    + ("images without at least one container associated to them"
                       if args.all else "dangling images")):
        return 0
    total = _prune(cli, "/containers/prune", args.filter, "Deleted Containers",
                   "ContainersDeleted")
    total += _prune(cli, "/images/prune",
                    [*args.filter, f"dangling={'false' if args.all else 'true'}"],
                    "Deleted Images", "ImagesDeleted")
    print(f"Total reclaimed space: {human_size(total)}")
    return 0
