"""The embedded DNS servers of containers on user-defined networks: one per sandbox.

What a container may resolve is decided per query (containers come and go): the names,
short ids and aliases of the containers that have an endpoint on one of the user-defined
networks this container is connected to.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

from skiff.errors import SkiffError
from skiff.plugins.network.dns import DNSServer, Lookup, Resolver, read_resolv_conf

log = logging.getLogger("skiffd.networks")


def upstreams(dns: list[str]) -> list[tuple[str, int]]:
    """Where names that are not ours go: the container's --dns, else the host's resolvers."""
    servers = dns or read_resolv_conf()
    return [(s, 53) for s in servers]


class DNSServers:
    """container id -> its running DNSServer."""

    def __init__(self) -> None:
        self._servers: dict[str, DNSServer] = {}
        self._lock = threading.Lock()

    def running(self, cid: str) -> bool:
        with self._lock:
            return cid in self._servers

    def start(self, cid: str, netns_path: str, lookup: Lookup, dns: list[str],
              forward: bool) -> None:
        """Start serving ``cid``'s namespace unless it already is."""
        with self._lock:
            if cid in self._servers:
                return
            server = DNSServer(netns_path, Resolver(lookup, upstreams(dns), forward=forward))
            server.start()
            self._servers[cid] = server

    def stop(self, cid: str) -> None:
        with self._lock:
            server = self._servers.pop(cid, None)
        if server is not None:
            try:
                server.stop()
            except SkiffError as exc:  # the namespace went away under it: nothing to undo
                log.warning("stop embedded DNS of %s: %s", cid, exc)

    def stop_all(self) -> None:
        with self._lock:
            ids = list(self._servers)
        for cid in ids:
            self.stop(cid)


def make_lookup(names: Callable[[], dict[str, list[str]]]) -> Lookup:
    """A Lookup over ``names()``: lower-cased name -> addresses, read at each query."""
    def lookup(name: str) -> list[ipaddress.IPv4Address] | None:
        found = names().get(name.lower().rstrip("."))
        if not found:
            return None
        return [ipaddress.IPv4Address(a) for a in found]
    return lookup
