"""capabilities: the name table, validation, masks, and the calls apply/drop_bounding make.

The kernel side (does the process really lose the capability) is in
tests/integration/test_capabilities.py; here the syscall seam is replaced by a recorder to
check which calls are made with which masks.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from skiff.errors import InvalidArgument, SystemFailure
from skiff.runtime import capabilities, syscalls


@pytest.fixture
def warned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The warnings capabilities reports, captured instead of dropped."""
    out: list[str] = []
    monkeypatch.setattr(capabilities, "on_warning", out.append)
    return out


def test_table_covers_every_capability_up_to_checkpoint_restore() -> None:
    assert sorted(capabilities.CAPABILITIES.values()) == list(range(41))
    assert capabilities.CAPABILITIES["CAP_CHOWN"] == 0
    assert capabilities.CAPABILITIES["CAP_NET_BIND_SERVICE"] == 10
    assert capabilities.CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert capabilities.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert all(name.startswith("CAP_") for name in capabilities.CAPABILITIES)


def test_last_cap_reads_the_kernel() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capabilities.last_cap() == int(f.read())


@pytest.mark.parametrize(("caps", "message"), [
    ([], "process.capabilities: must be an object, got list"),
    ({"bounding": ["CAP_FOO"]}, 'process.capabilities.bounding: unknown capability "CAP_FOO"'),
    ({"ambient": ["CAP_KILL", "cap_kill"]},
     'process.capabilities.ambient: unknown capability "cap_kill"'),
    ({"effective": "CAP_KILL"},
     "process.capabilities.effective: must be a list of capability names, got str"),
    ({"permitted": ["CAP_KILL", 5]}, "process.capabilities.permitted[1]: must be a string, got 5"),
    ({"effecive": ["CAP_KILL"]}, 'process.capabilities: unknown capability set "effecive"'),
])
def test_validate_names_the_set_and_the_value(caps: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        capabilities.validate(caps)
    assert str(info.value).startswith(message), str(info.value)


def test_validate_accepts_good_input_and_uses_the_callers_path() -> None:
    capabilities.validate(None)
    capabilities.validate({s: ["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"] for s in capabilities.SETS})
    capabilities.validate({"bounding": None, "effective": []})
    with pytest.raises(InvalidArgument, match=r'^process\[1\]\.caps\.inheritable: unknown'):
        capabilities.validate({"inheritable": ["CAP_X"]}, "process[1].caps")


def test_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "_last_cap", 40)
    assert capabilities.mask([]) == 0
    assert capabilities.mask(["CAP_CHOWN", "CAP_KILL", "CAP_KILL"]) == 0b100001
    assert capabilities.mask(["CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"]) == (1 << 21) | (1 << 40)
    with pytest.raises(InvalidArgument, match='unknown capability "CAP_NOPE"'):
        capabilities.mask(["CAP_NOPE"])


def test_mask_leaves_out_what_the_kernel_lacks(monkeypatch: pytest.MonkeyPatch,
                                               warned: list[str]) -> None:
    monkeypatch.setattr(capabilities, "_last_cap", 37)  # a 5.4-era kernel
    assert capabilities.mask(["CAP_AUDIT_READ", "CAP_BPF", "CAP_PERFMON"]) == 1 << 37
    assert "CAP_BPF" in " ".join(warned) and "CAP_PERFMON" in " ".join(warned)


class Recorder:
    """Stands in for the prctl/capset seam and remembers every call."""

    def __init__(self, fail: dict[tuple[int, ...], int] | None = None,
                 fail_capset: bool = False, held: int = (1 << 41) - 1,
                 held_inh: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail or {}
        self.fail_capset = fail_capset
        self.held = (held, held, held_inh)

    def capget(self) -> tuple[int, int, int]:
        return self.held

    def prctl(self, *args: int) -> int:
        self.calls.append(("prctl", *args))
        for prefix, err in self.fail.items():
            if args[:len(prefix)] == prefix:
                raise OSError(err, "refused")
        return 0

    def capset(self, e: int, p: int, i: int) -> None:
        self.calls.append(("capset", e, p, i))
        if self.fail_capset:
            raise OSError(errno.EPERM, "refused")


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    r = Recorder()
    monkeypatch.setattr(capabilities, "_last_cap", 40)
    monkeypatch.setattr(syscalls, "prctl", r.prctl)
    monkeypatch.setattr(syscalls, "capset", r.capset)
    monkeypatch.setattr(syscalls, "capget", r.capget)
    return r


def test_none_changes_nothing(rec: Recorder) -> None:
    # runc: no capabilities object means the process keeps what it has.
    capabilities.drop_bounding(None)
    capabilities.apply(None)
    assert rec.calls == []


def test_drop_bounding_drops_exactly_the_unlisted(rec: Recorder) -> None:
    capabilities.drop_bounding({"bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                                "effective": ["CAP_SYS_ADMIN"]})
    dropped = [c[2] for c in rec.calls]
    assert all(c[1] == syscalls.PR_CAPBSET_DROP for c in rec.calls)
    assert dropped == [n for n in range(41) if n not in (5, 10)]


def test_drop_bounding_without_a_bounding_list_drops_all(rec: Recorder) -> None:
    capabilities.drop_bounding({"effective": ["CAP_KILL"]})
    assert [c[2] for c in rec.calls] == list(range(41))


def test_apply_sets_sets_then_ambient(rec: Recorder) -> None:
    capabilities.apply({"effective": ["CAP_KILL"], "permitted": ["CAP_KILL", "CAP_CHOWN"],
                        "inheritable": ["CAP_CHOWN"], "ambient": ["CAP_CHOWN"],
                        "bounding": ["CAP_SYS_ADMIN"]})
    assert rec.calls == [
        ("capset", 1 << 5, (1 << 5) | 1, 1),
        ("prctl", syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL),
        ("prctl", syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, 0),
    ]


def test_apply_skips_an_ambient_cap_the_kernel_refuses(monkeypatch: pytest.MonkeyPatch,
                                                       warned: list[str]) -> None:
    r = Recorder({(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, 5): errno.EPERM})
    monkeypatch.setattr(capabilities, "_last_cap", 40)
    monkeypatch.setattr(syscalls, "prctl", r.prctl)
    monkeypatch.setattr(syscalls, "capset", r.capset)
    monkeypatch.setattr(syscalls, "capget", r.capget)
    capabilities.apply({"ambient": ["CAP_KILL", "CAP_CHOWN"]})
    assert r.calls[-1] == ("prctl", syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, 0)
    assert "CAP_KILL" in " ".join(warned)


def test_apply_failure_names_the_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(fail_capset=True)
    monkeypatch.setattr(capabilities, "_last_cap", 40)
    monkeypatch.setattr(syscalls, "capset", r.capset)
    monkeypatch.setattr(syscalls, "capget", r.capget)
    with pytest.raises(SystemFailure, match=r"capset effective=0x20 permitted=0x0 .*EPERM"):
        capabilities.apply({"effective": ["CAP_KILL"]})


def test_apply_leaves_out_what_the_runtime_lacks(monkeypatch: pytest.MonkeyPatch,
                                                 warned: list[str]) -> None:
    # A nested host: the runtime itself lacks CAP_SYS_RESOURCE (24) but has CAP_KILL (5).
    held = ((1 << 41) - 1) & ~(1 << 24)
    r = Recorder(held=held, held_inh=1 << 3)
    monkeypatch.setattr(capabilities, "_last_cap", 40)
    monkeypatch.setattr(syscalls, "prctl", r.prctl)
    monkeypatch.setattr(syscalls, "capset", r.capset)
    monkeypatch.setattr(syscalls, "capget", r.capget)
    both = ["CAP_KILL", "CAP_SYS_RESOURCE"]
    capabilities.apply({"effective": both, "permitted": both,
                        "inheritable": [*both, "CAP_FOWNER"]})
    assert r.calls[0] == ("capset", 1 << 5, 1 << 5, (1 << 5) | (1 << 3))
    assert "CAP_SYS_RESOURCE" in " ".join(warned) and "CAP_KILL" not in " ".join(warned)


def test_drop_bounding_failure_names_the_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder({(syscalls.PR_CAPBSET_DROP, 21): errno.EPERM})
    monkeypatch.setattr(capabilities, "_last_cap", 40)
    monkeypatch.setattr(syscalls, "prctl", r.prctl)
    with pytest.raises(SystemFailure, match="CAP_SYS_ADMIN: EPERM"):
        capabilities.drop_bounding({"bounding": []})
