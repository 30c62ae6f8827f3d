"""cgroup v2 device control: an eBPF BPF_PROG_TYPE_CGROUP_DEVICE program built from OCI rules.

cgroup v2 has no devices files; the kernel instead runs every eBPF program attached to the
cgroup (and its ancestors) on each device open/mknod and denies when one returns 0. We assemble
the program ourselves (a handful of instructions per rule) and load/attach it with bpf(2).

The program sees ``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`` where
``access_type = (access << 16) | type``. Rules are checked last to first so that the last
matching rule wins, as in the OCI spec; no match returns the default verdict.
"""

from __future__ import annotations

import ctypes
import os
import struct

from skiff.errors import SystemFailure, os_error
from skiff.runtime import syscalls

from .resources import DeviceRule, effective_device_rules

SYS_BPF = 321  # x86_64

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

DEV_BLOCK = 1
DEV_CHAR = 2
ACC_MKNOD = 1
ACC_READ = 2
ACC_WRITE = 4

_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}
_ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

# Opcodes (class | op | source) of the few instructions we emit.
LDX_MEM_W = 0x61    # dst = *(u32 *)(src + off)
ALU32_MOV_X = 0xBC  # dst = src (32-bit)
ALU32_AND_K = 0x54  # dst &= imm (32-bit)
ALU32_RSH_K = 0x74  # dst >>= imm (32-bit)
MOV64_K = 0xB7      # dst = imm
JNE_K = 0x55        # if dst != imm: pc += off
JNE_X = 0x5D        # if dst != src: pc += off
EXIT = 0x95

R0, R1, R2, R3, R4, R5 = range(6)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One 8-byte struct bpf_insn."""
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def _rule_block(rule: DeviceRule) -> list[bytes]:
    """Instructions that return the rule's verdict when it matches, else fall through."""
    checks: list[list[bytes]] = []
    if rule.type != "a":
        checks.append([insn(JNE_K, R2, imm=_TYPES[rule.type])])
    mask = sum(_ACCESS[c] for c in rule.access)
    if mask != ACC_MKNOD | ACC_READ | ACC_WRITE:
        # The request matches only if every access it asks for is one the rule names.
        checks.append([insn(ALU32_MOV_X, R1, R3), insn(ALU32_AND_K, R1, imm=mask),
                       insn(JNE_X, R1, R3)])
    if rule.major >= 0:
        checks.append([insn(JNE_K, R4, imm=rule.major)])
    if rule.minor >= 0:
        checks.append([insn(JNE_K, R5, imm=rule.minor)])
    verdict = [insn(MOV64_K, R0, imm=1 if rule.allow else 0), insn(EXIT)]

    out: list[bytes] = []
    remaining = sum(len(c) for c in checks) + len(verdict)
    for group in checks:
        for ins in group:
            remaining -= 1
            if ins[0] in (JNE_K, JNE_X):
                # Jump past the rest of this block, to the next rule.
                code, regs, _off, imm = struct.unpack("<BBhi", ins)
                ins = struct.pack("<BBhi", code, regs, remaining, imm)
            out.append(ins)
    return out + verdict


def device_program(rules: tuple[DeviceRule, ...] | list[DeviceRule]) -> bytes:
    """Assemble the device filter for ``rules`` (OCI order) into eBPF bytecode."""
    default, exceptions = effective_device_rules(tuple(rules))
    prog = [
        insn(LDX_MEM_W, R2, R1, 0),    # r2 = access_type
        insn(ALU32_MOV_X, R3, R2),
        insn(ALU32_RSH_K, R3, imm=16),  # r3 = access
        insn(ALU32_AND_K, R2, imm=0xFFFF),  # r2 = type
        insn(LDX_MEM_W, R4, R1, 4),    # r4 = major
        insn(LDX_MEM_W, R5, R1, 8),    # r5 = minor
    ]
    for rule in reversed(exceptions):
        prog.extend(_rule_block(rule))
    prog += [insn(MOV64_K, R0, imm=1 if default else 0), insn(EXIT)]
    return b"".join(prog)


# --- bpf(2) ---------------------------------------------------------------------------------

def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    ret = int(syscalls.libc().syscall(SYS_BPF, cmd, attr, len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _load(code: bytes) -> int:
    """BPF_PROG_LOAD; on rejection, load again with the verifier log to explain why."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                         ctypes.addressof(insns), ctypes.addressof(license_))
        if log is not None:
            struct.pack_into("<IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
        struct.pack_into("<I", attr, 68, BPF_CGROUP_DEVICE)  # expected_attach_type
        return _bpf(BPF_PROG_LOAD, attr)

    try:
        return attempt(None)
    except OSError as exc:
        log = ctypes.create_string_buffer(65536)
        try:
            attempt(log)
        except OSError:
            pass
        detail = log.value.decode(errors="replace").strip()
        raise SystemFailure(f"load cgroup device eBPF program ({len(code) // 8} insns): "
                            f"{os.strerror(exc.errno or 0)}"
                            + (f": {detail}" if detail else "")) from exc


def _query(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(64)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0)
    struct.pack_into("<QI", attr, 16, ctypes.addressof(ids), len(ids))
    _bpf(BPF_PROG_QUERY, attr)
    (count,) = struct.unpack_from("<I", attr, 24)
    return [ids[i] for i in range(min(count, len(ids)))]


def _prog_fd(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(64)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr)


def _attach_cmd(cmd: int, cgroup_fd: int, prog_fd: int, flags: int) -> None:
    attr = ctypes.create_string_buffer(64)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags)
    _bpf(cmd, attr)


def attached_programs(cgroup_dir: str) -> list[int]:
    """Ids of the device programs attached directly to ``cgroup_dir``."""
    fd = _open_dir(cgroup_dir)
    try:
        return _query(fd)
    except OSError as exc:
        raise os_error("query device eBPF programs of", cgroup_dir, exc) from exc
    finally:
        os.close(fd)


def _open_dir(cgroup_dir: str) -> int:
    try:
        return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error("open cgroup", cgroup_dir, exc) from exc


def apply_device_rules(cgroup_dir: str, rules: tuple[DeviceRule, ...]) -> None:
    """Attach a program for ``rules`` to ``cgroup_dir`` and detach the ones it replaces.

    The new program goes in before the old ones leave (BPF_F_ALLOW_MULTI) so that an update
    never opens a window in which the container sees no device filter at all.
    """
    fd = _open_dir(cgroup_dir)
    try:
        try:
            old = _query(fd)
        except OSError as exc:
            raise os_error("query device eBPF programs of", cgroup_dir, exc) from exc
        prog = _load(device_program(rules))
        try:
            _attach_cmd(BPF_PROG_ATTACH, fd, prog, BPF_F_ALLOW_MULTI)
        except OSError as exc:
            raise os_error("attach device eBPF program to", cgroup_dir, exc) from exc
        finally:
            os.close(prog)
        for prog_id in old:
            try:
                old_fd = _prog_fd(prog_id)
            except FileNotFoundError:
                continue  # already gone
            except OSError as exc:
                raise os_error(f"open device eBPF program {prog_id} of", cgroup_dir,
                               exc) from exc
            try:
                _attach_cmd(BPF_PROG_DETACH, fd, old_fd, 0)
            except OSError as exc:
                raise os_error(f"detach device eBPF program {prog_id} from", cgroup_dir,
                               exc) from exc
            finally:
                os.close(old_fd)
    finally:
        os.close(fd)
