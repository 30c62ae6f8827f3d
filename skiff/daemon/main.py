"""The ``skiffd`` command: dockerd's flags, the unix socket, the pidfile, clean shutdown."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import sys

from skiff import __version__
from skiff.daemon.config import DaemonConfig
from skiff.errors import Conflict, SkiffError, os_error

log = logging.getLogger("skiffd")
_WORKERS = 64  # blocking shim calls, attaches and log readers run in threads


def parse_args(argv: list[str]) -> DaemonConfig:
    p = argparse.ArgumentParser(prog="skiffd", description="skiff's container daemon "
                                "(Docker Engine API over a unix socket)")
    p.add_argument("-v", "--version", action="version", version=f"skiffd version {__version__}")
    p.add_argument("-H", "--host", default="unix:///run/skiff/skiff.sock",
                   help="socket to listen on (unix://PATH)")
    p.add_argument("--data-root", default="/var/lib/skiff")
    p.add_argument("--exec-root", default="/run/skiff")
    p.add_argument("-p", "--pidfile", default=None)
    p.add_argument("-l", "--log-level", default="info",
                   choices=["debug", "info", "warn", "error", "fatal"])
    p.add_argument("--default-runtime", default="",
                   help="path or name of a runc-compatible runtime (default: skiff-runtime)")
    a = p.parse_args(argv)
    if not a.host.startswith("unix://") or len(a.host) <= len("unix://"):
        p.error(f"-H {a.host}: only unix://PATH is supported")
    return DaemonConfig(host=a.host, data_root=os.path.abspath(a.data_root),
                        exec_root=os.path.abspath(a.exec_root), pidfile=a.pidfile,
                        log_level=a.log_level, default_runtime=a.default_runtime)


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
    path = config.socket_path
    sock = _listen(path)  # first: a second daemon on this socket must not touch anything
    runner: web.AppRunner | None = None
    engine = None
    try:
        engine = build_engine(config)
        # a short shutdown: open waits, log follows and attaches are cut, not waited for
        runner = web.AppRunner(build_app(config, engine), access_log=None,
                               handler_cancellation=True, shutdown_timeout=3)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        log.info("skiffd %s: API listening on %s", __version__, path)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("skiffd: shutting down (containers keep running)")
    finally:
        if runner is not None:
            await runner.cleanup()
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if engine is not None:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(config.log_level,
                                                        config.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
