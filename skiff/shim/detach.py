"""Detach keys: the byte sequence (ctrl-p ctrl-q by default) that ends an attach while the
container keeps running with its stdin open.

The shim scans here, not the daemon: the shim owns stdin, and only it can tell "the client
detached" (keep stdin open) from "the client's input ended" (close it, for StdinOnce)
without racing the bytes still in flight.
"""

from __future__ import annotations

from skiff.errors import InvalidArgument

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def parse_detach_keys(text: str) -> bytes:
    """Docker's spec ("ctrl-p,ctrl-q", "a", "ctrl-@") as the bytes to watch for."""
    out = bytearray()
    for key in (k.strip() for k in text.split(",")):
        if len(key) == 1:
            out.append(ord(key))
            continue
        ch = key[5:].lower() if key.lower().startswith("ctrl-") else ""
        if len(ch) == 1 and "a" <= ch <= "z":
            out.append(ord(ch) - ord("a") + 1)
        elif len(ch) == 1 and ch in "@[\\]^_":
            out.append(ord(ch) - 64)
        else:
            raise InvalidArgument(f"invalid detach keys {text!r}: unknown key {key!r}")
    return bytes(out)


class DetachScanner:
    """Bytes that might begin the sequence are held back until it completes (then they are
    dropped: the container never sees them) or breaks (then they are passed on)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to forward, detach now?)"""
        out = bytearray()
        for b in data:
            candidate = self.held + bytes([b])
            if self.keys.startswith(candidate):
                self.held = candidate
                if candidate == self.keys:
                    self.held = b""
                    return bytes(out), True
                continue
            out += self.held
            self.held = b""
            if self.keys[:1] == bytes([b]):
                self.held = bytes([b])
            else:
                out.append(b)
        return bytes(out), False
