"""Multiplexed output, detach keys in typed input, login's config.json."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path

from skiff.cli import credentials
from skiff.cli.streams import Demuxer, DetachWatcher, pump_input, read_output


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", kind, len(data)) + data


def test_demuxer_splits_streams_across_arbitrary_pieces() -> None:
    out: list[bytes] = []
    err: list[bytes] = []
    stream = frame(1, b"hello ") + frame(2, b"oops\n") + frame(1, b"world\n") + frame(1, b"")
    d = Demuxer(out.append, err.append)
    for i in range(len(stream)):  # one byte at a time: headers and payloads split anywhere
        d.feed(stream[i:i + 1])
    assert b"".join(out) == b"hello world\n"
    assert err == [b"oops\n"]
    assert not d.buf


def test_detach_watcher() -> None:
    w = DetachWatcher(b"\x10\x11")
    assert w.feed(b"ls\n") == (b"ls\n", False)
    assert w.feed(b"a\x10") == (b"a", False)  # held: could be the start of the sequence
    assert w.feed(b"x") == (b"\x10x", False)  # broken: sent after all
    assert w.feed(b"\x10\x10") == (b"\x10", False)
    assert w.feed(b"\x11rest") == (b"", True)


def test_pump_and_read_over_a_socketpair(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    r, wfd = os.pipe()
    os.write(wfd, b"typed\n")
    os.close(wfd)
    pump_input(ours, r, b"\x10\x11", lambda: None)
    os.close(r)
    assert theirs.recv(100) == b"typed\n"
    assert theirs.recv(100) == b""  # half-closed at stdin EOF
    theirs.sendall(frame(1, b"out") + frame(2, b"err"))
    theirs.close()
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        read_output(ours, frame(1, b"early-"), False, out, err)
    assert out_path.read_bytes() == b"early-out"
    assert err_path.read_bytes() == b"err"
    ours.close()


def test_credentials_round_trip_keeps_other_keys(tmp_path: Path) -> None:
    path = str(tmp_path / "cfg" / "config.json")
    os.makedirs(tmp_path / "cfg")
    Path(path).write_text(json.dumps({"psFormat": "x", "auths": {"other": {"auth": "eDp5"}}}))
    credentials.store(path, "https://127.0.0.1:5000/v2/", "me", "s3cret")
    doc = json.loads(Path(path).read_text())
    assert doc["psFormat"] == "x" and doc["auths"]["other"] == {"auth": "eDp5"}
    assert doc["auths"]["127.0.0.1:5000"] == {"auth": "bWU6czNjcmV0"}  # base64("me:s3cret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert credentials.lookup(path, "127.0.0.1:5000")["password"] == "s3cret"
    header = json.loads(__import__("base64").urlsafe_b64decode(
        credentials.encode_header(credentials.lookup(path, "127.0.0.1:5000"))))
    assert header == {"serveraddress": "127.0.0.1:5000", "username": "me",
                      "password": "s3cret"}
    assert credentials.erase(path, "127.0.0.1:5000") is True
    assert credentials.erase(path, "127.0.0.1:5000") is False
    assert credentials.lookup(path, "127.0.0.1:5000") == {}
    assert credentials.server_key("docker.io") == credentials.HUB_KEY


def test_credentials_readable_by_the_registry_client(tmp_path: Path) -> None:
    # skiff's registry client reads what `skiff login` writes (same file format).
    from skiff.plugins.registry.credentials import CredentialStore

    path = str(tmp_path / "config.json")
    credentials.store(path, "127.0.0.1:5000", "me", "pw")
    creds = CredentialStore(path).get("127.0.0.1:5000")
    assert (creds.username, creds.password) == ("me", "pw")
