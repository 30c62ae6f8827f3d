"""Hostile layers: every escape is refused, names the entry, and leaves the outside untouched."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from skiff.core.snapshots import WhiteoutForm
from skiff.errors import InvalidArgument
from skiff.plugins.diff import confine
from skiff.plugins.diff.tar import apply_layer
from tests.unit.test_layer_support import E, make_tar


class Scene:
    """dest/ to extract into, and outside/ beside it holding a sentinel that must not change."""

    def __init__(self, tmp: Path) -> None:
        self.dest = tmp / "root" / "dest"
        self.outside = tmp / "root" / "outside"
        self.dest.mkdir(parents=True)
        self.outside.mkdir()
        self.sentinel = self.outside / "sentinel"
        self.sentinel.write_bytes(b"precious")
        self.before = self._snapshot()

    def _snapshot(self) -> dict[str, tuple[int, int, int, str]]:
        out = {}
        for path in sorted(self.dest.parent.rglob("*")):
            if path == self.dest or self.dest in path.parents:
                continue
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[str(path)] = (st.st_mode, st.st_nlink, st.st_size, digest)
        return out

    def assert_outside_untouched(self) -> None:
        assert self._snapshot() == self.before
        assert self.sentinel.read_bytes() == b"precious"


@pytest.fixture(params=["openat2", "nofollow-walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each case with openat2 and with the fallback walk used on kernels without it."""
    if request.param == "openat2":
        if not confine.openat2_available():
            pytest.skip("kernel without openat2")
    else:
        monkeypatch.setattr(confine, "_have_openat2", False)
    return str(request.param)


def _cases(s: Scene) -> dict[str, tuple[list[list[E]], str]]:
    out = str(s.outside)
    return {
        "dotdot": ([[E("../outside/sentinel", data=b"pwned")]], "../outside/sentinel"),
        "dotdot-inside-name": ([[E("a/../../outside/sentinel", data=b"pwned")]], "a/../../outside"),
        "absolute": ([[E(str(s.sentinel), data=b"pwned")]], str(s.sentinel)),
        "symlink-then-write-through": (
            [[E("evil", "symlink", link=out), E("evil/sentinel", data=b"pwned")]], "evil/sentinel"),
        "relative-symlink-then-write-through": (
            [[E("evil", "symlink", link="../outside"), E("evil/sentinel", data=b"pwned")]],
            "evil/sentinel"),
        "symlink-from-earlier-layer": (
            [[E("evil", "symlink", link=out)], [E("evil/sentinel", data=b"pwned")]], "evil/sentinel"),
        "implied-parent-through-symlink": (
            [[E("evil", "symlink", link=out), E("evil/new/deeper", data=b"pwned")]], "evil/new/deeper"),
        "hardlink-absolute": ([[E("shadow", "hardlink", link=str(s.sentinel))]], "shadow"),
        "hardlink-dotdot": ([[E("shadow", "hardlink", link="../outside/sentinel")]], "shadow"),
        "hardlink-through-symlink": (
            [[E("evil", "symlink", link=out), E("shadow", "hardlink", link="evil/sentinel")]],
            "shadow"),
        "dir-replaced-by-symlink": (
            [[E("d", "dir"), E("d", "symlink", link=out), E("d/sentinel", data=b"pwned")]],
            "d/sentinel"),
        "whiteout-dotdot": ([[E("../outside/.wh.sentinel")]], "../outside/.wh.sentinel"),
        "whiteout-of-dotdot-name": ([[E("a/.wh..."), E("a", "dir")]], "a/.wh..."),
        "whiteout-through-symlink": (
            [[E("evil", "symlink", link=out), E("evil/.wh.sentinel")]], "evil/.wh.sentinel"),
        "opaque-through-symlink": (
            [[E("evil", "symlink", link=out), E("evil/.wh..wh..opq")]], "evil/.wh..wh..opq"),
        "symlink-loop": (
            [[E("loop", "symlink", link="loop"), E("loop/x", data=b"x")]], "loop/x"),
    }


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return list(_cases(Scene(Path(tmp))))


@pytest.mark.parametrize("form", [WhiteoutForm.DELETE, WhiteoutForm.OVERLAY])
@pytest.mark.parametrize("case", _case_names())
def test_escape_is_refused_naming_the_entry(tmp_path: Path, resolver: str, case: str,
                                            form: WhiteoutForm) -> None:
    scene = Scene(tmp_path)
    layers, entry = _cases(scene)[case]
    with pytest.raises(InvalidArgument) as info:
        for layer in layers:
            apply_layer(io.BytesIO(make_tar(layer)), str(scene.dest), form)
    message = str(info.value)
    assert "layer entry" in message and entry in message, message
    scene.assert_outside_untouched()


def test_symlink_replaced_by_directory_stays_inside(tmp_path: Path, resolver: str) -> None:
    """The other order of the trick: a real directory replaces the symlink, so no escape."""
    scene = Scene(tmp_path)
    layer = [E("d", "symlink", link=str(scene.outside)), E("d", "dir"), E("d/sentinel", data=b"mine")]
    apply_layer(io.BytesIO(make_tar(layer)), str(scene.dest))
    assert (scene.dest / "d").is_dir() and not (scene.dest / "d").is_symlink()
    assert (scene.dest / "d/sentinel").read_bytes() == b"mine"
    scene.assert_outside_untouched()


def test_symlinks_that_stay_inside_are_followed_for_parents(tmp_path: Path) -> None:
    """Debian's merged /usr: bin -> usr/bin, then a later layer writes bin/tool."""
    if not confine.openat2_available():
        pytest.skip("kernel without openat2: the fallback refuses every symlinked parent")
    scene = Scene(tmp_path)
    apply_layer(io.BytesIO(make_tar([E("usr/bin", "dir"), E("bin", "symlink", link="usr/bin")])),
                str(scene.dest))
    apply_layer(io.BytesIO(make_tar([E("bin/tool", data=b"t")])), str(scene.dest))
    assert (scene.dest / "usr/bin/tool").read_bytes() == b"t"
    scene.assert_outside_untouched()


def test_symlink_entries_may_point_anywhere(tmp_path: Path) -> None:
    """A symlink is data: creating one to /etc/passwd is fine as long as nothing follows it."""
    scene = Scene(tmp_path)
    apply_layer(io.BytesIO(make_tar([E("passwd", "symlink", link="/etc/passwd"),
                                     E("up", "symlink", link="../../outside")])), str(scene.dest))
    assert os.readlink(scene.dest / "passwd") == "/etc/passwd"
    scene.assert_outside_untouched()



def test_lower_layers_are_read_confined_too(tmp_path: Path) -> None:
    """Metadata for implied directories is looked up in lowers without following their symlinks."""
    scene = Scene(tmp_path)
    lower = tmp_path / "lower"
    lower.mkdir()
    os.symlink(str(scene.outside), lower / "home")  # a lower layer's hostile symlink
    (scene.outside / "x").mkdir(mode=0o700)
    os.chmod(scene.outside / "x", 0o711)
    scene.before = scene._snapshot()
    apply_layer(io.BytesIO(make_tar([E("home/x/f", data=b"f")])), str(scene.dest),
                WhiteoutForm.OVERLAY, [str(lower)])
    assert oct((scene.dest / "home/x").stat().st_mode & 0o7777) == oct(0o755)  # not 0o711
    scene.assert_outside_untouched()


def test_write_through_a_dangling_symlink_is_refused(tmp_path: Path, resolver: str) -> None:
    scene = Scene(tmp_path)
    with pytest.raises(InvalidArgument, match="d/x"):
        apply_layer(io.BytesIO(make_tar([E("d", "symlink", link="missing"), E("d/x", data=b"x")])),
                    str(scene.dest))
    assert not (scene.dest / "missing").exists()
    scene.assert_outside_untouched()
