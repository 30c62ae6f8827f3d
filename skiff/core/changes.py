"""``--change`` instructions (``docker import``/``commit``): Dockerfile lines applied to a config.

Supports the instructions Docker accepts there that make sense without a build: CMD, ENTRYPOINT,
ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR. Values follow Dockerfile syntax: JSON
arrays (exec form) or shell form, ``key=value`` pairs with quotes, or the legacy ``ENV k v``.

Pure: no I/O.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from skiff.errors import InvalidArgument

SUPPORTED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
             "WORKDIR")


def _json_or_shell(value: str, what: str) -> list[str]:
    """Exec form (a JSON array of strings) or shell form (run by ``/bin/sh -c``)."""
    v = value.strip()
    if v.startswith("["):
        try:
            arr = json.loads(v)
        except ValueError:
            arr = None
        if isinstance(arr, list) and all(isinstance(x, str) for x in arr):
            return arr
    if not v:
        raise InvalidArgument(f"{what} requires at least one argument")
    return ["/bin/sh", "-c", v]


def _pairs(value: str, what: str, legacy: bool) -> list[tuple[str, str]]:
    """``k=v k2="v 2"``; with ``legacy``, ``k v w`` (one pair, rest of line) as ENV allows."""
    try:
        words = shlex.split(value, posix=True)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from exc
    if not words:
        raise InvalidArgument(f"{what} requires at least one argument")
    if "=" not in words[0]:
        if not legacy:
            raise InvalidArgument(f"{what}: want key=value pairs, got {value!r}")
        key, _, rest = value.strip().partition(" ")
        if not rest.strip():
            raise InvalidArgument(f"{what} {key}: missing value")
        return [(key, rest.strip())]
    out = []
    for w in words:
        key, eq, val = w.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"{what}: want key=value pairs, got {w!r}")
        out.append((key, val))
    return out


def _port(spec: str) -> str:
    port, _, proto = spec.partition("/")
    proto = proto or "tcp"
    lo, _, hi = port.partition("-")
    for p in (lo, hi) if hi else (lo,):
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise InvalidArgument(f"EXPOSE: invalid port {spec!r}")
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"EXPOSE: invalid protocol in {spec!r}")
    return f"{port}/{proto}"


def apply_changes(config: Mapping[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """A copy of the container ``config`` (the image config's ``config`` object) with changes."""
    out: dict[str, Any] = json.loads(json.dumps(dict(config)))  # deep copy of JSON data
    for line in changes:
        text = line.strip()
        if not text:
            continue
        parts = text.split(None, 1)
        word, value = parts[0], parts[1] if len(parts) > 1 else ""
        instr = word.upper()
        if instr not in SUPPORTED:
            raise InvalidArgument(f"{word} is not a valid change command "
                                  f"(supported: {', '.join(SUPPORTED)})")
        value = value.strip()
        if instr == "CMD":
            out["Cmd"] = _json_or_shell(value, "CMD")
        elif instr == "ENTRYPOINT":
            out["Entrypoint"] = _json_or_shell(value, "ENTRYPOINT")
        elif instr == "ENV":
            env = [e for e in out.get("Env") or [] if isinstance(e, str)]
            for key, val in _pairs(value, "ENV", legacy=True):
                env = [e for e in env if e.partition("=")[0] != key]
                env.append(f"{key}={val}")
            out["Env"] = env
        elif instr == "LABEL":
            labels = dict(out.get("Labels") or {})
            labels.update(_pairs(value, "LABEL", legacy=True))
            out["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(out.get("ExposedPorts") or {})
            if not value:
                raise InvalidArgument("EXPOSE requires at least one argument")
            for spec in value.split():
                ports[_port(spec)] = {}
            out["ExposedPorts"] = ports
        elif instr == "VOLUME":
            vols = dict(out.get("Volumes") or {})
            paths = _json_or_shell(value, "VOLUME")
            if paths[:2] == ["/bin/sh", "-c"]:
                paths = value.split()
            for p in paths:
                if not p:
                    raise InvalidArgument("VOLUME: empty path")
                vols[p] = {}
            out["Volumes"] = vols
        else:
            if not value:
                raise InvalidArgument(f"{instr} requires exactly one argument")
            key = {"STOPSIGNAL": "StopSignal", "USER": "User", "WORKDIR": "WorkingDir"}[instr]
            out[key] = value
    return out
