"""``/_ping``, ``/version``, ``/info``."""

from __future__ import annotations

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
    def container_counts(self) -> tuple[int, int, int]:
        """(all, running, stopped)."""
        ...

    def image_count(self) -> int: ...


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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

    def _runtime_name(self) -> str:
        return os.path.basename(self.config.runtime)

    async def info(self, request: web.Request) -> web.StreamResponse:
        total, running, stopped = self.backend.container_counts()
        info: dict[str, Any] = {
            "ID": self.daemon_id, "Containers": total, "ContainersRunning": running,
            "ContainersPaused": 0, "ContainersStopped": stopped,
            "Images": self.backend.image_count(), "Driver": "overlayfs", "DriverStatus": [],
            "Plugins": {"Volume": [], "Network": ["host", "null"], "Authorization": None,
                        "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": False,
            "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": True,
            "NGoroutines": 0, "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
            "CgroupVersion": _cgroup_version(), "NEventsListener": 0,
            "KernelVersion": os.uname().release, "OperatingSystem": _os_name(),
            "OSVersion": "", "OSType": "linux", "Architecture": os.uname().machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": None,
                               "AllowNondistributableArtifactsHostnames": None,
                               "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                               "Mirrors": None},
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(),
            "DockerRootDir": self.config.data_root, "HttpProxy": "", "HttpsProxy": "",
            "NoProxy": "", "Name": socket.gethostname(), "Labels": [],
            "ExperimentalBuild": False, "ServerVersion": __version__,
            "Runtimes": {self._runtime_name(): {"path": self.config.runtime}},
            "DefaultRuntime": self._runtime_name(),
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": ["WARNING: no bridge networking yet: containers get an isolated "
                         "network namespace (loopback only) unless --network host"],
        }
        return json_response(info)
