"""Loading and validating a bundle's config.json.

Validation happens before anything is created, so a bad spec leaves nothing behind: every
problem is reported as one line naming the field (``linux.namespaces[2].type: unknown
namespace type "foo"``).
"""

from __future__ import annotations

import json
import os
import re

from skiff.errors import InvalidArgument, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Spec = dict[str, Any]

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_POINTS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
               "poststop")
_ID_RE = re.compile(r"^[\w+\-.]+$")


def validate_id(container_id: str) -> None:
    if not container_id or not _ID_RE.match(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id {container_id!r}: use letters, digits, "
                              "'_', '+', '-' and '.'")


def load(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"bundle {bundle}: config.json not found") from None
    except OSError as exc:
        raise InvalidArgument(f"read {path}: {exc.strerror}") from exc
    try:
        spec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path}: malformed JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise InvalidArgument(f"{path}: top level must be a JSON object")
    validate(spec, bundle)
    return spec


def _type(value: Any, want: type | tuple[type, ...], field: str, what: str) -> None:
    # bool is an int in Python; the spec never accepts a bool for an integer field.
    bad_bool = isinstance(value, bool) and bool not in (want if isinstance(want, tuple) else (want,))
    if not isinstance(value, want) or bad_bool:
        raise InvalidArgument(f"{field}: must be {what}, got {json.dumps(value)}")


def _str_list(value: Any, field: str) -> None:
    _type(value, list, field, "a list of strings")
    for i, item in enumerate(value):
        _type(item, str, f"{field}[{i}]", "a string")


def rootfs_path(spec: Spec, bundle: str) -> str:
    path = spec["root"]["path"]
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(bundle, path))


def validate(spec: Spec, bundle: str) -> None:
    """Raise InvalidArgument for the first problem found, naming the field."""
    version = spec.get("ociVersion")
    _type(version, str, "ociVersion", "a string")
    if not str(version).startswith("1."):
        raise InvalidArgument(f"ociVersion: unsupported version {version!r} (want 1.x)")

    root = spec.get("root")
    if root is None:
        raise InvalidArgument("root: missing (the bundle's root filesystem)")
    _type(root, dict, "root", "an object")
    _type(root.get("path"), str, "root.path", "a string")
    if "readonly" in root:
        _type(root["readonly"], bool, "root.readonly", "a boolean")
    rootfs = rootfs_path(spec, bundle)
    if not os.path.isdir(rootfs):
        raise InvalidArgument(f"root.path: rootfs {rootfs} does not exist or is not a directory")

    proc = spec.get("process")
    if proc is not None:
        _validate_process(proc, "process")
    for key in ("hostname", "domainname"):
        if key in spec:
            _type(spec[key], str, key, "a string")

    mounts = spec.get("mounts", [])
    _type(mounts, list, "mounts", "a list")
    for i, m in enumerate(mounts):
        _validate_mount(m, f"mounts[{i}]")

    hooks = spec.get("hooks", {})
    _type(hooks, dict, "hooks", "an object")
    for point, entries in hooks.items():
        if point not in HOOK_POINTS:
            raise InvalidArgument(f"hooks.{point}: unknown hook point (want one of "
                                  f"{', '.join(HOOK_POINTS)})")
        _type(entries, list, f"hooks.{point}", "a list")
        for i, h in enumerate(entries):
            where = f"hooks.{point}[{i}]"
            _type(h, dict, where, "an object")
            _type(h.get("path"), str, f"{where}.path", "a string")
            if not os.path.isabs(h["path"]):
                raise InvalidArgument(f"{where}.path: must be absolute, got {h['path']!r}")
            for k in ("args", "env"):
                if k in h:
                    _str_list(h[k], f"{where}.{k}")
            if "timeout" in h:
                _type(h["timeout"], int, f"{where}.timeout", "an integer")
                if h["timeout"] <= 0:
                    raise InvalidArgument(f"{where}.timeout: must be positive")

    linux = spec.get("linux", {})
    _type(linux, dict, "linux", "an object")
    _validate_linux(linux, spec)


def _validate_process(proc: Any, where: str) -> None:
    _type(proc, dict, where, "an object")
    args = proc.get("args")
    if not args:
        raise InvalidArgument(f"{where}.args: missing or empty (the command to run)")
    _str_list(args, f"{where}.args")
    if "env" in proc:
        _str_list(proc["env"], f"{where}.env")
    cwd = proc.get("cwd", "/")
    _type(cwd, str, f"{where}.cwd", "a string")
    if not cwd.startswith("/"):
        raise InvalidArgument(f"{where}.cwd: must be an absolute path, got {cwd!r}")
    if "terminal" in proc:
        _type(proc["terminal"], bool, f"{where}.terminal", "a boolean")
    user = proc.get("user", {})
    _type(user, dict, f"{where}.user", "an object")
    for k in ("uid", "gid", "umask"):
        if k in user:
            _type(user[k], int, f"{where}.user.{k}", "a non-negative integer")
            if user[k] < 0:
                raise InvalidArgument(f"{where}.user.{k}: must be non-negative, got {user[k]}")
    if "additionalGids" in user:
        _type(user["additionalGids"], list, f"{where}.user.additionalGids", "a list of integers")
        for i, g in enumerate(user["additionalGids"]):
            _type(g, int, f"{where}.user.additionalGids[{i}]", "an integer")
    if "capabilities" in proc:
        from skiff.runtime import capabilities

        capabilities.validate(proc["capabilities"], f"{where}.capabilities")
    for i, rl in enumerate(proc.get("rlimits", []) or []):
        w = f"{where}.rlimits[{i}]"
        _type(rl, dict, w, "an object")
        _type(rl.get("type"), str, f"{w}.type", "a string")
        from skiff.runtime.process.limits import rlimit_number

        rlimit_number(rl["type"], f"{w}.type")
        for k in ("soft", "hard"):
            _type(rl.get(k), int, f"{w}.{k}", "an integer")
    if "noNewPrivileges" in proc:
        _type(proc["noNewPrivileges"], bool, f"{where}.noNewPrivileges", "a boolean")
    if "oomScoreAdj" in proc:
        _type(proc["oomScoreAdj"], int, f"{where}.oomScoreAdj", "an integer")
        if not -1000 <= proc["oomScoreAdj"] <= 1000:
            raise InvalidArgument(f"{where}.oomScoreAdj: must be in -1000..1000")


def validate_process(proc: Any, where: str = "process") -> None:
    _validate_process(proc, where)


def _validate_mount(m: Any, where: str) -> None:
    _type(m, dict, where, "an object")
    dest = m.get("destination")
    _type(dest, str, f"{where}.destination", "a string")
    if not dest.startswith("/"):
        raise InvalidArgument(f"{where}.destination: must be an absolute path, got {dest!r}")
    for k in ("type", "source"):
        if k in m:
            _type(m[k], str, f"{where}.{k}", "a string")
    if "options" in m:
        _str_list(m["options"], f"{where}.options")
        from skiff.runtime.mounts import parse_options

        parse_options(m["options"], f"{where}.options")
    for k in ("uidMappings", "gidMappings"):
        if m.get(k):
            raise InvalidArgument(f"{where}.{k}: id-mapped mounts are not supported")


def _validate_linux(linux: dict[str, Any], spec: Spec) -> None:
    seen: set[str] = set()
    nss = linux.get("namespaces", [])
    _type(nss, list, "linux.namespaces", "a list")
    for i, ns in enumerate(nss):
        where = f"linux.namespaces[{i}]"
        _type(ns, dict, where, "an object")
        t = ns.get("type")
        if t not in NAMESPACE_TYPES:
            raise InvalidArgument(f"{where}.type: unknown namespace type {json.dumps(t)} "
                                  f"(want one of {', '.join(NAMESPACE_TYPES)})")
        if t in seen:
            raise InvalidArgument(f"{where}.type: namespace {t!r} listed twice")
        seen.add(t)
        if "path" in ns:
            _type(ns["path"], str, f"{where}.path", "a string")
            if not os.path.exists(ns["path"]):
                raise InvalidArgument(f"{where}.path: {ns['path']} does not exist")
    if "mount" not in seen:
        raise InvalidArgument("linux.namespaces: a mount namespace is required to set up the "
                              "root filesystem")
    for k in ("uidMappings", "gidMappings"):
        for i, mp in enumerate(linux.get(k, []) or []):
            where = f"linux.{k}[{i}]"
            _type(mp, dict, where, "an object")
            for f in ("containerID", "hostID", "size"):
                _type(mp.get(f), int, f"{where}.{f}", "an integer")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        raise InvalidArgument("linux.uidMappings: set, but there is no user namespace")
    new_userns = "user" in seen and not any(n.get("path") for n in nss
                                            if n.get("type") == "user")
    if new_userns and (not linux.get("uidMappings") or not linux.get("gidMappings")):
        raise InvalidArgument("linux.uidMappings: a new user namespace needs uid and gid "
                                  "mappings")
    if spec.get("hostname") and "uts" not in seen:
        raise InvalidArgument("hostname: set, but there is no uts namespace to set it in")
    sysctl = linux.get("sysctl", {})
    _type(sysctl, dict, "linux.sysctl", "an object")
    for key, val in sysctl.items():
        _type(val, str, f"linux.sysctl.{key}", "a string")
        if ".." in key or "/" in key:
            raise InvalidArgument(f"linux.sysctl.{key}: invalid name")
        if key.startswith("net.") and "network" not in seen:
            raise InvalidArgument(f"linux.sysctl.{key}: needs a network namespace")
    for k in ("maskedPaths", "readonlyPaths"):
        if k in linux:
            _str_list(linux[k], f"linux.{k}")
    devices = linux.get("devices", [])
    _type(devices, list, "linux.devices", "a list")
    for i, d in enumerate(devices):
        where = f"linux.devices[{i}]"
        _type(d, dict, where, "an object")
        _type(d.get("path"), str, f"{where}.path", "a string")
        if d.get("type") not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"{where}.type: must be one of c, b, u, p, got "
                                  f"{json.dumps(d.get('type'))}")
        if d["type"] != "p":
            for f in ("major", "minor"):
                _type(d.get(f), int, f"{where}.{f}", "an integer")
    if "rootfsPropagation" in linux:
        prop = linux["rootfsPropagation"]
        if prop not in ("private", "rprivate", "slave", "rslave", "shared", "rshared",
                        "unbindable", "runbindable"):
            raise InvalidArgument(f"linux.rootfsPropagation: unknown propagation {prop!r}")
    if linux.get("seccomp") is not None:
        from skiff.runtime import seccomp

        seccomp.validate(linux["seccomp"], "linux.seccomp")
    if linux.get("resources") is not None:
        _type(linux["resources"], dict, "linux.resources", "an object")
    if "cgroupsPath" in linux:
        _type(linux["cgroupsPath"], str, "linux.cgroupsPath", "a string")
    pers = linux.get("personality")
    if pers is not None:
        _type(pers, dict, "linux.personality", "an object")
        if pers.get("domain") not in ("LINUX", "LINUX32"):
            raise InvalidArgument(f"linux.personality.domain: unknown domain "
                                  f"{json.dumps(pers.get('domain'))}")
