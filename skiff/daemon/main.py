"""The `skiffd` command. Not built yet: say so plainly instead of pretending."""

from __future__ import annotations

import sys

from skiff import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-v"]):
        print(f"skiffd version {__version__}")
        return 0
    sys.stderr.write("skiffd: the daemon is not built yet (see README.md)\n")
    return 1
