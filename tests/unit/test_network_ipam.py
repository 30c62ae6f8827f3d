"""IPAM over the SQLite store: pools, addresses, persistence, no double allocation."""

from __future__ import annotations

import ipaddress
import re
import threading
from pathlib import Path

import pytest

from skiff.core.network import IPNetwork, Subnet
from skiff.errors import Conflict, InvalidArgument, NotFound, Unavailable
from skiff.plugins.network.ipam import LocalIPAM
from skiff.plugins.network.store import NetworkDB

net = ipaddress.ip_network
ip = ipaddress.ip_address


def ipam_on(path: Path, routed: list[IPNetwork] | None = None) -> tuple[LocalIPAM, NetworkDB]:
    db = NetworkDB(str(path))
    return LocalIPAM(db, lambda: list(routed or [])), db


def test_default_pool_skips_routed_and_used_subnets(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db", routed=[net("172.17.0.0/16"), net("172.19.5.0/24")])
    # 172.17 is Docker's docker0 here; 172.19 overlaps a routed /24
    assert ipam.request_pool() == net("172.18.0.0/16")
    assert ipam.request_pool() == net("172.20.0.0/16")
    ipam.release_pool(net("172.18.0.0/16"))
    assert ipam.request_pool() == net("172.18.0.0/16")
    db.close()


def test_default_pools_run_out(tmp_path: Path) -> None:
    db = NetworkDB(str(tmp_path / "n.db"))
    ipam = LocalIPAM(db, lambda: [], default_pools=((net("10.213.0.0/23"), 24),))
    assert [ipam.request_pool(), ipam.request_pool()] == [net("10.213.0.0/24"),
                                                          net("10.213.1.0/24")]
    with pytest.raises(Unavailable, match="fully subnetted"):
        ipam.request_pool()
    db.close()


def test_explicit_pool_must_not_overlap_another(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db")
    ipam.request_pool(net("10.213.0.0/16"))
    with pytest.raises(Conflict, match=re.escape("overlaps 10.213.0.0/16")):
        ipam.request_pool(net("10.213.7.0/24"))
    ipam.request_pool(net("fd00:213::/64"))  # another family never overlaps
    db.close()


def test_addresses_in_order_static_and_released(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db")
    sub = Subnet(ipam.request_pool(net("10.213.1.0/29")), ip("10.213.1.1"))
    ipam.request_address(sub, "gw", sub.gateway)
    got = [ipam.request_address(sub, f"e{i}") for i in range(3)]
    assert got == [ip("10.213.1.2"), ip("10.213.1.3"), ip("10.213.1.4")]
    assert ipam.request_address(sub, "static", ip("10.213.1.6")) == ip("10.213.1.6")
    with pytest.raises(Conflict, match=re.escape("10.213.1.6")):
        ipam.request_address(sub, "again", ip("10.213.1.6"))
    assert ipam.request_address(sub, "e3") == ip("10.213.1.5")
    with pytest.raises(Unavailable, match="no available IPv4 addresses"):
        ipam.request_address(sub, "full")
    ipam.release_address(sub, ip("10.213.1.3"))
    assert ipam.request_address(sub, "e4") == ip("10.213.1.3")
    db.close()


def test_bad_requests(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db")
    sub = Subnet(net("10.213.2.0/24"), ip("10.213.2.1"))
    with pytest.raises(NotFound, match=re.escape("10.213.2.0/24")):
        ipam.request_address(sub, "x")
    ipam.request_pool(sub.subnet)
    with pytest.raises(InvalidArgument, match="not in subnet"):
        ipam.request_address(sub, "x", ip("10.213.3.4"))
    with pytest.raises(InvalidArgument, match="reserved"):
        ipam.request_address(sub, "x", ip("10.213.2.255"))
    with pytest.raises(InvalidArgument, match="gateway"):
        Subnet(net("10.213.2.0/24"), ip("10.213.9.1"))
    with pytest.raises(InvalidArgument, match="ip-range"):
        Subnet(net("10.213.2.0/24"), ip("10.213.2.1"), net("10.213.0.0/16"))
    db.close()


def test_ip_range_limits_allocation(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db")
    sub = Subnet(ipam.request_pool(net("10.213.4.0/24")), ip("10.213.4.1"), net("10.213.4.128/30"))
    got = [ipam.request_address(sub, f"e{i}") for i in range(2)]
    assert got == [ip("10.213.4.129"), ip("10.213.4.130")]
    with pytest.raises(Unavailable):
        ipam.request_address(sub, "e2")
    db.close()


def test_state_survives_a_new_ipam_on_the_same_db(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db")
    sub = Subnet(ipam.request_pool(net("10.213.5.0/24")), ip("10.213.5.1"))
    first = ipam.request_address(sub, "a")
    db.close()
    ipam2, db2 = ipam_on(tmp_path / "n.db")  # a restarted daemon
    assert ipam2.request_address(sub, "b") != first
    with pytest.raises(Conflict):
        ipam2.request_pool(net("10.213.5.0/24"))
    assert str(first) in db2.allocated("10.213.5.0/24")
    db2.close()


def test_concurrent_callers_never_share_an_address(tmp_path: Path) -> None:
    ipam, db = ipam_on(tmp_path / "n.db")
    sub = Subnet(ipam.request_pool(net("10.213.6.0/24")), ip("10.213.6.1"))
    other_db = NetworkDB(str(tmp_path / "n.db"))  # a second connection, like a second process
    other = LocalIPAM(other_db, lambda: [])
    got: list[object] = []

    def grab(who: LocalIPAM, tag: str) -> None:
        for i in range(20):
            got.append(who.request_address(sub, f"{tag}{i}"))

    threads = [threading.Thread(target=grab, args=(w, t)) for w, t in ((ipam, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40
    db.close()
    other_db.close()
