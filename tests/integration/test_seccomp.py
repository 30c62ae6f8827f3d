"""seccomp filters loaded into a real kernel, in forked children.

Each test forks; the child sets no_new_privs, loads a filter, tries system calls and reports
through a pipe (or dies of SIGSYS, which the parent sees in the wait status). The parent
process is never filtered. Core dumps are disabled in the child so a SIGSYS leaves no file.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import resource
import signal
from collections.abc import Callable
from typing import Any

import pytest

from skiff.errors import PermissionDenied
from skiff.runtime import seccomp, syscalls
from skiff.runtime.seccomp_tables import I386, X32, X86_64

X32_BIT = 0x40000000
CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]  # Docker's default set


def in_child(body: Callable[[], Any], *, no_new_privs: bool = True) -> tuple[int, Any]:
    """Run ``body`` in a forked child; return (wait status, its JSON result or None)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if no_new_privs:
                syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
            out = body()
            os.write(w, json.dumps({"ok": out}).encode())
        except BaseException as exc:
            os.write(w, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    result = json.loads(raw) if raw else None
    if result is not None and "error" in result:
        pytest.fail(f"child failed: {result['error']}")
    return status, (result or {}).get("ok")


def loaded(filt: seccomp.Filter, then: Callable[[], Any]) -> Callable[[], Any]:
    """A child body: load ``filt``, then report what ``then`` returns."""
    def body() -> Any:
        seccomp.load(filt)
        return then()
    return body


def raw(nr: int, *args: int) -> str:
    """syscall(nr, args...) -> "ok" or the errno name, without libc's per-call wrappers."""
    libc = syscalls.libc()
    ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    if ret < 0:
        return errno.errorcode[ctypes.get_errno()]
    return "ok"


def test_docker_default_profile_blocks_what_docker_blocks() -> None:
    filt = seccomp.compile(seccomp.default_profile(CAPS))

    def body() -> dict[str, str]:
        seccomp.load(filt)
        res = {
            "unshare": raw(X86_64["unshare"], syscalls.CLONE_NEWUTS),
            "keyctl": raw(X86_64["keyctl"], 0, 2**64 - 3),  # KEYCTL_GET_KEYRING_ID, session
            "add_key": raw(X86_64["add_key"], 0, 0, 0, 0, 0),
            "mount": raw(X86_64["mount"], 0, 0, 0, 0, 0),
            "setns": raw(X86_64["setns"], 0, 0),
            "clone3": raw(X86_64["clone3"], 0, 0),
            "personality-addr-no-randomize": raw(X86_64["personality"], 0x0040000),
            "personality-query": raw(X86_64["personality"], 0xFFFFFFFF),
        }
        # clone(CLONE_NEWUSER | SIGCHLD) with no stack behaves like fork if it is let through.
        libc = syscalls.libc()
        pid = libc.syscall(ctypes.c_long(X86_64["clone"]),
                           ctypes.c_ulong(syscalls.CLONE_NEWUSER | signal.SIGCHLD),
                           ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                           ctypes.c_ulong(0))
        if pid == 0:
            os._exit(0)
        res["clone-newuser"] = errno.errorcode[ctypes.get_errno()] if pid < 0 else "ok"
        if pid > 0:
            os.waitpid(pid, 0)
        # Ordinary process life goes on: fork, exec, wait.
        child = os.fork()
        if child == 0:
            os.execv("/bin/sh", ["sh", "-c", "exit 7"])
        res["fork-exec-exit"] = str(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
        return res

    status, res = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert res == {
        "unshare": "EPERM", "keyctl": "EPERM", "add_key": "EPERM", "mount": "EPERM",
        "setns": "EPERM", "clone3": "ENOSYS", "personality-addr-no-randomize": "EPERM",
        "personality-query": "ok", "clone-newuser": "EPERM", "fork-exec-exit": "7",
    }


def test_errno_ret_is_returned() -> None:
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
        {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"}]})

    def body() -> list[str]:
        seccomp.load(filt)
        return [raw(X86_64["getppid"]), raw(X86_64["getpgrp"]), raw(X86_64["getpid"])]

    _, res = in_child(body)
    assert res == ["EXDEV", "EPERM", "ok"]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_the_process_with_sigsys(action: str) -> None:
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": action}]})

    def body() -> str:
        seccomp.load(filt)
        raw(X86_64["getppid"])
        return "survived"

    status, res = in_child(body)
    assert res is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_log_allows() -> None:
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_LOG"}]})

    def body() -> str:
        seccomp.load(filt)
        return raw(X86_64["getppid"])

    assert in_child(body)[1] == "ok"


# getppid, getpgrp, getuid, ... ignore their arguments but seccomp sees the registers, which
# makes them safe carriers for checking every comparison operator against the kernel.
CARRIERS = ["getppid", "getpgrp", "getuid", "getgid", "geteuid", "getegid", "gettid"]
CASES = [  # (op, value, valueTwo, args that must match, args that must not)
    ("SCMP_CMP_EQ", 0x1_00000005, 0, [0x1_00000005], [5, 0x2_00000005, 0x1_00000004]),
    ("SCMP_CMP_NE", 7, 0, [8, 0x1_00000007, 0], [7]),
    ("SCMP_CMP_LT", 0x1_00000000, 0, [0xFFFFFFFF, 0], [0x1_00000000, 0x1_00000001]),
    ("SCMP_CMP_LE", 0x1_00000000, 0, [0x1_00000000, 5], [0x1_00000001, 0x2_00000000]),
    ("SCMP_CMP_GE", 0x1_00000010, 0, [0x1_00000010, 0x2_00000000], [0x1_0000000F, 0x10]),
    ("SCMP_CMP_GT", 0xFFFFFFFF, 0, [0x1_00000000], [0xFFFFFFFF, 1]),
    ("SCMP_CMP_MASKED_EQ", 0xF0000000_000000F0, 0x10000000_00000020,
     [0x10000000_00000020, 0x1F000000_0000002F], [0x20, 0x10000000_00000000]),
]


def test_argument_conditions_agree_with_the_kernel() -> None:
    rules = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
              "args": [{"index": 2, "value": v, "valueTwo": two, "op": op}]}
             for name, (op, v, two, _, _) in zip(CARRIERS, CASES, strict=True)]
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})

    def body() -> dict[str, list[list[str]]]:
        seccomp.load(filt)
        out = {}
        for name, (op, _, _, hits, misses) in zip(CARRIERS, CASES, strict=True):
            out[op] = [[raw(X86_64[name], 0, 0, a) for a in hits],
                       [raw(X86_64[name], 0, 0, a) for a in misses]]
        return out

    _, res = in_child(body)
    for op, _, _, hits, misses in CASES:
        assert res[op] == [["EDOM"] * len(hits), ["ok"] * len(misses)], op


def test_personality_allowed_only_for_some_values() -> None:
    # The shape of Docker's personality rules: several rules on one syscall, each one value.
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]} for v in (0, 8, 0xFFFFFFFF)
    ] + [{"names": ["exit_group", "exit", "write", "getpid", "munmap", "rt_sigprocmask",
                    "rt_sigaction", "close", "brk", "mmap", "madvise", "futex"],
          "action": "SCMP_ACT_ALLOW"}]})

    def body() -> list[str]:
        seccomp.load(filt)
        libc = syscalls.libc()
        out = [raw(X86_64["personality"], v) for v in (0xFFFFFFFF, 0x0040000, 0x0008)]
        libc.syscall(ctypes.c_long(X86_64["personality"]), ctypes.c_ulong(0))  # back to Linux
        return out

    _, res = in_child(body)
    assert res == ["ok", "EPERM", "ok"]


def test_x32_calls_are_killed_unless_x32_is_listed() -> None:
    nr = X32["getppid"] + X32_BIT
    deny = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})
    status, _ = in_child(loaded(deny, lambda: raw(nr)))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
    allow = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                             "architectures": ["SCMP_ARCH_X32"], "syscalls": [
                                 {"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                  "errnoRet": errno.ENOTTY}]})
    _, res = in_child(loaded(allow, lambda: raw(nr)))
    assert res == "ENOTTY"  # the filter decided, before the kernel looked at the x32 ABI


def _int80() -> Callable[[int, int], int]:
    """A function running ``int $0x80`` (the i386 syscall ABI) from this 64-bit process."""
    code = bytes([0x89, 0xF8,        # mov eax, edi   (syscall number)
                  0x53,              # push rbx       (callee-saved)
                  0x89, 0xF3,        # mov ebx, esi   (first argument)
                  0xCD, 0x80,        # int 0x80
                  0x5B,              # pop rbx
                  0xC3])             # ret
    page = mmap.mmap(-1, mmap.PAGESIZE,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)(addr)

    def call(nr: int, arg: int) -> int:
        assert not page.closed  # the closure keeps the executable mapping alive
        return int(fn(nr, arg))
    return call


def _ia32_available() -> bool:
    def body() -> int:
        return _int80()(I386["getppid"], 0)
    status, res = in_child(body, no_new_privs=False)
    return os.WIFEXITED(status) and isinstance(res, int) and res > 0


def test_i386_calls_use_the_i386_table() -> None:
    if not _ia32_available():
        pytest.skip("this kernel runs no ia32 syscalls (CONFIG_IA32_EMULATION off)")
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                            "architectures": ["SCMP_ARCH_X86"], "syscalls": [
                                {"names": ["socketcall"], "action": "SCMP_ACT_ERRNO",
                                 "errnoRet": errno.ENOTTY}]})

    def body() -> list[Any]:
        seccomp.load(filt)
        fn = _int80()
        # socketcall exists only on i386 (102); 102 on x86_64 is getuid and stays allowed.
        return [fn(I386["socketcall"], 0), fn(I386["getppid"], 0) > 0,
                raw(I386["socketcall"])]

    _, res = in_child(body)
    assert res == [-errno.ENOTTY, True, "ok"]
    no_x86 = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})
    status, _ = in_child(loaded(no_x86, lambda: _int80()(I386["getppid"], 0)))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_load_without_no_new_privs_or_cap_sys_admin_is_refused() -> None:
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW"})

    def body() -> str:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)  # no capabilities left
        try:
            seccomp.load(filt)
        except PermissionDenied as exc:
            return str(exc)
        return "loaded"

    _, res = in_child(body, no_new_privs=False)
    assert "no_new_privs or CAP_SYS_ADMIN" in res


def test_tsync_flag_loads() -> None:
    filt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                            "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"],
                            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]})
    _, res = in_child(loaded(filt, lambda: raw(X86_64["getppid"])))
    assert res == "EPERM"
