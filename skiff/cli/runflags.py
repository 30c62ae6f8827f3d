"""``run`` and ``create`` flags -> the ``POST /containers/create`` body (Config, HostConfig,
NetworkingConfig), as the docker CLI builds it. Pure apart from reading --env-file files and
the caller's environment for ``-e NAME``."""

from __future__ import annotations

import argparse
import os

from skiff.cli.exits import UsageError
from skiff.cli.parsing import duration_ns, key_values, nano_cpus, ram_bytes

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from skiff.cli.parsing import Parser


def add_create_flags(p: Parser) -> None:
    a = p.add_argument
    append: dict[str, Any] = {"action": "append", "default": []}
    p.flag("-i", "--interactive", help="keep STDIN open even if not attached")
    p.flag("-t", "--tty", help="allocate a pseudo-TTY")
    a("-e", "--env", **append)
    a("--env-file", **append)
    a("-w", "--workdir", default="")
    a("-u", "--user", default="")
    a("--name", default="")
    a("--entrypoint")
    a("-l", "--label", **append)
    a("--label-file", **append)
    a("-m", "--memory")
    a("--memory-swap")
    a("--memory-reservation")
    a("--cpus")
    a("-c", "--cpu-shares", type=int, default=0)
    a("--cpuset-cpus", default="")
    a("--pids-limit", type=int)
    a("--network", "--net", default="")
    a("--network-alias", "--net-alias", **append)
    a("--ip", default="")
    a("--link", **append)
    a("--restart", default="")
    p.flag("--read-only")
    a("--tmpfs", **append)
    a("--cap-add", **append)
    a("--cap-drop", **append)
    a("--security-opt", **append)
    a("--ulimit", **append)
    p.flag("--init")
    a("--stop-signal")
    a("--stop-timeout", type=int)
    a("--health-cmd")
    a("--health-interval")
    a("--health-timeout")
    a("--health-retries", type=int)
    a("--health-start-period")
    p.flag("--no-healthcheck")
    a("-h", "--hostname", default="")
    a("--domainname", default="")
    p.flag("--privileged")
    a("-v", "--volume", **append)
    a("--mount", **append)
    a("-p", "--publish", **append)
    p.flag("-P", "--publish-all")
    a("--expose", **append)
    a("--runtime", default="")
    a("--dns", **append)
    a("--dns-search", **append)
    a("--dns-option", "--dns-opt", **append)
    a("--volumes-from", **append)
    a("--add-host", **append)
    a("--device", **append)
    a("--group-add", **append)
    a("--ipc", default="")
    a("--pid", default="")
    a("--uts", default="")
    a("--cgroupns", default="")
    a("--shm-size")
    a("--sysctl", **append)
    a("--log-driver", default="")
    a("--log-opt", **append)
    p.flag("--oom-kill-disable")
    a("--platform", default="")
    a("--pull", default="missing", choices=["always", "missing", "never"])
    p.flag("-q", "--quiet", help="suppress the pull output")
    a("-a", "--attach", **append)
    a("image")
    a("command", nargs=argparse.REMAINDER)


def add_run_flags(p: Parser) -> None:
    add_create_flags(p)
    p.flag("-d", "--detach", help="run in the background and print the container ID")
    p.flag("--rm", help="remove the container when it exits")
    p.add_argument("--detach-keys", default="")
    p.flag("--sig-proxy", default=True, help="proxy received signals to the process")


def _env(args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
    entries: list[str] = []
    for path in args.env_file:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(f"open {path}: {exc.strerror}") from exc
        entries += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    entries += args.env
    out = []
    for entry in entries:
        if "=" in entry:
            out.append(entry)
        elif entry in environ:  # -e NAME takes the caller's value, or is dropped
            out.append(f"{entry}={environ[entry]}")
    return out


def _labels(args: argparse.Namespace) -> dict[str, str]:
    items: list[str] = []
    for path in args.label_file:
        try:
            with open(path, encoding="utf-8") as f:
                items += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise UsageError(f"open {path}: {exc.strerror}") from exc
    return key_values(items + args.label, "label")


def parse_ports(specs: list[str]) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    """``-p [ip:][hostPort:]containerPort[/proto]`` -> ExposedPorts, PortBindings."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in specs:
        body, _, proto = spec.partition("/")
        parts = body.rsplit(":", 2)
        if len(parts) == 3:
            ip, host, container = parts
        elif len(parts) == 2:
            ip, (host, container) = "", parts
        else:
            ip, host, container = "", "", parts[0]
        if not container.replace("-", "").isdigit():
            raise UsageError(f'invalid containerPort: {container or spec}')
        key = f"{container}/{proto or 'tcp'}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": ip.strip("[]"), "HostPort": host})
    return exposed, bindings


def parse_mount(spec: str) -> dict[str, Any]:
    """``--mount type=bind,source=/a,target=/b,readonly``."""
    m: dict[str, Any] = {"Type": "volume"}
    for field in spec.split(","):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if key == "type":
            m["Type"] = value
        elif key in ("source", "src"):
            m["Source"] = value
        elif key in ("target", "dst", "destination"):
            m["Target"] = value
        elif key in ("readonly", "ro"):
            m["ReadOnly"] = not sep or value.lower() in ("1", "true")
        elif key == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = value
        elif key == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = ram_bytes(value)
        elif key == "tmpfs-mode":
            m.setdefault("TmpfsOptions", {})["Mode"] = int(value, 8)
        elif key == "volume-opt":
            k, _, v = value.partition("=")
            m.setdefault("VolumeOptions", {}).setdefault("DriverConfig", {}).setdefault(
                "Options", {})[k] = v
        elif key == "consistency":
            m["Consistency"] = value
        else:
            raise UsageError(f"invalid field '{key}' in --mount {spec}")
    if "Target" not in m:
        raise UsageError(f"invalid argument for --mount {spec}: target is required")
    return m


def parse_ulimit(spec: str) -> dict[str, Any]:
    name, _, values = spec.partition("=")
    soft, _, hard = values.partition(":")
    try:
        return {"Name": name, "Soft": int(soft), "Hard": int(hard or soft)}
    except ValueError as exc:
        raise UsageError(f"invalid ulimit argument: {spec}") from exc


def parse_restart(spec: str) -> dict[str, Any]:
    name, _, count = spec.partition(":")
    if name not in ("", "no", "always", "unless-stopped", "on-failure"):
        raise UsageError(f"invalid restart policy: {spec}")
    if count and name != "on-failure":
        raise UsageError(f"invalid restart policy format: maximum retry count cannot be used "
                         f"with restart policy '{name}'")
    return {"Name": name or "no", "MaximumRetryCount": int(count or 0)}


def _healthcheck(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.no_healthcheck:
        return {"Test": ["NONE"]}
    hc: dict[str, Any] = {}
    if args.health_cmd:
        hc["Test"] = ["CMD-SHELL", args.health_cmd]
    for flag, key in (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                      ("health_start_period", "StartPeriod")):
        if getattr(args, flag):
            hc[key] = duration_ns(getattr(args, flag))
    if args.health_retries is not None:
        hc["Retries"] = args.health_retries
    return hc or None


def create_body(args: argparse.Namespace, environ: Mapping[str, str] | None = None,
                *, detach: bool = False, auto_remove: bool = False) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    attach = {s.lower() for s in args.attach}
    if attach - {"stdin", "stdout", "stderr"}:
        raise UsageError(f"invalid argument for -a: {sorted(attach)}; "
                         "want stdin, stdout or stderr")
    if detach and attach:
        raise UsageError("conflicting options: cannot specify both --attach and --detach")
    attach_in = "stdin" in attach or (args.interactive and not detach)
    attach_out = not detach and (not attach or "stdout" in attach)
    attach_err = not detach and (not attach or "stderr" in attach)
    config: dict[str, Any] = {
        "Hostname": args.hostname, "Domainname": args.domainname, "User": args.user,
        "AttachStdin": attach_in, "AttachStdout": attach_out, "AttachStderr": attach_err,
        "Tty": args.tty, "OpenStdin": args.interactive, "StdinOnce": attach_in,
        "Env": _env(args, env), "Cmd": args.command or None, "Image": args.image,
        "WorkingDir": args.workdir, "Labels": _labels(args),
    }
    if args.entrypoint is not None:
        config["Entrypoint"] = [args.entrypoint] if args.entrypoint else [""]
    if args.stop_signal:
        config["StopSignal"] = args.stop_signal
    if args.stop_timeout is not None:
        config["StopTimeout"] = args.stop_timeout
    health = _healthcheck(args)
    if health:
        config["Healthcheck"] = health
    exposed, bindings = parse_ports(args.publish)
    for port in args.expose:
        exposed[port if "/" in port else f"{port}/tcp"] = {}
    if exposed:
        config["ExposedPorts"] = exposed
    host: dict[str, Any] = {
        "Binds": args.volume or None,
        "NetworkMode": args.network or "default",
        "PortBindings": bindings or {},
        "PublishAllPorts": args.publish_all,
        "RestartPolicy": parse_restart(args.restart),
        "AutoRemove": auto_remove,
        "ReadonlyRootfs": args.read_only,
        "CapAdd": args.cap_add or None,
        "CapDrop": args.cap_drop or None,
        "SecurityOpt": args.security_opt or None,
        "Privileged": args.privileged,
        "Dns": args.dns, "DnsSearch": args.dns_search, "DnsOptions": args.dns_option,
        "ExtraHosts": args.add_host or None, "Links": args.link or None,
        "VolumesFrom": args.volumes_from or None,
        "GroupAdd": args.group_add or None,
        "IpcMode": args.ipc, "PidMode": args.pid, "UTSMode": args.uts,
        "CgroupnsMode": args.cgroupns,
        "LogConfig": {"Type": args.log_driver, "Config": key_values(args.log_opt, "log-opt")},
        "Ulimits": [parse_ulimit(u) for u in args.ulimit] or None,
        "Devices": [_device(d) for d in args.device],
        "CpuShares": args.cpu_shares, "CpusetCpus": args.cpuset_cpus,
    }
    if args.mount:
        host["Mounts"] = [parse_mount(m) for m in args.mount]
    if args.tmpfs:
        host["Tmpfs"] = {t.partition(":")[0]: t.partition(":")[2] for t in args.tmpfs}
    if args.sysctl:
        host["Sysctls"] = key_values(args.sysctl, "sysctl")
    if args.init:
        host["Init"] = True
    if args.runtime:
        host["Runtime"] = args.runtime
    if args.oom_kill_disable:
        host["OomKillDisable"] = True
    for flag, key in (("memory", "Memory"), ("memory_reservation", "MemoryReservation"),
                      ("shm_size", "ShmSize")):
        if getattr(args, flag):
            host[key] = ram_bytes(getattr(args, flag))
    if args.memory_swap:
        host["MemorySwap"] = -1 if args.memory_swap == "-1" else ram_bytes(args.memory_swap)
    if args.cpus:
        host["NanoCpus"] = nano_cpus(args.cpus)
    if args.pids_limit is not None:
        host["PidsLimit"] = args.pids_limit
    config["HostConfig"] = host
    config["NetworkingConfig"] = {"EndpointsConfig": _endpoints(args)}
    return config


def _endpoints(args: argparse.Namespace) -> dict[str, Any]:
    """NetworkingConfig.EndpointsConfig: the --network's endpoint with --ip, --network-alias
    and --link, as the docker CLI sends it (built-in modes get one only when asked for
    something, so the daemon can refuse aliases on them with its own message)."""
    network = args.network or "default"
    builtin = network in ("default", "bridge", "host", "none") or network.startswith(
        "container:")
    endpoint: dict[str, Any] = {}
    if args.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": args.ip}
    if args.network_alias:
        endpoint["Aliases"] = args.network_alias
    if args.link and not builtin:  # on the default bridge links are HostConfig.Links alone
        endpoint["Links"] = args.link
    if builtin and not endpoint:
        return {}
    return {"bridge" if network == "default" else network: endpoint}


def _device(spec: str) -> dict[str, str]:
    parts = spec.split(":")
    host = parts[0]
    container = parts[1] if len(parts) > 1 and parts[1] else host
    perms = parts[2] if len(parts) > 2 else "rwm"
    return {"PathOnHost": host, "PathInContainer": container, "CgroupPermissions": perms}
