"""HostConfig.Binds strings and Mounts objects (bind/volume) -> what the daemon must resolve.

Parsing is pure and follows moby's Linux mount parser; resolving (creating a missing bind
source, creating or looking up a named volume, its host path) is the daemon's I/O, after which
:meth:`MountRequest.resolved` gives the :class:`~.inputs.ResolvedMount` the builder takes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skiff.errors import InvalidArgument

from .fields import mapping
from .inputs import ResolvedMount

_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
_PROPAGATION = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})
# Each mode word belongs to one class; a Binds mode may name each class at most once.
_MODE_CLASS = {"rw": "rw", "ro": "rw", "z": "label", "Z": "label", "nocopy": "copy",
               "consistent": "consistency", "cached": "consistency",
               "delegated": "consistency", **{p: "propagation" for p in _PROPAGATION}}
DEFAULT_PROPAGATION = "rprivate"


@dataclass(frozen=True)
class MountRequest:
    """One bind or volume the container asked for. ``source`` is a host path for binds, a
    volume name (or "" for an anonymous volume) for volumes."""

    kind: str  # "bind" or "volume"
    source: str
    destination: str
    writable: bool = True
    propagation: str = ""
    non_recursive: bool = False
    copy_data: bool = True
    relabel: str = ""  # "z" / "Z": SELinux relabelling, meaningless without SELinux

    def resolved(self, host_path: str | None = None) -> ResolvedMount:
        """The builder's input, once the daemon knows the host path (volumes need one)."""
        source = host_path if host_path is not None else self.source
        if not source:
            raise InvalidArgument(f"mount {self.destination}: volume has no host path yet")
        return ResolvedMount(source, self.destination, self.writable, self.propagation,
                             self.non_recursive)


def _valid_mode(mode: str) -> bool:
    seen: set[str] = set()
    for word in mode.split(","):
        kind = _MODE_CLASS.get(word)
        if kind is None or kind in seen:
            return False
        seen.add(kind)
    return True


def _destination(raw: str, target: str, kind: str) -> str:
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{raw}': invalid mount config "
                              f"for type \"{kind}\": invalid mount path: '{target}' mount "
                              "path must be absolute")
    clean = posixpath.normpath(target).replace("//", "/")
    if clean == "/":
        raise InvalidArgument(f"invalid specification: destination can't be '/' in '{raw}'")
    return clean


def parse_bind(raw: str) -> MountRequest:
    """``-v`` syntax: ``/dst``, ``/dst:mode``, ``src:/dst`` or ``src:/dst:mode``; an
    absolute ``src`` is a bind, anything else names a volume."""
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    parts = raw.split(":")
    source, mode = "", ""
    if len(parts) == 1:
        target = parts[0]
    elif len(parts) == 2 and _valid_mode(parts[1]):
        target, mode = parts
    elif len(parts) == 2:
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    if mode and not _valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    words = mode.split(",") if mode else []
    kind = "bind" if source.startswith("/") else "volume"
    if kind == "volume" and source and not _VOLUME_NAME.match(source):
        raise InvalidArgument(
            f'"{source}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path")
    if kind == "bind" and "nocopy" in words:
        raise InvalidArgument(f"invalid mode: {mode}")
    propagation = next((w for w in words if w in _PROPAGATION), "")
    if kind == "bind" and not propagation:
        propagation = DEFAULT_PROPAGATION
    relabel = next((w for w in words if w in ("z", "Z")), "")
    return MountRequest(kind, posixpath.normpath(source) if kind == "bind" else source,
                        _destination(raw, target, kind), "ro" not in words, propagation,
                        copy_data="nocopy" not in words, relabel=relabel)


def parse_api_mount(m: Mapping[str, Any]) -> MountRequest | None:
    """A HostConfig.Mounts entry of Type bind or volume (None for tmpfs: the builder takes
    those as they are)."""
    kind = m.get("Type")
    if kind == "tmpfs":
        return None
    if kind not in ("bind", "volume"):
        raise InvalidArgument(f'invalid mount config: mount type unknown: "{kind}"')
    where = f'invalid mount config for type "{kind}"'
    target = m.get("Target")
    if not isinstance(target, str) or not target:
        raise InvalidArgument(f"{where}: field Target must not be empty")
    source = m.get("Source") or ""
    if not isinstance(source, str):
        raise InvalidArgument(f"{where}: field Source must be a string")
    if m.get("TmpfsOptions"):
        raise InvalidArgument(f"{where}: field TmpfsOptions must not be specified")
    bind = mapping(m.get("BindOptions"), "BindOptions")
    volume = mapping(m.get("VolumeOptions"), "VolumeOptions")
    if kind == "bind":
        if volume:
            raise InvalidArgument(f"{where}: field VolumeOptions must not be specified")
        if not source:
            raise InvalidArgument(f"{where}: field Source must not be empty")
        if not source.startswith("/"):
            raise InvalidArgument(f"{where}: invalid mount path: '{source}' mount path must "
                                  "be absolute")
        propagation = bind.get("Propagation") or DEFAULT_PROPAGATION
        if propagation not in _PROPAGATION:
            raise InvalidArgument(f"{where}: invalid propagation mode: {propagation}")
        return MountRequest("bind", posixpath.normpath(source),
                            _destination(target, target, kind), not m.get("ReadOnly"),
                            propagation, bool(bind.get("NonRecursive")))
    if bind:
        raise InvalidArgument(f"{where}: field BindOptions must not be specified")
    if source and not _VOLUME_NAME.match(source):
        raise InvalidArgument(f'{where}: invalid volume name "{source}"')
    return MountRequest("volume", source, _destination(target, target, kind),
                        not m.get("ReadOnly"), copy_data=not volume.get("NoCopy"))
