"""The read-only form of a snapshot's mounts that export mounts (no kernel needed)."""

from __future__ import annotations

from skiff.core.snapshots import Mount
from skiff.services.export import is_export_view, read_only


def test_active_overlay_becomes_lower_only() -> None:
    active = Mount("overlay", "overlay", ("lowerdir=/s/2/fs:/s/1/fs", "upperdir=/s/3/fs",
                                          "workdir=/s/3/work", "index=off", "redirect_dir=off"))
    (ro,) = read_only([active])
    # the upper directory (the container's changes) is the topmost lower: same merged tree,
    # and neither it nor the work directory is mounted writable a second time
    assert ro.options == ("lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "index=off", "redirect_dir=off",
                          "ro")
    assert (ro.type, ro.source) == ("overlay", "overlay")


def test_view_overlay_and_binds_get_ro() -> None:
    view = Mount("overlay", "overlay", ("lowerdir=/a:/b",))
    assert read_only([view])[0].options == ("lowerdir=/a:/b", "ro")
    rw_bind = Mount("bind", "/s/1/fs", ("rbind", "rw"))
    assert read_only([rw_bind])[0] == Mount("bind", "/s/1/fs", ("rbind", "ro"))
    ro_bind = Mount("bind", "/s/1/fs", ("rbind", "ro"))
    assert read_only([ro_bind])[0] == Mount("bind", "/s/1/fs", ("rbind", "ro"))


def test_export_views_are_recognisable() -> None:
    assert is_export_view("export-0123abcd")
    assert not is_export_view("sha256:0123") and not is_export_view("ctr")
