"""XDR and ONC RPC message codecs of the userspace NFS client, against RFC byte layouts."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time

import pytest

from skiff.errors import SystemFailure
from skiff.plugins.volumes.nfs import nfs3
from skiff.plugins.volumes.nfs.rpc import (
    AuthSys,
    RpcClient,
    RpcError,
    RpcUnreachable,
    decode_reply,
    encode_call,
    frame,
)
from skiff.plugins.volumes.nfs.xdr import Decoder, Encoder, XdrError

# --- XDR -------------------------------------------------------------------------------


def test_integers_are_big_endian_and_four_byte_aligned() -> None:
    data = Encoder().u32(1).i32(-2).u64(3).boolean(True).bytes()
    assert data == (b"\0\0\0\x01" + b"\xff\xff\xff\xfe" + b"\0" * 7 + b"\x03" + b"\0\0\0\x01")
    d = Decoder(data)
    assert (d.u32(), d.i32(), d.u64(), d.boolean()) == (1, -2, 3, True)
    d.done()


def test_opaque_and_strings_are_length_prefixed_and_padded() -> None:
    data = Encoder().opaque(b"abcde").string("hé").fixed(b"12345678", 8).bytes()
    assert data[:12] == b"\0\0\0\x05abcde\0\0\0"
    assert data[12:20] == b"\0\0\0\x03h\xc3\xa9\0"
    assert data[20:] == b"12345678"
    d = Decoder(data)
    assert (d.opaque(), d.string(), d.fixed(8)) == (b"abcde", "hé", b"12345678")
    d.done()


def test_undecodable_names_survive_a_round_trip() -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # latin-1 bytes on the server
    assert Decoder(Encoder().string(name).bytes()).string() == name
    assert Encoder().string(name).bytes()[4:8] == b"caf\xe9"


@pytest.mark.parametrize("data", [b"", b"\0\0\0", b"\0\0\0\x08abc"])
def test_truncated_input_is_an_xdr_error(data: bytes) -> None:
    with pytest.raises(XdrError):
        Decoder(data).opaque()


def test_lengths_beyond_the_limit_are_refused_both_ways() -> None:
    with pytest.raises(XdrError, match="limit 4"):
        Decoder(Encoder().opaque(b"12345").bytes()).opaque(4)
    with pytest.raises(XdrError):
        Encoder().opaque(b"12345", 4)
    with pytest.raises(XdrError):
        Encoder().u32(1 << 32)
    with pytest.raises(XdrError, match="boolean"):
        Decoder(b"\0\0\0\x02").boolean()
    with pytest.raises(XdrError, match="trailing"):
        Decoder(b"\0\0\0\x01\0\0\0\x02", 0).done()
    assert issubclass(XdrError, SystemFailure)  # the FUSE side turns it into EIO


# --- RPC messages ------------------------------------------------------------------------


def test_call_header_and_auth_sys_credentials() -> None:
    cred = AuthSys(1000, 100, (4, 27), machine="hostA")
    msg = encode_call(0x01020304, 100003, 3, 1, b"ARGS", cred)
    d = Decoder(msg)
    assert [d.u32() for _ in range(6)] == [0x01020304, 0, 2, 100003, 3, 1]
    assert d.u32() == 1  # AUTH_SYS
    body = Decoder(d.opaque())
    body.u32()  # stamp
    assert body.string() == "hostA"
    assert (body.u32(), body.u32(), [body.u32() for _ in range(body.u32())]) == (
        1000, 100, [4, 27])
    body.done()
    assert (d.u32(), d.opaque()) == (0, b"")  # verifier: AUTH_NONE
    assert msg.endswith(b"ARGS")


def test_auth_sys_sends_at_most_sixteen_groups() -> None:
    raw = Decoder(AuthSys(1, 1, tuple(range(40)), machine="m").encode())
    raw.u32()
    body = Decoder(raw.opaque())
    body.u32(), body.string(), body.u32(), body.u32()
    assert body.u32() == 16


def _accepted(xid: int, stat: int = 0, tail: bytes = b"") -> bytes:
    return Encoder().u32(xid).u32(1).u32(0).u32(0).opaque(b"").u32(stat).bytes() + tail


def test_reply_decoding_reaches_the_results() -> None:
    d = decode_reply(7, _accepted(7, tail=b"\0\0\0\x2a"), "test")
    assert d is not None and d.u32() == 42


def test_a_reply_to_another_call_is_skipped() -> None:
    assert decode_reply(8, _accepted(7), "test") is None


@pytest.mark.parametrize("reply, message", [
    (Encoder().u32(7).u32(1).u32(1).u32(1).u32(5).bytes(), "too weak"),
    (Encoder().u32(7).u32(1).u32(1).u32(0).u32(2).u32(2).bytes(), "RPC version mismatch"),
    (_accepted(7, 1), "program unavailable"),
    (_accepted(7, 2, Encoder().u32(2).u32(2).bytes()), "server offers 2-2"),
    (_accepted(7, 3), "procedure unavailable"),
    (Encoder().u32(7).u32(0).bytes(), "not a reply"),
    (Encoder().u32(7).u32(1).bytes(), "malformed reply"),
])
def test_refusals_are_named(reply: bytes, message: str) -> None:
    with pytest.raises(RpcError, match=message):
        decode_reply(7, reply, "nfs getattr")


def test_record_marking_sets_the_last_fragment_bit() -> None:
    assert frame(b"abcd") == b"\x80\0\0\x04abcd"


# --- RPC over a real TCP connection ------------------------------------------------------


def _serve_once(listener: socket.socket, respond: bool, fragments: int = 1) -> None:
    """A minimal RPC peer: answer one call with the xid echoed and 42 as the result, split
    into ``fragments`` record fragments (or never answer)."""
    conn, _ = listener.accept()
    with conn:
        head = conn.recv(4)
        (size,) = struct.unpack(">I", head)
        body = b""
        while len(body) < size & 0x7FFFFFFF:
            body += conn.recv(65536)
        if not respond:
            time.sleep(1)
            return
        reply = _accepted(Decoder(body).u32(), tail=b"\0\0\0\x2a")
        step = len(reply) // fragments
        parts = [reply[i * step:(i + 1) * step] for i in range(fragments - 1)]
        parts.append(reply[(fragments - 1) * step:])
        for i, part in enumerate(parts):
            last = 0x80000000 if i == len(parts) - 1 else 0
            conn.sendall(struct.pack(">I", last | len(part)) + part)


@pytest.mark.parametrize("fragments", [1, 3])
def test_a_call_over_tcp_reassembles_fragments(fragments: int) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        t = threading.Thread(target=_serve_once, args=(listener, True, fragments))
        t.start()
        client = RpcClient("127.0.0.1", listener.getsockname()[1], 100003, 3, timeout=5,
                           reserved_port=False)
        try:
            assert client.call(0, b"").u32() == 42
        finally:
            client.close()
            t.join()


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        t = threading.Thread(target=_serve_once, args=(listener, False))
        t.start()
        client = RpcClient("127.0.0.1", listener.getsockname()[1], 100003, 3, timeout=0.3,
                           retries=0, reserved_port=False)
        started = time.monotonic()
        with pytest.raises(RpcUnreachable, match=r"no reply within 0\.3s"):
            client.call(0, b"")
        assert time.monotonic() - started < 2
        client.close()
        t.join()


def test_a_refused_connection_names_the_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        client = RpcClient("127.0.0.1", port, 100000, 2, timeout=1, retries=1,
                           reserved_port=False)
        with pytest.raises(RpcUnreachable, match=f"127.0.0.1:{port}: ECONNREFUSED"):
            client.call(3, b"")


# --- NFSv3 structures --------------------------------------------------------------------


def test_fattr3_decodes_into_stat_fields() -> None:
    a = nfs3.Fattr(type=nfs3.NF3LNK, mode=0o777, nlink=1, uid=1000, gid=100, size=5,
                   used=4096, rdev=(0, 0), fsid=9, fileid=123456789012, atime=(1, 2),
                   mtime=(3, 4), ctime=(5, 6))
    data = nfs3.encode_fattr(Encoder(), a).bytes()
    assert len(data) == 84  # RFC 1813's fattr3
    d = Decoder(data)
    assert nfs3.decode_fattr(d) == a
    d.done()
    assert a.st_mode == 0o120777


def test_sattr3_sets_only_what_is_given() -> None:
    data = nfs3.Sattr(mode=0o640, size=0, mtime="now").encode(Encoder()).bytes()
    d = Decoder(data)
    assert (d.boolean(), d.u32()) == (True, 0o640)
    assert (d.boolean(), d.boolean()) == (False, False)  # uid, gid untouched
    assert (d.boolean(), d.u64()) == (True, 0)
    assert (d.u32(), d.u32()) == (nfs3.DONT_CHANGE, nfs3.SET_TO_SERVER_TIME)
    d.done()


def test_nfs_statuses_become_linux_errnos() -> None:
    assert nfs3.NfsError(66, "rmdir").errno == errno.ENOTEMPTY  # not 66 (EREMOTE) on Linux
    assert nfs3.NfsError(63, "create").errno == errno.ENAMETOOLONG
    assert nfs3.NfsError(70, "getattr").errno == errno.ESTALE
    assert nfs3.NfsError(2, "lookup").errno == errno.ENOENT
    assert nfs3.NfsError(99999, "x").errno == errno.EIO
