"""The build context on disk: confined lookups, .dockerignore applied, COPY sources and digests.

The daemon extracts the client's tar into a private directory (confined, by the layer
extractor); this module works on that directory. Whatever the tar held, nothing here reads
outside it: every source path a Dockerfile names is resolved by the kernel with
``openat2(RESOLVE_IN_ROOT)``, so ``..`` and absolute symlinks land inside the context, as in
Docker's ``FollowSymlinkInScope``. The same resolver serves ``COPY --from``, whose root is a
mounted stage or image.

Digests of copied content feed the build cache: they cover each entry's path relative to the
source, its type, mode, size, link target and bytes, but not its owner or times (COPY resets
the owner; Docker's cache ignores times too), so touching a file does not invalidate the cache
but changing one byte of it does.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import posixpath
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from skiff.errors import InvalidArgument, NotFound, os_error
from skiff.linux.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

from .dockerignore import Matcher

__all__ = ["BuildContext", "Source", "prune_excluded", "resolve_in_root", "sources_digest"]

_PATH = os.O_PATH | os.O_CLOEXEC
_GLOB_CHARS = frozenset("*?[")
_DOCKERIGNORE = ".dockerignore"


def resolve_in_root(root: str, path: str) -> str:
    """The host path of ``path`` seen with ``root`` as ``/`` (symlinks followed, never out).

    NotFound when it does not exist; the returned path is the kernel's answer, so a symlink
    planted in the tree cannot point the caller anywhere else.
    """
    try:
        rootfd = os.open(root, _PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise os_error("open build root", root, exc) from exc
    try:
        try:
            fd = openat2(rootfd, path.lstrip("/") or ".", _PATH,
                         RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NotFound(f"stat {path.lstrip('/')}: file does not exist") from exc
            raise os_error("resolve", path, exc) from exc
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        root_real = os.readlink(f"/proc/self/fd/{rootfd}")
    finally:
        os.close(rootfd)
    if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
        raise InvalidArgument(f"forbidden path outside the build root: {path}")
    return real


@dataclass(frozen=True)
class Source:
    """One COPY/ADD source after lookup: a host path and whether it is a directory."""

    path: str  # host path (inside the context or the stage root)
    name: str  # the base name it is copied under when the destination is a directory
    is_dir: bool


def _has_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def _clean_source(source: str) -> str:
    """A context-relative path; Docker refuses paths that climb out of the context."""
    cleaned = posixpath.normpath("/" + source.replace("\\", "/") if source else "/")
    rel = posixpath.normpath(source) if source else "."
    if rel == ".." or rel.startswith("../"):
        raise InvalidArgument(f"forbidden path outside the build context: {source} ()")
    return cleaned


class BuildContext:
    """The extracted context directory of one build."""

    def __init__(self, root: str) -> None:
        self.root = root

    def read_text(self, name: str, what: str) -> str:
        """A small text file of the context (the Dockerfile, .dockerignore)."""
        try:
            real = resolve_in_root(self.root, _clean_source(name))
        except NotFound as exc:
            raise NotFound(f"Cannot locate specified {what}: {name}") from exc
        try:
            with open(real, "rb") as f:
                data = f.read(16 << 20)
        except IsADirectoryError as exc:
            raise InvalidArgument(f"Cannot locate specified {what}: {name} is a directory") \
                from exc
        except OSError as exc:
            raise os_error(f"read {what}", name, exc) from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"read {what} {name}: not UTF-8 text") from exc

    def sources(self, patterns: Iterable[str]) -> list[Source]:
        """The entries COPY/ADD sources name (globs expanded, in walk order)."""
        return find_sources(self.root, patterns, "build context")


def find_sources(root: str, patterns: Iterable[str], where: str) -> list[Source]:
    out: list[Source] = []
    for pattern in patterns:
        cleaned = _clean_source(pattern)
        if _has_glob(cleaned):
            matched = list(_glob(root, cleaned.strip("/")))
            if not matched:
                raise NotFound(f"no source files were specified (no match for {pattern!r} "
                               f"in the {where})")
            out.extend(_source(root, rel) for rel in matched)
            continue
        try:
            out.append(_source(root, cleaned))
        except NotFound as exc:
            if where == "build context":
                raise NotFound(f"file not found in build context or excluded by "
                               f".dockerignore: {exc.message}") from exc
            raise NotFound(f"{where}: {exc.message}") from exc
    return out


def _source(root: str, rel: str) -> Source:
    real = resolve_in_root(root, rel)
    try:
        is_dir = stat.S_ISDIR(os.stat(real).st_mode)
    except OSError as exc:
        raise os_error("stat", rel, exc) from exc
    name = posixpath.basename(rel.rstrip("/")) or posixpath.basename(real)
    return Source(real, name, is_dir)


def _glob(root: str, pattern: str) -> Iterator[str]:
    """Context paths matching ``pattern`` component by component (``*`` never crosses ``/``,
    as Go's filepath.Match); a directory that matches is not descended into."""
    parts = pattern.split("/")

    def walk(rel: str, depth: int) -> Iterator[str]:
        here = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(here))
        except (NotADirectoryError, FileNotFoundError):
            return
        except OSError as exc:
            raise os_error("list build context directory", here, exc) from exc
        for name in names:
            if not fnmatch.fnmatchcase(name, parts[depth]):
                continue
            child = f"{rel}/{name}" if rel else name
            if depth == len(parts) - 1:
                yield child
            elif os.path.isdir(os.path.join(root, child)) and not os.path.islink(
                    os.path.join(root, child)):
                yield from walk(child, depth + 1)

    yield from walk("", 0)


def _walk_entries(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of ``path`` and everything under it, sorted, links not followed."""
    st = os.lstat(path)
    yield "", st
    if not stat.S_ISDIR(st.st_mode):
        return
    for name in sorted(os.listdir(path)):
        for rel, child in _walk_entries(os.path.join(path, name)):
            yield (f"{name}/{rel}" if rel else name), child


def sources_digest(sources: Iterable[Source]) -> str:
    """A digest of what COPY/ADD would copy: names, types, modes, sizes, links and bytes."""
    h = hashlib.sha256()
    try:
        for src in sources:
            h.update(f"source {src.name} dir={src.is_dir}\n".encode())
            for rel, st in _walk_entries(src.path):
                full = os.path.join(src.path, rel) if rel else src.path
                h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                         .encode())
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
                elif stat.S_ISREG(st.st_mode):
                    h.update(f"{st.st_size}\0".encode())
                    with open(full, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    h.update(f"{st.st_rdev}".encode())
                h.update(b"\n")
    except OSError as exc:
        raise os_error("read build source", exc.filename or "", exc) from exc
    return "sha256:" + h.hexdigest()


def prune_excluded(root: str, matcher: Matcher, keep: Iterable[str] = ()) -> None:
    """Delete what .dockerignore excludes from the extracted context (Docker's daemon does the
    same, so a client that sent everything still builds with the same files)."""
    if not matcher.patterns:
        return
    kept = {posixpath.normpath(k).lstrip("/") for k in keep}

    def visit(rel: str) -> None:
        here = os.path.join(root, rel) if rel else root
        for name in sorted(os.listdir(here)):
            path = f"{rel}/{name}" if rel else name
            full = os.path.join(root, path)
            is_dir = stat.S_ISDIR(os.lstat(full).st_mode)
            if path not in kept and matcher.excluded(path, is_dir):
                if is_dir and matcher.has_exclusions and matcher.must_walk(path):
                    visit(path)  # something below is re-included
                    continue
                if is_dir:
                    shutil.rmtree(full)
                else:
                    os.unlink(full)
            elif is_dir:
                visit(path)

    try:
        visit("")
    except OSError as exc:
        raise os_error("apply .dockerignore to the build context", root, exc) from exc


def load_ignore(context: BuildContext) -> str:
    """The text of the context's .dockerignore ("" when there is none)."""
    try:
        return context.read_text(_DOCKERIGNORE, ".dockerignore")
    except NotFound:
        return ""
