"""A container's record, and the JSON shapes Docker's API gives it (inspect, list)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skiff.core.humanize import human_duration
from skiff.daemon.volumes.points import docker_mounts

ZERO_TIME = "0001-01-01T00:00:00Z"

CREATED, RUNNING, EXITED, DEAD = "created", "running", "exited", "dead"
# Shown, never stored in ``status``: a paused container is running (its process exists) and
# a restarting one has exited and waits for its back-off; the flags below say which.
PAUSED, RESTARTING = "paused", "restarting"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unix(text: str) -> float:
    try:
        return datetime.strptime(text[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def unix_time(text: str) -> float:
    """An RFC 3339 time as this record writes it, in unix seconds (0 if unreadable)."""
    return _unix(text)


@dataclass
class Container:
    id: str
    name: str  # without Docker's leading "/"
    image: str  # what the request named
    image_id: str  # sha256:<config digest>
    config: dict[str, Any]
    host_config: dict[str, Any]
    created: str = field(default_factory=now_rfc3339)
    status: str = CREATED
    pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    restart_count: int = 0
    snapshot_key: str = ""
    paused: bool = False
    restarting: bool = False
    # stopped or killed through the API: no restart policy applies until the next start
    manually_stopped: bool = False
    health: dict[str, Any] | None = None  # State.Health, when a healthcheck is configured
    # binds, volumes and --mount tmpfs (skiff.daemon.volumes.points.MountPoint rows)
    mount_points: list[dict[str, Any]] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        # Shallow: every field is a JSON value already, and a row is serialised at once
        # (asdict's deep copy was ~0.1 ms of every write).
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_row(cls, data: dict[str, Any]) -> Container:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def state(self) -> str:
        """Docker's State.Status: the stored status, or paused/restarting."""
        if self.status == RUNNING and self.paused:
            return PAUSED
        if self.status != RUNNING and self.restarting:
            return RESTARTING
        return self.status

    @property
    def labels(self) -> dict[str, str]:
        labels = self.config.get("Labels")
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    def command(self) -> list[str]:
        entry = self.config.get("Entrypoint") or []
        cmd = self.config.get("Cmd") or []
        return [*(entry if isinstance(entry, list) else [entry]),
                *(cmd if isinstance(cmd, list) else [cmd])]

    def status_text(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.status == RUNNING:
            text = f"Up {human_duration(now - _unix(self.started_at))}"
            if self.paused:
                return text + " (Paused)"
            health = (self.health or {}).get("Status")
            if health == "starting":
                return text + " (health: starting)"
            return text + (f" ({health})" if health else "")
        if self.restarting:
            return f"Restarting ({self.exit_code}) {human_duration(now - _unix(self.finished_at))} ago"
        if self.status == EXITED and self.finished_at != ZERO_TIME:
            return f"Exited ({self.exit_code}) {human_duration(now - _unix(self.finished_at))} ago"
        if self.status == DEAD:
            return "Dead"
        return "Created"

    def inspect(self, *, log_path: str, rootfs: str, exec_ids: Sequence[str] | None = None
                ) -> dict[str, Any]:
        """Docker's ``GET /containers/{id}/json``."""
        args = self.command()
        return {
            "Id": self.id,
            "Created": self.created,
            "Path": args[0] if args else "",
            "Args": args[1:],
            "State": {
                "Status": self.state,
                # dockerd counts a restarting container as running (it will be again)
                "Running": self.status == RUNNING or self.restarting,
                "Paused": self.paused,
                "Restarting": self.restarting,
                "OOMKilled": self.oom_killed,
                "Dead": self.status == DEAD,
                "Pid": self.pid if self.status == RUNNING else 0,
                "ExitCode": self.exit_code,
                "Error": self.error,
                "StartedAt": self.started_at,
                "FinishedAt": self.finished_at,
                **({"Health": self.health} if self.health is not None else {}),
            },
            "Image": self.image_id,
            "ResolvConfPath": "",
            "HostnamePath": "",
            "HostsPath": "",
            "LogPath": log_path,
            "Name": "/" + self.name,
            "RestartCount": self.restart_count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": list(exec_ids) if exec_ids else None,
            "HostConfig": self.host_config,
            "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": rootfs}},
            "Mounts": docker_mounts(self.mount_points),
            "Config": {**self.config, "Image": self.image},
            "NetworkSettings": {"Networks": {}, "Ports": {}, "SandboxKey": "",
                                "IPAddress": "", "Gateway": "", "MacAddress": ""},
        }

    def summary(self) -> dict[str, Any]:
        """Docker's ``GET /containers/json`` entry."""
        labels = self.config.get("Labels")
        return {
            "Id": self.id,
            "Names": ["/" + self.name],
            "Image": self.image,
            "ImageID": self.image_id,
            "Command": " ".join(self.command()),
            "Created": int(_unix(self.created)),
            "Ports": [],
            "Labels": labels if isinstance(labels, dict) else {},
            "State": self.state,
            "Status": self.status_text(),
            "HostConfig": {"NetworkMode": self.host_config.get("NetworkMode", "none")},
            "NetworkSettings": {"Networks": {}},
            "Mounts": docker_mounts(self.mount_points),
        }
