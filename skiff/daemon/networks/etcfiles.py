"""The /etc/hosts, /etc/resolv.conf and /etc/hostname the daemon writes for a container.

Rendering is pure; ``write`` puts the three files in the container's directory under the data
root (they outlive the bundle, and the spec bind-mounts them over the image's).

resolv.conf follows Docker: on a user-defined network the only nameserver is the embedded DNS
(127.0.0.11) and the host's resolvers are where it forwards; elsewhere the host's file is
copied without its loopback nameservers (a container's 127.0.0.53 is not the host's), falling
back to public resolvers only if nothing is left, as Docker does. ``--dns``, ``--dns-search``
and ``--dns-option`` replace the corresponding parts.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from skiff.errors import os_error
from skiff.plugins.network.dns import DNS_IP
from skiff.services.spec import EtcFiles

# Docker's fallback when the host has only loopback resolvers (never used by the tests: the
# test daemons' containers on the default bridge do not resolve names)
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


@dataclass(frozen=True)
class HostResolv:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    options: tuple[str, ...]


def parse_resolv_conf(text: str) -> HostResolv:
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            servers.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]  # the last one wins, as in glibc
        elif parts[0] == "options":
            options += parts[1:]
    return HostResolv(tuple(servers), tuple(search), tuple(options))


def read_host_resolv(path: str = "/etc/resolv.conf") -> HostResolv:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return HostResolv((), (), ())


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


def render_resolv_conf(host: HostResolv, *, embedded: bool, dns: Sequence[str] = (),
                       search: Sequence[str] = (), options: Sequence[str] = ()) -> str:
    """The container's resolv.conf. ``embedded``: on a user network (127.0.0.11)."""
    if embedded:
        servers: Sequence[str] = (DNS_IP,)
    elif dns:
        servers = dns
    else:
        servers = [s for s in host.nameservers if not _is_loopback(s)] or FALLBACK_NAMESERVERS
    lines = [f"nameserver {s}" for s in servers]
    domains = search or host.search
    if domains and domains != (".",) and list(domains) != ["."]:
        lines.append("search " + " ".join(domains))
    opts = list(options or host.options)
    if opts:
        lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


def render_hosts(own: Sequence[tuple[str, Sequence[str]]],
                 extra: Sequence[tuple[str, str]] = ()) -> str:
    """Docker's /etc/hosts: localhost lines, then ExtraHosts and links, then the container's
    own addresses with its hostname (and aliases)."""
    lines = ["127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix",
             "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    lines += [f"{ip}\t{name}" for name, ip in extra]
    lines += [f"{ip}\t{' '.join(names)}" for ip, names in own if names]
    return "\n".join(lines) + "\n"


def host_hosts(path: str = "/etc/hosts") -> str:
    """The host's /etc/hosts (for --network host), ending in a newline."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return render_hosts([])
    return text if text.endswith("\n") or not text else text + "\n"


def hostname_of(config: dict[str, object], container_id: str) -> tuple[str, str]:
    """(hostname, domainname) as the spec sets them: Config.Hostname or the short id."""
    host = config.get("Hostname")
    dom = config.get("Domainname")
    return (host if isinstance(host, str) and host else container_id[:12],
            dom if isinstance(dom, str) else "")


def write(directory: str, *, hosts: str, resolv_conf: str, hostname: str) -> EtcFiles:
    """Write the three files in place: a running container has them bind-mounted, and a
    rename would leave its mount on the old inode (connect/disconnect rewrite /etc/hosts)."""
    paths = {name: os.path.join(directory, name) for name in ("hosts", "resolv.conf",
                                                               "hostname")}
    try:
        os.makedirs(directory, mode=0o710, exist_ok=True)
    except OSError as exc:
        raise os_error("create container directory", directory, exc) from exc
    for name, text in (("hosts", hosts), ("resolv.conf", resolv_conf),
                       ("hostname", hostname + "\n")):
        try:
            with open(paths[name], "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(paths[name], 0o644)
        except OSError as exc:
            raise os_error(f"write /etc/{name} file", paths[name], exc) from exc
    return EtcFiles(resolv_conf=paths["resolv.conf"], hostname=paths["hostname"],
                    hosts=paths["hosts"])
