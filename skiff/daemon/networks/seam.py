"""What the container lifecycle sees of networking: the calls it makes, as Protocols.

The runner and the manager of containers depend on these small interfaces, not on the
network manager itself (which implements both), so they stay testable without a kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from skiff.daemon.containers.record import Container
from skiff.daemon.networks.manager import Sandbox

__all__ = ["NetworkView", "Sandbox", "SandboxProvider"]


class SandboxProvider(Protocol):
    def register(self, c: Container, networking_config: object) -> None:
        """At create: check NetworkMode/NetworkingConfig/ports; record; allocate nothing."""
    def setup(self, c: Container) -> Sandbox:
        """Before the runtime's create: netns, endpoints, ports, DNS, /etc files."""
    def release(self, c: Container) -> None:
        """When the runtime side goes (exit, failed start, remove). Idempotent; logs
        rather than raises (it runs on cleanup paths)."""
    def forget(self, cid: str) -> None:
        """At remove: release and drop the container's network records."""


class NetworkView(Protocol):
    def inspect_extra(self, c: Container) -> Mapping[str, Any]:
        """NetworkSettings and the /etc file paths of container inspect."""
    def summary_extra(self, c: Container) -> Mapping[str, Any]:
        """Ports and NetworkSettings of a container list entry."""
