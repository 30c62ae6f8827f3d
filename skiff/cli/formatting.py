"""Output as the docker CLI prints it: tabwriter tables, ``table``/``json``/template
``--format``, human durations and sizes, id and text truncation."""

from __future__ import annotations

import json
import sys
import time

from skiff.core.humanize import human_duration

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, TextIO

# text/tabwriter as the docker CLI configures it: minwidth 10, tabwidth 1, padding 3, spaces.
MIN_WIDTH, PADDING = 10, 3


def tabulate(rows: Sequence[Sequence[str]], min_width: int = MIN_WIDTH) -> str:
    """Align tab-separated cells like Go's tabwriter: every cell but a line's last is padded
    to its column's width (the widest cell + padding, at least MIN_WIDTH)."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, min_width), len(cell) + PADDING)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + (row[-1] if row else ""))
    return "".join(line + "\n" for line in lines)


def since(unix: float, now: float | None = None) -> str:
    return human_duration((time.time() if now is None else now) - unix) + " ago"


_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units, ``precision`` significant digits."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{_UNITS[i]}"


def short_id(ident: str, trunc: bool = True) -> str:
    """Docker's TruncateID (12 hex, no algorithm); untruncated ids are shown as they are."""
    if not trunc:
        return ident
    return ident.split(":", 1)[-1][:12]


def ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def unescape(fmt: str) -> str:
    """The docker CLI lets users type ``\\t`` and ``\\n`` in --format."""
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def render(rows: Iterable[Mapping[str, Any]], fmt: str, headers: Mapping[str, str],
           out: TextIO | None = None) -> None:
    """Print rows with a ``--format``: ``table [TEMPLATE]``, ``json`` or a template.

    ``headers`` maps field names to column titles; a table's header line is the template
    rendered over it (so ``table {{.ID}}\\t{{.Names}}`` gets ``CONTAINER ID   NAMES``).
    """
    stream = out or sys.stdout
    if fmt == "json":
        for row in rows:
            stream.write(json.dumps(dict(row), separators=(",", ":")) + "\n")
        return
    table = fmt.startswith("table")
    body = unescape(fmt[5:].strip() if table else fmt)
    from skiff.cli.template import Template  # here: `build` needs human_size alone

    tmpl = Template(body)
    lines = [tmpl.render(row) for row in rows]
    if not table:
        stream.write("".join(line + "\n" for line in lines))
        return
    head = Template(body).render({k: headers.get(k, k.upper()) for k in _fields(body)})
    stream.write(tabulate([line.split("\t") for line in [head, *lines]]))


def _fields(body: str) -> list[str]:
    import re

    return re.findall(r"\{\{\s*\.(\w+)", body)
