"""Building a server from a ServerConfig and running it (one process or several workers).

Several workers share the listening port with SO_REUSEPORT (the kernel spreads connections)
and the storage root; the storage layout is what makes that safe, so the workers share
nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from skiff.errors import InvalidArgument, SystemFailure

from .app import Registry, gc_job, make_app, periodic
from .auth import Htpasswd, Policy, TokenSigner
from .config import ServerConfig
from .guard import Guard
from .proxy import Proxy
from .storage import Storage


def ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"load TLS certificate {cert} and key {key}: {exc}") from exc
    return ctx


def build(config: ServerConfig) -> tuple[web.Application, Registry]:
    storage = Storage(config.root)
    policy = Policy(list(config.access), config.anonymous_pull)
    if config.token is not None:
        tk = config.token
        key_pem = tk.key_pem
        if key_pem is None and tk.key:
            try:
                with open(tk.key, "rb") as f:
                    key_pem = f.read()
            except OSError as exc:
                raise InvalidArgument(f"read token key {tk.key}: {exc.strerror}") from exc
        signer = TokenSigner(key_pem, issuer=tk.issuer, service=tk.service,
                             lifetime=tk.lifetime)
        users = Htpasswd(tk.htpasswd) if tk.htpasswd else None
        guard = Guard(policy, htpasswd=users, signer=signer, realm=config.realm,
                      token_realm=tk.realm)
    elif config.htpasswd:
        guard = Guard(policy, htpasswd=Htpasswd(config.htpasswd), realm=config.realm)
    else:
        guard = Guard(policy)
    proxy = None
    if config.proxy is not None:
        px = config.proxy
        proxy = Proxy(storage, px.remote_url, username=px.username, password=px.password,
                      ttl=px.ttl)
    reg = Registry(storage, guard, delete_enabled=config.delete_enabled, fsync=config.fsync,
                   proxy=proxy)
    jobs: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if config.upload_purge_interval > 0:
        max_age = config.upload_max_age
        jobs.append(periodic(reg, config.upload_purge_interval,
                             lambda: reg.uploads.purge(max_age), "purge stale uploads"))
    if config.gc_interval > 0:
        jobs.append(periodic(reg, config.gc_interval, gc_job(reg, config.gc_grace),
                             "garbage collection"))
    return make_app(reg, background=jobs), reg


async def _serve(config: ServerConfig, ready: Callable[[str], None] | None) -> None:
    app, _ = build(config)
    host, port = config.host_port
    ctx = ssl_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key \
        else None
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_port=config.workers > 1,
                       backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemFailure(f"listen on {config.addr}: {exc.strerror}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(f"{'https' if ctx else 'http'}://{config.addr}")
    await stop.wait()
    await runner.cleanup()


def run(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; with workers > 1, fork that many processes and wait."""
    if config.workers <= 1:
        asyncio.run(_serve(config, ready))
        return
    Storage(config.root)  # create the layout once, before the workers race to
    if config.token is not None and config.token.key is None and config.token.key_pem is None:
        # Every worker must verify the tokens any of them issued: one key, made before fork.
        key = ec.generate_private_key(ec.SECP256R1())
        config.token.key_pem = key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())
    children = []
    for _ in range(config.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(_serve(config, None))
            except BaseException as exc:
                sys.stderr.write(f"skiff registry worker: {exc}\n")
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if ready is not None:
        ready(f"http{'s' if config.tls_cert else ''}://{config.addr}")
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
