"""The mount helper's pure parts: option parsing and lowerdir compaction."""

from __future__ import annotations

from skiff.plugins.snapshots import mount as mnt


def test_flags_propagation_and_data_are_separated() -> None:
    flags, prop, data = mnt.parse_options(
        ["rbind", "ro", "nosuid", "rprivate", "lowerdir=/a:/b", "index=off", "rw"])
    assert flags == mnt.MS_BIND | mnt.MS_REC | mnt.MS_NOSUID  # the later "rw" cleared "ro"
    assert prop == mnt.MS_PRIVATE | mnt.MS_REC
    assert data == ["lowerdir=/a:/b", "index=off"]


def test_lowerdirs_become_relative_to_their_common_directory() -> None:
    root = "/var/lib/skiff/snapshots/snapshots"
    lowers = ":".join(f"{root}/{i}/fs" for i in range(300, 0, -1))
    data = [f"lowerdir={lowers}", f"upperdir={root}/301/fs", f"workdir={root}/301/work"]
    compact = mnt._compact_lowerdir(data)
    assert compact is not None
    workdir, new = compact
    assert workdir == root
    assert new[0] == "lowerdir=" + ":".join(f"{i}/fs" for i in range(300, 0, -1))
    assert new[1:] == data[1:]  # upper and work stay absolute
    assert len(",".join(new)) < mnt._page_limit() < len(",".join(data))


def test_no_compaction_without_a_lowerdir_list() -> None:
    assert mnt._compact_lowerdir(["upperdir=/x"]) is None
    assert mnt._compact_lowerdir(["lowerdir=/only/one"]) is None
    assert mnt._compact_lowerdir(["lowerdir=relative:/abs"]) is None
