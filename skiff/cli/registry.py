"""`skiff registry serve|gc`: run the OCI distribution registry, collect its garbage.

Flags override the config file, which overrides the defaults (127.0.0.1:5000 and
/var/lib/skiff/registry).
"""

from __future__ import annotations

import argparse
import logging
import sys

from skiff.errors import SkiffError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff registry", description="An OCI distribution registry")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the registry API")
    serve.add_argument("--addr", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--root", help="storage directory (default /var/lib/skiff/registry)")
    serve.add_argument("--config", help="YAML (or JSON) config file")
    serve.add_argument("--workers", type=int, help="processes sharing the port and storage")
    serve.add_argument("--tls-cert", help="PEM certificate (with --tls-key: serve HTTPS)")
    serve.add_argument("--tls-key", help="PEM private key")
    serve.add_argument("--log-level", default="warning")
    gc = sub.add_parser("gc", help="garbage-collect unreferenced blobs (safe while serving)")
    gc.add_argument("--root", help="storage directory (default /var/lib/skiff/registry)")
    gc.add_argument("--config", help="YAML (or JSON) config file")
    gc.add_argument("--grace", type=float, default=None,
                    help="spare blobs younger than this many seconds (default 3600)")
    gc.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    # Imported here: `skiff --version` and the other commands need not load aiohttp.
    from skiff.plugins.registry.server import config as cfgmod

    try:
        config = cfgmod.load(args.config) if args.config else cfgmod.ServerConfig()
        if args.root:
            config.root = args.root
        if args.command == "gc":
            from skiff.plugins.registry.server.gc import collect
            from skiff.plugins.registry.server.storage import Storage

            grace = config.gc_grace if args.grace is None else args.grace
            report = collect(Storage(config.root), grace=grace, dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            print(f"marked {report.marked}, {verb} {len(report.deleted)} blobs "
                  f"({report.freed} bytes), spared {report.spared_recent} recently used")
            return 0
        if args.addr:
            config.addr = args.addr
        if args.workers:
            config.workers = args.workers
        if args.tls_cert or args.tls_key:
            config.tls_cert, config.tls_key = args.tls_cert, args.tls_key
        config.host_port  # noqa: B018 - validates the address before anything starts
        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from skiff.plugins.registry.server.serve import run

        def ready(url: str) -> None:
            sys.stderr.write(f"skiff registry: serving {config.root} on {url}\n")
            sys.stderr.flush()

        run(config, ready)
        return 0
    except SkiffError as exc:
        sys.stderr.write(f"skiff registry: {exc}\n")
        return 125
    except KeyboardInterrupt:
        return 130
