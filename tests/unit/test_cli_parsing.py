"""run/create flags -> the create body; Docker's flag syntax and value units; dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skiff.cli import main as climain
from skiff.cli.exits import UsageError, start_failure_code
from skiff.cli.parsing import detach_keys, duration_ns, parser, ram_bytes
from skiff.cli.runflags import add_run_flags, create_body, parse_mount, parse_ports


def run_body(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    p = parser("skiff run")
    add_run_flags(p)
    args = p.parse(list(argv))
    return create_body(args, env or {}, detach=args.detach, auto_remove=args.rm)


def test_positional_split_and_combined_short_flags() -> None:
    body = run_body("-it", "--rm", "busybox", "sh", "-c", "echo -n hi --rm")
    assert body["Image"] == "busybox"
    assert body["Cmd"] == ["sh", "-c", "echo -n hi --rm"]  # flags after the image are its own
    assert (body["Tty"], body["OpenStdin"], body["AttachStdin"], body["StdinOnce"]) == (
        True, True, True, True)
    assert body["HostConfig"]["AutoRemove"] is True
    assert run_body("busybox")["Cmd"] is None


def test_detached_attaches_nothing() -> None:
    body = run_body("-d", "busybox", "true")
    assert (body["AttachStdin"], body["AttachStdout"], body["AttachStderr"]) == (
        False, False, False)
    assert run_body("busybox")["AttachStdout"] is True


def test_env_labels_workdir_user_name(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\n\nPASSED\n")
    body = run_body("-e", "A=1", "-e", "HOME_VAR", "-e", "UNSET", "--env-file", str(env_file),
                    "-l", "k=v", "--label", "empty", "-w", "/tmp", "-u", "1000:1000",
                    "--entrypoint", "", "--hostname", "box", "busybox",
                    env={"HOME_VAR": "h", "PASSED": "p"})
    assert body["Env"] == ["FROM_FILE=1", "PASSED=p", "A=1", "HOME_VAR=h"]
    assert body["Labels"] == {"k": "v", "empty": ""}
    assert (body["WorkingDir"], body["User"], body["Hostname"]) == ("/tmp", "1000:1000", "box")
    assert body["Entrypoint"] == [""]


def test_resources_and_confinement() -> None:
    hc = run_body("--memory", "64m", "--memory-swap", "-1", "--cpus", "1.5", "--pids-limit",
                  "20", "--read-only", "--tmpfs", "/run:rw,size=1m", "--cap-add", "NET_ADMIN",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                  "--ulimit", "nofile=100:200", "--init", "--privileged", "--network", "none",
                  "--restart", "on-failure:3", "--runtime", "runc", "--shm-size", "1g",
                  "busybox")["HostConfig"]
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["MemorySwap"] == -1
    assert hc["NanoCpus"] == 1_500_000_000 and hc["PidsLimit"] == 20
    assert hc["ReadonlyRootfs"] and hc["Init"] and hc["Privileged"]
    assert hc["Tmpfs"] == {"/run": "rw,size=1m"}
    assert (hc["CapAdd"], hc["CapDrop"]) == (["NET_ADMIN"], ["ALL"])
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    assert hc["NetworkMode"] == "none" and hc["Runtime"] == "runc"
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["ShmSize"] == 1 << 30


def test_stop_and_health() -> None:
    body = run_body("--stop-signal", "SIGUSR1", "--stop-timeout", "3", "--health-cmd",
                    "true", "--health-interval", "1m30s", "--health-retries", "2", "busybox")
    assert body["StopSignal"] == "SIGUSR1" and body["StopTimeout"] == 3
    assert body["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 90 * 10**9,
                                   "Retries": 2}
    assert run_body("--no-healthcheck", "busybox")["Healthcheck"] == {"Test": ["NONE"]}


def test_volumes_mounts_ports_pass_through() -> None:
    body = run_body("-v", "/a:/b:ro", "--mount", "type=bind,src=/x,dst=/y,readonly",
                    "-p", "127.0.0.1:8080:80", "-p", "53/udp", "--expose", "9000", "busybox")
    hc = body["HostConfig"]
    assert hc["Binds"] == ["/a:/b:ro"]
    assert hc["Mounts"] == [{"Type": "bind", "Source": "/x", "Target": "/y", "ReadOnly": True}]
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                                  "53/udp": [{"HostIp": "", "HostPort": ""}]}
    assert body["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}


def test_bool_flags_take_explicit_values() -> None:
    p = parser("skiff run")
    add_run_flags(p)
    args = p.parse(["--sig-proxy=false", "--rm=true", "-d=false", "busybox", "--rm=false"])
    assert (args.sig_proxy, args.rm, args.detach) == (False, True, False)
    assert args.command == ["--rm=false"]
    with pytest.raises(UsageError):
        p.parse(["--rm=maybe", "busybox"])


@pytest.mark.parametrize("argv", [["--restart", "sometimes", "busybox"],
                                  ["--memory", "lots", "busybox"],
                                  ["--ulimit", "nofile=x", "busybox"],
                                  ["-p", "80:http", "busybox"],
                                  ["--mount", "type=bind,src=/x", "busybox"],
                                  ["--no-such-flag", "busybox"],
                                  ["-d", "-a", "stdout", "busybox"],
                                  []])
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        run_body(*argv)


def test_units() -> None:
    assert ram_bytes("512") == 512 and ram_bytes("1k") == 1024 and ram_bytes("2MB") == 2 << 20
    assert duration_ns("500ms") == 500_000_000 and duration_ns("1h2m") == 3720 * 10**9
    with pytest.raises(UsageError):
        duration_ns("5 parsecs")
    assert detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert detach_keys("a,ctrl-[") == b"a\x1b"
    with pytest.raises(UsageError):
        detach_keys("ctrl-?")
    assert parse_ports(["8080:80"])[1] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert parse_mount("type=tmpfs,target=/t,tmpfs-size=1m")["TmpfsOptions"] == {
        "SizeBytes": 1 << 20}


@pytest.mark.parametrize(("message", "code"), [
    ('exec: "nosuch": executable file not found in $PATH', 127),
    ("exec /bin/x: no such file or directory", 127),
    ("exec /etc: permission denied", 126),
    ("exec /etc: is a directory", 126),
    ("No such image: nope", 125),
])
def test_start_failure_codes(message: str, code: int) -> None:
    assert start_failure_code(message) == code


def test_management_aliases_and_unknown_commands() -> None:
    assert climain.resolve(["container", "ls", "-a"]) == ("ps", ["-a"])
    assert climain.resolve(["image", "rm", "x"]) == ("rmi", ["x"])
    assert climain.resolve(["system", "df"]) == ("system_df", [])
    assert climain.resolve(["container", "prune"]) == ("container_prune", [])
    for bad in (["nope"], ["container", "nope"], ["system_df"]):
        with pytest.raises(climain.UsageErrorLazy):
            climain.resolve(bad)
    # every command named in the table exists in its module
    for name in climain.COMMANDS:
        assert callable(climain.command(name))


def test_global_flags() -> None:
    g, rest = climain.parse_globals(["-H", "unix:///x.sock", "--tlsverify", "--debug", "ps",
                                     "-a"])
    assert (g.host, g.tls, g.tlsverify, rest) == ("unix:///x.sock", True, True, ["ps", "-a"])
    g, rest = climain.parse_globals(["--host=tcp://h:1", "images"])
    assert g.host == "tcp://h:1" and rest == ["images"]
    with pytest.raises(climain.UsageErrorLazy):
        climain.parse_globals(["--bogus", "ps"])


def test_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert climain.main(["--version"]) == 0
    assert "skiff version" in capsys.readouterr().out
    assert climain.main(["frobnicate"]) == 125
    assert "not a skiff command" in capsys.readouterr().err
    assert climain.main(["run"]) == 125  # missing image: a usage error, not argparse's 2
    assert "required" in capsys.readouterr().err
    assert climain.main(["ps", "--help"]) == 0
