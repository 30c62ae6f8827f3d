"""The v2 device filter, run through a small interpreter of the eBPF subset it uses.

The interpreter follows the eBPF semantics of each opcode independently of the assembler, so
a wrong jump offset, register or comparison in the generated code makes these tests fail.
The real kernel runs the same programs in tests/integration/test_cgroups_v2.py.
"""

from __future__ import annotations

import struct

import pytest

from skiff.runtime.cgroups import bpf
from skiff.runtime.cgroups.resources import DeviceRule, parse_resources

M32 = 0xFFFFFFFF


def run(prog: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    pc = 0
    n = len(prog) // 8
    steps = 0
    while True:
        assert 0 <= pc < n, f"pc {pc} out of program"
        steps += 1
        assert steps < 10_000
        code, r, off, imm = struct.unpack_from("<BBhi", prog, pc * 8)
        dst, src = r & 0xF, r >> 4
        pc += 1
        if code == 0x61:  # ldxw: only ctx loads (src == r1 == ctx base) are expected
            assert src == 1 and regs[1] == 0 and off in (0, 4, 8)
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0xBC:
            regs[dst] = regs[src] & M32
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & M32
        elif code == 0x74:
            regs[dst] = (regs[dst] & M32) >> imm
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            if regs[dst] != imm:
                pc += off
        elif code == 0x5D:
            if regs[dst] != regs[src]:
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


C, B = bpf.DEV_CHAR, bpf.DEV_BLOCK
R, W, MK = bpf.ACC_READ, bpf.ACC_WRITE, bpf.ACC_MKNOD


def program(rules: list[dict[str, object]]) -> bytes:
    parsed = parse_resources({"devices": rules}).devices
    assert parsed is not None
    return bpf.device_program(parsed)


def test_docker_like_rules() -> None:
    prog = program([
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},   # null
        {"allow": True, "type": "c", "major": 136, "access": "rw"},              # pts
        {"allow": True, "type": "c", "access": "m"},                             # mknod any c
    ])
    assert run(prog, C, R | W, 1, 3) == 1
    assert run(prog, C, MK, 1, 3) == 1
    assert run(prog, C, R, 1, 5) == 0          # /dev/zero not listed
    assert run(prog, C, R | W, 136, 7) == 1
    assert run(prog, C, R | MK, 136, 7) == 0   # access must be a subset of the rule's
    assert run(prog, C, MK, 200, 1) == 1
    assert run(prog, B, MK, 8, 0) == 0         # mknod rule was for char devices only
    assert run(prog, B, R, 1, 3) == 0          # type matters


def test_last_matching_rule_wins() -> None:
    prog = program([
        {"allow": True, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
        {"allow": True, "type": "c", "major": 1, "access": "w"},
    ])
    assert run(prog, C, W, 1, 3) == 1   # the later allow overrides the deny
    prog = program([
        {"allow": True, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "access": "w"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
    ])
    assert run(prog, C, W, 1, 3) == 0
    assert run(prog, C, R, 1, 3) == 1   # default (allow all) for what no rule names
    assert run(prog, B, R | W | MK, 8, 1) == 1


def test_without_a_reset_the_default_is_allow_like_a_new_v1_cgroup() -> None:
    prog = program([{"allow": False, "type": "b", "access": "rwm"}])
    assert run(prog, B, R, 8, 0) == 0
    assert run(prog, C, R, 1, 3) == 1


def test_narrow_all_type_rule_matches_both_types() -> None:
    prog = program([{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "a", "major": 7, "access": "r"}])
    assert run(prog, C, R, 7, 1) == 1 and run(prog, B, R, 7, 2) == 1
    assert run(prog, C, W, 7, 1) == 0 and run(prog, C, R, 8, 1) == 0


@pytest.mark.parametrize("n", [0, 1, 40])
def test_program_size_and_termination(n: int) -> None:
    rules = [DeviceRule(False, "a", -1, -1, "rwm")] + [
        DeviceRule(True, "c", 10, i, "rw") for i in range(n)]
    prog = bpf.device_program(rules)
    assert len(prog) % 8 == 0
    for i in range(n):
        assert run(prog, C, R, 10, i) == 1
    assert run(prog, C, R, 10, n) == 0
