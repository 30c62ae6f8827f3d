"""Docker's container config -> OCI runtime spec, as a pure function.

- :func:`build_spec` (builder.py): merged Config + HostConfig + :class:`SpecInputs` -> spec.
- :func:`merge_image_config` (process.py): the image's defaults applied on create.
- :func:`apply_create_defaults` (defaults.py): dockerd's HostConfig defaults on create.
- :func:`parse_bind`, :func:`parse_api_mount` (binds.py): Binds strings and Mounts objects ->
  :class:`MountRequest`, which the daemon resolves into a :class:`ResolvedMount`.
- :func:`resolve_user`, :func:`parse_passwd`, :func:`parse_group` (users.py): ids from the
  text of the image's /etc/passwd and /etc/group.
"""

from __future__ import annotations

from .binds import MountRequest, parse_api_mount, parse_bind
from .builder import build_spec, cgroups_path
from .defaults import apply_create_defaults
from .inputs import (
    ALL_CAPS,
    DeviceNode,
    EtcFiles,
    HostDevice,
    ResolvedMount,
    ResolvedUser,
    SpecInputs,
)
from .process import DEFAULT_CAPS, merge_image_config
from .users import GroupEntry, PasswdEntry, parse_group, parse_passwd, resolve_user

__all__ = [
    "ALL_CAPS", "DEFAULT_CAPS", "DeviceNode", "EtcFiles", "GroupEntry", "HostDevice",
    "MountRequest", "PasswdEntry", "ResolvedMount", "ResolvedUser", "SpecInputs",
    "apply_create_defaults", "build_spec", "cgroups_path", "merge_image_config",
    "parse_api_mount", "parse_bind", "parse_group", "parse_passwd", "resolve_user",
]
