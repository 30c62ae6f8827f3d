"""``/_ping``, ``/version``, ``/info``, ``/system/df``."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import platform
import socket
import time
from typing import Any, Protocol

from aiohttp import web

from skiff import __version__
from skiff.daemon.config import API_VERSION, MIN_API_VERSION, DaemonConfig
from skiff.daemon.http import json_response, route

PING_HEADERS = {"Api-Version": API_VERSION, "Ostype": "linux", "Docker-Experimental": "false",
                "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache",
                "Server": f"skiffd/{__version__}"}


class SystemBackend(Protocol):
    driver: str  # the storage driver's name

    def container_counts(self) -> tuple[int, int, int, int]:
        """(all, running, paused, stopped)."""
        ...

    def image_count(self) -> int: ...

    def disk_usage(self) -> dict[str, Any]:
        """``/system/df``'s body: LayersSize, Images, Containers, Volumes, BuildCache."""
        ...

    @property
    def event_listeners(self) -> int: ...


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _proc_flag(key: str) -> bool:
    """A /proc/sys switch (the bridge driver turns ip_forward on with the first bridge)."""
    try:
        with open("/proc/sys/" + key) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def registry_config(config: DaemonConfig) -> dict[str, Any]:
    """/info's RegistryConfig: insecure CIDRs and hosts, Docker Hub's mirrors."""
    cidrs, hosts = ["127.0.0.0/8", "::1/128"], []
    for entry in config.insecure_registries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            hosts.append(entry)  # host[:port]
            continue
        if str(net) not in cidrs:
            cidrs.append(str(net))
    mirrors = list(config.registry_mirrors)
    indexes: dict[str, Any] = {
        "docker.io": {"Name": "docker.io", "Mirrors": mirrors, "Secure": True, "Official": True}}
    for host in hosts:
        indexes[host] = {"Name": host, "Mirrors": [], "Secure": False, "Official": False}
    return {"AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": cidrs, "IndexConfigs": indexes, "Mirrors": mirrors}


def _security_options() -> list[str]:
    opts = ["name=seccomp,profile=builtin"]
    if _cgroup_version() == "2":
        opts.append("name=cgroupns")
    return opts


class SystemRouter:
    def __init__(self, backend: SystemBackend, config: DaemonConfig, daemon_id: str) -> None:
        self.backend = backend
        self.config = config
        self.daemon_id = daemon_id

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/_ping", self.ping)
        route(router, "HEAD", "/_ping", self.ping)
        route(router, "GET", "/version", self.version)
        route(router, "GET", "/info", self.info)
        route(router, "GET", "/system/df", self.disk_usage)

    async def ping(self, request: web.Request) -> web.StreamResponse:
        body = "" if request.method == "HEAD" else "OK"
        return web.Response(text=body, content_type="text/plain", headers=PING_HEADERS)

    async def version(self, request: web.Request) -> web.StreamResponse:
        uname = os.uname()
        details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                   "Os": "linux", "Arch": "amd64", "KernelVersion": uname.release,
                   "GitCommit": "", "Experimental": "false", "GoVersion": f"python{platform.python_version()}"}
        return json_response({
            "Platform": {"Name": "skiff"},
            "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
            "Version": __version__, **details, "Experimental": False, "BuildTime": "",
        }, headers=PING_HEADERS)

    async def disk_usage(self, request: web.Request) -> web.StreamResponse:
        # sizes walk the snapshot directories: off the event loop
        return json_response(await asyncio.to_thread(self.backend.disk_usage))

    def _runtimes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in sorted(self.config.runtime_table().items()):
            out[name] = {"path": spec.path}
            if spec.args:
                out[name]["runtimeArgs"] = list(spec.args)
        return out

    async def info(self, request: web.Request) -> web.StreamResponse:
        total, running, paused, stopped = self.backend.container_counts()
        info: dict[str, Any] = {
            "ID": self.daemon_id, "Containers": total, "ContainersRunning": running,
            "ContainersPaused": paused, "ContainersStopped": stopped,
            "Images": self.backend.image_count(), "Driver": self.backend.driver,
            "DriverStatus": [],
            "Plugins": {"Volume": [], "Network": ["bridge", "host", "null"],
                        "Authorization": None,
                        "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True,
            "IPv4Forwarding": _proc_flag("net/ipv4/ip_forward"),
            "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": self.config.debug,
            "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": True,
            "NGoroutines": 0, "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
            "CgroupVersion": _cgroup_version(),
            "NEventsListener": self.backend.event_listeners,
            "KernelVersion": os.uname().release, "OperatingSystem": _os_name(),
            "OSVersion": "", "OSType": "linux", "Architecture": os.uname().machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": registry_config(self.config),
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(),
            "DockerRootDir": self.config.data_root, "HttpProxy": "", "HttpsProxy": "",
            "NoProxy": "", "Name": socket.gethostname(), "Labels": [],
            "ExperimentalBuild": False, "ServerVersion": __version__,
            "Runtimes": self._runtimes(),
            "DefaultRuntime": self.config.default_runtime_name,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": self.config.live_restore, "Isolation": "", "InitBinary": "",
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": _security_options(),
            "Warnings": [],
        }
        return json_response(info)
