"""The server's settings and the config file that sets them (YAML; JSON is valid YAML).

Example::

    addr: 127.0.0.1:5000
    root: /var/lib/skiff/registry
    workers: 1                    # processes sharing the port (SO_REUSEPORT) and the storage
    tls: {certificate: /etc/skiff/reg.crt, key: /etc/skiff/reg.key}
    storage: {fsync: true, delete: true}
    uploads: {max_age: 86400, purge_interval: 3600}   # abandoned uploads go after a day
    gc: {interval: 0, grace: 3600}                    # online GC every N seconds (0: off)
    proxy: {remoteurl: "https://registry-1.docker.io", username: u, password: p, ttl: 60}
    auth:
      htpasswd: {realm: skiff-registry, path: /etc/skiff/htpasswd}
      # or, instead of htpasswd, the bearer-token scheme with our own /token endpoint:
      token: {realm: "https://reg.example/token", service: skiff-registry,
              issuer: skiff-registry, key: /etc/skiff/token.pem, lifetime: 300,
              htpasswd: /etc/skiff/htpasswd}
      anonymous_pull: false
      access: [{account: "*", name: "*", actions: [pull, push, delete]}]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from skiff.errors import InvalidArgument, os_error

from .auth import Rule

DEFAULT_ADDR = "127.0.0.1:5000"
DEFAULT_ROOT = "/var/lib/skiff/registry"


@dataclass
class TokenConfig:
    realm: str | None = None  # None: <scheme>://<Host of the request>/token
    service: str = "skiff-registry"
    issuer: str = "skiff-registry"
    key: str | None = None  # PEM of an EC P-256 key; None: a fresh key per start
    key_pem: bytes | None = None  # the key itself (set for forked workers so they share one)
    lifetime: int = 300
    htpasswd: str | None = None


@dataclass
class ProxyConfig:
    remote_url: str
    username: str = ""
    password: str = ""
    ttl: float = 60.0  # seconds a cached tag is served before asking upstream again


@dataclass
class ServerConfig:
    addr: str = DEFAULT_ADDR
    root: str = DEFAULT_ROOT
    workers: int = 1
    tls_cert: str | None = None
    tls_key: str | None = None
    fsync: bool = True
    delete_enabled: bool = True
    upload_max_age: float = 86400.0
    upload_purge_interval: float = 3600.0
    gc_interval: float = 0.0
    gc_grace: float = 3600.0
    htpasswd: str | None = None
    realm: str = "skiff-registry"
    token: TokenConfig | None = None
    anonymous_pull: bool = False
    access: list[Rule] = field(default_factory=list)
    proxy: ProxyConfig | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"registry address {self.addr!r}: want HOST:PORT")
        return host.strip("[]") or "0.0.0.0", int(port)


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"registry config: {key} must be a mapping")
    return value


def load(path: str) -> ServerConfig:
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except OSError as exc:
        raise os_error("read registry config", path, exc) from exc
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"registry config {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument(f"registry config {path}: not a mapping")
    return from_dict(doc, os.path.dirname(os.path.abspath(path)))


def from_dict(doc: dict[str, Any], base: str = ".") -> ServerConfig:
    def rel(p: str | None) -> str | None:
        return None if p is None else os.path.join(base, str(p))

    c = ServerConfig()
    try:
        c.addr = str(doc.get("addr", c.addr))
        c.root = os.path.join(base, str(doc["root"])) if "root" in doc else c.root
        c.workers = int(doc.get("workers", 1))
        tls = _section(doc, "tls")
        c.tls_cert, c.tls_key = rel(tls.get("certificate")), rel(tls.get("key"))
        storage = _section(doc, "storage")
        c.fsync = bool(storage.get("fsync", True))
        c.delete_enabled = bool(storage.get("delete", True))
        uploads = _section(doc, "uploads")
        c.upload_max_age = float(uploads.get("max_age", c.upload_max_age))
        c.upload_purge_interval = float(uploads.get("purge_interval", c.upload_purge_interval))
        gc = _section(doc, "gc")
        c.gc_interval = float(gc.get("interval", 0))
        c.gc_grace = float(gc.get("grace", c.gc_grace))
        auth = _section(doc, "auth")
        c.anonymous_pull = bool(auth.get("anonymous_pull", False))
        if auth.get("htpasswd"):
            hp = _section(auth, "htpasswd")
            c.htpasswd = rel(hp["path"])
            c.realm = str(hp.get("realm", c.realm))
        if auth.get("token"):
            tk = _section(auth, "token")
            c.token = TokenConfig(realm=tk.get("realm"), service=str(tk.get("service", "skiff-registry")),
                                  issuer=str(tk.get("issuer", "skiff-registry")),
                                  key=rel(tk.get("key")), lifetime=int(tk.get("lifetime", 300)),
                                  htpasswd=rel(tk.get("htpasswd")))
        if doc.get("proxy"):
            px = _section(doc, "proxy")
            c.proxy = ProxyConfig(str(px["remoteurl"]), str(px.get("username", "")),
                                  str(px.get("password", "")), float(px.get("ttl", 60)))
        for r in auth.get("access") or []:
            acts = r.get("actions", [])
            c.access.append(Rule(str(r.get("account", "*")), str(r.get("name", "*")),
                                 tuple(str(a) for a in acts)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidArgument(f"registry config: {exc!r}") from exc
    if c.htpasswd and c.token:
        raise InvalidArgument("registry config: auth takes htpasswd or token, not both")
    if bool(c.tls_cert) != bool(c.tls_key):
        raise InvalidArgument("registry config: tls needs both certificate and key")
    return c
