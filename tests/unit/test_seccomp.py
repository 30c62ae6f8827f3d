"""seccomp: validation, BPF compilation (checked by running the program), Docker profiles.

Compiled programs are executed with :func:`seccomp_bpf.evaluate`, an interpreter with the
kernel's semantics, so these tests check decisions, not instruction sequences; the integration
tests check that the kernel agrees with the interpreter.
"""

from __future__ import annotations

import copy
import errno
import json
import random
from pathlib import Path
from typing import Any

import pytest

from skiff.errors import InvalidArgument, Unavailable
from skiff.runtime import seccomp
from skiff.runtime.seccomp_bpf import JEQ, Assembler, Label, evaluate
from skiff.runtime.seccomp_tables import I386, X32, X86_64

# The contract as data: shared/ sits beside the checkout (in CI beside the clone).
SPEC_PROFILE = (Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "seccomp"
                / "docker-default.json")
PACKAGED = Path(seccomp.__file__).parent / "data" / "seccomp-default.json"

X86_64_ARCH = 0xC000003E
I386_ARCH = 0x40000003
AARCH64_ARCH = 0xC00000B7
X32_BIT = 0x40000000

ALLOW = 0x7FFF0000
KILL_THREAD = 0
KILL_PROCESS = 0x80000000
TRAP = 0x00030000
LOG = 0x7FFC0000


def ERRNO(n: int) -> int:  # upper case: reads like the kernel macro it mirrors
    return 0x00050000 | n


def TRACE(n: int) -> int:
    return 0x7FF00000 | n


def run(f: seccomp.Filter, name: str, *args: int, arch: str = "x86_64") -> int:
    if arch == "x86_64":
        return evaluate(f.program, X86_64[name], X86_64_ARCH, args)
    if arch == "x32":
        return evaluate(f.program, X32[name] + X32_BIT, X86_64_ARCH, args)
    return evaluate(f.program, I386[name], I386_ARCH, args)


def profile(*rules: dict[str, Any], default: str = "SCMP_ACT_ERRNO",
            **extra: Any) -> dict[str, Any]:
    return {"defaultAction": default, "syscalls": list(rules), **extra}


# ----------------------------------------------------------------------------- validate

GOOD_RULE = {"names": ["read"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}


def _bad(mutate: Any) -> dict[str, Any]:
    p = profile(copy.deepcopy(GOOD_RULE), copy.deepcopy(GOOD_RULE))
    mutate(p)
    return p


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: p.pop("defaultAction"), "linux.seccomp.defaultAction: required"),
    (lambda p: p.update(defaultAction="SCMP_ACT_FOO"),
     'linux.seccomp.defaultAction: unknown action "SCMP_ACT_FOO"'),
    (lambda p: p.update(defaultErrnoRet=-1), "linux.seccomp.defaultErrnoRet: must be an unsigned"),
    (lambda p: p.update(defaultErrnoRet=70000),
     "linux.seccomp.defaultErrnoRet: must be an unsigned 16-bit integer, got 70000"),
    (lambda p: p.update(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]),
     'linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_Z80"'),
    (lambda p: p.update(architectures="SCMP_ARCH_X86_64"),
     "linux.seccomp.architectures: must be a list"),
    (lambda p: p.update(flags=["SECCOMP_FILTER_FLAG_BOGUS"]),
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_BOGUS"'),
    (lambda p: p.update(flags=[["unhashable"]]),
     'linux.seccomp.flags[0]: unknown flag ["unhashable"]'),
    (lambda p: p.update(listenerPath=5), "linux.seccomp.listenerPath: must be a string, got 5"),
    (lambda p: p.update(syscalls={"names": ["read"]}), "linux.seccomp.syscalls: must be a list"),
    (lambda p: p["syscalls"].append("read"), "linux.seccomp.syscalls[2]: must be an object"),
    (lambda p: p["syscalls"][1].update(names=[]), "linux.seccomp.syscalls[1].names: must be a"),
    (lambda p: p["syscalls"][1].pop("names"), "linux.seccomp.syscalls[1].names: must be a"),
    (lambda p: p["syscalls"][1].update(names=["read", 7]),
     "linux.seccomp.syscalls[1].names[1]: must be a syscall name, got 7"),
    (lambda p: p["syscalls"][1].pop("action"), "linux.seccomp.syscalls[1].action: required"),
    (lambda p: p["syscalls"][1].update(action="SCMP_ACT_FOO"),
     'linux.seccomp.syscalls[1].action: unknown action "SCMP_ACT_FOO"'),
    (lambda p: p["syscalls"][1].update(action={"x": 1}),
     'linux.seccomp.syscalls[1].action: unknown action {"x": 1}'),
    (lambda p: p["syscalls"][1].update(errnoRet="EPERM"),
     'linux.seccomp.syscalls[1].errnoRet: must be an unsigned 16-bit integer, got "EPERM"'),
    (lambda p: p["syscalls"][1].update(args={}), "linux.seccomp.syscalls[1].args: must be a list"),
    (lambda p: p["syscalls"][1]["args"].append(3),
     "linux.seccomp.syscalls[1].args[1]: must be an object, got 3"),
    (lambda p: p["syscalls"][1]["args"][0].update(index=6),
     "linux.seccomp.syscalls[1].args[0].index: must be 0..5"),
    (lambda p: p["syscalls"][1]["args"][0].update(index=True),
     "linux.seccomp.syscalls[1].args[0].index: must be 0..5"),
    (lambda p: p["syscalls"][1]["args"][0].pop("index"),
     "linux.seccomp.syscalls[1].args[0].index: required"),
    (lambda p: p["syscalls"][1]["args"][0].pop("value"),
     "linux.seccomp.syscalls[1].args[0].value: required"),
    (lambda p: p["syscalls"][1]["args"][0].update(value=1 << 64),
     "linux.seccomp.syscalls[1].args[0].value: must be an unsigned 64-bit integer"),
    (lambda p: p["syscalls"][1]["args"][0].update(valueTwo=-3),
     "linux.seccomp.syscalls[1].args[0].valueTwo: must be an unsigned 64-bit integer, got -3"),
    (lambda p: p["syscalls"][1]["args"][0].pop("op"),
     "linux.seccomp.syscalls[1].args[0].op: required"),
    (lambda p: p["syscalls"][1]["args"][0].update(op="SCMP_CMP_FOO"),
     'linux.seccomp.syscalls[1].args[0].op: unknown operator "SCMP_CMP_FOO"'),
])
def test_validate_names_the_bad_field(mutate: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        seccomp.validate(_bad(mutate))
    assert str(info.value).startswith(message), str(info.value)


def test_validate_uses_the_callers_path_and_rejects_non_objects() -> None:
    with pytest.raises(InvalidArgument, match=r"^x\.y: must be an object, got list$"):
        seccomp.validate([], "x.y")
    with pytest.raises(InvalidArgument, match=r'^x\.y\.syscalls\[0\]\.action: unknown action'):
        seccomp.validate(profile({"names": ["read"], "action": "NOPE"}), "x.y")


def test_validate_accepts_good_configs_and_unknown_syscall_names() -> None:
    seccomp.validate(profile(GOOD_RULE, {"names": ["no_such_call", "s390_runtime_instr"],
                                         "action": "SCMP_ACT_ERRNO", "errnoRet": 5},
                             architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                             flags=list(seccomp.FLAGS), defaultErrnoRet=1))
    seccomp.validate(seccomp.default_profile(["CAP_SYS_ADMIN"]))


# ----------------------------------------------------------------------------- actions

@pytest.mark.parametrize(("rule", "expected"), [
    ({"action": "SCMP_ACT_ALLOW"}, ALLOW),
    ({"action": "SCMP_ACT_ALLOW", "errnoRet": 9}, ALLOW),  # ignored, as runc does
    ({"action": "SCMP_ACT_KILL"}, KILL_THREAD),
    ({"action": "SCMP_ACT_KILL_THREAD"}, KILL_THREAD),
    ({"action": "SCMP_ACT_KILL_PROCESS"}, KILL_PROCESS),
    ({"action": "SCMP_ACT_TRAP"}, TRAP),
    ({"action": "SCMP_ACT_ERRNO"}, ERRNO(errno.EPERM)),
    ({"action": "SCMP_ACT_ERRNO", "errnoRet": 0}, ERRNO(0)),
    ({"action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}, ERRNO(errno.EXDEV)),
    ({"action": "SCMP_ACT_TRACE"}, TRACE(errno.EPERM)),
    ({"action": "SCMP_ACT_TRACE", "errnoRet": 1234}, TRACE(1234)),
    ({"action": "SCMP_ACT_LOG"}, LOG),
])
def test_each_action_returns_its_kernel_value(rule: dict[str, Any], expected: int) -> None:
    f = seccomp.compile(profile({"names": ["getppid"], **rule}, default="SCMP_ACT_ALLOW"))
    assert run(f, "getppid") == expected
    assert run(f, "getpid") == ALLOW


def test_default_action_and_errno() -> None:
    f = seccomp.compile(profile({"names": ["read", "openat2"], "action": "SCMP_ACT_ALLOW"},
                                defaultErrnoRet=errno.EACCES))
    assert run(f, "read") == ALLOW
    assert run(f, "write") == ERRNO(errno.EACCES)
    f = seccomp.compile(profile({"names": ["read", "openat2"], "action": "SCMP_ACT_ALLOW"}))
    assert run(f, "write") == ERRNO(errno.EPERM)


def test_notify_and_listener_are_unavailable() -> None:
    with pytest.raises(Unavailable, match="SCMP_ACT_NOTIFY"):
        seccomp.compile(profile({"names": ["read"], "action": "SCMP_ACT_NOTIFY"}))
    with pytest.raises(Unavailable, match="listenerPath"):
        seccomp.compile(profile(listenerPath="/run/agent.sock"))


def test_flags() -> None:
    f = seccomp.compile(profile(flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                       "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]))
    assert f.flags == 1 | 2 | 4
    # WAIT_KILLABLE_RECV only means something with a listener, and the kernel refuses it alone.
    assert seccomp.compile(profile(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])).flags == 0


def test_compile_validates() -> None:
    with pytest.raises(InvalidArgument, match="unknown action"):
        seccomp.compile(profile(default="SCMP_ACT_MAYBE"))


# ----------------------------------------------------------------------------- arguments

def _py_cmp(op: str, arg: int, value: int, two: int) -> bool:
    return {
        "SCMP_CMP_NE": arg != value, "SCMP_CMP_LT": arg < value, "SCMP_CMP_LE": arg <= value,
        "SCMP_CMP_EQ": arg == value, "SCMP_CMP_GE": arg >= value, "SCMP_CMP_GT": arg > value,
        "SCMP_CMP_MASKED_EQ": arg & value == two,
    }[op]


# Values that straddle the 32-bit word boundary, where a wrong high/low split shows.
_EDGES = [0, 1, 5, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 32) + 5,
          0x1_FFFFFFFF, 0xFFFFFFFF_00000000, 0xFFFFFFFF_FFFFFFFE, (1 << 64) - 1]


@pytest.mark.parametrize("op", seccomp.OPERATORS)
def test_64_bit_comparisons_match_python(op: str) -> None:
    rnd = random.Random(op)
    values = _EDGES + [rnd.getrandbits(64) for _ in range(4)]
    for value in values:
        two = value & rnd.getrandbits(64) if op == "SCMP_CMP_MASKED_EQ" else 0
        f = seccomp.compile(profile(
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
             "args": [{"index": 3, "value": value, "valueTwo": two, "op": op}]},
            default="SCMP_ACT_ALLOW"))
        probes = {*_EDGES, value, two, (value - 1) % (1 << 64), (value + 1) % (1 << 64),
                  value ^ (1 << 40), value ^ 1, rnd.getrandbits(64)}
        for arg in probes:
            want = ERRNO(77) if _py_cmp(op, arg, value, two) else ALLOW
            got = run(f, "getppid", 0, 0, 0, arg)
            assert got == want, f"{op} value={value:#x} arg={arg:#x}"


@pytest.mark.parametrize("op", seccomp.OPERATORS)
def test_32_bit_abis_compare_the_low_word(op: str) -> None:
    value, two = 0x1_00000010, 0x10
    f = seccomp.compile(profile(
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
         "args": [{"index": 0, "value": value, "valueTwo": two, "op": op}]},
        default="SCMP_ACT_ALLOW", architectures=["SCMP_ARCH_X86", "SCMP_ARCH_X32"]))
    for arch in ("x86", "x32"):
        for arg in (0, 0xF, 0x10, 0x11, 0xFFFFFFFF):
            want = ERRNO(77) if _py_cmp(op, arg, value & 0xFFFFFFFF, two) else ALLOW
            assert run(f, "getppid", arg, arch=arch) == want, f"{arch} {op} {arg:#x}"


def test_conditions_in_a_rule_are_anded() -> None:
    f = seccomp.compile(profile({"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 100, "op": "SCMP_CMP_GT"},
        {"index": 1, "value": 9, "op": "SCMP_CMP_NE"}]}))
    assert run(f, "kill", 101, 15) == ALLOW
    assert run(f, "kill", 101, 9) == ERRNO(1)
    assert run(f, "kill", 100, 15) == ERRNO(1)


def test_repeated_argument_index_splits_into_ored_rules() -> None:
    # runc's rule (libseccomp cannot AND two comparisons of one argument).
    f = seccomp.compile(profile({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}))
    assert run(f, "personality", 8) == ALLOW
    assert run(f, "personality", 0) == ALLOW
    assert run(f, "personality", 3) == ERRNO(1)


def test_unconditional_rule_overrides_conditional_ones() -> None:
    # libseccomp's semantics (what runc, so Docker, gives): order does not matter.
    rules: list[dict[str, Any]] = [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
         "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW"}]
    for order in (1, -1):
        f = seccomp.compile(profile(*rules[::order]))
        assert run(f, "socket", 40) == ALLOW
        assert run(f, "socket", 2) == ALLOW


def test_a_rule_with_the_default_action_is_dropped() -> None:
    # runc skips it (libseccomp refuses it), so it cannot override the conditional rule.
    f = seccomp.compile(profile(
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}))
    assert run(f, "socket", 2) == ALLOW
    assert run(f, "socket", 3) == ERRNO(1)


def test_first_unconditional_rule_counts() -> None:
    f = seccomp.compile(profile({"names": ["socket"], "action": "SCMP_ACT_LOG"},
                                {"names": ["socket"], "action": "SCMP_ACT_ALLOW"}))
    assert run(f, "socket") == LOG


def test_a_condition_that_always_holds_makes_the_rule_unconditional() -> None:
    # (x & 0) == 0 always holds; on 32-bit ABIs so does a mask with an empty low word. Like
    # libseccomp, such a rule then counts as unconditional and overrides conditional rules.
    rules: list[dict[str, Any]] = [{"names": ["getppid"], "action": "SCMP_ACT_TRAP",
              "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
             {"names": ["getppid"], "action": "SCMP_ACT_LOG",
              "args": [{"index": 1, "value": 1 << 32, "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ"}]}]
    f = seccomp.compile(profile(*rules, architectures=["SCMP_ARCH_X86"]))
    assert run(f, "getppid", 5, arch="x86") == LOG
    assert run(f, "getppid", 5) == TRAP  # 64-bit: the mask has a bit, the condition is real
    assert run(f, "getppid", 5, 1 << 32) == TRAP
    assert run(f, "getppid", 6, 0) == LOG


def test_conditional_rules_in_order_then_default() -> None:
    f = seccomp.compile(profile(
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
         "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_LOG",
         "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_GE"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 0, "value": 50, "op": "SCMP_CMP_EQ"}]},
        {"names": ["bind"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]},
        defaultErrnoRet=13))
    assert run(f, "socket", 40) == ERRNO(97)
    assert run(f, "socket", 16) == LOG
    assert run(f, "socket", 50) == LOG  # the earlier rule matched first
    assert run(f, "socket", 2) == ERRNO(13)
    assert run(f, "bind", 3) == ALLOW
    assert run(f, "bind", 4) == ERRNO(13)


# ----------------------------------------------------------------------------- architectures

def test_native_arch_is_always_in_and_others_are_killed_unless_listed() -> None:
    f = seccomp.compile(profile({"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                                architectures=["SCMP_ARCH_AARCH64"]))
    assert run(f, "read") == ALLOW
    assert run(f, "read", arch="x86") == KILL_PROCESS
    assert run(f, "read", arch="x32") == KILL_PROCESS
    assert evaluate(f.program, 63, AARCH64_ARCH) == KILL_PROCESS


def test_each_abi_uses_its_own_numbers() -> None:
    f = seccomp.compile(profile(
        {"names": ["socketcall", "getppid", "rt_sigaction"], "action": "SCMP_ACT_ALLOW"},
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]))
    assert run(f, "getppid", arch="x86") == ALLOW
    assert run(f, "socketcall", arch="x86") == ALLOW  # an i386-only name: ignored elsewhere
    assert run(f, "rt_sigaction", arch="x32") == ALLOW  # x32's own number, 512
    assert X32["rt_sigaction"] == 512
    assert run(f, "getppid", arch="x32") == ALLOW
    # i386's number for getppid (64) is x86_64's semget: not allowed natively.
    assert I386["getppid"] == X86_64["semget"]
    assert run(f, "semget") == ERRNO(1)


def test_i386_socket_and_ipc_calls_also_match_through_their_multiplexers() -> None:
    f = seccomp.compile(profile(
        {"names": ["socket", "shmat", "read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["bind"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]},
        architectures=["SCMP_ARCH_X86"]))
    assert run(f, "socket", arch="x86") == ALLOW
    assert run(f, "socketcall", 1, arch="x86") == ALLOW  # SYS_SOCKET
    assert run(f, "socketcall", 3, arch="x86") == ERRNO(1)  # SYS_CONNECT: not allowed
    assert run(f, "ipc", 21, arch="x86") == ALLOW  # SHMAT
    assert run(f, "ipc", 23, arch="x86") == ERRNO(1)  # SHMGET
    # bind's condition is on memory socketcall points to: not matched through it.
    assert run(f, "socketcall", 2, 3, arch="x86") == ERRNO(1)
    assert run(f, "bind", 3, arch="x86") == ALLOW


def test_a_cancelled_syscall_is_not_mistaken_for_x32() -> None:
    # A tracer sets nr to -1 to skip a call; without x32 in the filter that must not kill.
    f = seccomp.compile(profile({"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                                default="SCMP_ACT_ALLOW"))
    assert evaluate(f.program, -1 & 0xFFFFFFFF, X86_64_ARCH) == ALLOW
    assert evaluate(f.program, X32_BIT + 3, X86_64_ARCH) == KILL_PROCESS


def test_syscalls_newer_than_the_profile_get_enosys() -> None:
    f = seccomp.compile(profile({"names": ["read", "openat2"], "action": "SCMP_ACT_ALLOW"}))
    assert run(f, "write") == ERRNO(errno.EPERM)  # below the newest named call: default
    assert run(f, "faccessat2") == ERRNO(errno.ENOSYS)  # above it
    assert evaluate(f.program, 1000, X86_64_ARCH) == ERRNO(errno.ENOSYS)
    allow_all = seccomp.compile(profile({"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                                        default="SCMP_ACT_ALLOW"))
    assert run(allow_all, "faccessat2") == ALLOW


# ----------------------------------------------------------------------------- far jumps, size

def test_assembler_routes_far_jumps_through_trampolines() -> None:
    asm = Assembler()
    far, near = Label(), Label()
    asm.load(0)
    asm.jump(JEQ, 7, far, near)
    asm.place(near)
    for i in range(600):
        asm.ret(i)
    asm.place(far)
    asm.ret(0xABC)
    prog = asm.assemble()
    assert evaluate(prog, 7, 0) == 0xABC
    assert evaluate(prog, 8, 0) == 0


def test_large_filters_still_decide_correctly() -> None:
    names = sorted(X86_64, key=X86_64.__getitem__)[:300]
    rules = [{"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": i + 1,
              "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]}
             for i, n in enumerate(names)]
    f = seccomp.compile(profile(*rules, default="SCMP_ACT_ALLOW"))
    assert f.instructions > 1000  # long enough that jumps exceed 255 instructions
    for i, n in enumerate(names):
        assert run(f, n, 0, i) == ERRNO(i + 1), n
        assert run(f, n, 0, i + 1) == ALLOW, n


def test_too_large_a_filter_is_refused() -> None:
    rules = [{"names": list(X86_64), "action": "SCMP_ACT_ALLOW",
              "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]} for v in range(4)]
    with pytest.raises(InvalidArgument, match="at most 4096"):
        seccomp.compile(profile(*rules))


# ----------------------------------------------------------------------------- Docker profiles

def _docker() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PACKAGED.read_text())
    return loaded


def _allowed(oci: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in oci["syscalls"] if name in r["names"]]


@pytest.mark.skipif(not SPEC_PROFILE.exists(), reason="the shared spec copy is not on this machine")
def test_packaged_default_profile_is_dockers() -> None:
    assert _docker() == json.loads(SPEC_PROFILE.read_text())
    assert _docker()["archMap"][0]["architecture"] == "SCMP_ARCH_X86_64"


def test_docker_profile_arch_map_and_arch_filters() -> None:
    amd64 = seccomp.from_docker_profile(_docker(), [], "x86_64", kernel=(6, 1))
    assert amd64["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert amd64["defaultAction"] == "SCMP_ACT_ERRNO" and amd64["defaultErrnoRet"] == 1
    assert _allowed(amd64, "arch_prctl") and not _allowed(amd64, "cacheflush")
    assert "comment" not in json.dumps(amd64) and "includes" not in json.dumps(amd64)
    arm = seccomp.from_docker_profile(_docker(), [], "aarch64", kernel=(6, 1))
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert _allowed(arm, "cacheflush") and not _allowed(arm, "arch_prctl")
    s390 = seccomp.from_docker_profile(_docker(), [], "s390x", kernel=(6, 1))
    clone = [r for r in _allowed(s390, "clone") if r.get("args")]
    assert [a["index"] for r in clone for a in r["args"]] == [1]  # s390's argument order


def test_docker_profile_capabilities_select_rules() -> None:
    plain = seccomp.from_docker_profile(_docker(), ["CAP_CHOWN"], kernel=(6, 1))
    assert not _allowed(plain, "mount") and not _allowed(plain, "reboot")
    (clone,) = _allowed(plain, "clone")
    assert clone["args"] == [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]
    assert [r["errnoRet"] for r in _allowed(plain, "clone3")] == [errno.ENOSYS]
    admin = seccomp.from_docker_profile(_docker(), ["sys_admin", "CAP_SYS_BOOT"], kernel=(6, 1))
    assert _allowed(admin, "mount") and _allowed(admin, "reboot")
    assert [r.get("args") for r in _allowed(admin, "clone")] == [None]  # excluded the masked one
    assert [r["action"] for r in _allowed(admin, "clone3")] == ["SCMP_ACT_ALLOW"]


def test_docker_profile_min_kernel() -> None:
    old = seccomp.from_docker_profile(_docker(), [], kernel=(4, 7))
    new = seccomp.from_docker_profile(_docker(), [], kernel=(4, 8))
    assert not _allowed(old, "ptrace") and _allowed(new, "ptrace")


def test_docker_profile_rejects_ambiguous_input() -> None:
    bad = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
           "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}
    with pytest.raises(InvalidArgument, match="either 'architectures' or 'archMap'"):
        seccomp.from_docker_profile(bad, [])
    both = {"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]: use either 'name' or 'names'"):
        seccomp.from_docker_profile(both, [])
    old_style = {"defaultAction": "SCMP_ACT_ERRNO",
                 "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW"}]}
    assert seccomp.from_docker_profile(old_style, [])["syscalls"][0]["names"] == ["read"]


def test_default_profile_compiles_and_decides_like_docker() -> None:
    f = seccomp.compile(seccomp.default_profile(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]))
    assert f.instructions < 4096
    for name in ("read", "openat", "execve", "fchmodat2", "mseal", "listmount", "getppid"):
        assert run(f, name) == ALLOW, name
    for name in ("unshare", "mount", "keyctl", "add_key", "setns", "reboot", "kexec_load"):
        assert run(f, name) == ERRNO(errno.EPERM), name
    assert run(f, "clone", 0x11) == ALLOW  # fork()'s flags
    assert run(f, "clone", 0x10000000 | 0x11) == ERRNO(errno.EPERM)  # CLONE_NEWUSER
    assert run(f, "clone3") == ERRNO(errno.ENOSYS)  # so libc falls back to clone
    assert run(f, "personality", 0xFFFFFFFF) == ALLOW  # a query
    assert run(f, "personality", 0x0040000) == ERRNO(errno.EPERM)  # ADDR_NO_RANDOMIZE
    assert run(f, "socket", 40) == ERRNO(errno.EPERM)  # AF_VSOCK
    assert run(f, "socket", 2) == ALLOW
    assert run(f, "read", arch="x86") == ALLOW and run(f, "mount", arch="x86") == ERRNO(1)
    assert run(f, "read", arch="x32") == ALLOW


def test_default_profile_with_sys_admin_allows_mount() -> None:
    f = seccomp.compile(seccomp.default_profile(["CAP_SYS_ADMIN"]))
    assert run(f, "mount") == ALLOW
    assert run(f, "clone", 0x10000000) == ALLOW
    assert run(f, "clone3") == ALLOW
