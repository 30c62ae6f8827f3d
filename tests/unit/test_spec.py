"""The spec builder's rules, one by one (the golden tests check whole specs against dockerd)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skiff.core.snapshots import Mount
from skiff.errors import InvalidArgument, Unavailable
from skiff.runtime.seccomp_profile import from_docker_profile
from skiff.services.spec import (
    ALL_CAPS,
    DEFAULT_CAPS,
    DeviceNode,
    EtcFiles,
    HostDevice,
    ResolvedMount,
    ResolvedUser,
    SpecInputs,
    build_spec,
)

CID = "0123456789ab" + "c" * 52
PROFILE = json.loads((Path(__file__).resolve().parents[2] / "skiff" / "runtime" / "data" /
                      "seccomp-default.json").read_text())


def build(config: dict[str, Any] | None = None, hc: dict[str, Any] | None = None,
          **inputs: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"Cmd": ["sh"]}
    cfg.update(config or {})
    return build_spec(cfg, hc or {}, SpecInputs(container_id=CID, rootfs="/rootfs", **inputs))


def mounts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in spec["mounts"]}


# --- defaults -----------------------------------------------------------------------------


def test_default_spec_shape() -> None:
    spec = build()
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["root"] == {"path": "/rootfs"}
    assert spec["hostname"] == CID[:12]
    assert spec["process"]["args"] == ["sh"]
    assert spec["process"]["cwd"] == "/"
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert spec["process"]["oomScoreAdj"] == 0
    assert "terminal" not in spec["process"]
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    assert mounts(spec)["/dev/shm"]["options"][-1] == "size=67108864"
    assert [n["type"] for n in spec["linux"]["namespaces"]] == [
        "mount", "network", "uts", "pid", "ipc"]
    assert spec["linux"]["cgroupsPath"] == f"/skiff/{CID}"
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0",
                                       "net.ipv4.ping_group_range": "0 2147483647"}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/sys/devices/virtual/powercap" in spec["linux"]["maskedPaths"]
    assert spec["linux"]["readonlyPaths"][0] == "/proc/bus"
    assert "seccomp" not in spec["linux"]  # no profile given: none, as Docker without one
    res = spec["linux"]["resources"]
    assert res["devices"][0] == {"allow": False, "access": "rwm"}
    assert {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"} \
        in res["devices"]
    assert res["memory"] == {"disableOOMKiller": False}
    assert res["cpu"] == {"shares": 0}
    assert res["blockIO"] == {"weight": 0}
    assert "annotations" not in spec


def test_spec_is_json_and_does_not_share_state_between_builds() -> None:
    a = build(hc={"ReadonlyRootfs": True})
    b = build()
    json.dumps(a)
    assert "ro" not in mounts(b)["/dev/mqueue"]["options"]


def test_rootfs_given_as_snapshot_mounts_is_bundle_relative() -> None:
    spec = build_spec({"Cmd": ["sh"]}, {}, SpecInputs(
        container_id=CID, rootfs=[Mount("overlay", "overlay", ("lowerdir=/a",))]))
    assert spec["root"] == {"path": "rootfs"}


# --- command, env, cwd --------------------------------------------------------------------


def test_entrypoint_then_cmd() -> None:
    assert build({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]})["process"]["args"] \
        == ["/bin/sh", "-c", "echo hi"]
    # A string is one argv element, as Docker's StrSlice: no shell splitting.
    assert build({"Entrypoint": None, "Cmd": "echo hi"})["process"]["args"] == ["echo hi"]


@pytest.mark.parametrize("config", [{"Cmd": None}, {"Cmd": []}, {"Cmd": [""]},
                                    {"Cmd": None, "Entrypoint": [""]}])
def test_no_command(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="No command specified"):
        build(config)


def test_env_defaults_and_overrides() -> None:
    spec = build({"Env": ["FOO=1", "PATH=/x", "HOSTNAME=mine", "BAR"], "Tty": True})
    assert spec["process"]["env"] == ["PATH=/x", "HOSTNAME=mine", "TERM=xterm", "FOO=1"]
    assert spec["process"]["terminal"] is True
    # KEY without "=" unsets a default.
    assert build({"Env": ["PATH"]})["process"]["env"] == [f"HOSTNAME={CID[:12]}"]


def test_hostname_from_config_and_env() -> None:
    spec = build({"Hostname": "box"})
    assert spec["hostname"] == "box"
    assert "HOSTNAME=box" in spec["process"]["env"]


def test_bad_env_entry() -> None:
    with pytest.raises(InvalidArgument, match="invalid environment variable"):
        build({"Env": ["=oops"]})


def test_working_dir() -> None:
    assert build({"WorkingDir": "/a/b/../c/"})["process"]["cwd"] == "/a/c"
    with pytest.raises(InvalidArgument, match="needs to be an absolute path"):
        build({"WorkingDir": "rel/dir"})


def test_console_size_only_with_tty() -> None:
    hc = {"ConsoleSize": [24, 80]}
    assert build({"Tty": True}, hc)["process"]["consoleSize"] == {"height": 24, "width": 80}
    assert "consoleSize" not in build({}, hc)["process"]


def test_user_ids_and_non_root_capabilities() -> None:
    spec = build(user=ResolvedUser(1000, 5, (5, 100)))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 5, "additionalGids": [5, 100]}
    # execve drops effective/permitted for non-root anyway; Docker writes bounding only.
    assert spec["process"]["capabilities"] == {"bounding": list(DEFAULT_CAPS)}


def test_stop_signal_and_open_stdin_are_not_spec_fields() -> None:
    spec = build({"StopSignal": "SIGUSR1", "OpenStdin": True, "StdinOnce": True})
    assert "SIGUSR1" not in json.dumps(spec)
    assert build() == build({"OpenStdin": True})


# --- capabilities -------------------------------------------------------------------------


def test_default_caps_for_root() -> None:
    caps = build()["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(DEFAULT_CAPS)
    assert "inheritable" not in caps and "ambient" not in caps


def test_cap_add_drop_names_any_case_with_or_without_prefix() -> None:
    caps = build(hc={"CapAdd": ["sys_admin", "CAP_NET_ADMIN"],
                     "CapDrop": ["net_raw", "CAP_MKNOD"]})["process"]["capabilities"]["bounding"]
    assert caps == [c for c in DEFAULT_CAPS if c not in ("CAP_NET_RAW", "CAP_MKNOD")] + [
        "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]


def test_cap_add_of_a_default_is_not_duplicated() -> None:
    caps = build(hc={"CapAdd": ["CHOWN"]})["process"]["capabilities"]["bounding"]
    assert caps.count("CAP_CHOWN") == 1


def test_cap_add_all_and_drop_all() -> None:
    every = build(hc={"CapAdd": ["ALL"], "CapDrop": ["sys_admin"]})
    assert every["process"]["capabilities"]["bounding"] == [
        c for c in ALL_CAPS if c != "CAP_SYS_ADMIN"]
    none = build(hc={"CapDrop": ["all"], "CapAdd": ["KILL"]})
    assert none["process"]["capabilities"]["bounding"] == ["CAP_KILL"]


def test_unknown_capability() -> None:
    with pytest.raises(InvalidArgument, match='unknown capability: "CAP_FLY"'):
        build(hc={"CapAdd": ["fly"]})


# --- privileged and security options ------------------------------------------------------


def test_privileged() -> None:
    host = [HostDevice("/dev/sda", DeviceNode("b", 8, 0, 0o660, 0, 6))]
    spec = build(hc={"Privileged": True, "CapDrop": ["ALL"]}, host_devices=host,
                 seccomp_profile=PROFILE)
    assert spec["process"]["capabilities"]["bounding"] == list(ALL_CAPS)
    assert spec["linux"]["devices"] == [{"path": "/dev/sda", "type": "b", "major": 8,
                                         "minor": 0, "fileMode": 0o660, "uid": 0, "gid": 6}]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "seccomp" not in spec["linux"]
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert "ro" not in mounts(spec)["/sys"]["options"]
    assert "ro" not in mounts(spec)["/sys/fs/cgroup"]["options"]


def test_all_caps_follow_the_kernel_list_given() -> None:
    spec = build(hc={"Privileged": True}, all_caps=ALL_CAPS[:38])
    assert spec["process"]["capabilities"]["bounding"][-1] == "CAP_AUDIT_READ"


def test_default_seccomp_resolved_for_the_container_caps() -> None:
    plain = build(seccomp_profile=PROFILE, kernel=(6, 1))
    assert plain["linux"]["seccomp"] == from_docker_profile(PROFILE, list(DEFAULT_CAPS),
                                                            "x86_64", (6, 1))
    admin = build(hc={"CapAdd": ["SYS_ADMIN"]}, seccomp_profile=PROFILE)
    names = {n for r in admin["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    plain_names = {n for r in plain["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert "mount" in names and "mount" not in plain_names


def test_seccomp_unconfined_and_custom_profile() -> None:
    assert "seccomp" not in build(hc={"SecurityOpt": ["seccomp=unconfined"]},
                                  seccomp_profile=PROFILE)["linux"]
    custom = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
              "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}
    spec = build(hc={"SecurityOpt": ["seccomp=" + json.dumps(custom)]}, seccomp_profile=PROFILE)
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert spec["linux"]["seccomp"]["syscalls"] == [{"names": ["chmod"],
                                                     "action": "SCMP_ACT_ERRNO"}]
    builtin = build(hc={"SecurityOpt": ["seccomp=builtin"]}, seccomp_profile=PROFILE)
    assert builtin["linux"]["seccomp"] == build(seccomp_profile=PROFILE)["linux"]["seccomp"]


def test_seccomp_bad_json() -> None:
    with pytest.raises(InvalidArgument, match="Decoding seccomp profile failed"):
        build(hc={"SecurityOpt": ["seccomp={nope"]})


def test_no_new_privileges_forms() -> None:
    assert build(hc={"SecurityOpt": ["no-new-privileges"]})["process"]["noNewPrivileges"]
    assert build(hc={"SecurityOpt": ["no-new-privileges=true"]})["process"]["noNewPrivileges"]
    assert "noNewPrivileges" not in build(
        hc={"SecurityOpt": ["no-new-privileges=false"]})["process"]
    with pytest.raises(InvalidArgument, match="invalid --security-opt 2"):
        build(hc={"SecurityOpt": ["no-new-privileges=maybe"]})


def test_systempaths_and_explicit_lists() -> None:
    spec = build(hc={"SecurityOpt": ["systempaths=unconfined"]})
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    spec = build(hc={"MaskedPaths": [], "ReadonlyPaths": ["/proc/x"]})
    assert "maskedPaths" not in spec["linux"]
    assert spec["linux"]["readonlyPaths"] == ["/proc/x"]


def test_apparmor_only_on_apparmor_hosts() -> None:
    assert "apparmorProfile" not in build(hc={"SecurityOpt": ["apparmor=x"]})["process"]
    assert build(apparmor=True)["process"]["apparmorProfile"] == "docker-default"
    assert build(hc={"Privileged": True}, apparmor=True)["process"]["apparmorProfile"] \
        == "unconfined"
    assert build(hc={"SecurityOpt": ["apparmor=mine"]}, apparmor=True)["process"][
        "apparmorProfile"] == "mine"


@pytest.mark.parametrize("opt, message", [
    ("bogus", "invalid --security-opt 1"),
    ("bogus=1", "invalid --security-opt 2"),
    ("label=nonsense", "bad label option"),
    ("systempaths=confined", "invalid --security-opt 2"),
])
def test_bad_security_opts(opt: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc={"SecurityOpt": [opt]})


def test_label_options_are_accepted() -> None:
    build(hc={"SecurityOpt": ["label=disable", "label:type:svirt_t", "disable"]})


# --- mounts -------------------------------------------------------------------------------


def test_binds_and_volumes_options() -> None:
    spec = build(mounts=[
        ResolvedMount("/h/a", "/a", writable=False, propagation="rprivate"),
        ResolvedMount("/h/b", "/b/deeper", propagation="rprivate", non_recursive=True),
        ResolvedMount("/vol/_data", "/v"),
    ])
    m = mounts(spec)
    assert m["/a"] == {"destination": "/a", "type": "bind", "source": "/h/a",
                       "options": ["rbind", "ro", "rprivate"]}
    assert m["/b/deeper"]["options"] == ["bind", "rprivate"]
    assert m["/v"]["options"] == ["rbind"]
    order = [x["destination"] for x in spec["mounts"]]
    assert order.index("/a") < order.index("/v") < order.index("/b/deeper")
    assert "rootfsPropagation" not in spec["linux"]


def test_parents_mount_before_children() -> None:
    spec = build(mounts=[ResolvedMount("/h1", "/a/b/c"), ResolvedMount("/h2", "/a")])
    order = [x["destination"] for x in spec["mounts"]]
    assert order.index("/a") < order.index("/a/b/c")


def test_shared_and_slave_binds_raise_root_propagation() -> None:
    shared = build(mounts=[ResolvedMount("/h", "/s", propagation="rshared"),
                           ResolvedMount("/h", "/t", propagation="rslave")])
    assert shared["linux"]["rootfsPropagation"] == "shared"
    slave = build(mounts=[ResolvedMount("/h", "/t", propagation="slave")])
    assert slave["linux"]["rootfsPropagation"] == "rslave"


def test_bad_mounts() -> None:
    with pytest.raises(InvalidArgument, match="mount path must be absolute"):
        build(mounts=[ResolvedMount("/h", "rel")])
    with pytest.raises(InvalidArgument, match="invalid propagation mode"):
        build(mounts=[ResolvedMount("/h", "/x", propagation="sideways")])
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /x"):
        build(hc={"Tmpfs": {"/x": ""}}, mounts=[ResolvedMount("/h", "/x")])
    with pytest.raises(InvalidArgument, match="mount type unknown"):
        build(hc={"Mounts": [{"Type": "weird", "Target": "/x"}]})


def test_etc_files_and_their_read_only_form() -> None:
    etc = EtcFiles("/d/resolv.conf", "/d/hostname", "/d/hosts")
    m = mounts(build(etc_files=etc))
    assert m["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind",
                               "source": "/d/hosts", "options": ["rbind", "rprivate"]}
    ro = mounts(build(hc={"ReadonlyRootfs": True}, etc_files=etc))
    assert ro["/etc/resolv.conf"]["options"] == ["rbind", "ro", "rprivate"]


def test_user_mount_replaces_etc_file_and_default_mount() -> None:
    etc = EtcFiles(hosts="/d/hosts")
    spec = build(hc={"Tmpfs": {"/dev/shm": "size=1m"}},
                 mounts=[ResolvedMount("/mine", "/etc/hosts", writable=False)], etc_files=etc)
    m = mounts(spec)
    assert m["/etc/hosts"]["source"] == "/mine"
    assert m["/dev/shm"]["source"] == "tmpfs" and "size=1m" in m["/dev/shm"]["options"]
    assert [x["destination"] for x in spec["mounts"]].count("/dev/shm") == 1


def test_mount_over_dev_drops_the_dev_defaults() -> None:
    spec = build(mounts=[ResolvedMount("/hostdev", "/dev")])
    dests = [m["destination"] for m in spec["mounts"]]
    assert "/dev/pts" not in dests and "/dev/mqueue" not in dests and "/dev/shm" not in dests
    assert dests.count("/dev") == 1


def test_readonly_rootfs() -> None:
    spec = build(hc={"ReadonlyRootfs": True, "Tmpfs": {"/run": ""}},
                 mounts=[ResolvedMount("/h", "/data")])
    assert spec["root"] == {"path": "/rootfs", "readonly": True}
    m = mounts(spec)
    for writable in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/data", "/run"):
        assert "ro" not in m[writable]["options"], writable
    assert m["/sys"]["options"].count("ro") == 1


def test_tmpfs_option_merging() -> None:
    m = mounts(build(hc={"Tmpfs": {"/run": "size=10m,noexec,mode=1700", "/d": "",
                                   "/x": "ro,uid=5,exec", "/y": "shared,size=1k,size=2k"}}))
    assert m["/d"]["options"] == ["noexec", "nosuid", "nodev", "rprivate"]
    assert m["/run"]["options"] == ["nosuid", "nodev", "rprivate", "size=10m", "noexec",
                                    "mode=1700"]
    assert m["/x"]["options"] == ["nosuid", "nodev", "rprivate", "ro", "uid=5", "exec"]
    # The last word wins, for flags, propagation and key=value alike.
    assert m["/y"]["options"] == ["noexec", "nosuid", "nodev", "shared", "size=2k"]


@pytest.mark.parametrize("data", ["bogus", "size", "color=red"])
def test_bad_tmpfs_option(data: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid tmpfs option"):
        build(hc={"Tmpfs": {"/t": data}})


def test_tmpfs_path_must_be_absolute() -> None:
    with pytest.raises(InvalidArgument, match="must be absolute"):
        build(hc={"Tmpfs": {"run": ""}})


def test_mount_api_tmpfs() -> None:
    m = mounts(build(hc={"Mounts": [
        {"Type": "tmpfs", "Target": "/t1", "TmpfsOptions": {"SizeBytes": 1 << 20,
                                                            "Mode": 0o700}},
        {"Type": "tmpfs", "Target": "/t2", "ReadOnly": True,
         "TmpfsOptions": {"SizeBytes": 1000}},
        {"Type": "bind", "Source": "/ignored", "Target": "/b"},  # the daemon resolved binds
    ]}))
    assert m["/t1"]["options"] == ["noexec", "nosuid", "nodev", "rprivate", "mode=700",
                                   "size=1m"]
    assert m["/t2"]["options"] == ["noexec", "nosuid", "nodev", "rprivate", "ro", "size=1000"]
    assert "/b" not in m
    with pytest.raises(InvalidArgument, match="field Source must not be specified"):
        build(hc={"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/t"}]})


def test_shm_size_and_ipc_modes() -> None:
    assert mounts(build(hc={"ShmSize": 1 << 20}))["/dev/shm"]["options"][-1] == "size=1048576"
    none = build(hc={"IpcMode": "none"})
    assert "/dev/shm" not in mounts(none)
    assert {"type": "ipc"} in none["linux"]["namespaces"]
    host = build(hc={"IpcMode": "host"})
    assert mounts(host)["/dev/shm"] == {"destination": "/dev/shm", "type": "bind",
                                        "source": "/dev/shm", "options": ["rbind", "rprivate"]}
    assert "ipc" not in [n["type"] for n in host["linux"]["namespaces"]]
    shared = build(hc={"IpcMode": "shareable"}, shm_path="/c/shm")
    assert mounts(shared)["/dev/shm"]["source"] == "/c/shm"
    with pytest.raises(InvalidArgument, match="no /dev/shm source"):
        build(hc={"IpcMode": "shareable"})
    with pytest.raises(InvalidArgument, match="SHM size can not be less than 0"):
        build(hc={"ShmSize": -1})


def test_init() -> None:
    spec = build({"Entrypoint": ["/e"], "Cmd": ["a"]}, {"Init": True}, init_path="/usr/bin/ti")
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "/e", "a"]
    assert mounts(spec)["/sbin/docker-init"] == {"destination": "/sbin/docker-init",
                                                 "type": "bind", "source": "/usr/bin/ti",
                                                 "options": ["bind", "ro"]}
    assert build(init_default=True, init_path="/i")["process"]["args"][0] == "/sbin/docker-init"
    assert build({}, {"Init": False}, init_default=True, init_path="/i")["process"]["args"] \
        == ["sh"]
    with pytest.raises(Unavailable, match="no init binary"):
        build(hc={"Init": True})


# --- namespaces and sysctls ---------------------------------------------------------------


def test_host_modes() -> None:
    spec = build(hc={"NetworkMode": "host", "PidMode": "host", "UTSMode": "host",
                     "IpcMode": "host"})
    assert spec["linux"]["namespaces"] == [{"type": "mount"}]
    assert "hostname" not in spec
    assert "sysctl" not in spec["linux"]
    with_path = build(hc={"NetworkMode": "host"}, netns_path="/run/netns/default")
    assert {"type": "network", "path": "/run/netns/default"} in with_path["linux"]["namespaces"]


def test_netns_prepared_by_the_daemon() -> None:
    spec = build(netns_path="/run/skiff/netns/x")
    assert spec["linux"]["namespaces"][1] == {"type": "network", "path": "/run/skiff/netns/x"}


def test_container_modes_join_given_paths() -> None:
    paths = {"network": "/proc/9/ns/net", "ipc": "/proc/9/ns/ipc", "pid": "/proc/9/ns/pid"}
    spec = build(hc={"NetworkMode": "container:abc", "IpcMode": "container:abc",
                     "PidMode": "container:abc"}, namespace_paths=paths, shm_path="/c/shm")
    assert spec["linux"]["namespaces"] == [
        {"type": "mount"}, {"type": "network", "path": "/proc/9/ns/net"}, {"type": "uts"},
        {"type": "pid", "path": "/proc/9/ns/pid"}, {"type": "ipc", "path": "/proc/9/ns/ipc"}]
    assert "sysctl" not in spec["linux"]  # the other container's network owns those
    with pytest.raises(InvalidArgument, match="gave no namespace path"):
        build(hc={"PidMode": "container:abc"})


def test_cgroupns_private() -> None:
    assert {"type": "cgroup"} in build(hc={"CgroupnsMode": "private"})["linux"]["namespaces"]


@pytest.mark.parametrize("hc, message", [
    ({"IpcMode": "bogus"}, "invalid IPC mode"),
    ({"PidMode": "bogus"}, "invalid PID mode"),
    ({"UTSMode": "private"}, "invalid UTS mode"),
    ({"UsernsMode": "remap"}, "invalid USER mode"),
    ({"CgroupnsMode": "shared"}, "invalid cgroup namespace mode"),
    ({"NetworkMode": "container:"}, "invalid network mode"),
])
def test_bad_modes(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc=hc)


def test_sysctls() -> None:
    spec = build({"Domainname": "example.org"},
                 {"Sysctls": {"net.ipv4.ip_unprivileged_port_start": "1024",
                              "kernel.msgmax": "65536", "fs.mqueue.msg_max": "20"}})
    assert spec["linux"]["sysctl"] == {
        "net.ipv4.ip_unprivileged_port_start": "1024", "kernel.msgmax": "65536",
        "fs.mqueue.msg_max": "20", "net.ipv4.ping_group_range": "0 2147483647",
        "kernel.domainname": "example.org"}


@pytest.mark.parametrize("hc, message", [
    ({"Sysctls": {"vm.swappiness": "1"}}, "not in a separate kernel namespace"),
    ({"Sysctls": {"net.core.somaxconn": "1"}, "NetworkMode": "host"},
     "not allowed in host network namespace"),
    ({"Sysctls": {"kernel.shmmax": "1"}, "IpcMode": "host"}, "host IPC namespace"),
    ({"Sysctls": {"kernel.hostname": "x"}, "UTSMode": "host"}, "host UTS namespace"),
    ({"Sysctls": {"net.core.somaxconn": 1}}, "value must be a string"),
])
def test_bad_sysctls(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc=hc)


# --- cgroups ------------------------------------------------------------------------------


def test_cgroups_path_drivers() -> None:
    assert build(hc={"CgroupParent": "/mine"})["linux"]["cgroupsPath"] == f"/mine/{CID}"
    assert build(cgroup_parent="/docker")["linux"]["cgroupsPath"] == f"/docker/{CID}"
    assert build(cgroup_driver="systemd")["linux"]["cgroupsPath"] == \
        f"system.slice:skiff:{CID}"
    assert build(hc={"CgroupParent": "my.slice"}, cgroup_driver="systemd")["linux"][
        "cgroupsPath"] == f"my.slice:skiff:{CID}"
    with pytest.raises(InvalidArgument, match=r'valid slice named as "xxx\.slice"'):
        build(hc={"CgroupParent": "/mine"}, cgroup_driver="systemd")
    with pytest.raises(InvalidArgument, match="unknown cgroup driver"):
        build(cgroup_driver="nope")


def test_annotations() -> None:
    spec = build(hc={"Annotations": {"a": "1"}}, annotations={"b": "2", "a": "0"})
    assert spec["annotations"] == {"b": "2", "a": "1"}
    # Labels are container metadata, not annotations (dockerd does not copy them either).
    assert "annotations" not in build({"Labels": {"x": "y"}})
