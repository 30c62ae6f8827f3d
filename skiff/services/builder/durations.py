"""Go's ``time.ParseDuration`` for HEALTHCHECK options (``1m30s``, ``1.5h``, ``300ms``)."""

from __future__ import annotations

import re

from skiff.errors import InvalidArgument

__all__ = ["parse_duration"]

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string; raises InvalidArgument like Go's parser would."""
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise InvalidArgument(f'time: invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            if re.match(r"(\d+\.?\d*|\.\d+)$", body[pos:]):
                raise InvalidArgument(f'time: missing unit in duration "{text}"')
            raise InvalidArgument(f'time: invalid duration "{text}"')
        number, unit = match.group(1), match.group(2)
        whole, _, frac = number.partition(".")
        scale = _UNITS_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            # Exact integer arithmetic, truncating like Go does below one nanosecond.
            total += int(frac) * scale // (10 ** len(frac))
        pos = match.end()
    return sign * total
