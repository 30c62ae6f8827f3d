"""skiffd's settings: dockerd's flags and daemon.json keys, merged into one DaemonConfig.

The command line and the config file use dockerd's names. As in dockerd, a setting given in
both places is an error (rather than one silently winning), an unknown key in the file is an
error naming the file and the key, and a missing *default* file is simply no file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skiff.errors import InvalidArgument

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"
DEFAULT_CONFIG_FILE = "/etc/skiff/daemon.json"
DEFAULT_RUNTIME = "skiff-runtime"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
# dockerd's ports: 2376 is the TLS one
PLAIN_PORT, TLS_PORT = 2375, 2376


def _skiff_runtime_path() -> str:
    # skiff-runtime from the same venv as this interpreter, so a venv install just works
    here = os.path.join(os.path.dirname(sys.executable), "skiff-runtime")
    return here if os.access(here, os.X_OK) else "skiff-runtime"


@dataclass(frozen=True)
class RuntimeSpec:
    """An OCI runtime: its binary and the arguments put before every subcommand."""

    path: str
    args: tuple[str, ...] = ()


def builtin_runtimes() -> dict[str, RuntimeSpec]:
    """skiff-runtime (also called ``skiff``) always; runc when it is installed."""
    own = RuntimeSpec(_skiff_runtime_path())
    table = {DEFAULT_RUNTIME: own, "skiff": own}
    if shutil.which("runc"):
        # by name: the shim resolves it on PATH, as dockerd does
        table["runc"] = RuntimeSpec("runc")
    return table


@dataclass(frozen=True)
class Host:
    """One ``-H`` address: ``unix`` with a path, or ``tcp`` with a host and port."""

    scheme: str
    address: str
    port: int = 0

    @property
    def loopback(self) -> bool:
        if self.scheme != "tcp":
            return True
        if self.address == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False  # a host name: it may resolve anywhere

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.address}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"tcp://{host}:{self.port}"


def parse_host(value: str, tls: bool = False) -> Host:
    """``unix:///path`` or ``tcp://HOST[:PORT]`` (empty host: 127.0.0.1, as dockerd)."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise InvalidArgument(f"invalid host {value!r}: want unix:///PATH or tcp://HOST:PORT")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise InvalidArgument(f"invalid host {value!r}: unix:// needs an absolute path")
        return Host("unix", rest)
    if scheme != "tcp":
        raise InvalidArgument(f"invalid host {value!r}: only unix:// and tcp:// are supported")
    hostport = rest.rstrip("/")
    if "/" in hostport:
        raise InvalidArgument(f"invalid host {value!r}: tcp:// takes no path")
    port_text = ""
    if hostport.startswith("["):  # [v6]:port
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise InvalidArgument(f"invalid host {value!r}: bad IPv6 address")
        port_text = tail[1:]
    elif hostport.count(":") > 1:
        raise InvalidArgument(f"invalid host {value!r}: put an IPv6 address in brackets")
    else:
        host, _, port_text = hostport.partition(":")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidArgument(f"invalid host {value!r}: bad port {port_text!r}")
        port = int(port_text)
    else:
        port = TLS_PORT if tls else PLAIN_PORT
    return Host("tcp", host or "127.0.0.1", port)


@dataclass(frozen=True)
class DaemonConfig:
    hosts: tuple[str, ...] = (DEFAULT_HOST,)
    data_root: str = "/var/lib/skiff"
    exec_root: str = "/run/skiff"
    pidfile: str | None = None
    log_level: str = "info"
    debug: bool = False
    # a runtime name from the table, or (as before the table) a runtime's path
    default_runtime: str = ""
    # runtimes added by --add-runtime / "runtimes", beside the built-in ones
    runtimes: tuple[tuple[str, RuntimeSpec], ...] = ()
    # registries reached over plain HTTP (host:port or CIDR) and pull-through mirrors, in order
    insecure_registries: tuple[str, ...] = ()
    registry_mirrors: tuple[str, ...] = ()
    # skiff: the only registries pulls, pushes and logins may contact (empty: any)
    registry_allow: tuple[str, ...] = ()
    # containers keep running when the daemon stops (false: a clean shutdown stops them)
    live_restore: bool = True
    tls: bool = False
    tlsverify: bool = False
    tlscacert: str = ""
    tlscert: str = ""
    tlskey: str = ""
    # networking (docs/network.md): the default bridge's device and address, skiff's
    # nftables table ("": derived from the exec root, so daemons side by side never share)
    bridge: str = ""
    bip: str = ""
    nft_table: str = ""
    firewall_filter: bool = False

    @property
    def host(self) -> str:
        return self.hosts[0]

    @property
    def socket_path(self) -> str:
        """The first unix socket's path (what local clients and the tests connect to)."""
        for value in self.hosts:
            if value.startswith("unix://"):
                return value[len("unix://"):]
        raise ValueError(f"-H {', '.join(self.hosts)}: no unix:// socket")

    def parsed_hosts(self) -> list[Host]:
        return [parse_host(h, self.tls_enabled) for h in self.hosts]

    @property
    def tls_enabled(self) -> bool:
        return self.tls or self.tlsverify

    def runtime_table(self) -> dict[str, RuntimeSpec]:
        table = builtin_runtimes()
        table.update(dict(self.runtimes))
        if "/" in self.default_runtime:  # a bare path: named after its file
            table[self.default_runtime_name] = RuntimeSpec(self.default_runtime)
        return table

    @property
    def default_runtime_name(self) -> str:
        if "/" in self.default_runtime:
            return os.path.basename(self.default_runtime.rstrip("/"))
        return self.default_runtime or DEFAULT_RUNTIME

    @property
    def runtime(self) -> str:
        """The default runtime's binary."""
        return self.runtime_table()[self.default_runtime_name].path


# --- the config file ------------------------------------------------------------------------

# daemon.json key -> (DaemonConfig field, JSON type the file must use)
FILE_KEYS: dict[str, tuple[str, str]] = {
    "hosts": ("hosts", "list"), "data-root": ("data_root", "str"),
    "exec-root": ("exec_root", "str"), "pidfile": ("pidfile", "str"),
    "log-level": ("log_level", "str"), "debug": ("debug", "bool"),
    "insecure-registries": ("insecure_registries", "list"),
    "registry-mirrors": ("registry_mirrors", "list"),
    "registry-allow": ("registry_allow", "list"),
    "default-runtime": ("default_runtime", "str"), "runtimes": ("runtimes", "runtimes"),
    "live-restore": ("live_restore", "bool"), "tls": ("tls", "bool"),
    "tlsverify": ("tlsverify", "bool"), "tlscacert": ("tlscacert", "str"),
    "bridge": ("bridge", "str"), "bip": ("bip", "str"), "nft-table": ("nft_table", "str"),
    "firewall-filter": ("firewall_filter", "bool"),
    "tlscert": ("tlscert", "str"), "tlskey": ("tlskey", "str"),
}


def _check_type(path: str, key: str, kind: str, value: object) -> Any:
    def bad(want: str) -> InvalidArgument:
        return InvalidArgument(f"unable to configure the daemon with file {path}: {key}: "
                               f"want {want}, got {json.dumps(value)}")
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if not isinstance(value, dict):
        raise bad('an object {"name": {"path": ..., "runtimeArgs": [...]}}')
    out = []
    for name, entry in value.items():
        where = f"{key}.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise InvalidArgument(f"unable to configure the daemon with file {path}: {where}: "
                                  'want {"path": "...", "runtimeArgs": [...]}')
        extra = set(entry) - {"path", "runtimeArgs"}
        if extra:
            raise InvalidArgument(f"unable to configure the daemon with file {path}: {where}: "
                                  f"unknown key(s) {', '.join(sorted(extra))}")
        args = entry.get("runtimeArgs") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise InvalidArgument(f"unable to configure the daemon with file {path}: "
                                  f"{where}.runtimeArgs: want a list of strings")
        out.append((name, RuntimeSpec(entry["path"], tuple(args))))
    return tuple(out)


def load_file(path: str, *, explicit: bool) -> dict[str, Any]:
    """daemon.json as ``{daemon.json key: value}``, types checked; {} for a missing default."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if explicit:
            raise InvalidArgument(f"unable to configure the daemon with file {path}: "
                                  "no such file") from None
        return {}
    except OSError as exc:
        raise InvalidArgument(f"unable to configure the daemon with file {path}: "
                              f"{exc.strerror}") from exc
    try:
        raw = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidArgument(f"unable to configure the daemon with file {path}: "
                              f"invalid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidArgument(f"unable to configure the daemon with file {path}: "
                              "want a JSON object")
    unknown = sorted(set(raw) - set(FILE_KEYS))
    if unknown:
        raise InvalidArgument(f"unable to configure the daemon with file {path}: the "
                              "following directives don't match any configuration option: "
                              f"{', '.join(unknown)}")
    return {k: _check_type(path, k, FILE_KEYS[k][1], v) for k, v in raw.items()}


def merge(flags: Mapping[str, Any], file_values: Mapping[str, Any], path: str) -> DaemonConfig:
    """One DaemonConfig from the flags given (keyed like daemon.json) and the file's keys.

    ``flags`` holds only what was given on the command line: a key in both is an error.
    """
    both = sorted(set(flags) & set(file_values))
    if both:
        detail = ", ".join(f"{k}: (from flag: {_show(flags[k])}, from file: "
                           f"{_show(file_values[k])})" for k in both)
        raise InvalidArgument(f"unable to configure the daemon with file {path}: the following "
                              "directives are specified both as a flag and in the "
                              f"configuration file: {detail}")
    values = {FILE_KEYS[k][0]: v for k, v in {**file_values, **flags}.items()}
    for key in ("data_root", "exec_root"):
        if key in values:
            values[key] = os.path.abspath(values[key])
    config = DaemonConfig(**values)
    validate(config)
    return config


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + " ".join(_show(v) for v in value) + "]"
    if isinstance(value, RuntimeSpec):
        return value.path
    return str(value).lower() if isinstance(value, bool) else str(value)


def validate(config: DaemonConfig) -> None:
    """Settings that are each well-formed but wrong together (or wrong in themselves)."""
    if config.log_level not in LOG_LEVELS:
        raise InvalidArgument(f"log-level {config.log_level!r}: want one of "
                              f"{', '.join(LOG_LEVELS)}")
    if not config.hosts:
        raise InvalidArgument("hosts: at least one -H address is needed")
    builtin = builtin_runtimes()
    for name, spec in config.runtimes:
        if not name or "/" in name:
            raise InvalidArgument(f"runtime name {name!r}: want a plain name")
        if name in builtin or name == DEFAULT_RUNTIME:
            raise InvalidArgument(f"runtime name {name!r} is reserved")
        if not spec.path:
            raise InvalidArgument(f"runtime {name}: its path is empty")
    if config.default_runtime_name not in config.runtime_table():
        raise InvalidArgument(f"default-runtime {config.default_runtime!r}: no such runtime "
                              f"(known: {', '.join(sorted(config.runtime_table()))})")
    if config.tls_enabled and not (config.tlscert and config.tlskey):
        raise InvalidArgument("--tls needs --tlscert and --tlskey")
    if config.tlsverify and not config.tlscacert:
        raise InvalidArgument("--tlsverify needs --tlscacert (the CA client certificates "
                              "must be signed by)")
    for host in config.parsed_hosts():
        if not host.loopback and not config.tls_enabled:
            # dockerd only warns here; an unauthenticated API on the network is root for
            # anyone who can reach it, so skiffd refuses
            raise InvalidArgument(f"-H {host}: listening on a non-loopback TCP address "
                                  "without TLS would give root to anyone who can connect; "
                                  "use --tlsverify with --tlscacert/--tlscert/--tlskey, or "
                                  "a loopback address")
