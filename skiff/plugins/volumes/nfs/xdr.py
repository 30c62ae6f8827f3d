"""XDR (RFC 4506): the big-endian, 4-byte aligned encoding every ONC RPC message uses.

Only what NFSv3, MOUNT3 and the portmapper need: unsigned/signed 32 and 64-bit integers,
booleans, fixed and variable opaque data and strings. A decoder that runs out of bytes or
meets a length beyond its limit raises ``XdrError``: replies come from the network and a
short or hostile one must not become an IndexError deep in the caller.
"""

from __future__ import annotations

import struct

from skiff.errors import SystemFailure

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class XdrError(SystemFailure):
    """A message that does not decode (truncated, too long, or out of range)."""


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


class Encoder:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u32(self, v: int) -> Encoder:
        if not 0 <= v <= 0xFFFFFFFF:
            raise XdrError(f"xdr: {v} does not fit an unsigned 32-bit integer")
        self._parts.append(_U32.pack(v))
        return self

    def i32(self, v: int) -> Encoder:
        if not -0x80000000 <= v <= 0x7FFFFFFF:
            raise XdrError(f"xdr: {v} does not fit a signed 32-bit integer")
        self._parts.append(_I32.pack(v))
        return self

    def u64(self, v: int) -> Encoder:
        if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
            raise XdrError(f"xdr: {v} does not fit an unsigned 64-bit integer")
        self._parts.append(_U64.pack(v))
        return self

    def i64(self, v: int) -> Encoder:
        self._parts.append(_I64.pack(v))
        return self

    def boolean(self, v: bool) -> Encoder:
        return self.u32(1 if v else 0)

    def fixed(self, data: bytes, size: int) -> Encoder:
        """Fixed-length opaque: exactly ``size`` bytes (e.g. an 8-byte verifier)."""
        if len(data) != size:
            raise XdrError(f"xdr: fixed opaque of {size} bytes given {len(data)}")
        self._parts.append(data + b"\0" * _pad(size))
        return self

    def opaque(self, data: bytes, limit: int | None = None) -> Encoder:
        if limit is not None and len(data) > limit:
            raise XdrError(f"xdr: opaque of {len(data)} bytes exceeds its limit {limit}")
        self.u32(len(data))
        self._parts.append(data + b"\0" * _pad(len(data)))
        return self

    def string(self, s: str | bytes, limit: int | None = None) -> Encoder:
        # NFS names are bytes on the wire; file names here are str with surrogateescape
        data = s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")
        return self.opaque(data, limit)

    def raw(self, data: bytes) -> Encoder:
        """Already-encoded XDR (e.g. a nested structure built by another encoder)."""
        if len(data) % 4:
            raise XdrError("xdr: raw data must be a multiple of 4 bytes")
        self._parts.append(data)
        return self

    def bytes(self) -> bytes:
        return b"".join(self._parts)


class Decoder:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._data = memoryview(data)
        self._pos = offset

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise XdrError(f"xdr: message truncated (need {n} bytes at offset {self._pos}, "
                           f"have {len(self._data) - self._pos})")
        view = self._data[self._pos:end]
        self._pos = end
        return view

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def i32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def boolean(self) -> bool:
        v = self.u32()
        if v > 1:
            raise XdrError(f"xdr: {v} is not a boolean")
        return v == 1

    def fixed(self, size: int) -> bytes:
        data = bytes(self._take(size))
        self._take(_pad(size))
        return data

    def opaque(self, limit: int | None = None) -> bytes:
        n = self.u32()
        if limit is not None and n > limit:
            raise XdrError(f"xdr: opaque of {n} bytes exceeds its limit {limit}")
        return self.fixed(n)

    def string(self, limit: int | None = None) -> str:
        return self.opaque(limit).decode("utf-8", "surrogateescape")

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def done(self) -> None:
        """Every byte consumed: trailing bytes mean the caller and the peer disagree."""
        if self.remaining():
            raise XdrError(f"xdr: {self.remaining()} unexpected trailing bytes")
