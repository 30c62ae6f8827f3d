"""Which registries this daemon may contact (``--registry-allow``, a skiff extension).

Docker contacts any registry a reference names, Docker Hub for every short name. Sites that
must not (air-gapped hosts, CI that has to stay on a local mirror, this project's tests) can
list what is allowed: host names, host:port, CIDRs of literal addresses, or ``*``. An empty
list allows everything, as Docker does. A refused pull, push or login is a 403 naming the
registry and the flag, before any connection is made.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from skiff.errors import InvalidArgument, PermissionDenied


def _split(domain: str) -> tuple[str, str]:
    """("host", "port") of a registry domain ("[::1]:5000", "localhost", "10.0.0.1:80")."""
    if domain.startswith("["):
        host, _, rest = domain[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = domain.partition(":")
    return host, port


class RegistryAllowList:
    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = tuple(e.strip() for e in entries if e.strip())
        self.networks = []
        for e in self.entries:
            if "/" in e:
                try:
                    self.networks.append(ipaddress.ip_network(e, strict=False))
                except ValueError as exc:
                    raise InvalidArgument(f"--registry-allow {e}: not a CIDR: {exc}") from exc

    def allows(self, domain: str) -> bool:
        if not self.entries or "*" in self.entries:
            return True
        if domain in self.entries:
            return True
        host, _port = _split(domain)
        if host in self.entries:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def check(self, domain: str, what: str) -> None:
        if not self.allows(domain):
            raise PermissionDenied(f"{what}: registry {domain} is not allowed by this "
                                   f"daemon (--registry-allow {', '.join(self.entries)})")
