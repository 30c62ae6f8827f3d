"""skiffd's flags and daemon.json: merging, conflicts, hosts, runtimes, event time parsing."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import pytest

from skiff import errors
from skiff.daemon.config import (
    DEFAULT_HOST,
    DaemonConfig,
    Host,
    RuntimeSpec,
    load_file,
    parse_host,
)
from skiff.daemon.containers.record import Container
from skiff.daemon.containers.runner import Paths, Runner
from skiff.daemon.main import load_config, parse_args, tls_context
from skiff.daemon.routers.events import parse_timestamp
from skiff.daemon.routers.system import registry_config


def write(tmp_path: Path, obj: object) -> str:
    path = tmp_path / "daemon.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


# --- hosts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("unix:///run/x.sock", Host("unix", "/run/x.sock")),
    ("tcp://127.0.0.1:2375", Host("tcp", "127.0.0.1", 2375)),
    ("tcp://:4000", Host("tcp", "127.0.0.1", 4000)),
    ("tcp://localhost", Host("tcp", "localhost", 2375)),
    ("tcp://[::1]:99", Host("tcp", "::1", 99)),
    ("tcp://0.0.0.0:2376/", Host("tcp", "0.0.0.0", 2376)),
])
def test_parse_host(text: str, want: Host) -> None:
    assert parse_host(text) == want


def test_parse_host_default_port_follows_tls() -> None:
    assert parse_host("tcp://10.0.0.1", tls=True).port == 2376
    assert parse_host("tcp://10.0.0.1", tls=False).port == 2375


@pytest.mark.parametrize("text", ["unix://", "unix://relative.sock", "fd://", "http://x:1",
                                  "/run/x.sock", "tcp://h:0", "tcp://h:99999", "tcp://h:x",
                                  "tcp://::1:2", "tcp://h:1/path", "tcp://[::1"])
def test_parse_host_refuses(text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid host"):
        parse_host(text)


def test_loopback() -> None:
    assert parse_host("tcp://127.0.0.5:1").loopback and parse_host("tcp://[::1]:1").loopback
    assert parse_host("tcp://localhost:1").loopback and parse_host("unix:///x").loopback
    assert not parse_host("tcp://0.0.0.0:1").loopback
    assert not parse_host("tcp://example.com:1").loopback
    assert str(parse_host("tcp://[::1]:5")) == "tcp://[::1]:5"


# --- flags and file ---------------------------------------------------------------------------


def test_defaults_without_a_default_file() -> None:
    if os.path.exists("/etc/skiff/daemon.json"):
        pytest.skip("this machine has an /etc/skiff/daemon.json: the defaults are not ours")
    cfg = load_config(["--data-root", "/d"])  # the default file is absent: no error
    assert cfg.hosts == (DEFAULT_HOST,) and cfg.live_restore is True
    assert cfg.default_runtime_name == "skiff-runtime" and not cfg.tls_enabled


def test_repeatable_flags() -> None:
    cfg = parse_args(["-H", "unix:///tmp/a.sock", "-H", "tcp://127.0.0.1:2375",
                      "--insecure-registry", "10.0.0.0/8", "--insecure-registry", "r:5000",
                      "--registry-mirror", "https://m1", "--registry-mirror", "https://m2",
                      "--live-restore=false", "-D", "--add-runtime", "alt=/bin/true"])
    assert cfg.hosts == ("unix:///tmp/a.sock", "tcp://127.0.0.1:2375")
    assert cfg.socket_path == "/tmp/a.sock"
    assert cfg.insecure_registries == ("10.0.0.0/8", "r:5000")
    assert cfg.registry_mirrors == ("https://m1", "https://m2")
    assert cfg.live_restore is False and cfg.debug is True
    assert cfg.runtime_table()["alt"] == RuntimeSpec("/bin/true")


def test_file_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "hosts": ["unix:///tmp/f.sock"], "data-root": "rel", "exec-root": "/e",
        "pidfile": "/p", "log-level": "warn", "debug": False,
        "insecure-registries": ["127.0.0.1:5000"], "registry-mirrors": ["https://m"],
        "default-runtime": "alt", "runtimes": {"alt": {"path": "/usr/bin/alt",
                                                        "runtimeArgs": ["--debug"]}},
        "live-restore": False, "tls": False, "tlsverify": False,
        "tlscacert": "", "tlscert": "", "tlskey": ""})
    cfg = parse_args(["--config-file", path])
    assert cfg == DaemonConfig(
        hosts=("unix:///tmp/f.sock",), data_root=os.path.abspath("rel"), exec_root="/e",
        pidfile="/p", log_level="warn", insecure_registries=("127.0.0.1:5000",),
        registry_mirrors=("https://m",), default_runtime="alt",
        runtimes=(("alt", RuntimeSpec("/usr/bin/alt", ("--debug",))),), live_restore=False)
    assert cfg.runtime == "/usr/bin/alt"


def test_flag_and_file_clash_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, {"hosts": ["unix:///tmp/f.sock"], "debug": True})
    with pytest.raises(errors.InvalidArgument) as info:
        load_config(["--config-file", path, "-H", "unix:///tmp/g.sock", "--debug=false"])
    msg = info.value.message
    assert path in msg and "both as a flag and in the configuration file" in msg
    assert "debug: (from flag: false, from file: true)" in msg
    assert "hosts: (from flag: [unix:///tmp/g.sock], from file: [unix:///tmp/f.sock])" in msg
    # flags for other keys merge with the file
    cfg = load_config(["--config-file", path, "--data-root", "/x"])
    assert cfg.hosts == ("unix:///tmp/f.sock",) and cfg.debug and cfg.data_root == "/x"


@pytest.mark.parametrize(("content", "needle"), [
    ("{not json", "invalid JSON"),
    ("[]", "want a JSON object"),
    ({"hosts": ["unix:///x"], "bogus-key": 1, "another": 2},
     "don't match any configuration option: another, bogus-key"),
    ({"debug": "yes"}, "debug: want true or false"),
    ({"hosts": "unix:///x"}, "hosts: want a list of strings"),
    ({"runtimes": {"r": {"path": "/x", "extra": 1}}}, "runtimes.r: unknown key(s) extra"),
    ({"runtimes": {"r": {"runtimeArgs": []}}}, "runtimes.r: want"),
    ({"runtimes": {"r": {"path": "/x", "runtimeArgs": "-a"}}}, "runtimes.r.runtimeArgs"),
])
def test_bad_files_name_the_file_and_key(tmp_path: Path, content: object, needle: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(errors.InvalidArgument) as info:
        load_file(path, explicit=True)
    assert path in info.value.message and needle in info.value.message


def test_missing_file_only_an_error_when_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    assert load_file(missing, explicit=False) == {}
    with pytest.raises(errors.InvalidArgument, match=r"nope\.json: no such file"):
        load_file(missing, explicit=True)
    with pytest.raises(SystemExit):
        parse_args(["--config-file", missing])


@pytest.mark.parametrize("argv", [
    ["-H", "tcp://0.0.0.0:2375"],
    ["-H", "tcp://example.com:2375"],
    ["--tls", "-H", "tcp://0.0.0.0:2376"],  # TLS without certificates
    ["--tlsverify", "--tlscert", "c", "--tlskey", "k", "-H", "tcp://0.0.0.0:2376"],  # no CA
    ["--default-runtime", "nosuch"],
    ["--add-runtime", "runc=/bin/true"],  # a built-in name
    ["--add-runtime", "noequals"],
    ["--live-restore=maybe"],
    ["-H", "fd://"],
])
def test_refused(argv: list[str]) -> None:
    with pytest.raises((errors.InvalidArgument, SystemExit)):
        load_config(argv)


def test_non_loopback_without_tls_says_why() -> None:
    with pytest.raises(errors.InvalidArgument, match="without TLS") as info:
        load_config(["-H", "tcp://0.0.0.0:2375"])
    assert "tcp://0.0.0.0:2375" in info.value.message
    # loopback is fine without TLS; with TLS any address is
    assert load_config(["-H", "tcp://127.0.0.1:2375"]).hosts == ("tcp://127.0.0.1:2375",)
    cfg = load_config(["--tls", "--tlscert", "c", "--tlskey", "k", "-H", "tcp://0.0.0.0"])
    assert cfg.parsed_hosts() == [Host("tcp", "0.0.0.0", 2376)]


def test_tls_context_reports_unreadable_certificates(tmp_path: Path) -> None:
    cfg = DaemonConfig(tls=True, tlscert=str(tmp_path / "c.pem"), tlskey=str(tmp_path / "k"))
    with pytest.raises(errors.InvalidArgument, match=r"c\.pem"):
        tls_context(cfg)
    assert tls_context(DaemonConfig()) is None


def test_registry_config_for_info() -> None:
    rc = registry_config(DaemonConfig(insecure_registries=("10.1.0.0/16", "reg:5000"),
                                      registry_mirrors=("https://m",)))
    assert rc["InsecureRegistryCIDRs"] == ["127.0.0.0/8", "::1/128", "10.1.0.0/16"]
    assert rc["IndexConfigs"]["reg:5000"]["Secure"] is False
    assert rc["IndexConfigs"]["docker.io"]["Mirrors"] == ["https://m"] == rc["Mirrors"]


# --- runtimes ---------------------------------------------------------------------------------


def _container(runtime: object) -> Container:
    return Container(id="c" * 64, name="n", image="i", image_id="sha256:" + "0" * 64,
                     config={}, host_config={} if runtime is None else {"Runtime": runtime})


def test_runner_picks_the_containers_runtime_and_its_own_state_root() -> None:
    cfg = DaemonConfig(runtimes=(("alt", RuntimeSpec("/opt/alt", ("--x",))),))
    runner = Runner(Paths("/data", "/exec"), None, cfg.runtime_table(),  # type: ignore[arg-type]
                    cfg.default_runtime_name)
    default = _container(None)
    assert runner.runtime_for(default) == cfg.runtime
    assert runner.runtime_root_for(default) == "/exec/runtime/skiff-runtime"
    # "skiff" is an alias of skiff-runtime: same binary, same state root
    assert runner.runtime_root_for(_container("skiff")) == "/exec/runtime/skiff-runtime"
    alt = _container("alt")
    assert runner.runtime_spec(alt) == RuntimeSpec("/opt/alt", ("--x",))
    assert runner.runtime_root_for(alt) == "/exec/runtime/alt"
    if shutil.which("runc"):
        assert runner.runtime_root_for(_container("runc")) == "/exec/runtime/runc"
    runner.check_runtime("")
    runner.check_runtime("alt")
    for bad in ("nosuch", 5):
        with pytest.raises(errors.InvalidArgument,
                           match=f"unknown or invalid runtime name: {bad}"):
            runner.runtime_for(_container(bad))
    with pytest.raises(errors.InvalidArgument, match="unknown or invalid runtime name: x"):
        runner.check_runtime("x")


def test_default_runtime_given_as_a_path() -> None:
    cfg = load_config(["--default-runtime", "/opt/bin/my-runc"])
    assert cfg.default_runtime_name == "my-runc" and cfg.runtime == "/opt/bin/my-runc"
    assert cfg.runtime_table()["my-runc"] == RuntimeSpec("/opt/bin/my-runc")


def test_runner_accepts_a_bare_path_as_before() -> None:
    runner = Runner(Paths("/d", "/e"), None, "/usr/bin/some-runc")  # type: ignore[arg-type]
    assert runner.runtime_for(_container(None)) == "/usr/bin/some-runc"


# --- since / until ----------------------------------------------------------------------------

NOW = 1_700_000_000 * 10**9


@pytest.mark.parametrize(("text", "want"), [
    ("", None),
    ("1700000000", NOW),
    ("1699999990.5", NOW - 9_500_000_000),
    ("1700000000.000000001", NOW + 1),
    ("10m", NOW - 600 * 10**9),
    ("1h30m", NOW - 5400 * 10**9),
    ("1.5s", NOW - 1_500_000_000),
    ("2023-11-14T22:13:20Z", NOW),
    ("2023-11-14T22:13:20.25Z", NOW + 250_000_000),
    ("2023-11-15T00:13:20+02:00", NOW),
])
def test_parse_timestamp(text: str, want: int | None) -> None:
    assert parse_timestamp(text, NOW, "since") == want


def test_parse_timestamp_local_time_without_zone() -> None:
    local = datetime.datetime(2024, 1, 2, 3, 4, 5).astimezone()
    assert parse_timestamp("2024-01-02T03:04:05", NOW, "since") == \
        int(local.timestamp()) * 10**9


@pytest.mark.parametrize("text", ["yesterday", "10x", "2023-13-45T00:00:00Z", "1.2.3"])
def test_parse_timestamp_refuses(text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid value for until"):
        parse_timestamp(text, NOW, "until")
