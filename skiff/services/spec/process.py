"""The process part of the spec: image defaults, command, environment, capabilities.

Docker merges the image's config into the container's at create time (what `docker inspect`
then shows); :func:`merge_image_config` is that step. The spec is built from the merged
config: Entrypoint + Cmd become the args, the daemon's PATH/HOSTNAME/TERM head the env.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skiff.errors import InvalidArgument

from .fields import mapping, str_list, strings

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby's default capability set, in moby's order (the spec keeps it).
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def merge_image_config(config: Mapping[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the image's defaults to a container-create Config, as dockerd does on create.

    User, WorkingDir, Env (by key), Labels (by key), StopSignal and the command come from the
    image where the request leaves them unset. An Entrypoint given as ``[""]`` (``docker run
    --entrypoint ""``) clears the image's entrypoint and keeps the image's Cmd out too.
    """
    out = dict(mapping(config, "Config"))
    image = mapping(image, "image config")
    for key in ("User", "WorkingDir", "StopSignal"):
        if not isinstance(out.get(key) or "", str) or not isinstance(image.get(key) or "", str):
            raise InvalidArgument(f"invalid {key}: must be a string")
    if not out.get("User"):
        out["User"] = image.get("User") or ""
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir") or ""
    if not out.get("StopSignal") and image.get("StopSignal"):
        out["StopSignal"] = image["StopSignal"]
    env = list(str_list(out.get("Env"), "Env") or [])
    image_env = str_list(image.get("Env"), "image Env") or []
    if not env:
        env = list(image_env)
    else:
        keys = {e.split("=", 1)[0] for e in env}
        env += [e for e in image_env if e.split("=", 1)[0] not in keys]
    out["Env"] = env or None
    labels = dict(mapping(image.get("Labels"), "image Labels"))
    labels.update(mapping(out.get("Labels"), "Labels"))
    out["Labels"] = labels
    entrypoint = str_list(out.get("Entrypoint"), "Entrypoint")
    cmd = str_list(out.get("Cmd"), "Cmd")
    if not entrypoint:
        if not cmd:
            cmd = str_list(image.get("Cmd"), "image Cmd")
        if entrypoint is None:
            entrypoint = str_list(image.get("Entrypoint"), "image Entrypoint")
    if entrypoint == [""]:
        entrypoint = None
    out["Entrypoint"] = entrypoint
    out["Cmd"] = cmd
    if not entrypoint and not cmd:
        raise InvalidArgument("No command specified")
    return out


def command(config: Mapping[str, Any]) -> list[str]:
    """Entrypoint followed by Cmd; an error when both are empty."""
    entrypoint = str_list(config.get("Entrypoint"), "Entrypoint") or []
    if entrypoint == [""]:
        entrypoint = []
    args = entrypoint + (str_list(config.get("Cmd"), "Cmd") or [])
    if not args or args[0] == "":
        raise InvalidArgument("No command specified")
    return args


def replace_or_append(defaults: list[str], overrides: Sequence[str]) -> list[str]:
    """Docker's env merge: an override replaces its key in place, else appends; ``KEY``
    without ``=`` removes the key."""
    out: list[str | None] = list(defaults)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(defaults)}
    for value in overrides:
        key, eq, _ = value.partition("=")
        if not eq:
            if key in index:
                out[index[key]] = None
            continue
        if key in index:
            out[index[key]] = value
        else:
            index[key] = len(out)
            out.append(value)
    return [e for e in out if e is not None]


def environment(config: Mapping[str, Any], hostname: str) -> list[str]:
    for e in str_list(config.get("Env"), "Env") or []:
        if e.startswith("="):
            raise InvalidArgument(f"invalid environment variable: {e}")
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if config.get("Tty"):
        base.append("TERM=xterm")
    return replace_or_append(base, str_list(config.get("Env"), "Env") or [])


def cap_name(name: str, known: Sequence[str]) -> str:
    upper = name.upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in known:
        raise InvalidArgument(f'unknown capability: "{full}"')
    return full


def capabilities(cap_add: object, cap_drop: object,
                 privileged: bool, all_caps: Sequence[str]) -> list[str]:
    """The container's capability set: moby's TweakCapabilities.

    Privileged gets every capability; ``ALL`` in CapAdd starts from every capability minus
    CapDrop; ``ALL`` in CapDrop starts from nothing plus CapAdd; otherwise the default set
    minus CapDrop plus CapAdd. Names are accepted with or without ``CAP_``, any case.
    """
    if privileged:
        return list(all_caps)
    adds = [cap_name(c, all_caps) for c in strings(cap_add, "CapAdd")]
    drops = [cap_name(c, all_caps) for c in strings(cap_drop, "CapDrop")]
    if not adds and not drops:
        return list(DEFAULT_CAPS)
    if "ALL" in adds:
        return [c for c in all_caps if c not in drops]
    base: list[str] = [] if "ALL" in drops else [c for c in DEFAULT_CAPS if c not in drops]
    for c in adds:
        if c not in base:
            base.append(c)
    return base


def capability_block(caps: list[str], uid: int) -> dict[str, list[str]]:
    """Non-root processes get a bounding set only: execve would clear the rest anyway."""
    if uid == 0:
        return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    return {"bounding": list(caps)}
