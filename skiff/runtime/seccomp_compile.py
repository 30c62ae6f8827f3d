"""Compile a ``linux.seccomp`` object into a classic-BPF seccomp program.

The program: dispatch on the audit architecture, then per ABI a binary search over the syscall
number whose leaves are either a return value or a block of argument checks for that syscall.
The semantics (what wins when, how arguments compare) are listed in :mod:`skiff.runtime.seccomp`.
"""

from __future__ import annotations

import os

from skiff.errors import Unavailable
from skiff.runtime import seccomp_tables
from skiff.runtime.records import record
from skiff.runtime.seccomp_bpf import JEQ, JGE, JGT, Assembler, Label
from skiff.runtime.seccomp_spec import ACTIONS, FLAGS, action_value, validate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_RET_KILL_PROCESS = ACTIONS["SCMP_ACT_KILL_PROCESS"]
_RET_ENOSYS = ACTIONS["SCMP_ACT_ERRNO"] | 38
_NON_DENYING = (ACTIONS["SCMP_ACT_ALLOW"], ACTIONS["SCMP_ACT_LOG"], ACTIONS["SCMP_ACT_TRACE"])
_FLAG_WAIT_KILLABLE_RECV = FLAGS["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]

_AUDIT_ARCH_X86_64 = 0xC000003E
_AUDIT_ARCH_I386 = 0x40000003
_X32_SYSCALL_BIT = 0x40000000
_U32 = 0xFFFFFFFF

# seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian here).
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16


@record(frozen=True)
class Filter:
    """A compiled filter: the packed ``struct sock_filter`` array and the seccomp(2) flags.

    Plain bytes and an int, so it can be computed in one process and handed to another.
    """

    program: bytes
    flags: int

    @property
    def instructions(self) -> int:
        return len(self.program) // 8


@record(frozen=True)
class _Cond:
    arg: int
    op: str
    value: int
    value_two: int


if TYPE_CHECKING:
    from typing import TypeAlias

    # What a syscall number leads to: a return value (int) or ("block", index into the blocks).
    _Target: TypeAlias = int | tuple[str, int]
    # One syscall's conditional rules: (ANDed conditions, action), tried in order.
    _Rules: TypeAlias = list[tuple[tuple[_Cond, ...], int]]
    _Block: TypeAlias = "tuple[Label, _Section, _Rules, int]"  # (entry, ABI, rules, fallback)


class _Section:
    """One audit architecture's view: syscall table, argument width, and its rules."""

    def __init__(self, table: dict[str, int], base: int, wide_args: bool) -> None:
        self.table = table
        self.base = base
        self.wide_args = wide_args
        self.conditional: dict[int, _Rules] = {}
        self.unconditional: dict[int, int] = {}
        self.named: set[int] = set()  # every number a rule names, whatever its action


def _conditions(args: list[dict[str, Any]] | None) -> list[tuple[_Cond, ...]]:
    """The rule's conditions as ORed groups of ANDed conditions (see the module doc)."""
    conds = tuple(_Cond(a["index"], a["op"], a["value"], a.get("valueTwo") or 0)
                  for a in args or [])
    if len({c.arg for c in conds}) < len(conds):
        return [(c,) for c in conds]
    return [conds]


def _always(c: _Cond, wide: bool) -> bool:
    """A masked compare of nothing against nothing: true for every argument.

    libseccomp drops such a condition (so the rule counts as one without conditions, which
    matters for precedence); on 32-bit ABIs that includes masks whose low word is zero.
    """
    width = (1 << 64) - 1 if wide else _U32
    return c.op == "SCMP_CMP_MASKED_EQ" and c.value & width == 0 and c.value_two & width == 0


def _native_arch() -> str:
    machine = os.uname().machine
    if machine != "x86_64":
        raise Unavailable(f"seccomp: no syscall table for host architecture {machine}; "
                          "skiff-runtime supports x86_64")
    return "SCMP_ARCH_X86_64"


def compile(seccomp: dict[str, Any]) -> Filter:
    """Compile a validated-or-not ``linux.seccomp`` object into a loadable :class:`Filter`."""
    validate(seccomp)
    if seccomp.get("listenerPath") or any(
            r.get("action") == "SCMP_ACT_NOTIFY" for r in seccomp.get("syscalls") or []) \
            or seccomp["defaultAction"] == "SCMP_ACT_NOTIFY":
        raise Unavailable("linux.seccomp: SCMP_ACT_NOTIFY / listenerPath (a seccomp user-space "
                          "supervisor) is not supported by skiff-runtime")
    arches = {_native_arch(), *(seccomp.get("architectures") or [])}
    default = action_value(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"))
    flags = 0
    for name in seccomp.get("flags") or []:
        flags |= FLAGS[name]
    # Without a listener there is nothing to wait on; the kernel rejects the flag alone.
    flags &= ~_FLAG_WAIT_KILLABLE_RECV

    x86_64 = _Section(seccomp_tables.X86_64, 0, True)
    x32 = _Section(seccomp_tables.X32, _X32_SYSCALL_BIT, False) \
        if "SCMP_ARCH_X32" in arches else None
    i386 = _Section(seccomp_tables.I386, 0, False) if "SCMP_ARCH_X86" in arches else None
    sections = [s for s in (x86_64, x32, i386) if s is not None]

    _collect(seccomp.get("syscalls") or [], sections, default)
    return Filter(_program(x86_64, x32, i386, default), flags)


def _collect(rules: list[dict[str, Any]], sections: list[_Section], default: int) -> None:
    """Sort the rules into each ABI's per-syscall rule lists."""
    for rule in rules:
        act = action_value(rule["action"], rule.get("errnoRet"))
        groups = _conditions(rule.get("args"))
        for sec in sections:
            nrs = [sec.table[n] + sec.base for n in rule["names"] if n in sec.table]
            sec.named.update(nrs)
            if act == default:
                continue  # runc drops these (libseccomp refuses them), so it cannot override
            for group in groups:
                kept = tuple(c for c in group if not _always(c, sec.wide_args))
                for nr in nrs:
                    if kept:
                        sec.conditional.setdefault(nr, []).append((kept, act))
                    else:
                        # libseccomp keeps the first of several (it ignores the rest).
                        sec.unconditional.setdefault(nr, act)
            if sec.table is seccomp_tables.I386 and groups == [()]:
                _multiplexed(sec, rule["names"], act)


def _multiplexed(sec: _Section, names: list[str], act: int) -> None:
    """On i386 a socket or SysV IPC call may also arrive through socketcall(2) or ipc(2).

    Like libseccomp, a rule without conditions for, say, ``socket`` also matches
    ``socketcall(SYS_SOCKET, ...)``. (libseccomp also does so, with the conditions dropped,
    for rules with conditions; the real arguments sit in memory a filter cannot read, so
    skiff does not: it would allow more than the rule says.)
    """
    for name in names:
        for mux, calls in (("socketcall", seccomp_tables.SOCKETCALL),
                           ("ipc", seccomp_tables.IPC_CALLS)):
            if name in calls:
                nr = sec.table[mux]
                cond = _Cond(0, "SCMP_CMP_EQ", calls[name], 0)
                sec.conditional.setdefault(nr, []).append(((cond,), act))


def _program(x86_64: _Section, x32: _Section | None, i386: _Section | None,
             default: int) -> bytes:
    """Architecture dispatch, one search tree per ABI, then the argument-check blocks."""
    asm = Assembler()
    blocks: list[_Block] = []
    # Jumps to far sections go through an explicit ``ja`` (32-bit reach) so that the
    # assembler rarely needs trampolines, which cost it another pass.
    asm.load(_OFF_ARCH)
    l_x86_64, l_kill = Label(), Label()
    asm.jump(JEQ, _AUDIT_ARCH_X86_64, l_x86_64, None)
    l_i386 = Label()
    if i386 is not None:
        asm.jump(JEQ, _AUDIT_ARCH_I386, None, l_kill)
        asm.goto(l_i386)
    asm.place(l_kill)
    asm.ret(_RET_KILL_PROCESS)

    # x86_64 and x32 share AUDIT_ARCH_X86_64; x32 numbers carry __X32_SYSCALL_BIT. nr == -1
    # (a tracer cancelling a syscall) is not x32: it goes to the native tree like libseccomp.
    asm.place(l_x86_64)
    asm.load(_OFF_NR)
    l_native, l_x32 = Label(), Label()
    asm.jump(JGE, _X32_SYSCALL_BIT, None, l_native)
    asm.jump(JEQ, _U32, l_native, None)
    if x32 is None:
        asm.ret(_RET_KILL_PROCESS)
    else:
        asm.goto(l_x32)
    asm.place(l_native)
    _emit_section(asm, x86_64, default, blocks)
    if x32 is not None:
        asm.place(l_x32)
        _emit_section(asm, x32, default, blocks)
    if i386 is not None:
        asm.place(l_i386)
        asm.load(_OFF_NR)
        _emit_section(asm, i386, default, blocks)
    for label, sec, rules, fallback in blocks:
        asm.place(label)
        _emit_block(asm, sec, rules, fallback)
    return asm.assemble()


def _emit_section(asm: Assembler, sec: _Section, default: int,
                  blocks: list[_Block]
                  ) -> None:
    """A binary search over the syscall number (already in A) to each number's outcome."""
    leaves: dict[int, _Target] = {}
    for nr, act in sec.unconditional.items():
        leaves[nr] = act
    for nr, rules in sec.conditional.items():
        if nr in sec.unconditional:
            continue  # libseccomp: a rule without conditions overrides those with
        # Trailing rules that end where the default would anyway change nothing.
        while rules and rules[-1][1] == default:
            rules = rules[:-1]
        if not rules:
            leaves[nr] = default
            continue
        label = Label()
        blocks.append((label, sec, rules, default))
        leaves[nr] = ("block", len(blocks) - 1)
    named = sec.named
    above: int = default
    if named and default not in _NON_DENYING:
        above = _RET_ENOSYS
    intervals = _intervals(leaves, default, above, max(named) if named else -1)
    _emit_tree(asm, intervals, 0, len(intervals), blocks)


def _intervals(leaves: dict[int, _Target], default: int, above: int,
               last: int) -> list[tuple[int, _Target]]:
    """Cover 0..2**32-1 with (start, target) runs, merging neighbours with equal targets."""
    out: list[tuple[int, _Target]] = []

    def add(start: int, target: _Target) -> None:
        if not out or out[-1][1] != target:
            out.append((start, target))

    cur = 0
    for nr in sorted(leaves):
        if nr > cur:
            add(cur, default)
        add(nr, leaves[nr])
        cur = nr + 1
    if cur <= last:
        add(cur, default)
        cur = last + 1
    if cur <= _U32:
        add(cur, above)
    return out


def _emit_tree(asm: Assembler, runs: list[tuple[int, _Target]], lo: int, hi: int,
               blocks: list[_Block]
               ) -> None:
    if hi - lo == 1:
        target = runs[lo][1]
        if isinstance(target, int):
            asm.ret(target)
        else:
            asm.goto(blocks[target[1]][0])
        return
    mid = (lo + hi) // 2
    right = Label()
    asm.jump(JGE, runs[mid][0], right, None)
    _emit_tree(asm, runs, lo, mid, blocks)
    asm.place(right)
    _emit_tree(asm, runs, mid, hi, blocks)


def _emit_block(asm: Assembler, sec: _Section, rules: _Rules,
                fallback: int) -> None:
    """Argument checks for one syscall: first rule whose conditions all hold wins."""
    for conds, act in rules:
        fail = Label()
        for cond in conds:
            _emit_cond(asm, cond, fail, sec.wide_args)
        asm.ret(act)
        asm.place(fail)
    asm.ret(fallback)


def _emit_cond(asm: Assembler, c: _Cond, fail: Label, wide: bool) -> None:
    """Fall through when the condition holds, jump to ``fail`` when it does not."""
    lo_off = _OFF_ARGS + 8 * c.arg
    hi_off = lo_off + 4
    v_lo, v_hi = c.value & _U32, (c.value >> 32) & _U32
    ok = Label()
    if c.op == "SCMP_CMP_MASKED_EQ":
        d_lo, d_hi = c.value_two & _U32, (c.value_two >> 32) & _U32
        if wide:
            asm.load(hi_off)
            asm.and_(v_hi)
            asm.jump(JEQ, d_hi, None, fail)
        asm.load(lo_off)
        asm.and_(v_lo)
        asm.jump(JEQ, d_lo, None, fail)
        return
    if c.op == "SCMP_CMP_EQ":
        if wide:
            asm.load(hi_off)
            asm.jump(JEQ, v_hi, None, fail)
        asm.load(lo_off)
        asm.jump(JEQ, v_lo, None, fail)
        return
    if c.op == "SCMP_CMP_NE":
        if wide:
            asm.load(hi_off)
            asm.jump(JEQ, v_hi, None, ok)
        asm.load(lo_off)
        asm.jump(JEQ, v_lo, fail, None)
        asm.place(ok)
        return
    # Ordered comparisons: decide on the high words unless they are equal.
    greater = c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
    if wide:
        asm.load(hi_off)
        asm.jump(JGT, v_hi, ok if greater else fail, None)
        asm.jump(JEQ, v_hi, None, fail if greater else ok)
    asm.load(lo_off)
    if c.op == "SCMP_CMP_GT":
        asm.jump(JGT, v_lo, None, fail)
    elif c.op == "SCMP_CMP_GE":
        asm.jump(JGE, v_lo, None, fail)
    elif c.op == "SCMP_CMP_LT":
        asm.jump(JGE, v_lo, fail, None)
    else:  # SCMP_CMP_LE
        asm.jump(JGT, v_lo, fail, None)
    asm.place(ok)
