"""The ``skiffd`` command: dockerd's flags, the unix and TCP (TLS) sockets, the pidfile, clean
shutdown."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import sys

from skiff import __version__
from skiff.daemon.config import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_HOST,
    DEFAULT_RUNTIME,
    LOG_LEVELS,
    DaemonConfig,
    Host,
    RuntimeSpec,
    load_file,
    merge,
)
from skiff.daemon.tlsbridge import TLSBridge
from skiff.errors import Conflict, InvalidArgument, SkiffError, os_error

log = logging.getLogger("skiffd")
_WORKERS = 64  # blocking shim calls, attaches and log readers run in threads


def _bool(text: str) -> bool:
    """Go's flag booleans: ``--tls``, ``--tls=true``, ``--live-restore=false``."""
    low = text.strip().lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _runtime_flag(text: str) -> tuple[str, RuntimeSpec]:
    name, eq, path = text.partition("=")
    if not eq or not name or not path:
        raise argparse.ArgumentTypeError(f"invalid runtime {text!r}: want NAME=PATH")
    return name, RuntimeSpec(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiffd", description="skiff's container daemon "
                                "(the Docker Engine API over unix and TCP sockets)")
    p.add_argument("-v", "--version", action="version", version=f"skiffd version {__version__}")
    p.add_argument("--config-file", default=None, metavar="FILE",
                   help=f"daemon.json with dockerd's keys (default {DEFAULT_CONFIG_FILE})")
    # default None: only what is given may clash with the file (see config.merge)
    p.add_argument("-H", "--host", dest="hosts", action="append", default=None, metavar="ADDR",
                   help=f"socket to listen on, repeatable: unix:///PATH or tcp://HOST:PORT "
                   f"(default {DEFAULT_HOST})")
    p.add_argument("--data-root", default=None, metavar="DIR", help="persistent state (default /var/lib/skiff)")
    p.add_argument("--exec-root", default=None, metavar="DIR", help="runtime state (default /run/skiff)")
    p.add_argument("-p", "--pidfile", default=None, metavar="FILE")
    p.add_argument("-l", "--log-level", default=None, choices=LOG_LEVELS)
    p.add_argument("-D", "--debug", nargs="?", const=True, type=_bool, default=None,
                   metavar="BOOL", help="debug logging")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append",
                   default=None, metavar="REGISTRY", help="registry (host:port or CIDR) to reach over plain HTTP, "
                   "repeatable")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append",
                   default=None, metavar="URL", help="pull-through mirror for Docker Hub, repeatable")
    p.add_argument("--registry-allow", dest="registry_allow", action="append", default=None,
                   metavar="REGISTRY", help="skiff: the only registries to contact (host, "
                   "host:port, CIDR or *), repeatable; default any")
    p.add_argument("--default-runtime", default=None, metavar="NAME",
                   help=f"runtime for containers that name none (default {DEFAULT_RUNTIME})")
    p.add_argument("--add-runtime", dest="runtimes", action="append", type=_runtime_flag,
                   default=None, metavar="NAME=PATH", help="another runc-compatible runtime, "
                   "repeatable (docker run --runtime NAME)")
    p.add_argument("--live-restore", nargs="?", const=True, type=_bool, default=None,
                   metavar="BOOL", help="keep containers running when skiffd stops (default "
                   "true; false: a clean shutdown stops them)")
    p.add_argument("--tls", nargs="?", const=True, type=_bool, default=None, metavar="BOOL",
                   help="serve TCP hosts over TLS")
    p.add_argument("--tlsverify", nargs="?", const=True, type=_bool, default=None,
                   metavar="BOOL", help="TLS and require client certificates signed by "
                   "--tlscacert")
    p.add_argument("--tlscacert", default=None, metavar="FILE", help="CA for client certificates")
    p.add_argument("--tlscert", default=None, metavar="FILE", help="the server's certificate")
    p.add_argument("--tlskey", default=None, metavar="FILE", help="the server's key")
    p.add_argument("-b", "--bridge", default=None, metavar="NAME",
                   help="the default bridge network's device (default skiff0)")
    p.add_argument("--bip", default=None, metavar="CIDR",
                   help="the default bridge's address, e.g. 10.213.9.1/24")
    p.add_argument("--nft-table", default=None, metavar="NAME",
                   help="skiff's nftables table (default skiff)")
    p.add_argument("--firewall-filter", nargs="?", const=True, type=_bool, default=None,
                   metavar="BOOL", help="published ports obey the host's firewall")
    return p


# argparse destination -> daemon.json key
_FLAG_KEYS = {"hosts": "hosts", "data_root": "data-root", "exec_root": "exec-root",
              "pidfile": "pidfile", "log_level": "log-level", "debug": "debug",
              "insecure_registries": "insecure-registries",
              "registry_mirrors": "registry-mirrors", "registry_allow": "registry-allow",
              "default_runtime": "default-runtime",
              "runtimes": "runtimes", "live_restore": "live-restore", "tls": "tls",
              "tlsverify": "tlsverify", "tlscacert": "tlscacert", "tlscert": "tlscert",
              "tlskey": "tlskey", "bridge": "bridge", "bip": "bip",
              "nft_table": "nft-table", "firewall_filter": "firewall-filter"}


def load_config(argv: list[str]) -> DaemonConfig:
    """Flags plus the config file; InvalidArgument when they are wrong or clash."""
    a = vars(_parser().parse_args(argv))
    given = {_FLAG_KEYS[k]: tuple(v) if isinstance(v, list) else v
             for k, v in a.items() if k in _FLAG_KEYS and v is not None}
    path = a["config_file"] or DEFAULT_CONFIG_FILE
    return merge(given, load_file(path, explicit=a["config_file"] is not None), path)


def parse_args(argv: list[str]) -> DaemonConfig:
    """load_config, with errors reported the way argparse reports them (exit 2)."""
    try:
        return load_config(argv)
    except InvalidArgument as exc:
        _parser().error(exc.message)


def _listen(path: str) -> socket.socket:
    """Bind the API socket (mode 0660); a stale socket is replaced, a live one refused."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
                raise Conflict(f"listen on {path}: another daemon is serving it")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o117)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise os_error("listen on", path, exc) from exc
    return sock


def _listen_tcp(host: Host) -> socket.socket:
    """Bind a TCP API socket (the address was checked: loopback, or TLS is on)."""
    try:
        infos = socket.getaddrinfo(host.address, host.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidArgument(f"listen on {host}: cannot resolve {host.address}: "
                              f"{exc.strerror}") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise os_error("listen on", str(host), exc) from exc
    return sock


def tls_context(config: DaemonConfig) -> ssl.SSLContext | None:
    """The server side of --tls/--tlsverify (None without TLS)."""
    if not config.tls_enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tlscert, config.tlskey)
        if config.tlscacert:
            ctx.load_verify_locations(config.tlscacert)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"TLS: load {config.tlscert}, {config.tlskey} or "
                              f"{config.tlscacert or '(no CA)'}: {exc}") from exc
    # --tlsverify: a client without a certificate from our CA is refused at the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED if config.tlsverify else ssl.CERT_NONE
    return ctx


def _listen_all(config: DaemonConfig) -> list[tuple[Host, socket.socket, int]]:
    """Every -H socket (with its file's inode, for unix ones), or none: a failure closes
    (and unlinks) what was already bound."""
    bound: list[tuple[Host, socket.socket, int]] = []
    try:
        for host in config.parsed_hosts():
            if host.scheme == "unix":
                sock = _listen(host.address)
                bound.append((host, sock, os.stat(host.address).st_ino))
            else:
                bound.append((host, _listen_tcp(host), 0))
    except BaseException:
        _close_all(bound)
        raise
    return bound


def _close_all(bound: list[tuple[Host, socket.socket, int]]) -> None:
    for host, sock, inode in bound:
        sock.close()
        if host.scheme == "unix":
            # only our own socket file: a daemon started after us may already own the path
            with contextlib.suppress(OSError):
                if os.stat(host.address).st_ino == inode:
                    os.unlink(host.address)


def _write_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
        if pid and os.path.exists(f"/proc/{pid}"):
            raise Conflict(f"pid file {path} names a running process ({pid}): is skiffd "
                           "already running?")
    except (FileNotFoundError, ValueError):
        pass
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


async def serve(config: DaemonConfig) -> None:
    from aiohttp import web

    from skiff.daemon.app import build_app, build_engine

    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(_WORKERS, "skiffd"))
    tls = tls_context(config)  # bad certificates fail before anything is bound
    # first: a second daemon on one of these sockets must not touch anything
    bound = _listen_all(config)
    runner: web.AppRunner | None = None
    engine = None
    bridges: list[asyncio.Server] = []
    try:
        engine = build_engine(config)
        # a short shutdown: open waits, log follows and attaches are cut, not waited for
        runner = web.AppRunner(build_app(config, engine), access_log=None,
                               handler_cancellation=True, shutdown_timeout=3)
        await runner.setup()
        server = runner.server
        assert server is not None
        for host, sock, _ in bound:
            if tls is not None and host.scheme == "tcp":
                # our TLS endpoint, not aiohttp's: attach needs TLS half-close
                bridges.append(await loop.create_server(
                    lambda: TLSBridge(tls, server), sock=sock))
            else:
                await web.SockSite(runner, sock).start()
            log.info("skiffd %s: API listening on %s%s", __version__, host,
                     " (TLS)" if tls is not None and host.scheme == "tcp" else "")
        # What start-up made (modules, the app, the engine) lives as long as the daemon: out
        # of the collector's sight, so a full collection in the middle of a request walks
        # only what requests made (tens of ms less at the worst moments).
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("skiffd: shutting down (%s)", "containers keep running"
                 if config.live_restore else "stopping containers: live-restore is off")
    finally:
        for bridge in bridges:
            bridge.close()
        if runner is not None:
            await runner.cleanup()
        _close_all(bound)
        if engine is not None:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    name = "debug" if config.debug else config.log_level
    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(name, name.upper())
    # logs go to stderr, as dockerd's do
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if config.pidfile:
            _write_pidfile(config.pidfile)
        try:
            asyncio.run(serve(config))
        finally:
            if config.pidfile:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(config.pidfile)
    except SkiffError as exc:
        sys.stderr.write(f"skiffd: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
