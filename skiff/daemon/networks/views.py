"""What container inspect and list show of networking: NetworkSettings, Ports, the paths of
the /etc files. Reads the records only (no lock: SQLite's own serialises the reads)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from skiff.core.network import PortMapping
from skiff.daemon.containers.record import RUNNING, Container
from skiff.daemon.networks import shapes
from skiff.daemon.networks.requests import DEFAULT_NETWORK, exposed_ports, network_mode
from skiff.daemon.networks.state import NetState, NetworkMeta
from skiff.errors import NotFound
from skiff.plugins.network.store import NetworkDB


class ContainerViews:
    def __init__(self, state: NetState, db: NetworkDB, find: Callable[[str], NetworkMeta],
                 data_root: str) -> None:
        self.state = state
        self.db = db
        self.find = find
        self.data_root = data_root

    def _published(self, c: Container) -> list[PortMapping]:
        out: list[PortMapping] = []
        for att in self.state.attachments(container_id=c.id):
            if att.endpoint_id:
                try:
                    out += self.db.endpoint(att.endpoint_id)[1]
                except NotFound:
                    continue
        return out

    def _networks_json(self, c: Container) -> dict[str, dict[str, Any]]:
        mode = network_mode(c.host_config)
        if mode.startswith("container:"):
            return {}
        if mode in ("host", "none"):
            try:
                return {mode: shapes.endpoint_settings(self.find(mode).id, "", None)}
            except NotFound:
                return {}
        out: dict[str, dict[str, Any]] = {}
        for att in self.state.attachments(container_id=c.id):
            try:
                meta = self.find(att.network_id)
            except NotFound:
                continue
            info = None
            if att.endpoint_id:
                try:
                    info = self.db.endpoint(att.endpoint_id)[0].info
                except NotFound:
                    info = None
            user = meta.name != DEFAULT_NETWORK
            out[meta.name] = shapes.endpoint_settings(
                meta.id, att.endpoint_id or "", info, att.request.aliases,
                str(att.request.ipv4) if att.request.ipv4 else None,
                [c.name, c.id[:12], *att.request.aliases] if user else None)
        return out

    def settings(self, c: Container) -> dict[str, Any]:
        """NetworkSettings of ``GET /containers/{id}/json``."""
        sandbox = self.state.sandbox(c.id)
        ports: Mapping[str, Any] = {}
        if sandbox is not None or c.status == RUNNING:
            ports = shapes.ports_json(exposed_ports(c.config), self._published(c))
        return shapes.settings_json(self._networks_json(c), ports,
                                    sandbox[0] if sandbox else "",
                                    sandbox[1] if sandbox else "")

    def inspect_extra(self, c: Container) -> dict[str, Any]:
        """What container inspect gets from here: NetworkSettings and the /etc file paths."""
        directory = os.path.join(self.data_root, "containers", c.id)
        paths = {key: os.path.join(directory, name) for key, name in (
            ("ResolvConfPath", "resolv.conf"), ("HostnamePath", "hostname"),
            ("HostsPath", "hosts"))}
        return {"NetworkSettings": self.settings(c),
                **{k: p if os.path.exists(p) else "" for k, p in paths.items()}}

    def summary_extra(self, c: Container) -> dict[str, Any]:
        return self.summary(c)

    def summary(self, c: Container) -> dict[str, Any]:
        """``Ports`` and ``NetworkSettings`` of a ``GET /containers/json`` entry."""
        published = self._published(c) if self.state.sandbox(c.id) else []
        return {"Ports": shapes.ports_list(exposed_ports(c.config), published),
                "NetworkSettings": {"Networks": self._networks_json(c)}}
