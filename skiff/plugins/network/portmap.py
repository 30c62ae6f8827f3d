"""Docker's ``-p`` syntax -> PortMapping records, and the choice of ephemeral host ports.

``[host_ip:][host_port[-end]:]container_port[-end][/proto]``; host_ip may be ``[v6]``; an
empty or missing host port means "pick one" (host_port 0 until ``assign_ephemeral``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from skiff.core.network import IPAddress, PortMapping
from skiff.errors import InvalidArgument, Unavailable

# Linux's default ip_local_port_range upper part, which Docker also uses
EPHEMERAL = range(49153, 65536)


def _range(text: str, spec: str) -> range:
    first, sep, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if sep else lo
    except ValueError as exc:
        raise InvalidArgument(f"invalid port {text!r} in {spec!r}") from exc
    if not (1 <= lo <= hi <= 65535):
        raise InvalidArgument(f"invalid port range {text!r} in {spec!r}")
    return range(lo, hi + 1)


def parse_publish(spec: str) -> tuple[PortMapping, ...]:
    """One ``-p`` argument as the mappings it means (one per port of a range)."""
    rest, _, proto = spec.partition("/")
    proto = proto or "tcp"
    host_ip: IPAddress | None = None
    if rest.startswith("["):  # [v6]:host:ctr
        end = rest.find("]:")
        if end < 0:
            raise InvalidArgument(f"invalid IPv6 address in port spec {spec!r}")
        ip_text, rest = rest[1:end], rest[end + 2:]
        parts = [ip_text, *rest.split(":")]
    else:
        parts = rest.split(":")
    if len(parts) > 3:
        raise InvalidArgument(f"invalid port spec {spec!r}")
    if len(parts) == 3:
        if parts[0]:
            try:
                host_ip = ipaddress.ip_address(parts[0])
            except ValueError as exc:
                raise InvalidArgument(f"invalid host IP {parts[0]!r} in {spec!r}") from exc
        parts = parts[1:]
    ctr = _range(parts[-1], spec)
    host_text = parts[0] if len(parts) == 2 else ""
    if not host_text:
        hosts: list[int] = [0] * len(ctr)
    else:
        hosts = list(_range(host_text, spec))
        if len(hosts) != len(ctr):
            raise InvalidArgument(f"port ranges of {spec!r} differ in length")
    return tuple(PortMapping(container_port=c, host_port=h, proto=proto, host_ip=host_ip)
                 for c, h in zip(ctr, hosts, strict=True))


def assign_ephemeral(ports: Iterable[PortMapping], taken: Iterable[PortMapping]
                     ) -> tuple[PortMapping, ...]:
    """Replace every host_port 0 by the lowest ephemeral port free for that protocol."""
    used = {(p.proto, p.host_port) for p in taken}
    out = []
    for p in ports:
        if p.host_port == 0:
            free = next((n for n in EPHEMERAL if (p.proto, n) not in used), None)
            if free is None:
                raise Unavailable(f"no free ephemeral {p.proto} host port")
            p = PortMapping(p.container_port, free, p.proto, p.host_ip)
        used.add((p.proto, p.host_port))
        out.append(p)
    return tuple(out)
