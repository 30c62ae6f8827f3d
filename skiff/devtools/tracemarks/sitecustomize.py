"""Trace markers around chosen functions, for ``bench/timeline.py`` (never installed).

Put this directory first on PYTHONPATH and every Python process started with it (the daemon,
its zygote, the shims forked from it, the in-process runtime and the container's init until
its exec) writes ``> name`` and ``< name`` into ftrace's ``trace_marker`` around each
function named in ``SKIFF_TRACE_TARGETS`` (``module:Qual.name`` entries separated by
spaces). The kernel timestamps them on one clock with the scheduler's fork/exec/exit events:
one timeline across the client, the daemon, the shim, the runtime and the container.

A function is wrapped when its module is first imported, before anyone can take a reference
to it (``from module import name`` then gets the wrapper too).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

MARKER = "/sys/kernel/tracing/trace_marker"
_fd = -1


def mark(text: str) -> None:
    """Write one marker; quietly nothing where tracefs is out of reach (a container's root)."""
    global _fd
    try:
        try:  # descriptors get closed under us (a runtime child closes all but its stdio)
            ours = _fd >= 0 and os.readlink(f"/proc/self/fd/{_fd}") == MARKER
        except OSError:
            ours = False
        if not ours:
            _fd = os.open(MARKER, os.O_WRONLY | os.O_CLOEXEC)
        os.write(_fd, text.encode())
    except OSError:
        _fd = -1


def _wrapped(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            mark(f"> {name}")
            try:
                return await fn(*args, **kwargs)
            finally:
                mark(f"< {name}")
        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"> {name}")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(f"< {name}")
    return wrapper


class _Hook(importlib.abc.MetaPathFinder):
    def __init__(self, targets: dict[str, list[str]]) -> None:
        self.targets = targets

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        names = self.targets.get(fullname)
        if not names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module: ModuleType) -> None:
            exec_module(module)
            for qualname in names:
                *outer, attr = qualname.split(".")
                holder: Any = module
                for part in outer:
                    holder = getattr(holder, part)
                setattr(holder, attr, _wrapped(getattr(holder, attr), qualname))

        loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
        return spec


def install(text: str) -> None:
    targets: dict[str, list[str]] = {}
    for entry in text.split():
        module, _, qualname = entry.partition(":")
        if module and qualname:
            targets.setdefault(module, []).append(qualname)
    if targets:
        sys.meta_path.insert(0, _Hook(targets))


install(os.environ.get("SKIFF_TRACE_TARGETS", ""))
