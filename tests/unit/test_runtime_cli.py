"""skiff-runtime's pure parts: flag parsing, signals, mount options, namespaces, spec checks."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from skiff.errors import InvalidArgument
from skiff.runtime import cli, config, mounts, namespaces
from skiff.runtime import syscalls as sc
from skiff.runtime.commands import _duration, _int, parse_signal
from skiff.runtime.records import as_dict, field, record, replace
from skiff.runtime.specgen import default_spec


def test_flags_go_style_and_stop_at_the_container_id() -> None:
    cmd = cli.COMMANDS["exec"]
    opts, pos = cli.parse_flags(cmd.flags, ["-e", "A=1", "--env=B=2", "-t", "--cwd", "/x",
                                            "ctr", "sh", "-c", "echo -t"], True)
    assert opts["env"] == ["A=1", "B=2"]
    assert opts["tty"] is True and opts["cwd"] == "/x"
    assert pos == ["ctr", "sh", "-c", "echo -t"]  # -c and -t after the id belong to the command
    opts, pos = cli.parse_flags(cli.COMMANDS["create"].flags,
                                ["-bundle", "/b", "--no-pivot=false", "id1"], True)
    assert opts["bundle"] == "/b" and opts["no_pivot"] is False and pos == ["id1"]


@pytest.mark.parametrize("argv, message", [
    (["--nope", "x"], "flag provided but not defined: --nope"),
    (["--bundle"], "flag needs an argument: --bundle"),
    (["--no-pivot=maybe", "x"], "invalid boolean value"),
])
def test_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        cli.parse_flags(cli.COMMANDS["create"].flags, argv, True)


def test_main_reports_usage_errors_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 1
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["state"]) == 1
    assert "wrong number of arguments" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert "skiff-runtime version" in capsys.readouterr().out


@pytest.mark.parametrize("text, want", [
    ("9", 9), ("KILL", 9), ("SIGKILL", 9), ("term", 15), ("SIGUSR1", int(signal.SIGUSR1)),
    ("SIGRTMIN+2", int(signal.SIGRTMIN) + 2),
])
def test_signals_by_name_and_number(text: str, want: int) -> None:
    assert parse_signal(text) == want


@pytest.mark.parametrize("text", ["0", "65", "SIGNOPE", "", "-1"])
def test_bad_signals(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid signal"):
        parse_signal(text)


def test_sizes_and_durations() -> None:
    assert _int("128m", "--memory") == 128 * 1024 * 1024
    assert _int("1g", "--memory") == 1024**3
    assert _int("512", "--memory") == 512
    with pytest.raises(InvalidArgument, match="--memory"):
        _int("lots", "--memory")
    assert _duration("5s") == 5.0 and _duration("250ms") == 0.25
    with pytest.raises(InvalidArgument):
        _duration("soon")


def test_mount_options_to_flags_and_data() -> None:
    o = mounts.parse_options(["rbind", "ro", "nosuid", "rprivate", "mode=755", "size=1m"])
    assert o.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID
    assert o.propagation == [sc.MS_PRIVATE | sc.MS_REC]
    assert o.data_string == "mode=755,size=1m"
    o = mounts.parse_options(["ro", "rw", "noexec", "exec", "rro"])
    assert o.flags == 0 and o.recursive == ["rro"]
    with pytest.raises(InvalidArgument, match="id-mapped"):
        mounts.parse_options(["idmap"])
    assert mounts.mount_type({"destination": "/x", "options": ["rbind"]}) == "bind"
    assert mounts.recursive_attrs(["rro", "rnosuid", "rrw"])[0] & mounts.MOUNT_ATTR_RDONLY


def test_namespaces_split_and_join_order() -> None:
    flags, join = namespaces.split([
        {"type": "mount"}, {"type": "network", "path": "/proc/1/ns/net"}, {"type": "pid"},
        {"type": "user", "path": "/proc/1/ns/user"},
    ])
    assert flags == sc.CLONE_NEWNS | sc.CLONE_NEWPID
    assert [t for t, _ in join] == ["user", "network"]  # user first: it owns the others
    assert [t for t, _ in namespaces.of_process(7, ["mount", "pid", "user"])] == [
        "user", "pid", "mount"]


def _bundle(tmp_path: Path, **change: Any) -> tuple[Path, dict[str, Any]]:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    spec = default_spec(["true"], terminal=False)
    spec.update(change)
    return tmp_path, spec


def test_valid_default_spec_passes(tmp_path: Path) -> None:
    b, spec = _bundle(tmp_path)
    config.validate(spec, str(b))


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("root"), "root: missing"),
    (lambda s: s.update(ociVersion="2.0.0"), "ociVersion"),
    (lambda s: s["process"].update(args=[]), "process.args"),
    (lambda s: s["process"].update(cwd="rel"), "process.cwd: must be an absolute path"),
    (lambda s: s["process"]["user"].update(uid=-1), "process.user.uid"),
    (lambda s: s["process"]["user"].update(uid=True), "process.user.uid"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pid"}), "listed twice"),
    (lambda s: s["linux"].update(namespaces=[{"type": "pid"}]), "mount namespace is required"),
    (lambda s: s["linux"]["namespaces"].append({"type": "user"}), "needs uid and gid mappings"),
    (lambda s: s["linux"].update(sysctl={"kernel/../../x": "1"}), "invalid name"),
    (lambda s: s.update(hooks={"prestrat": []}), "hooks.prestrat: unknown hook point"),
    (lambda s: s.update(hooks={"prestart": [{"path": "rel"}]}), "must be absolute"),
    (lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "q"}]),
     "linux.devices[0].type"),
    (lambda s: s["mounts"].append({"destination": "/x", "options": ["idmap"]}), "id-mapped"),
    (lambda s: s["process"].update(oomScoreAdj=5000), "oomScoreAdj"),
    (lambda s: s["linux"].update(personality={"domain": "WIN"}), "personality.domain"),
])
def test_bad_spec_names_the_field(tmp_path: Path, mutate: Any, message: str) -> None:
    b, spec = _bundle(tmp_path)
    mutate(spec)
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.validate(spec, str(b))


def test_load_reports_malformed_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(InvalidArgument, match="malformed JSON"):
        config.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps([1]))
    with pytest.raises(InvalidArgument, match="top level must be a JSON object"):
        config.load(str(tmp_path))


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "x y", "../escape"])
def test_bad_container_ids(cid: str) -> None:
    with pytest.raises(InvalidArgument):
        config.validate_id(cid)


@record(frozen=True)
class _Point:
    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)


@record(frozen=True)
class _Pair:
    a: int
    b: int


@record
class _Box:
    size: int


def test_records_behave_like_dataclasses() -> None:
    p = _Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, [])
    assert p == _Point(1, 2) and p != _Point(1, 3)
    assert _Point(1).tags is not _Point(1).tags
    assert repr(p) == "_Point(x=1, y=2, tags=[])"
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    assert as_dict(replace(p, y=9)) == {"x": 1, "y": 9, "tags": []}
    with pytest.raises(TypeError, match="missing argument 'x'"):
        _Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected"):
        _Point(1, z=3)  # type: ignore[call-arg]
    b = _Box(3)
    b.size = 4
    assert b.size == 4
    with pytest.raises(TypeError):
        hash(b)
    assert hash(_Pair(1, 2)) == hash(_Pair(1, 2))
    assert len({_Pair(1, 2), _Pair(1, 2), _Pair(2, 1)}) == 2


def test_untranslated_system_errors_are_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    # --root under a regular file: every state operation fails with ENOTDIR.
    for argv in (["--root", str(blocker / "root"), "list"], ["spec", "--bundle", str(blocker)]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("skiff-runtime: "), err
        assert "Not a directory" in err and str(blocker) in err
