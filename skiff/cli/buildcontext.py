"""The build context as the docker CLI sends it: a tar of the context directory, streamed.

- ``.dockerignore`` is applied here, with the daemon's own rules
  (``skiff.services.builder.dockerignore``), so both sides leave out the same files; the
  Dockerfile and ``.dockerignore`` are always sent (the daemon reads them), as docker does.
- A Dockerfile outside the context (or read from stdin) is added under a random name
  ``.dockerfile.<hex>``, and that name is appended to ``.dockerignore`` so ``COPY .`` never
  picks it up: the docker CLI's way, which keeps the daemon's view of the context unchanged.
- Entries are owned by 0:0 (docker chowns the context to root) and keep mode and mtime.

The tar is produced as an iterator of pieces so the request body is streamed straight from
the files: a cached rebuild pays for reading the context once and nothing more.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from types import ModuleType

from skiff.errors import InvalidArgument, os_error

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import IO

BLOCK = 512
PIECE = 1 << 16  # bytes gathered before a piece is handed to the transport
_IGNORE_MODULE = "skiff.services.builder.dockerignore"


def dockerignore_module() -> ModuleType:
    """The daemon's .dockerignore rules, loaded from their file.

    Importing it the ordinary way would run ``skiff/services/builder/__init__`` (the whole
    Dockerfile front end, ~20 ms); the module itself needs only the standard library.
    """
    module = sys.modules.get(_IGNORE_MODULE)
    if module is not None:
        return module
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "services", "builder", "dockerignore.py")
    spec = importlib.util.spec_from_file_location(_IGNORE_MODULE, path)
    if spec is None or spec.loader is None:
        raise InvalidArgument(f"cannot load the .dockerignore rules from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_IGNORE_MODULE] = module  # dataclasses looks the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_IGNORE_MODULE]
        raise
    return module


def random_dockerfile_name() -> str:
    # os.urandom, not secrets: the name only has to be unlikely to clash, and secrets
    # imports hashlib and hmac (~3 ms of a cached build)
    return ".dockerfile." + os.urandom(10).hex()


class Context:
    """What to send: the directory, the Dockerfile's name inside the tar, and any Dockerfile
    added from outside (its tar name and bytes)."""

    def __init__(self, root: str, dockerfile: str, extra: tuple[str, bytes] | None) -> None:
        self.root = root
        self.dockerfile = dockerfile
        self.extra = extra


def plan(root: str, dockerfile: str | None, stdin_dockerfile: bytes | None = None) -> Context:
    """Where the Dockerfile comes from, as ``docker build -f`` decides it.

    ``dockerfile`` is the ``-f`` value (relative to the current directory, as docker takes
    it) or None for ``ROOT/Dockerfile``; ``stdin_dockerfile`` is the text of ``-f -``.
    """
    if not os.path.isdir(root):
        raise InvalidArgument(f'unable to prepare context: path "{root}" not found')
    if stdin_dockerfile is not None:
        return Context(root, "", (random_dockerfile_name(), stdin_dockerfile))
    path = dockerfile or os.path.join(root, "Dockerfile")
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    if not os.path.exists(real_path):
        raise InvalidArgument(f"unable to prepare context: unable to evaluate symlinks in "
                              f'Dockerfile path: lstat {real_path}: no such file or directory')
    rel = os.path.relpath(real_path, real_root)
    if rel == ".." or rel.startswith("../"):
        try:
            with open(real_path, "rb") as handle:
                content = handle.read()
        except OSError as exc:
            raise os_error("read Dockerfile", real_path, exc) from exc
        return Context(root, "", (random_dockerfile_name(), content))
    return Context(root, rel.replace(os.sep, "/"), None)


def entries(ctx: Context) -> Iterator[str]:
    """The context's relative paths to send, .dockerignore applied (walk order)."""
    if not os.path.lexists(os.path.join(ctx.root, ".dockerignore")):
        # Nothing to exclude: skip loading the rules (their dataclasses import is ~5 ms of
        # a cached build) and list everything in the same order their walk would.
        return _walk_all(ctx.root, "")
    rules = dockerignore_module()
    matcher = rules.load_file(ctx.root)
    keep = [".dockerignore"] + ([ctx.dockerfile] if ctx.dockerfile else [])
    excluded = [k for k in keep if matcher.excluded(k)]
    if excluded:
        # docker appends "!<file>" for each: an exception is what makes the walk descend
        # into an excluded directory (``src`` ignored, ``-f src/Dockerfile``).
        extra = [rules.Pattern.compile("!" + k) for k in excluded]
        matcher = rules.Matcher([*matcher.patterns, *extra])
    paths: Iterator[str] = rules.walk(ctx.root, matcher, keep=keep)
    return paths


def _walk_all(root: str, rel: str) -> Iterator[str]:
    directory = os.path.join(root, rel) if rel else root
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise os_error("list build context directory", directory, exc) from exc
    for name in names:
        path = f"{rel}/{name}" if rel else name
        yield path
        if os.path.isdir(os.path.join(root, path)) and not os.path.islink(
                os.path.join(root, path)):
            yield from _walk_all(root, path)


def _header(name: str, st: os.stat_result | None, *, size: int = 0, link: str = "",
            kind: bytes = b"0", mode: int = 0o644, mtime: float = 0.0) -> bytes:
    if st is not None:
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime
    plain = _ustar(name, mode, size, int(mtime), kind, link)
    if plain is not None:
        return plain
    import tarfile  # ~3 ms: only for what plain ustar cannot say (long or non-ASCII names)

    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.size, info.type, info.linkname = mode, int(mtime), size, kind, link
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _ustar(name: str, mode: int, size: int, mtime: int, kind: bytes, link: str
           ) -> bytes | None:
    """A POSIX ustar header owned by 0:0, or None when the entry needs PAX records."""
    if not (name.isascii() and link.isascii() and len(name) <= 100 and len(link) <= 100
            and 0 <= size < 8**11 and 0 <= mtime < 8**11):
        return None
    hdr = bytearray(BLOCK)
    for offset, value in ((0, name.encode()), (100, b"%07o\0" % mode), (108, b"0000000\0"),
                          (116, b"0000000\0"), (124, b"%011o\0" % size),
                          (136, b"%011o\0" % mtime), (148, b" " * 8), (156, kind),
                          (157, link.encode()), (257, b"ustar\x0000")):
        hdr[offset:offset + len(value)] = value
    hdr[148:156] = b"%06o\0 " % sum(hdr)  # the checksum counts its own field as blanks
    return bytes(hdr)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _file(path: str, name: str, st: os.stat_result) -> Iterator[bytes]:
    # The size in the header is the stat's; a file that changes while it is read is cut or
    # padded to it, so the archive stays well-formed (docker's tar writer fails instead).
    size = st.st_size
    yield _header(name, st, size=size)
    left = size
    with open(path, "rb") as handle:
        while left > 0:
            data = handle.read(min(PIECE, left))
            if not data:
                yield b"\0" * left
                break
            left -= len(data)
            yield data
    yield _padding(size)


def _entry(root: str, rel: str) -> Iterator[bytes]:
    path = os.path.join(root, rel)
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        yield _header(rel + "/", st, kind=b"5")
    elif stat.S_ISLNK(st.st_mode):
        yield _header(rel, st, kind=b"2", link=os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        if rel == ".dockerignore":
            return  # sent by tar_pieces itself (it may gain a line)
        yield from _file(path, rel, st)
    # sockets, fifos and devices are not context material: docker skips them too


def tar_pieces(ctx: Context, paths: Iterable[str] | None = None) -> Iterator[bytes]:
    """The context tar, in pieces of about PIECE bytes. OSErrors name the file."""
    buf = bytearray()
    ignore = os.path.join(ctx.root, ".dockerignore")
    for part in _all_parts(ctx, entries(ctx) if paths is None else paths, ignore):
        buf += part
        if len(buf) >= PIECE:
            yield bytes(buf)
            buf.clear()
    buf += b"\0" * (2 * BLOCK)  # end of archive
    yield bytes(buf)


def _all_parts(ctx: Context, paths: Iterable[str], ignore: str) -> Iterator[bytes]:
    current = ""
    try:
        for rel in paths:
            current = rel
            yield from _entry(ctx.root, rel)
        current = ".dockerignore"
        yield from _dockerignore(ctx, ignore)
    except OSError as exc:
        raise os_error("read build context file", os.path.join(ctx.root, current),
                       exc) from exc
    if ctx.extra is not None:
        name, content = ctx.extra
        yield _header(name, None, size=len(content), mode=0o600)
        yield content
        yield _padding(len(content))


def _dockerignore(ctx: Context, path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as handle:
            content = handle.read()
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        if ctx.extra is None:
            return
        content, st = b"", None
    if ctx.extra is not None:
        content += b"\n" + ctx.extra[0].encode() + b"\n"
    yield _header(".dockerignore", st, size=len(content), mode=0o600)
    yield content
    yield _padding(len(content))


_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def is_archive(head: bytes) -> bool:
    """Whether stdin holds a context archive (tar, gzip, bzip2, xz, zstd), not a Dockerfile."""
    if head.startswith(_ARCHIVE_MAGIC):
        return True
    return len(head) >= 263 and head[257:262] == b"ustar"


def dockerfile_tar(content: bytes) -> bytes:
    """``docker build - < Dockerfile``: a context holding just the Dockerfile."""
    return (_header("Dockerfile", None, size=len(content), mode=0o600) + content
            + _padding(len(content)) + b"\0" * (2 * BLOCK))


def stdin_pieces(first: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    """An archive from stdin, passed through as it comes."""
    yield first
    while data := rest.read(PIECE):
        yield data


class Counted:
    """Counts the bytes of a body while the transport pulls it (for "Sending build
    context ... 2.048kB")."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = pieces
        self.total = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            self.total += len(piece)
            yield piece
