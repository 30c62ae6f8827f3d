"""Docker-compatible config.json credentials."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from skiff.errors import InvalidArgument, NotFound, Unavailable
from skiff.plugins.registry.credentials import (
    ANONYMOUS,
    DOCKER_HUB_KEY,
    Credentials,
    CredentialStore,
    config_key,
    decode_registry_auth,
    default_path,
    encode_registry_auth,
)


def test_keys_follow_docker() -> None:
    assert config_key("docker.io") == DOCKER_HUB_KEY
    assert config_key("registry-1.docker.io") == DOCKER_HUB_KEY
    assert config_key("https://index.docker.io/v1/") == DOCKER_HUB_KEY
    assert config_key("127.0.0.1:5000") == "127.0.0.1:5000"
    assert config_key("https://reg.example.com/v2/") == "reg.example.com"


def test_default_path_honours_docker_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_path() == str(tmp_path / "config.json")
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == str(tmp_path / "home" / ".docker" / "config.json")


def test_store_get_erase_round_trip_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "d" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {"other:1": {"auth": base64.b64encode(b"o:p").decode()}},
                                "psFormat": "table {{.ID}}"}))
    store = CredentialStore(str(path))
    assert store.get("127.0.0.1:5000") == ANONYMOUS
    store.store("127.0.0.1:5000", Credentials("user", "pa:ss"))
    obj = json.loads(path.read_text())
    assert obj["psFormat"] == "table {{.ID}}"
    assert base64.b64decode(obj["auths"]["127.0.0.1:5000"]["auth"]) == b"user:pa:ss"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert store.get("127.0.0.1:5000") == Credentials("user", "pa:ss")
    assert store.get("other:1") == Credentials("o", "p")
    store.store("docker.io", Credentials(identity_token="refresh-me"))
    assert store.get("registry-1.docker.io").identity_token == "refresh-me"
    store.erase("127.0.0.1:5000")
    assert store.get("127.0.0.1:5000") == ANONYMOUS
    with pytest.raises(NotFound, match=r"not logged in to 127\.0\.0\.1:5000"):
        store.erase("127.0.0.1:5000")
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp files left


def test_legacy_url_keys_match(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"https://reg.example.com:5000/v1/": {
        "auth": base64.b64encode(b"u:p").decode()}}}))
    assert CredentialStore(str(path)).get("reg.example.com:5000") == Credentials("u", "p")


def test_helpers_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"credsStore": "desktop", "credHelpers": {"gcr.io": "gcloud"},
                                "auths": {"mine:1": {"auth": base64.b64encode(b"a:b").decode()}}}))
    store = CredentialStore(str(path))
    with pytest.raises(Unavailable, match=r"credential helper 'gcloud'.*not supported"):
        store.get("gcr.io")
    with pytest.raises(Unavailable, match="credsStore 'desktop'"):
        store.get("elsewhere:1")
    assert store.get("mine:1") == Credentials("a", "b")  # inline entries still win


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{nope")
    with pytest.raises(InvalidArgument, match=r"config\.json: not valid JSON"):
        CredentialStore(str(path)).get("x:1")
    path.write_text(json.dumps({"auths": {"x:1": {"auth": "!!!"}}}))
    with pytest.raises(InvalidArgument, match=r"x:1.*base64"):
        CredentialStore(str(path)).get("x:1")
    path.write_text(json.dumps({"auths": {"x:1": {"auth": base64.b64encode(b"nocolon").decode()}}}))
    with pytest.raises(InvalidArgument, match="user:password"):
        CredentialStore(str(path)).get("x:1")


def test_x_registry_auth_round_trip() -> None:
    header = encode_registry_auth(Credentials("u", "p:w"), "127.0.0.1:5000")
    assert json.loads(base64.urlsafe_b64decode(header)) == {
        "serveraddress": "127.0.0.1:5000", "username": "u", "password": "p:w"}
    assert decode_registry_auth(header) == Credentials("u", "p:w")
    # What the docker CLI sends for anonymous pulls, and the "auth" form some clients use.
    assert decode_registry_auth("") == ANONYMOUS
    assert decode_registry_auth(base64.urlsafe_b64encode(b"{}").decode().rstrip("=")) == ANONYMOUS
    auth_form = base64.urlsafe_b64encode(json.dumps(
        {"auth": base64.b64encode(b"a:b").decode()}).encode()).decode()
    assert decode_registry_auth(auth_form) == Credentials("a", "b")
    with pytest.raises(InvalidArgument, match="X-Registry-Auth"):
        decode_registry_auth("not json at all!")
