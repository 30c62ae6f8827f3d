"""argparse the way the docker CLI parses flags: errors exit 125 (not 2), bool flags accept
``--flag=false``, and values in Docker's units (sizes, durations, CPUs)."""

from __future__ import annotations

import argparse
import re

from skiff.cli.exits import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn


def _untranslated(message: str) -> str:
    return message


def _untranslated_plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


# argparse passes its own texts ("options", "usage: ", its error messages) through gettext,
# and every such call searches the locale directories for a catalogue (importing `locale` on
# the first): over a millisecond of each `skiff run`, two calls per parser made. skiff's
# messages are English whatever the locale, as the docker CLI's are, so argparse's are too.
# This is the one place the CLI changes argparse's module state.
argparse._ = _untranslated  # type: ignore[attr-defined]
argparse.ngettext = _untranslated_plural  # type: ignore[attr-defined]


def _terminal_width() -> int:
    """The width argparse's default formatter lays help out in (the terminal's, less 2)."""
    import shutil  # only when help is printed

    return shutil.get_terminal_size().columns - 2


class Parser(argparse.ArgumentParser):
    # argparse makes a formatter for every add_argument (to check the metavar against nargs),
    # and its default formatter asks the terminal for its size each time, importing shutil:
    # ~3 ms for the run parser's 80 flags. Those checks never use the width, so formatters get
    # this placeholder until help or usage is actually formatted.
    _help_width = 78

    def _get_formatter(self) -> argparse.HelpFormatter:
        # typeshed's formatter_class protocol names only prog; every HelpFormatter takes width
        return self.formatter_class(prog=self.prog, width=self._help_width)  # type: ignore[call-arg]

    def format_usage(self) -> str:
        self._help_width = _terminal_width()
        return super().format_usage()

    def format_help(self) -> str:
        self._help_width = _terminal_width()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nSee '{self.prog} --help'.")

    def flag(self, *names: str, **kw: Any) -> None:
        """A bool flag that also takes ``--name=true|false`` (pflag style)."""
        kw.setdefault("default", False)
        if any(n.startswith("--no-") for n in names):  # BooleanOptionalAction reads these
            self.add_argument(*names, action="store_true", **kw)  # as "false"
            return
        self.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        return self.parse_args(normalise_bools(self, list(argv)))


def parser(prog: str, description: str = "") -> Parser:
    # Only --help: -h is taken (run's --hostname), as in the docker CLI.
    p = Parser(prog=prog, description=description, allow_abbrev=False, add_help=False)
    p.add_argument("--help", action="help", help="print usage")
    return p


def normalise_bools(p: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Rewrite ``--x=false`` to ``--no-x`` (and ``--x=true`` to ``--x``) in the flags before
    the first positional argument; what follows belongs to the container's command."""
    actions = p._option_string_actions
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        out.append(tok)
        i += 1
        if tok == "--" or not tok.startswith("-") or tok == "-":
            if not tok.startswith("-"):
                out.extend(argv[i:])
                break
            continue
        name, eq, value = tok.partition("=")
        action = actions.get(name)
        if eq and isinstance(action, argparse.BooleanOptionalAction):
            if value.lower() in ("false", "0"):
                out[-1] = "--no-" + name.lstrip("-")
            elif value.lower() in ("true", "1"):
                out[-1] = name
            else:
                raise UsageError(f'invalid argument "{value}" for "{name}" flag: '
                                 "strconv.ParseBool: parsing: invalid syntax")
            if out[-1] not in actions:  # a short flag (-d=false): argparse has no --no-d
                long = next((o for o in action.option_strings if o.startswith("--")), name)
                out[-1] = long if value.lower() in ("true", "1") else "--no-" + long[2:]
            continue
        if eq:
            continue
        if action is None and not tok.startswith("--") and len(tok) > 2:
            action = actions.get("-" + tok[-1])  # -it, -dp 80:80: the last letter decides
        if action is not None and action.nargs != 0 and i < len(argv):
            out.append(argv[i])
            i += 1
    return out


# Patterns are compiled on first use (re's cache), not at import: most runs never need them.
_SIZE = r"(?i)^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$"


def ram_bytes(text: str) -> int:
    """go-units RAMInBytes: ``512m``, ``1g``, ``1024`` (binary multiples)."""
    m = re.match(_SIZE, text.strip())
    if not m:
        raise UsageError(f"invalid size: '{text}'")
    power = "bkmgtp".index(m.group(2).lower() or "b")
    return int(float(m.group(1)) * 1024**power)


_DURATION = r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)"
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
       "m": 60_000_000_000, "h": 3_600_000_000_000}


def duration_ns(text: str) -> int:
    """Go's time.ParseDuration (``30s``, ``1m30s``, ``500ms``) in nanoseconds."""
    if text in ("0", ""):
        return 0
    pos, total = 0, 0.0
    for m in re.finditer(_DURATION, text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise UsageError(f'time: invalid duration "{text}"')
    return int(total)


def nano_cpus(text: str) -> int:
    try:
        value = float(text)
    except ValueError as exc:
        raise UsageError(f"failed to parse {text} as a rational number") from exc
    if value < 0:
        raise UsageError(f"invalid value for --cpus: {text}")
    return int(value * 1e9)


def key_values(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what}: '{item}'")
        out[key] = value
    return out


def detach_keys(text: str) -> bytes:
    """``ctrl-p,ctrl-q`` -> b"\\x10\\x11" (Docker's detach-keys syntax)."""
    out = bytearray()
    for part in text.split(","):
        part = part.strip()
        if len(part) == 1:
            out.append(ord(part))
        elif part.lower().startswith("ctrl-") and len(part) == 6:
            ch = part[5].lower()
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
            elif ch in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[ch])
            else:
                raise UsageError(f"invalid detach keys: unknown character '{part}'")
        else:
            raise UsageError(f"invalid detach keys: unknown character '{part}'")
    if not out:
        raise UsageError("invalid detach keys: empty")
    return bytes(out)
