"""--registry-allow: which registries a daemon may contact."""

from __future__ import annotations

import pytest

from skiff.daemon.registry_allow import RegistryAllowList
from skiff.errors import InvalidArgument, PermissionDenied


def test_empty_allows_everything_as_docker() -> None:
    assert RegistryAllowList(()).allows("docker.io")


@pytest.mark.parametrize(("domain", "ok"), [
    ("127.0.0.1:5000", True), ("127.9.9.9", True), ("localhost:5000", True),
    ("[::1]:5000", True), ("registry.local:443", True), ("registry.local", False),
    ("docker.io", False), ("10.0.0.1:5000", False), ("localhost.evil", False),
])
def test_hosts_ports_and_cidrs(domain: str, ok: bool) -> None:
    allow = RegistryAllowList(["127.0.0.0/8", "localhost", "::1", "registry.local:443"])
    assert allow.allows(domain) is ok


def test_refusal_names_the_registry_and_flag() -> None:
    with pytest.raises(PermissionDenied, match=r"registry docker\.io is not allowed.*"
                                               r"--registry-allow 127\.0\.0\.0/8"):
        RegistryAllowList(["127.0.0.0/8"]).check("docker.io", "pull busybox:latest")


def test_star_and_bad_cidr() -> None:
    assert RegistryAllowList(["*"]).allows("docker.io")
    with pytest.raises(InvalidArgument, match="not a CIDR"):
        RegistryAllowList(["10.0.0.0/99"])
