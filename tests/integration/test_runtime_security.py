"""skiff-runtime: capabilities, no_new_privs and seccomp, observed from inside containers."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from skiff.runtime.seccomp import default_profile
from tests.integration.support import RuntimeDriver, new_id, read_config, write_config

Bundle = Callable[..., Path]

DOCKER_DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def _bundle_with_probe(make_bundle: Bundle, probe: Path, args: list[str]) -> Path:
    b = make_bundle(args)
    shutil.copy(probe, b / "rootfs" / "bin" / "probe")
    return b


def _set_caps(b: Path, caps: list[str], seccomp: bool) -> None:
    cfg = read_config(b)
    cfg["process"]["capabilities"] = {s: list(caps) for s in
                                      ("bounding", "effective", "permitted", "inheritable")}
    cfg["root"]["readonly"] = False
    if seccomp:
        cfg["linux"]["seccomp"] = default_profile(caps)
    write_config(b, cfg)


def _probes(runtime: RuntimeDriver, b: Path) -> dict[str, str]:
    res = runtime("run", "--bundle", str(b), new_id("sec"), check=False)
    out = {}
    for line in res.out.splitlines():
        name, _, result = line.partition(" ")
        out[name] = result
    assert out, res.err
    return out


SCRIPT = ("for p in unshare-user keyctl add_key mount sethostname getpid; do "
          "echo \"$p $(probe $p)\"; done")


def test_docker_default_profile_blocks_what_docker_blocks(runtime: RuntimeDriver,
                                                          make_bundle: Bundle,
                                                          probe: Path) -> None:
    b = _bundle_with_probe(make_bundle, probe, ["sh", "-c", SCRIPT])
    _set_caps(b, DOCKER_DEFAULT_CAPS, seccomp=True)
    got = _probes(runtime, b)
    assert got["unshare-user"] == "EPERM"
    assert got["keyctl"] == "EPERM"
    assert got["add_key"] == "EPERM"
    assert got["mount"] == "EPERM"
    assert got["getpid"] == "ok"


def test_without_seccomp_the_same_calls_get_through(runtime: RuntimeDriver,
                                                    make_bundle: Bundle, probe: Path) -> None:
    # The control for the test above: it is the filter, not something else, that blocks them.
    b = _bundle_with_probe(make_bundle, probe, ["sh", "-c", SCRIPT])
    _set_caps(b, DOCKER_DEFAULT_CAPS, seccomp=False)
    got = _probes(runtime, b)
    assert got["unshare-user"] == "ok"
    assert got["keyctl"] != "EPERM" or got["add_key"] != "EPERM"
    assert got["getpid"] == "ok"


def test_dropped_capabilities_stop_mount_and_sethostname(runtime: RuntimeDriver,
                                                         make_bundle: Bundle,
                                                         probe: Path) -> None:
    b = _bundle_with_probe(make_bundle, probe, ["sh", "-c", SCRIPT])
    _set_caps(b, DOCKER_DEFAULT_CAPS, seccomp=False)
    got = _probes(runtime, b)
    assert got["mount"] == "EPERM"
    assert got["sethostname"] == "EPERM"
    b2 = _bundle_with_probe(make_bundle, probe, ["sh", "-c", SCRIPT])
    _set_caps(b2, [*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"], seccomp=False)
    got2 = _probes(runtime, b2)
    assert got2["mount"] == "ok"
    assert got2["sethostname"] == "ok"


def test_capability_sets_visible_in_proc_status(runtime: RuntimeDriver,
                                                make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; "
                     "grep NoNewPrivs /proc/self/status"])
    cfg = read_config(b)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["process"]["capabilities"] = {
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_NET_BIND_SERVICE"], "permitted": ["CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    cfg["process"]["noNewPrivileges"] = True
    write_config(b, cfg)
    res = runtime("run", "--bundle", str(b), new_id("caps"))
    fields = dict(line.split(":\t") for line in res.out.splitlines())
    bind = 1 << 10
    assert int(fields["CapBnd"], 16) == bind | (1 << 5)
    # uid 1000 keeps CAP_NET_BIND_SERVICE through exec only by way of the ambient set.
    assert int(fields["CapEff"], 16) == bind
    assert int(fields["CapAmb"], 16) == bind
    assert fields["NoNewPrivs"].strip() == "1"
