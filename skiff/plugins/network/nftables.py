"""The firewall of every skiff network as ONE nftables table, replaced atomically.

The whole table is rendered from the current networks and published ports (a pure function,
``render``) and loaded in one ``nft -f -`` transaction that adds, deletes and re-creates the
table: the kernel applies all of it or none, so no packet ever sees half a ruleset, restore
after a restart is the same call, and ``nft delete table inet skiff`` undoes everything.

The table is ``inet`` so IPv6 rules can join the same chains later.

What it does, chain by chain:
- ``raw_prerouting``: with route_localnet on our bridges (needed to DNAT the host's own
  127.0.0.1 to a container), drop packets arriving from a bridge addressed to 127/8, so a
  container cannot reach the host's loopback services (Docker's CVE-2020-8558 fix).
- ``nat_prerouting`` / ``nat_output``: DNAT of published ports for packets addressed to a host
  address, arriving from outside or from a container (prerouting) or made by the host itself
  (output; this is what makes 127.0.0.1:PORT work without a userland proxy).
- ``nat_postrouting``: masquerade containers' traffic leaving by another interface (not for
  --internal networks); masquerade loopback-sourced DNAT traffic into the bridge; masquerade
  hairpin traffic (container -> host port -> container on the same bridge) so the reply comes
  back through the host and is un-NATed instead of going straight to the sender.
- ``filter_forward``: replies pass; a bridge talks to itself; an internal bridge to nothing
  else; new traffic into a bridge from elsewhere only if it is a published (DNATed) flow,
  which isolates networks from each other (a container of another network reaches a published
  port through a host address, like any outsider, since no userland proxy is there to do it).

``firewall_filter``: nftables evaluates every base chain of every table on a hook; an
``accept`` ends only the chain it is in, a ``drop`` ends everything. So skiff's table can never
override a drop of the host's firewall, and the host's rules can never override skiff's drop.
With the option off (Docker's behaviour) skiff admits published flows from anywhere. With it
on, new published flows from other interfaces (not from the host itself, not from skiff
bridges) are admitted only if the host's firewall marked the packet with ALLOW_MARK before
skiff's DNAT (a rule in a prerouting chain of priority < -100, e.g. ``tcp dport 8080 meta mark
set meta mark or 0x01000000``): exposure to the outside becomes the host firewall's decision.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from skiff.core.network import NetworkConfig, PublishedEndpoint
from skiff.errors import InvalidArgument, SystemFailure, Unavailable

DEFAULT_TABLE = "skiff"
# with firewall_filter: the packet-mark bit by which the host's firewall admits a published flow
ALLOW_MARK = 0x01000000


def _q(name: str) -> str:
    """An interface name as an nft string literal (our bridge names are validated; be safe)."""
    if '"' in name or "\\" in name or "\n" in name:
        raise InvalidArgument(f"interface name {name!r} cannot be used in a firewall rule")
    return f'"{name}"'


def _set(names: Iterable[str]) -> str:
    return "{ " + ", ".join(_q(n) for n in names) + " }"


def render(networks: list[NetworkConfig], published: list[PublishedEndpoint],
           table: str = DEFAULT_TABLE, firewall_filter: bool = False) -> str:
    """The nft script that atomically replaces ``inet <table>`` with the rules for these."""
    bridges = [n.bridge for n in networks]
    internal = {n.bridge for n in networks if n.internal}
    raw: list[str] = []
    forward: list[str] = []
    post: list[str] = []
    dnat: list[str] = []
    if bridges:
        raw.append(f"iifname {_set(bridges)} ip daddr 127.0.0.0/8 drop")
        # replies first: a flow exists only if its first packet passed the rules below, and
        # a reply must not meet another network's isolation drop on its way back
        forward.append("ct state established,related accept")
    for n in networks:
        br = _q(n.bridge)
        subnet = n.ipv4.subnet
        forward.append(f"iifname {br} oifname {br} accept")
        if n.internal:
            forward += [f"iifname {br} drop", f"oifname {br} drop"]
            continue
        if not firewall_filter:
            forward.append(f"oifname {br} iifname != {br} ct status dnat accept")
        else:
            forward += [f"oifname {br} iifname {_set(bridges)} ct status dnat accept",
                        f"oifname {br} ct status dnat meta mark & {ALLOW_MARK:#010x} == "
                        f"{ALLOW_MARK:#010x} accept"]
        forward.append(f"oifname {br} drop")
        others = [b for b in bridges if b != n.bridge]
        if others:
            forward.append(f"iifname {br} oifname {_set(others)} drop")
        post += [f"ip saddr {subnet} oifname != {br} masquerade",
                 f"oifname {br} ip saddr 127.0.0.0/8 masquerade",
                 f"iifname {br} oifname {br} ct status dnat masquerade"]
    for ep in published:
        if ep.bridge in internal:
            continue  # Docker publishes nothing from an internal network; neither do we
        if ep.ip.version != 4:
            continue  # designed for, not done: IPv6 DNAT goes here with `dnat ip6 to`
        for p in ep.ports:
            match = f"ip daddr {p.host_ip} " if p.host_ip is not None else ""
            dnat.append(f"{match}{p.proto} dport {p.host_port} dnat ip to {ep.ip}:{p.container_port}")

    def chain(name: str, header: str, rules: list[str]) -> str:
        body = "".join(f"\t\t{r}\n" for r in rules)
        return f"\tchain {name} {{\n\t\t{header}\n{body}\t}}\n"

    local = "fib daddr type local"
    # numeric priorities: nft 1.0.6 (Debian 12) rejects the name "dstnat" on the output hook
    # (-300 raw, -100 dstnat, 0 filter, 100 srcnat)
    return (f"table inet {table} {{}}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n"
            + chain("published", "# DNAT of every published port", dnat)
            + chain("raw_prerouting", "type filter hook prerouting priority -300; policy accept;",
                    raw)
            + chain("nat_prerouting", "type nat hook prerouting priority -100; policy accept;",
                    [f"{local} jump published"])
            + chain("nat_output", "type nat hook output priority -100; policy accept;",
                    [f"{local} jump published"])
            + chain("nat_postrouting", "type nat hook postrouting priority 100; policy accept;",
                    post)
            + chain("filter_forward", "type filter hook forward priority 0; policy accept;",
                    forward)
            + "}\n")


def nft(script: str, op: str) -> str:
    """Run one nft transaction from ``script``; SystemFailure names ``op`` and nft's complaint."""
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                              timeout=30, check=False)
    except FileNotFoundError as exc:
        raise Unavailable(f"{op}: the nft program is not installed (apt install nftables)") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemFailure(f"{op}: running nft: {exc}") from exc
    if proc.returncode != 0:
        raise SystemFailure(f"{op}: nft: {proc.stderr.strip()}")
    return proc.stdout


class NftablesFirewall:
    """skiff's Firewall: one ``inet`` table named ``table``."""

    def __init__(self, table: str = DEFAULT_TABLE, firewall_filter: bool = False) -> None:
        if not table.replace("_", "").isalnum():
            raise InvalidArgument(f"bad nftables table name {table!r}")
        self.table = table
        self.firewall_filter = firewall_filter

    def apply(self, networks: list[NetworkConfig], published: list[PublishedEndpoint]) -> None:
        nft(render(networks, published, self.table, self.firewall_filter),
            f"program nftables table inet {self.table}")

    def remove(self) -> None:
        """Delete the table (idempotent: the add-then-delete batch never fails on absence)."""
        nft(f"table inet {self.table} {{}}\ndelete table inet {self.table}\n",
            f"delete nftables table inet {self.table}")
