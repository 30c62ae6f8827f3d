"""The `skiff` command. The daemon it talks to (skiffd) is not built yet: say so plainly."""

from __future__ import annotations

import sys

from skiff import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-v"], ["version"]):
        print(f"skiff version {__version__}")
        return 0
    if args[:1] == ["registry"]:
        from skiff.cli import registry

        return registry.main(args[1:])
    sys.stderr.write("skiff: the client/daemon part is not built yet (see README.md); "
                     "use skiff-runtime to run containers\n")
    return 125
