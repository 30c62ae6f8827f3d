"""The compiled-filter cache under the runtime root."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.errors import InvalidArgument
from skiff.runtime import seccomp_cache
from skiff.runtime.seccomp_compile import compile

PROFILE = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}


def test_a_hit_returns_what_the_compiler_made(tmp_path: Path) -> None:
    first = seccomp_cache.load_or_compile(str(tmp_path), PROFILE)
    assert first == compile(PROFILE)
    entries = list((tmp_path / ".seccomp").iterdir())
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600
    # a hit does not compile: poison the compiler and ask again
    orig = seccomp_cache.compile
    seccomp_cache.compile = lambda _s: (_ for _ in ()).throw(AssertionError("compiled"))  # type: ignore[assignment]
    try:
        assert seccomp_cache.load_or_compile(str(tmp_path), PROFILE) == first
    finally:
        seccomp_cache.compile = orig


def test_another_profile_is_a_miss_and_a_damaged_entry_is_ignored(tmp_path: Path) -> None:
    seccomp_cache.load_or_compile(str(tmp_path), PROFILE)
    other = {**PROFILE, "defaultAction": "SCMP_ACT_KILL_PROCESS"}
    assert seccomp_cache.load_or_compile(str(tmp_path), other) == compile(other)
    assert len(list((tmp_path / ".seccomp").iterdir())) == 2
    for entry in (tmp_path / ".seccomp").iterdir():
        entry.write_bytes(b"junk")
    assert seccomp_cache.load_or_compile(str(tmp_path), PROFILE) == compile(PROFILE)


def test_a_bad_profile_is_refused_and_not_cached(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        seccomp_cache.load_or_compile(str(tmp_path), {"defaultAction": "SCMP_ACT_BOGUS"})
    assert not (tmp_path / ".seccomp").exists() or not any((tmp_path / ".seccomp").iterdir())
