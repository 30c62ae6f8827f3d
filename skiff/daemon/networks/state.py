"""The daemon's network records, beside the driver's in the same SQLite file (WAL):

- ``net_meta``: every network as the API shows it (predefined ones too): name, driver,
  creation time, labels, options, IPAM request, flags. The bridge driver keeps its own
  ``networks`` rows (device, subnets) for the kernel side.
- ``attachments``: which networks each container asked for (NetworkingConfig at create, then
  connect/disconnect), in order, with its aliases/static IP and, while its sandbox exists,
  the endpoint the driver made.
- ``sandboxes``: the network namespace file of each container that has one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from skiff.daemon.networks.requests import EndpointRequest
from skiff.errors import Conflict, NotFound
from skiff.plugins.sqlite_db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS net_meta (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attachments (
    container_id TEXT NOT NULL, network_id TEXT NOT NULL, seq INTEGER NOT NULL,
    request TEXT NOT NULL, endpoint_id TEXT,
    PRIMARY KEY (container_id, network_id));
CREATE TABLE IF NOT EXISTS sandboxes (
    container_id TEXT PRIMARY KEY, netns TEXT NOT NULL, sandbox_id TEXT NOT NULL);
"""


@dataclass(frozen=True)
class NetworkMeta:
    """A network as ``GET /networks/{id}`` describes it (the kernel side is the driver's)."""

    id: str
    name: str
    driver: str  # bridge, host, null
    created: str
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    ipam_options: tuple[tuple[str, str], ...] = ()
    ip_range: str = ""  # as requested (the driver keeps it too; shown in IPAM.Config)

    def to_json(self) -> dict[str, Any]:
        return {"driver": self.driver, "created": self.created, "internal": self.internal,
                "attachable": self.attachable, "enable_ipv6": self.enable_ipv6,
                "labels": dict(self.labels), "options": dict(self.options),
                "ipam_options": dict(self.ipam_options), "ip_range": self.ip_range}

    @classmethod
    def from_row(cls, nid: str, name: str, d: dict[str, Any]) -> NetworkMeta:
        return cls(id=nid, name=name, driver=str(d["driver"]), created=str(d["created"]),
                   internal=bool(d.get("internal")), attachable=bool(d.get("attachable")),
                   enable_ipv6=bool(d.get("enable_ipv6")),
                   labels=tuple(sorted((d.get("labels") or {}).items())),
                   options=tuple(sorted((d.get("options") or {}).items())),
                   ipam_options=tuple(sorted((d.get("ipam_options") or {}).items())),
                   ip_range=str(d.get("ip_range") or ""))


@dataclass(frozen=True)
class Attachment:
    container_id: str
    network_id: str
    request: EndpointRequest
    endpoint_id: str | None


class NetState:
    def __init__(self, path: str) -> None:
        self.db = Database(path, SCHEMA, "network records")

    def close(self) -> None:
        self.db.close()

    # --- networks ----------------------------------------------------------------------
    def add_network(self, meta: NetworkMeta) -> None:
        with self.db.tx(f"store network {meta.name}") as c:
            cur = c.execute("INSERT OR IGNORE INTO net_meta (id, name, record) VALUES (?, ?, ?)",
                            (meta.id, meta.name, json.dumps(meta.to_json())))
            if cur.rowcount == 0:
                raise Conflict(f"network with name {meta.name} already exists")

    def remove_network(self, network_id: str) -> None:
        with self.db.tx(f"delete network {network_id}") as c:
            c.execute("DELETE FROM net_meta WHERE id = ?", (network_id,))

    def networks(self) -> list[NetworkMeta]:
        rows = self.db.query("SELECT id, name, record FROM net_meta ORDER BY name")
        return [NetworkMeta.from_row(str(i), str(n), json.loads(str(r))) for i, n, r in rows]

    # --- attachments ---------------------------------------------------------------------
    def attach(self, container_id: str, network_id: str, request: EndpointRequest) -> None:
        with self.db.tx(f"attach container {container_id} to network {network_id}") as c:
            seq = c.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM attachments "
                            "WHERE container_id = ?", (container_id,)).fetchone()[0]
            cur = c.execute("INSERT OR IGNORE INTO attachments (container_id, network_id, seq, "
                            "request) VALUES (?, ?, ?, ?)",
                            (container_id, network_id, seq, json.dumps(request.to_json())))
            if cur.rowcount == 0:
                raise Conflict(f"container {container_id} is already attached to network "
                               f"{network_id}")

    def detach(self, container_id: str, network_id: str) -> None:
        with self.db.tx(f"detach container {container_id} from network {network_id}") as c:
            c.execute("DELETE FROM attachments WHERE container_id = ? AND network_id = ?",
                      (container_id, network_id))

    def set_endpoint(self, container_id: str, network_id: str, endpoint_id: str | None) -> None:
        with self.db.tx(f"record endpoint of {container_id} on {network_id}") as c:
            cur = c.execute("UPDATE attachments SET endpoint_id = ? WHERE container_id = ? "
                            "AND network_id = ?", (endpoint_id, container_id, network_id))
            if cur.rowcount == 0:
                raise NotFound(f"container {container_id} is not attached to network "
                               f"{network_id}")

    def attachments(self, container_id: str | None = None, network_id: str | None = None
                    ) -> list[Attachment]:
        sql = "SELECT container_id, network_id, request, endpoint_id FROM attachments"
        where, args = [], []
        if container_id is not None:
            where.append("container_id = ?")
            args.append(container_id)
        if network_id is not None:
            where.append("network_id = ?")
            args.append(network_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.query(sql + " ORDER BY container_id, seq", tuple(args))
        return [Attachment(str(c), str(n), EndpointRequest.from_json(json.loads(str(r))),
                           str(e) if e else None) for c, n, r, e in rows]

    def forget_container(self, container_id: str) -> None:
        with self.db.tx(f"forget network records of {container_id}") as c:
            c.execute("DELETE FROM attachments WHERE container_id = ?", (container_id,))
            c.execute("DELETE FROM sandboxes WHERE container_id = ?", (container_id,))

    # --- sandboxes -----------------------------------------------------------------------
    def put_sandbox(self, container_id: str, netns: str, sandbox_id: str) -> None:
        with self.db.tx(f"store sandbox of {container_id}") as c:
            c.execute("INSERT OR REPLACE INTO sandboxes (container_id, netns, sandbox_id) "
                      "VALUES (?, ?, ?)", (container_id, netns, sandbox_id))

    def sandbox(self, container_id: str) -> tuple[str, str] | None:
        rows = self.db.query("SELECT netns, sandbox_id FROM sandboxes WHERE container_id = ?",
                             (container_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def sandboxes(self) -> list[tuple[str, str]]:
        return [(str(c), str(n)) for c, n in
                self.db.query("SELECT container_id, netns FROM sandboxes")]

    def drop_sandbox(self, container_id: str) -> None:
        with self.db.tx(f"drop sandbox of {container_id}") as c:
            c.execute("DELETE FROM sandboxes WHERE container_id = ?", (container_id,))
