"""Path resolution that cannot leave a directory: openat2(RESOLVE_BENEATH), else a no-follow walk.

A string check on entry names is not enough: an earlier entry (or an earlier layer) can plant a
symlink that later names traverse. So every parent directory is opened by the kernel with
``RESOLVE_BENEATH``, which fails with EXDEV the moment resolution would leave the root (an
absolute symlink, a ``..`` above it) while still following symlinks that stay inside (Debian's
``bin -> usr/bin``). Where openat2 is missing (Linux < 5.6) the fallback walks one component at
a time with O_NOFOLLOW, refusing every symlinked parent: stricter, never looser. The final
component of an entry is never followed: callers create it with O_EXCL/O_NOFOLLOW or by name
relative to the parent's descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from skiff.errors import InvalidArgument, os_error
from skiff.linux.openat2 import AT_FDCWD, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, openat2

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
_have_openat2: bool | None = None


def _openat2(dirfd: int, path: bytes, flags: int) -> int:
    """openat2 beneath ``dirfd``; raises OSError (ENOSYS where the kernel lacks it)."""
    return openat2(dirfd, path, flags, _RESOLVE)


def openat2_available() -> bool:
    global _have_openat2
    if _have_openat2 is None:
        try:
            os.close(_openat2(AT_FDCWD, b".", _DIR_FLAGS))
            _have_openat2 = True
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp filters it
                raise
            _have_openat2 = False
    return _have_openat2


def _is_symlink(dirfd: int, name: bytes) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def display(parts: list[bytes] | tuple[bytes, ...]) -> str:
    return b"/".join(parts).decode("utf-8", "replace")


class ConfinedRoot:
    """A directory and a way to open directories beneath it, never escaping it."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            raise os_error("open layer destination", path, exc) from exc
        self._use_openat2 = openat2_available()
        self.on_mkdir: Callable[[tuple[bytes, ...], int], None] | None = None
        """Called with (path, O_PATH descriptor) of each directory ``open_dir`` creates."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _open_existing(self, parts: tuple[bytes, ...]) -> int:
        if not parts:
            return os.dup(self.fd)
        if self._use_openat2:
            return _openat2(self.fd, b"/".join(parts), _DIR_FLAGS)
        fd = os.dup(self.fd)
        try:
            for part in parts:
                try:
                    nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOTDIR and _is_symlink(fd, part):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from exc
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_dir(self, parts: tuple[bytes, ...], what: str, create: bool = False) -> int:
        """An O_PATH descriptor of directory ``parts`` under the root (the caller closes it).

        ``create`` makes missing directories (mode 0755, as tar does for implied parents).
        ``what`` names the entry in errors. InvalidArgument if resolution would escape.
        """
        try:
            return self._open_existing(parts)
        except OSError as exc:
            if exc.errno == errno.ENOENT and create:
                return self._create_dirs(parts, what)
            raise self._error(exc, parts, what) from exc

    def open_dir_if_exists(self, parts: tuple[bytes, ...], what: str) -> int | None:
        """Like ``open_dir`` but None when some component does not exist."""
        try:
            return self._open_existing(parts)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise self._error(exc, parts, what) from exc

    def _create_dirs(self, parts: tuple[bytes, ...], what: str) -> int:
        for i in range(1, len(parts) + 1):
            prefix = parts[:i]
            try:
                fd = self._open_existing(prefix)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise self._error(exc, prefix, what) from exc
                parent = self.open_dir(prefix[:-1], what)
                try:
                    os.mkdir(prefix[-1], 0o755, dir_fd=parent)
                except FileExistsError as exc2:  # ENOENT above, yet it exists: a dangling link
                    raise InvalidArgument(f"layer entry {what!r}: {display(prefix)!r} is a symlink "
                                          "to a directory that does not exist") from exc2
                except OSError as exc2:
                    raise os_error("create directory", f"{display(prefix)} for layer entry {what!r}",
                                   exc2) from exc2
                finally:
                    os.close(parent)
                fd = self.open_dir(prefix, what)
                if self.on_mkdir is not None:
                    try:
                        self.on_mkdir(prefix, fd)
                    except BaseException:
                        os.close(fd)
                        raise
            if i == len(parts):
                return fd
            os.close(fd)
        return os.dup(self.fd)

    @staticmethod
    def _error(exc: OSError, parts: tuple[bytes, ...], what: str) -> Exception:
        where = display(parts)
        if exc.errno in (errno.EXDEV, errno.ELOOP):
            return InvalidArgument(
                f"layer entry {what!r}: refused: {where!r} resolves outside the destination "
                f"(through a symlink, or a symlink loop)")
        if exc.errno == errno.ENOTDIR:
            return InvalidArgument(f"layer entry {what!r}: {where!r} is not a directory")
        return os_error("resolve", f"{where} for layer entry {what!r}", exc)
