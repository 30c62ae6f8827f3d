"""Seccomp for the container process: validate ``linux.seccomp``, compile it, load it.

skiff compiles the OCI seccomp object to classic BPF itself instead of going through
libseccomp: the syscall table then comes from this repository (libseccomp 2.5 predates the
calls Docker's current profile allows, such as ``fchmodat2`` and ``mseal``, and would deny them),
and the expensive part (:func:`compile`) can run before the container init forks, leaving
:func:`load` a single seccomp(2) call.

Semantics follow runc + libseccomp, which is what OCI configs in the wild are written for
(tests/unit/test_seccomp_libseccomp.py compares decisions with libseccomp's own programs):

- the native architecture is always in the filter; listed ones add to it. Only the x86 family
  (X86_64, X86, X32) can occur on an x86_64 kernel, so other listed architectures add nothing;
- a syscall from an architecture not in the filter kills the process (libseccomp's "bad arch");
- names an architecture lacks are ignored;
- a rule whose action is the default action is dropped (runc does; libseccomp refuses it);
- a rule without argument conditions decides its syscall outright, whatever rules with
  conditions say (libseccomp's rule); of several such rules the first counts;
- otherwise the rules with conditions are tried in the order listed, the first that matches
  decides, and if none does the default action applies. (libseccomp orders conflicting
  conditional rules its own way and refuses exact duplicates with different actions; real
  profiles never depend on either);
- conditions in one rule are ANDed, unless one argument index appears twice: then, as runc
  does, each condition becomes a rule of its own (ORed);
- on i386 a rule without conditions for a socket or SysV IPC call also matches that call
  made through socketcall(2)/ipc(2) (libseccomp does it for rules with conditions too,
  dropping the conditions; skiff does not, as that would allow more than the rule says);
- a masked comparison that holds for every value (mask 0, or a zero low word on 32-bit ABIs)
  is dropped, so its rule counts as unconditional, as in libseccomp;
- ERRNO and TRACE without ``errnoRet`` return EPERM;
- arguments compare as 64-bit unsigned values on X86_64 and as their low 32 bits on X86 and
  X32 (libseccomp's rule for 32-bit ABIs);
- a syscall numbered above every syscall the config names gets ENOSYS instead of a denying
  default action (runc does this too), so that a libc probing a call newer than the profile
  falls back instead of failing with EPERM.

SCMP_ACT_NOTIFY and ``listenerPath`` (a user-space supervisor) are not supported: compile()
raises Unavailable.

Layout: seccomp_spec (vocabulary, validation), seccomp_compile (OCI object -> BPF),
seccomp_bpf (assembler and an interpreter for tests), seccomp_tables (syscall numbers),
seccomp_profile (Docker profiles -> OCI object); this module is the API and the loader.
"""

from __future__ import annotations

import ctypes
import errno
import os

from skiff.errors import PermissionDenied, os_error
from skiff.runtime import syscalls
from skiff.runtime.seccomp_compile import Filter, compile
from skiff.runtime.seccomp_spec import ACTIONS, ARCHITECTURES, FLAGS, OPERATORS, validate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ACTIONS", "ARCHITECTURES", "FLAGS", "OPERATORS", "Filter", "compile",
           "default_profile", "from_docker_profile", "load", "validate"]

_SECCOMP_SET_MODE_FILTER = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load(f: Filter) -> None:
    """Install ``f`` on the calling thread (all threads with TSYNC); irreversible.

    The process needs no_new_privs or CAP_SYS_ADMIN. Call it last before execve: every
    syscall after it, including the execve, goes through the filter.
    """
    buf = ctypes.create_string_buffer(f.program, len(f.program))
    prog = _SockFprog(f.instructions, ctypes.cast(buf, ctypes.c_void_p))
    libc = syscalls.libc()
    ret = libc.syscall(ctypes.c_long(syscalls.SYS_SECCOMP),
                       ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER), ctypes.c_ulong(f.flags),
                       ctypes.byref(prog))
    what = f"({f.instructions} instructions, flags {f.flags:#x})"
    if ret < 0:
        err = ctypes.get_errno()
        exc = OSError(err, os.strerror(err))
        if err == errno.EACCES:
            raise PermissionDenied(f"load seccomp filter {what}: EACCES: the process needs "
                                   "no_new_privs or CAP_SYS_ADMIN") from exc
        raise os_error("load seccomp filter", what, exc) from exc
    if ret > 0:
        # With TSYNC a positive return is the id of a thread that could not be synchronised.
        raise os_error("load seccomp filter", f"{what}: thread {ret} could not be synchronised",
                       OSError(errno.EBUSY, os.strerror(errno.EBUSY))) from None


# ----------------------------------------------------------------------------- Docker profiles
# Thin wrappers: resolving moby profiles is the daemon's job, so the container init does not
# pay for importing it.

def from_docker_profile(profile: dict[str, Any], caps: list[str], arch: str = "x86_64",
                        kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """Resolve a moby seccomp profile into ``linux.seccomp``; see :mod:`seccomp_profile`."""
    from skiff.runtime import seccomp_profile

    return seccomp_profile.from_docker_profile(profile, caps, arch, kernel)


def default_profile(caps: list[str], arch: str | None = None) -> dict[str, Any]:
    """Docker's default profile (``skiff/runtime/data/seccomp-default.json``) for ``caps``."""
    from skiff.runtime import seccomp_profile

    return seccomp_profile.default_profile(caps, arch)
