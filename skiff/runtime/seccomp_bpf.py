"""A small classic-BPF assembler for seccomp programs: labels, far jumps, packing.

The seccomp compiler emits instructions that jump to labels; this module turns them into the
kernel's ``struct sock_filter`` array. Conditional jumps in classic BPF reach at most 255
instructions forward, so a jump that ends up further away is routed through an unconditional
``ja`` trampoline (32-bit reach) placed right after it. All jumps go forward (the kernel refuses
anything else), so labels may only be used before they are placed.
"""

from __future__ import annotations

import functools
import struct

from skiff.errors import InvalidArgument

# Opcodes (linux/bpf_common.h), combined the only ways seccomp needs them.
LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word of seccomp_data at k
AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: A &= k
JA = 0x05  # BPF_JMP | BPF_JA: pc += k
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGT = 0x25  # BPF_JMP | BPF_JGT | BPF_K (unsigned)
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K (unsigned)
RET = 0x06  # BPF_RET | BPF_K

MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs
_MAX_COND = 255  # jt/jf are 8-bit offsets

_pack = struct.Struct("=HBBI").pack  # struct sock_filter, native endian like the kernel


class Label:
    """A position in the program: the instruction emitted right after ``Assembler.place``."""

    __slots__ = ("insn",)

    def __init__(self) -> None:
        self.insn: Insn | None = None


class Insn:
    """One instruction; jump targets are labels (``None`` means the next instruction)."""

    __slots__ = ("code", "jf", "jt", "k")

    def __init__(self, code: int, k: int, jt: Label | None = None, jf: Label | None = None):
        self.code = code
        self.k = k
        self.jt = jt
        self.jf = jf


class Assembler:
    def __init__(self) -> None:
        self.code: list[Insn] = []
        self._pending: list[Label] = []

    def _emit(self, insn: Insn) -> None:
        for label in self._pending:
            label.insn = insn
        self._pending.clear()
        self.code.append(insn)

    def place(self, label: Label) -> None:
        """Make ``label`` point at the next instruction emitted."""
        self._pending.append(label)

    def load(self, offset: int) -> None:
        self._emit(Insn(LD_ABS, offset))

    def and_(self, k: int) -> None:
        self._emit(Insn(AND_K, k))

    def ret(self, k: int) -> None:
        self._emit(Insn(RET, k))

    def jump(self, op: int, k: int, jt: Label | None, jf: Label | None) -> None:
        self._emit(Insn(op, k, jt, jf))

    def goto(self, target: Label) -> None:
        self._emit(Insn(JA, 0, target))

    def assemble(self) -> bytes:
        """Resolve labels (adding trampolines where needed) and pack the program."""
        if self._pending:
            raise AssertionError("a label was placed after the last instruction")
        code = self.code
        while True:
            fixed = _add_trampolines(code)
            if fixed is None:
                break
            code = fixed
        if len(code) > MAX_INSNS:
            raise InvalidArgument(f"linux.seccomp: the filter compiles to {len(code)} BPF "
                                  f"instructions; the kernel accepts at most {MAX_INSNS}")
        index = {id(insn): i for i, insn in enumerate(code)}
        out = []
        for i, insn in enumerate(code):
            if insn.code == JA:
                assert insn.jt is not None and insn.jt.insn is not None
                out.append(_pack(JA, 0, 0, index[id(insn.jt.insn)] - i - 1))
            elif insn.code in (JEQ, JGT, JGE):
                out.append(_pack(insn.code, _offset(insn.jt, i, index),
                                 _offset(insn.jf, i, index), insn.k))
            else:
                out.append(_pack(insn.code, 0, 0, insn.k))
        return b"".join(out)


def _offset(label: Label | None, i: int, index: dict[int, int]) -> int:
    if label is None:
        return 0
    assert label.insn is not None, "jump to a label that was never placed"
    off = index[id(label.insn)] - i - 1
    assert 0 <= off <= _MAX_COND, f"conditional jump offset {off} out of range"
    return off


def _add_trampolines(code: list[Insn]) -> list[Insn] | None:
    """One pass: reroute far conditional jumps through ``ja``; None when none was needed.

    Inserting instructions only lengthens other jumps, so repeating until a pass changes
    nothing terminates (a rerouted jump has offsets 0 and 1 and never needs it again).
    """
    index = {id(insn): i for i, insn in enumerate(code)}
    out: list[Insn] | None = None
    for i, insn in enumerate(code):
        far_t = far_f = False
        if insn.code in (JEQ, JGT, JGE):
            far_t = _too_far(insn.jt, i, index)
            far_f = _too_far(insn.jf, i, index)
        if not (far_t or far_f):
            if out is not None:
                out.append(insn)
            continue
        if out is None:
            out = code[:i]
        nxt = Label()
        nxt.insn = code[i + 1]  # a conditional jump is never the last instruction
        jt, jf = insn.jt or nxt, insn.jf or nxt
        hops = []
        if far_t:
            hop_t = Insn(JA, 0, jt)
            jt = Label()
            jt.insn = hop_t
            hops.append(hop_t)
        if far_f:
            hop_f = Insn(JA, 0, jf)
            jf = Label()
            jf.insn = hop_f
            hops.append(hop_f)
        # Mutate rather than replace: labels elsewhere point at this very object.
        insn.jt, insn.jf = jt, jf
        out.append(insn)
        out.extend(hops)
    return out


def _too_far(label: Label | None, i: int, index: dict[int, int]) -> bool:
    return label is not None and label.insn is not None and \
        index[id(label.insn)] - i - 1 > _MAX_COND


_unpack = struct.Struct("=HBBI").iter_unpack
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K


@functools.lru_cache(maxsize=8)
def _decode(program: bytes) -> list[tuple[int, int, int, int]]:
    return list(_unpack(program))


def evaluate(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (),
             ip: int = 0) -> int:
    """Run ``program`` on one syscall the way the kernel would; return the SECCOMP_RET value.

    For tests and for explaining a filter's decision without loading it. Supports the
    instructions :class:`Assembler` emits, plus ``jset`` (libseccomp's programs use it).
    """
    full = (*args, 0, 0, 0, 0, 0, 0)[:6]
    data = struct.pack("=iIQ6Q", nr if nr < 0x80000000 else nr - (1 << 32), arch, ip,
                       *(a & ((1 << 64) - 1) for a in full))
    insns = _decode(program)
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == LD_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == AND_K:
            acc &= k
        elif code == JA:
            pc += k
        elif code == JEQ:
            pc += jt if acc == k else jf
        elif code == JGT:
            pc += jt if acc > k else jf
        elif code == JGE:
            pc += jt if acc >= k else jf
        elif code == _JSET:
            pc += jt if acc & k else jf
        elif code == RET:
            return int(k)
        else:
            raise ValueError(f"unsupported BPF opcode {code:#x} at {pc - 1}")
