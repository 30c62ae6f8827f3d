"""``python -m skiff.shim start --id ID --bundle DIR --state-dir DIR --runtime-root DIR
[--runtime skiff-runtime] [--runtime-arg ARG]... [--log-path FILE] [--log-max-size 10m] [--log-max-file 3]
[--stdin]``, or ``python -m skiff.shim zygote --socket PATH`` (a fork server of shims).

Whether the container has a tty is read from the bundle (``process.terminal``), so the shim
and the runtime cannot disagree about it. Arguments are parsed by hand: argparse would be a
few hundred KiB more in every shim.
"""

from __future__ import annotations

import json
import os
import sys

from skiff.errors import InvalidArgument
from skiff.shim.logs import DEFAULT_MAX_FILE, parse_size
from skiff.shim.server import Config

USAGE = __doc__ or ""
_VALUED = {"id", "bundle", "state-dir", "runtime", "runtime-root", "log-path", "log-max-size",
           "log-max-file", "runtime-arg"}
_BOOLEAN = {"stdin"}


def read_bundle(bundle: str) -> tuple[bool, bool]:
    """(whether the container has a terminal, whether its spec has hooks)."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            spec = json.load(f)
    except FileNotFoundError:
        return False, False  # the runtime will say what is wrong, in its own words
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"start: read {path}: {exc}") from exc
    if not isinstance(spec, dict):
        return False, False
    process = spec.get("process")
    tty = bool(process.get("terminal")) if isinstance(process, dict) else False
    return tty, bool(spec.get("hooks"))


def parse_start(argv: list[str]) -> Config:
    opts: dict[str, str] = {}
    runtime_args: list[str] = []  # --runtime-arg, repeatable: the runtime's runtimeArgs
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].removeprefix("--").partition("=")
        if not argv[i].startswith("--") or name not in _VALUED | _BOOLEAN:
            raise InvalidArgument(f"start: unknown argument {argv[i]!r}")
        if name in _BOOLEAN:
            flags.add(name)
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise InvalidArgument(f"start: --{name} needs a value")
                value = argv[i]
            if name == "runtime-arg":
                runtime_args.append(value)
            else:
                opts[name] = value
        i += 1
    for required in ("id", "bundle", "state-dir", "runtime-root"):
        if required not in opts:
            raise InvalidArgument(f"start: --{required} is required")
    state_dir = os.path.abspath(opts["state-dir"])
    bundle = os.path.abspath(opts["bundle"])
    try:
        max_file = int(opts.get("log-max-file", DEFAULT_MAX_FILE))
    except ValueError:
        raise InvalidArgument("start: --log-max-file wants a number") from None
    tty, hooks = read_bundle(bundle)
    return Config(id=opts["id"], bundle=bundle, state_dir=state_dir,
                  runtime=opts.get("runtime", "skiff-runtime"),
                  runtime_root=os.path.abspath(opts["runtime-root"]),
                  log_path=os.path.abspath(opts.get("log-path")
                                           or os.path.join(state_dir, "json.log")),
                  log_max_size=parse_size(opts.get("log-max-size", "10m")),
                  log_max_file=max_file, tty=tty, stdin="stdin" in flags,
                  runtime_args=tuple(runtime_args), hooks=hooks)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "zygote":  # the daemon's fork server for shims (see .zygote)
        from skiff.shim.zygote import main as zygote_main

        return zygote_main(argv[1:])
    if not argv or argv[0] in ("-h", "--help") or argv[0] != "start":
        sys.stdout.write(USAGE.strip() + "\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        cfg = parse_start(argv[1:])
    except InvalidArgument as exc:
        sys.stderr.write(f"skiff-shim: {exc}\n")
        return 2
    from skiff.shim.launch import start

    return start(cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
