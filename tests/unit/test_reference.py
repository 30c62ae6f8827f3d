"""Docker's reference grammar and normalisation (cases follow distribution/reference's behaviour)."""

from __future__ import annotations

import pytest

from skiff.core.content import Digest
from skiff.core.reference import is_full_id, parse_reference, parse_repository
from skiff.errors import InvalidArgument

H = "a" * 64
D = f"sha256:{H}"


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("user/app/sub:v1", "docker.io/user/app/sub:v1", "user/app/sub:v1"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest"),
        ("localhost:5000/foo", "localhost:5000/foo:latest", "localhost:5000/foo:latest"),
        ("host:5000/a/b:tag", "host:5000/a/b:tag", "host:5000/a/b:tag"),
        ("example.com/x", "example.com/x:latest", "example.com/x:latest"),
        ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
        ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
        ("Registry.Example.com/x", "Registry.Example.com/x:latest", "Registry.Example.com/x:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
        ("a.b-c__d---e", "docker.io/library/a.b-c__d---e:latest", "a.b-c__d---e:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
        (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}", f"busybox:1@{D}"),
        (f"h:1/r@{D}", f"h:1/r@{D}", f"h:1/r@{D}"),
        ("x:" + "T" * 128, "docker.io/library/x:" + "T" * 128, "x:" + "T" * 128),
        ("x:_a.b-C", "docker.io/library/x:_a.b-C", "x:_a.b-C"),
    ],
)
def test_normalisation(text: str, full: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_fields() -> None:
    ref = parse_reference(f"host:5000/a/b:t@{D}")
    assert ref.domain == "host:5000"
    assert ref.path == "a/b"
    assert ref.repository == "a/b"
    assert ref.name == "host:5000/a/b"
    assert ref.tag == "t"
    assert ref.digest == Digest("sha256", H)
    ref = parse_reference("busybox")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "latest", None)
    assert ref.familiar_name() == "busybox"
    assert parse_reference("busybox", default_tag=False).tag is None
    assert parse_reference(f"busybox@{D}").tag is None  # a digest suppresses the default tag


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least one component"),
        ("Busybox", "must be lowercase"),
        ("user/App", "must be lowercase"),
        ("docker.io/User/app", "must be lowercase"),
        (H, "64-byte hexadecimal"),
        ("busybox:", "invalid reference format"),
        ("busybox:-bad", "invalid reference format"),
        ("busybox:" + "t" * 129, "invalid reference format"),
        ("busybox@sha256:abc", "invalid reference format"),
        ("busybox@sha256:" + "a" * 63, "invalid reference format"),
        ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("busybox@sha256:" + "A" * 64, "invalid checksum digest format"),
        ("a//b", "invalid reference format"),
        ("-abc", "invalid reference format"),
        ("abc-", "invalid reference format"),
        ("a..b", "invalid reference format"),
        ("a/b/", "invalid reference format"),
        ("/a", "invalid reference format"),
        ("a b", "invalid reference format"),
        ("host:port/x", "invalid reference format"),
        ("-host.com/x", "invalid reference format"),
        ("a" * 256, "not be more than 255"),
        ("a@b@c", "invalid reference format"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_reference(text)
    assert reason in str(info.value)


def test_length_limit_counts_the_normalised_name() -> None:
    # docker.io/library/ (18 chars) + 237 = 255: accepted; one more is refused.
    assert parse_reference("a" * 237).path == "library/" + "a" * 237
    with pytest.raises(InvalidArgument, match="255"):
        parse_reference("a" * 238)


def test_repository_and_ids() -> None:
    assert str(parse_repository("busybox")) == "docker.io/library/busybox"
    with pytest.raises(InvalidArgument):
        parse_repository("busybox:1")
    assert is_full_id(H)
    assert not is_full_id("busybox")
    ref = parse_reference("busybox:1")
    assert str(ref.with_tag("2")) == "docker.io/library/busybox:2"
    assert str(ref.with_digest(Digest("sha256", H))) == f"docker.io/library/busybox@{D}"
    with pytest.raises(InvalidArgument):
        ref.with_tag("-x")


@pytest.mark.parametrize("text", [
    "192.168.0.1", "192.168.0.1:80", "192.168.0.1:8/debian", "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian", "docker.io/" + "1a3f" * 16, "DOCKER/docker",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "docker---rules/docker",
    "d/docker", "jess/t", "dock__er/docker", "test_com/foo", "xn--n3h.com:18080/foo",
])
def test_more_valid(text: str) -> None:
    ref = parse_reference(text, default_tag=False)
    # the normalised form parses to itself
    assert parse_reference(str(ref), default_tag=False) == ref


@pytest.mark.parametrize("text", [
    "https://github.com/docker/docker", "-docker.io/docker/docker", "docker///docker",
    "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian", "docker-/docker", "____/____", "_docker/_docker",
    "dock_.er/docker", "dock-.er/docker", "docker/", "x" * 250 + "/docker",
])
def test_more_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_reference(text)


def test_uppercase_first_component_is_a_registry() -> None:
    ref = parse_reference("Foo/bar")
    assert (ref.domain, ref.path, ref.familiar()) == ("Foo", "bar", "Foo/bar:latest")
    assert parse_reference("docker.io/library/foo/bar").familiar() == "library/foo/bar:latest"
