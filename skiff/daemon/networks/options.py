"""The daemon options of the network part, and the per-daemon names derived from them.

Several skiffd instances may run on one host (the tests run many side by side): each needs its
own default bridge device and its own nftables table, or one daemon's atomic table
replacement would wipe the other's rules. The daemon at the default exec root gets the
well-known names (``skiff0``, table ``skiff``); any other exec root gets names derived from a
hash of its path unless ``--bridge`` / ``--nft-table`` say otherwise.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Protocol

from skiff.core.network import IPAddress, IPNetwork
from skiff.errors import InvalidArgument

DEFAULT_EXEC_ROOT = "/run/skiff"
DEFAULT_BRIDGE = "skiff0"
DEFAULT_TABLE = "skiff"


@dataclass(frozen=True)
class NetworkOptions:
    """What the network manager needs from the daemon's configuration."""

    data_root: str
    exec_root: str
    bridge: str = ""  # the default network's device ("" = derived, see the module doc)
    bip: str = ""  # the default bridge's gateway/prefix, e.g. 10.213.9.1/24 ("" = a free pool)
    nft_table: str = ""  # skiff's nftables table ("" = derived)
    firewall_filter: bool = False  # published ports obey the host's firewall (docs/network.md)

    def _suffix(self) -> str:
        return hashlib.sha256(self.exec_root.encode()).hexdigest()[:8]

    @property
    def bridge_name(self) -> str:
        if self.bridge:
            return self.bridge
        return DEFAULT_BRIDGE if self.exec_root == DEFAULT_EXEC_ROOT else "sk" + self._suffix()

    @property
    def table_name(self) -> str:
        if self.nft_table:
            return self.nft_table
        return DEFAULT_TABLE if self.exec_root == DEFAULT_EXEC_ROOT \
            else f"skiff_{self._suffix()}"

    def default_subnet(self) -> tuple[IPNetwork | None, IPAddress | None]:
        """``--bip`` as (subnet, gateway), or (None, None) to take a free default pool."""
        if not self.bip:
            return None, None
        try:
            iface = ipaddress.ip_interface(self.bip)
        except ValueError as exc:
            raise InvalidArgument(f"--bip {self.bip!r}: want an address with a prefix, "
                                  "e.g. 10.213.9.1/24") from exc
        if iface.version != 4 or iface.ip == iface.network.network_address:
            raise InvalidArgument(f"--bip {self.bip!r}: want the bridge's IPv4 address with "
                                  "its prefix, not the network address")
        return iface.network, iface.ip


class _Roots(Protocol):
    @property
    def data_root(self) -> str: ...
    @property
    def exec_root(self) -> str: ...


def from_config(config: _Roots) -> NetworkOptions:
    """NetworkOptions from a DaemonConfig; fields it lacks take their defaults."""
    return NetworkOptions(
        data_root=config.data_root,
        exec_root=config.exec_root,
        bridge=str(getattr(config, "bridge", "") or ""),
        bip=str(getattr(config, "bip", "") or ""),
        nft_table=str(getattr(config, "nft_table", "") or ""),
        firewall_filter=bool(getattr(config, "firewall_filter", False)))
