"""The ``linux.seccomp`` object: its vocabulary (actions, operators, architectures, flags)
and its validation against the OCI schema (config-linux.json / defs-linux.json).
"""

from __future__ import annotations

import json
from collections.abc import Collection

from skiff.errors import InvalidArgument

# SECCOMP_RET_* values (linux/seccomp.h). ERRNO and TRACE carry 16 bits of data.
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,  # libseccomp's KILL is KILL_THREAD
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")

ARCHITECTURES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB", "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)

FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}


def action_value(name: str, errno_ret: object = None) -> int:
    """The SECCOMP_RET_* value of an action; ERRNO and TRACE carry ``errnoRet`` (EPERM if unset).

    runc ignores ``errnoRet`` on the other actions, and so does this.
    """
    value = ACTIONS[name]
    if name in _WITH_DATA:
        value |= (errno_ret if isinstance(errno_ret, int) else 1) & 0xFFFF
    return value


def _json(v: object) -> str:
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _known(v: object, known: Collection[str]) -> bool:
    # Membership without a TypeError for unhashable junk (a list where a name belongs).
    return isinstance(v, str) and v in known


def _uint(v: object, where: str, bits: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < (1 << bits):
        raise InvalidArgument(f"{where}: must be an unsigned {bits}-bit integer, got {_json(v)}")
    return v


def _errno(v: object, where: str) -> None:
    # The kernel keeps 16 bits of data for ERRNO/TRACE; refuse what would be truncated.
    if v is not None:
        _uint(v, where, 16)


def validate(seccomp: object, where: str = "linux.seccomp") -> None:
    """Check ``linux.seccomp`` against the OCI schema and the values this runtime knows.

    Every error names the field path and the value. Unknown syscall names are not errors:
    a profile lists calls of many architectures.
    """
    if not isinstance(seccomp, dict):
        raise InvalidArgument(f"{where}: must be an object, got {type(seccomp).__name__}")
    action = seccomp.get("defaultAction")
    if action is None:
        raise InvalidArgument(f"{where}.defaultAction: required")
    if not _known(action, ACTIONS):
        raise InvalidArgument(f"{where}.defaultAction: unknown action {_json(action)}")
    _errno(seccomp.get("defaultErrnoRet"), f"{where}.defaultErrnoRet")
    for key in ("listenerPath", "listenerMetadata"):
        v = seccomp.get(key)
        if v is not None and not isinstance(v, str):
            raise InvalidArgument(f"{where}.{key}: must be a string, got {_json(v)}")
    for field, known, what in (("architectures", ARCHITECTURES, "architecture"),
                               ("flags", FLAGS, "flag")):
        values = seccomp.get(field)
        if values is None:
            continue
        if not isinstance(values, list):
            raise InvalidArgument(f"{where}.{field}: must be a list, got {_json(values)}")
        for i, v in enumerate(values):
            if not _known(v, known):
                raise InvalidArgument(f"{where}.{field}[{i}]: unknown {what} {_json(v)}")
    rules = seccomp.get("syscalls")
    if rules is None:
        return
    if not isinstance(rules, list):
        raise InvalidArgument(f"{where}.syscalls: must be a list, got {_json(rules)}")
    for i, rule in enumerate(rules):
        _validate_rule(rule, f"{where}.syscalls[{i}]")


def _validate_rule(rule: object, where: str) -> None:
    if not isinstance(rule, dict):
        raise InvalidArgument(f"{where}: must be an object, got {_json(rule)}")
    names = rule.get("names")
    if not isinstance(names, list) or not names:
        raise InvalidArgument(f"{where}.names: must be a non-empty list of syscall names, "
                              f"got {_json(names)}")
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{where}.names[{j}]: must be a syscall name, got {_json(name)}")
    action = rule.get("action")
    if not _known(action, ACTIONS):
        if action is None:
            raise InvalidArgument(f"{where}.action: required")
        raise InvalidArgument(f"{where}.action: unknown action {_json(action)}")
    _errno(rule.get("errnoRet"), f"{where}.errnoRet")
    args = rule.get("args")
    if args is None:
        return
    if not isinstance(args, list):
        raise InvalidArgument(f"{where}.args: must be a list, got {_json(args)}")
    for k, arg in enumerate(args):
        w = f"{where}.args[{k}]"
        if not isinstance(arg, dict):
            raise InvalidArgument(f"{w}: must be an object, got {_json(arg)}")
        if "index" not in arg:
            raise InvalidArgument(f"{w}.index: required")
        index = arg["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
            raise InvalidArgument(f"{w}.index: must be 0..5 (a syscall has six arguments), "
                                  f"got {_json(index)}")
        if "value" not in arg:
            raise InvalidArgument(f"{w}.value: required")
        _uint(arg["value"], f"{w}.value", 64)
        if arg.get("valueTwo") is not None:
            _uint(arg["valueTwo"], f"{w}.valueTwo", 64)
        op = arg.get("op")
        if not _known(op, OPERATORS):
            if op is None:
                raise InvalidArgument(f"{w}.op: required")
            raise InvalidArgument(f"{w}.op: unknown operator {_json(op)}")
