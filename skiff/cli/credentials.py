"""Registry credentials in ``$DOCKER_CONFIG/config.json`` (else ``~/.docker``), the format
the docker CLI and skiff's registry client read: ``{"auths": {"host": {"auth":
base64("user:password")}}}``. Unknown keys are kept; writes are atomic and mode 0600."""

from __future__ import annotations

import base64
import json
import os
import tempfile

from skiff.errors import InvalidArgument, os_error

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io", HUB_KEY, "")


def config_path(env: Mapping[str, str] | None = None) -> str:
    environ = os.environ if env is None else env
    base = environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def server_key(server: str) -> str:
    """``auths`` key: the bare host (no scheme, no path); Docker Hub's historic URL."""
    if server in _HUB_NAMES:
        return HUB_KEY
    host = server.split("://", 1)[-1].split("/", 1)[0]
    return HUB_KEY if host in _HUB_NAMES else host


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise os_error("read", path, exc) from exc
    except ValueError as exc:
        raise InvalidArgument(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path}: not a JSON object")
    return doc


def save(path: str, doc: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.json.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent="\t")
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error("write", path, exc) from exc


def store(path: str, server: str, username: str, password: str,
          identity_token: str = "") -> None:
    doc = load(path)
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: 'auths' is not an object")
    entry: dict[str, str] = {}
    if identity_token:
        entry["identitytoken"] = identity_token
        entry["auth"] = base64.b64encode(f"{username}:".encode()).decode()
    else:
        entry["auth"] = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[server_key(server)] = entry
    save(path, doc)


def erase(path: str, server: str) -> bool:
    """Forget the server's credentials; False when there were none."""
    doc = load(path)
    auths = doc.get("auths")
    key = server_key(server)
    if not isinstance(auths, dict) or key not in auths:
        return False
    del auths[key]
    save(path, doc)
    return True


def lookup(path: str, server: str) -> dict[str, str]:
    """The stored credentials as the API's auth object (empty when there are none)."""
    auths = load(path).get("auths") or {}
    entry = auths.get(server_key(server)) if isinstance(auths, dict) else None
    if not isinstance(entry, dict):
        return {}
    out = {"serveraddress": server}
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError as exc:
            raise InvalidArgument(f"{path}: bad auth for {server}") from exc
        out.update(username=user, password=password)
    if entry.get("identitytoken"):
        out["identitytoken"] = entry["identitytoken"]
    return out


def encode_header(auth: Mapping[str, str]) -> str:
    """``X-Registry-Auth``: URL-safe base64 of the JSON auth object."""
    return base64.urlsafe_b64encode(json.dumps(dict(auth)).encode()).decode()
