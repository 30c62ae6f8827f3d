"""RFC 3339 timestamps with nanoseconds, formatted the way Go (and so Docker) does.

Docker's json-file driver writes Go's ``time.RFC3339Nano`` (trailing zeros of the fraction
trimmed, UTC as ``Z``); ``docker logs -t`` prints the fixed nine-digit form. Both are here so
that log files and exit records read the same as Docker's.
"""

from __future__ import annotations

import time

from skiff.errors import InvalidArgument

_NS = 1_000_000_000


def _base(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns // _NS))


def format_nano(t_ns: int) -> str:
    """Go's RFC3339Nano in UTC: ``2024-05-01T10:00:00.1234Z`` (no fraction when it is zero)."""
    frac = f"{t_ns % _NS:09d}".rstrip("0")
    return f"{_base(t_ns)}{'.' + frac if frac else ''}Z"


def format_fixed(t_ns: int) -> str:
    """Docker's RFC3339NanoFixed in UTC: always nine fraction digits."""
    return f"{_base(t_ns)}.{t_ns % _NS:09d}Z"


def parse(text: str) -> int:
    """Nanoseconds since the epoch from an RFC 3339 timestamp (any offset, any fraction)."""
    import calendar  # only readers parse; the shim itself never pays for this import

    s = text.strip()
    try:
        if s.endswith(("Z", "z")):
            body, offset = s[:-1], 0
        else:
            sign_at = max(s.rfind("+"), s.rfind("-"))
            if sign_at < 19:
                raise ValueError("no zone")
            body, zone = s[:sign_at], s[sign_at:]
            hours, _, minutes = zone[1:].partition(":")
            offset = (int(hours) * 3600 + int(minutes or 0) * 60) * (1 if zone[0] == "+" else -1)
        whole, _, frac = body.partition(".")
        if frac and not frac.isdigit():
            raise ValueError("bad fraction")
        secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) - offset
        return secs * _NS + int((frac + "000000000")[:9] or 0)
    except ValueError:
        raise InvalidArgument(f"parse timestamp {text!r}: not RFC 3339") from None
