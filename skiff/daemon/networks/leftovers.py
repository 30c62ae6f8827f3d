"""Take down what a daemon that can no longer do it (SIGKILLed, never restarted) left in the
kernel: its bridges, the veths of its endpoints, its nftables table and its netns mounts.

Reads only the daemon's own records (``<data-root>/network.db``), so it touches nothing of
another daemon. For test harnesses and for ``rm -rf``-ing a data root by hand; a daemon that
is restarted re-adopts all of it instead (``NetworkManager.start``).
"""

from __future__ import annotations

import os

from skiff.daemon.networks.options import NetworkOptions
from skiff.daemon.networks.state import NetState
from skiff.linux import netns
from skiff.linux.netlink import Netlink
from skiff.plugins.network.bridge import veth_name
from skiff.plugins.network.nftables import NftablesFirewall
from skiff.plugins.network.store import NetworkDB


def remove_leftovers(opts: NetworkOptions) -> list[str]:
    """Delete the kernel objects of the daemon at ``opts``; returns what was removed."""
    removed: list[str] = []
    path = os.path.join(opts.data_root, "network.db")
    bridges = {opts.bridge_name}
    veths: set[str] = set()
    sandboxes: list[str] = []
    if os.path.exists(path):
        db, state = NetworkDB(path), NetState(path)
        try:
            bridges |= {cfg.bridge for cfg in db.networks()}
            veths = {veth_name(ep.endpoint_id) for ep, _ in db.endpoints()}
            sandboxes = [p for _, p in state.sandboxes()]
        finally:
            state.close()
            db.close()
    with Netlink() as nl:
        for name in sorted(veths) + sorted(bridges):
            if nl.delete(name):
                removed.append(name)
    NftablesFirewall(opts.table_name).remove()
    netns_dir = os.path.join(opts.exec_root, "netns")
    if os.path.isdir(netns_dir):
        sandboxes += [os.path.join(netns_dir, n) for n in os.listdir(netns_dir)]
    for p in dict.fromkeys(sandboxes):
        if os.path.exists(p):
            netns.remove(p)
            removed.append(p)
    return removed
