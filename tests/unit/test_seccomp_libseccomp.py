"""Differential test: skiff's seccomp compiler against libseccomp, the reference runc uses.

Random OCI seccomp objects are compiled twice, by :func:`seccomp.compile` and by libseccomp
(through ctypes, exporting its BPF), and both programs are run by the same interpreter on the
same syscalls and arguments; every decision must agree. This pins our semantics (argument
comparisons per ABI, rule precedence, architecture dispatch) to libseccomp's.

Left out on purpose, because skiff differs from libseccomp there by design (see seccomp.py):
syscalls numbered above every named one (skiff answers ENOSYS, like runc), syscalls libseccomp
2.5 does not know, and rules WITH conditions on i386 socket/IPC calls, which libseccomp also
applies to socketcall/ipc with the conditions dropped. The conditional rules of one syscall
share one action here (libseccomp orders conflicting ones its own way), and the generator
avoids the cases where libseccomp 2.5 is wrong (see _random_config).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
from typing import Any

import pytest

from skiff.runtime import seccomp, seccomp_spec
from skiff.runtime.seccomp_bpf import evaluate
from skiff.runtime.seccomp_tables import I386, X32, X86_64

_LIB = ctypes.util.find_library("seccomp")
pytestmark = pytest.mark.skipif(_LIB is None, reason="libseccomp.so.2 (the reference) is not "
                                "installed; Debian: libseccomp2")

ARCH = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X86": 0x40000003,
        "SCMP_ARCH_X32": 0x4000003E}  # libseccomp's tokens (x32 differs from its audit arch)
AUDIT = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X86": 0x40000003,
         "SCMP_ARCH_X32": 0xC000003E}
TABLE = {"SCMP_ARCH_X86_64": (X86_64, 0), "SCMP_ARCH_X86": (I386, 0),
         "SCMP_ARCH_X32": (X32, 0x40000000)}
OPS = {op: i + 1 for i, op in enumerate(seccomp.OPERATORS)}  # enum scmp_compare: NE=1 ... 7
MULTIPLEXED = {
    "socket", "bind", "connect", "listen", "accept", "accept4", "getsockname", "getpeername",
    "socketpair", "send", "recv", "sendto", "recvfrom", "shutdown", "setsockopt", "getsockopt",
    "sendmsg", "recvmsg", "recvmmsg", "sendmmsg", "socketcall", "ipc", "semop", "semget",
    "semctl", "semtimedop", "msgsnd", "msgrcv", "msgget", "msgctl", "shmat", "shmdt", "shmget",
    "shmctl"}
ACTIONS = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
           "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_KILL_THREAD"]
ORDERED = ("SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GE", "SCMP_CMP_GT")
_BADARCH = 2  # SCMP_FLTATR_ACT_BADARCH


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _lib() -> Any:
    lib = ctypes.CDLL(_LIB)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def libseccomp_compile(lib: Any, cfg: dict[str, Any]) -> bytes | None:
    """The same config through libseccomp, the way runc drives it; None if it refuses."""
    default = seccomp_spec.action_value(cfg["defaultAction"], cfg.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    assert ctx
    try:
        # skiff kills on a foreign architecture, libseccomp's default is KILL_THREAD.
        assert lib.seccomp_attr_set(ctx, _BADARCH, 0x80000000) == 0
        for arch in cfg.get("architectures", []):
            if arch != "SCMP_ARCH_X86_64":
                assert lib.seccomp_arch_add(ctx, ARCH[arch]) == 0
        for rule in cfg["syscalls"]:
            act = seccomp_spec.action_value(rule["action"], rule.get("errnoRet"))
            if act == default:
                continue  # runc skips these: libseccomp refuses a rule equal to the default
            args = rule.get("args") or []
            cmps = (_ArgCmp * max(1, len(args)))(*[
                _ArgCmp(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
                for a in args])
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR: a name libseccomp does not know; runc skips it
                    continue
                if lib.seccomp_rule_add_array(ctx, act, nr, len(args), cmps) != 0:
                    return None
        r, w = os.pipe()
        try:
            assert lib.seccomp_export_bpf(ctx, w) == 0
            os.close(w)
            w = -1
            chunks = []
            while chunk := os.read(r, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    finally:
        lib.seccomp_release(ctx)


def _agrees(lib: Any, arch: str, name: str) -> bool:
    got = lib.seccomp_syscall_resolve_name_arch(ARCH[arch], name.encode())
    if arch == "SCMP_ARCH_X86" and name in MULTIPLEXED:
        return bool(got < -1)  # a libseccomp pseudo number: direct call and multiplexer
    return bool(got == TABLE[arch][0][name] + TABLE[arch][1])


def _names(lib: Any) -> list[str]:
    """Names both libseccomp and skiff know, with the same numbers, on all three ABIs."""
    out = []
    for name in sorted(X86_64):
        if name in ("socketcall", "ipc") or name not in I386 or name not in X32:
            continue
        if all(_agrees(lib, arch, name) for arch in ARCH):
            out.append(name)
    return out


def _value(rnd: random.Random) -> int:
    return rnd.choice([0, 1, 5, 0xFFFFFFFF, 1 << 32, (1 << 32) + 7, rnd.getrandbits(32),
                       rnd.getrandbits(64), (1 << 64) - 1])


def _random_config(rnd: random.Random, names: list[str]) -> dict[str, Any]:
    chosen = rnd.sample(names, 12)
    default = rnd.choice(["SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_ALLOW"])
    rules = []
    for name in chosen:
        action = rnd.choice([a for a in ACTIONS if a != default])
        if name in MULTIPLEXED:
            # With conditions, libseccomp would also match socketcall/ipc ignoring them;
            # skiff deliberately does not (see seccomp_compile._multiplexed).
            rules.append({"names": [name], "action": action})
            continue
        # Either one rule ANDing up to three conditions, or several one-condition rules ORed.
        # libseccomp 2.5 merges the rules of a syscall into one decision tree and gets two
        # cases wrong, which are therefore not compared (skiff ORs the rules as written):
        # a multi-condition rule next to other conditional rules, and ordered comparisons
        # (LT/LE/GE/GT) on one argument in several rules when a value exceeds 32 bits.
        alone = rnd.random() < 0.5
        for _ in range(1 if alone else rnd.randint(1, 3)):
            args = []
            for index in rnd.sample(range(6), rnd.randint(0, 3) if alone else 1):
                op = rnd.choice(seccomp.OPERATORS)
                value = _value(rnd)
                if not alone and op in ORDERED:
                    value &= 0xFFFFFFFF
                arg = {"index": index, "op": op, "value": value}
                if op == "SCMP_CMP_MASKED_EQ":
                    arg["valueTwo"] = value & rnd.getrandbits(64)
                args.append(arg)
            rule: dict[str, Any] = {"names": [name], "action": action, "args": args}
            if action == "SCMP_ACT_ERRNO":
                rule["errnoRet"] = 13
            rules.append(rule)
        if rnd.random() < 0.25:
            # A rule without conditions, maybe with another action: it must win outright.
            rules.insert(rnd.randrange(len(rules) + 1),
                         {"names": [name], "action": rnd.choice(ACTIONS)})
    arches = ["SCMP_ARCH_X86_64", *rnd.sample(["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                                               rnd.randint(0, 2))]
    return {"defaultAction": default, "defaultErrnoRet": 1, "architectures": arches,
            "syscalls": rules}


def _probe_args(rnd: random.Random, cfg: dict[str, Any], name: str) -> list[tuple[int, ...]]:
    values = [a for r in cfg["syscalls"] if name in r["names"] for a in r.get("args") or []]
    out = [tuple(0 for _ in range(6))]
    for _ in range(12):
        vec = [_value(rnd) for _ in range(6)]
        for a in values:
            if rnd.random() < 0.7:
                base = a.get("valueTwo", a["value"]) if rnd.random() < 0.3 else a["value"]
                vec[a["index"]] = (base + rnd.choice([-1, 0, 0, 1, 1 << 32])) % (1 << 64)
        out.append(tuple(vec))
    return out


def _compare_multiplexers(theirs: bytes, ours: bytes) -> int:
    """socketcall(n, ...) and ipc(n, ...) on i386 for every call number n."""
    n = 0
    for mux, top in (("socketcall", 21), ("ipc", 25)):
        for call in range(top):
            args = (call, 0, 0, 0, 0, 0)
            want = evaluate(theirs, I386[mux], AUDIT["SCMP_ARCH_X86"], args)
            got = evaluate(ours, I386[mux], AUDIT["SCMP_ARCH_X86"], args)
            assert got == want, f"i386 {mux}({call}): skiff {got:#x}, libseccomp {want:#x}"
            n += 1
    return n


@pytest.mark.parametrize("seed", range(100))
def test_decisions_match_libseccomp(seed: int) -> None:
    lib = _lib()
    rnd = random.Random(seed)
    names = _names(lib)
    assert len(names) > 200
    cfg = _random_config(rnd, names)
    theirs = libseccomp_compile(lib, cfg)
    assert theirs is not None, "libseccomp refused a config it should take"
    ours = seccomp.compile(cfg).program
    named = sorted({n for r in cfg["syscalls"] for n in r["names"]})
    arches = [*cfg["architectures"], "SCMP_ARCH_X86"]
    checked = 0
    for arch in dict.fromkeys(arches):
        table, base = TABLE[arch]
        top = max(table[n] for n in named)
        # The named calls, plus unnamed ones below the newest named (both give the default).
        probes = named + rnd.sample([n for n in names if table[n] < top], 5)
        for name in probes:
            nr = table[name] + base
            for args in _probe_args(rnd, cfg, name):
                want = evaluate(theirs, nr, AUDIT[arch], args)
                got = evaluate(ours, nr, AUDIT[arch], args)
                assert got == want, (f"{arch} {name} args={[hex(a) for a in args]}: "
                                     f"skiff {got:#x}, libseccomp {want:#x}")
                checked += 1
        if arch == "SCMP_ARCH_X86":
            checked += _compare_multiplexers(theirs, ours)
    assert checked > 100


@pytest.mark.parametrize("caps", [[], ["CAP_SYS_ADMIN"], ["CAP_SYS_PTRACE", "CAP_SYS_BOOT"]])
def test_docker_default_profile_matches_libseccomp(caps: list[str]) -> None:
    lib = _lib()
    cfg = seccomp.default_profile(caps)
    theirs = libseccomp_compile(lib, cfg)
    assert theirs is not None
    ours = seccomp.compile(cfg).program
    rnd = random.Random(0)
    checked = 0
    for arch in cfg["architectures"]:
        table, base = TABLE[arch]
        for name in sorted(table):
            known = lib.seccomp_syscall_resolve_name_arch(ARCH[arch], name.encode())
            if known != table[name] + base:
                continue  # unknown to libseccomp 2.5
            for args in _probe_args(rnd, cfg, name)[:4]:
                want = evaluate(theirs, table[name] + base, AUDIT[arch], args)
                got = evaluate(ours, table[name] + base, AUDIT[arch], args)
                assert got == want, f"{arch} {name} {[hex(a) for a in args]}"
                checked += 1
        if arch == "SCMP_ARCH_X86":
            checked += _compare_multiplexers(theirs, ours)
    assert checked > 1000
