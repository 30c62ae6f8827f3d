"""Container-create body + daemon facts -> OCI runtime spec, the way dockerd builds it.

:func:`build_spec` takes the *merged* Config (after :func:`.process.merge_image_config`, i.e.
what ``docker inspect`` shows) and the HostConfig, and returns a JSON-ready dict. It reads no
file and makes no system call; every host fact comes in :class:`.inputs.SpecInputs`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from skiff.errors import InvalidArgument, Unavailable

from . import mounts as mnt
from . import namespaces as ns
from . import process as proc
from . import resources as res
from . import security as sec
from .inputs import SpecInputs

OCI_VERSION = "1.0.2-dev"  # what dockerd 20.10 through 25 write


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"invalid {name}: must be a JSON object")
    return value


def cgroups_path(hc: Mapping[str, Any], inputs: SpecInputs) -> str:
    """cgroupfs: ``<parent>/<id>``; systemd: ``<slice>:<prefix>:<id>`` (as runc wants)."""
    parent = hc.get("CgroupParent") or ""
    if not isinstance(parent, str):
        raise InvalidArgument("invalid CgroupParent: must be a string")
    if inputs.cgroup_driver == "systemd":
        if parent and not parent.endswith(".slice"):
            raise InvalidArgument('cgroup-parent for systemd cgroup should be a valid slice '
                                  'named as "xxx.slice"')
        default = inputs.cgroup_parent if inputs.cgroup_parent.endswith(".slice") \
            else "system.slice"
        return f"{parent or default}:{inputs.systemd_scope_prefix}:{inputs.container_id}"
    if inputs.cgroup_driver != "cgroupfs":
        raise InvalidArgument(f"unknown cgroup driver {inputs.cgroup_driver!r}")
    return posixpath.normpath(posixpath.join(parent or inputs.cgroup_parent,
                                             inputs.container_id))


def _cwd(config: Mapping[str, Any]) -> str:
    wd = config.get("WorkingDir") or "/"
    if not isinstance(wd, str) or not wd.startswith("/"):
        raise InvalidArgument(f"the working directory '{wd}' is invalid, it needs to be an "
                              "absolute path")
    return posixpath.normpath(wd).replace("//", "/")


def _shm_source(m: ns.Modes, inputs: SpecInputs) -> str | None:
    if m.ipc == "host":
        return "/dev/shm"
    if m.ipc == "shareable" or m.ipc.startswith("container:"):
        if not inputs.shm_path:
            raise InvalidArgument(f"ipc mode {m.ipc}: the daemon gave no /dev/shm source")
        return inputs.shm_path
    return None


def build_spec(config: Mapping[str, Any], host_config: Mapping[str, Any] | None,
               inputs: SpecInputs) -> dict[str, Any]:
    """The OCI runtime spec for one container (see the module docs of this package)."""
    config = _mapping(config, "Config")
    hc = _mapping(host_config, "HostConfig")
    privileged = bool(hc.get("Privileged"))
    modes = ns.modes(hc)
    hostname = config.get("Hostname") or inputs.container_id[:12]
    if not isinstance(hostname, str):
        raise InvalidArgument("invalid Hostname: must be a string")
    domainname = config.get("Domainname") or ""

    args = proc.command(config)
    use_init = hc.get("Init")
    if use_init is None:
        use_init = inputs.init_default
    init_source = None
    if use_init:
        if not inputs.init_path:
            raise Unavailable("--init: no init binary is configured (docker-init or tini)")
        init_source = inputs.init_path
        args = [mnt.INIT_PATH_IN_CONTAINER, "--", *args]

    caps = proc.capabilities(hc.get("CapAdd"), hc.get("CapDrop"), privileged, inputs.all_caps)
    security = sec.parse_security_opts(hc.get("SecurityOpt"))
    user = inputs.user
    process: dict[str, Any] = {}
    if config.get("Tty"):
        process["terminal"] = True
        size = hc.get("ConsoleSize") or [0, 0]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(n, int) and n >= 0 for n in size)):
            raise InvalidArgument("invalid ConsoleSize: must be [height, width]")
        if size[0] or size[1]:
            process["consoleSize"] = {"height": size[0], "width": size[1]}
    process["user"] = {"uid": user.uid, "gid": user.gid,
                       "additionalGids": list(user.additional_gids)}
    process["args"] = args
    process["env"] = proc.environment(config, hostname)
    process["cwd"] = _cwd(config)
    process["capabilities"] = proc.capability_block(caps, user.uid)
    limits = res.rlimits(hc)
    if limits:
        process["rlimits"] = limits
    profile = sec.apparmor_profile(security, privileged, inputs.apparmor)
    if profile:
        process["apparmorProfile"] = profile
    if security.no_new_privileges:
        process["noNewPrivileges"] = True
    process["oomScoreAdj"] = res.oom_score_adj(hc)

    root: dict[str, Any] = {"path": inputs.rootfs if isinstance(inputs.rootfs, str)
                            else "rootfs"}
    if hc.get("ReadonlyRootfs"):
        root["readonly"] = True

    user_mounts = mnt.user_mounts(hc, inputs.mounts, inputs.etc_files,
                                  _shm_source(modes, inputs))
    spec: dict[str, Any] = {"ociVersion": OCI_VERSION, "process": process, "root": root}
    if modes.uts != "host":
        spec["hostname"] = hostname
    spec["mounts"] = mnt.build_mounts(hc, user_mounts, privileged=privileged,
                                      no_ipc=modes.ipc == "none", init_source=init_source)

    linux: dict[str, Any] = {}
    sysctl = ns.sysctls(hc, modes, domainname if isinstance(domainname, str) else "")
    if sysctl:
        linux["sysctl"] = sysctl
    created, rules = res.devices(hc, inputs.device_nodes, privileged, inputs.host_devices)
    resources: dict[str, Any] = {"devices": rules, "memory": res.memory(hc),
                                 "cpu": res.cpu(hc, inputs.ncpu)}
    pids = res.pids(hc)
    if pids is not None:
        resources["pids"] = pids
    resources["blockIO"] = res.block_io(hc, inputs.device_nodes)
    linux["resources"] = resources
    linux["cgroupsPath"] = cgroups_path(hc, inputs)
    linux["namespaces"] = ns.namespaces(modes, inputs.netns_path, inputs.namespace_paths)
    if created:
        linux["devices"] = created
    seccomp = sec.seccomp(security, privileged, inputs.seccomp_profile, caps, inputs.arch,
                          inputs.kernel)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    masked, readonly = sec.system_paths(hc, security, privileged)
    if masked:
        linux["maskedPaths"] = masked
    if readonly:
        linux["readonlyPaths"] = readonly
    propagation = mnt.rootfs_propagation(user_mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation
    spec["linux"] = linux

    annotations = dict(inputs.annotations)
    annotations.update(_mapping(hc.get("Annotations"), "Annotations"))
    if annotations:
        spec["annotations"] = annotations
    return spec
