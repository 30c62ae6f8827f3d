"""The json-file log: Docker's format, partial lines, rotation, and the docker-logs reader."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.errors import InvalidArgument
from skiff.shim import timefmt
from skiff.shim.logs import PARTIAL_MAX, LogWriter, log_files, parse_size, read_logs


def clock(start: int = 1_700_000_000_000_000_000, step: int = 1_000) -> Callable[[], int]:
    """A fake time source: each call is ``step`` ns after the last, so entries are ordered."""
    now = [start - step]

    def tick() -> int:
        now[0] += step
        return now[0]

    return tick


def entries(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_docker_json_file_entries(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), clock=clock())
    w.write("stdout", b"hello\nwor")
    w.write("stderr", b"oops\n")
    w.write("stdout", b"ld\n\xff\n")
    w.close()
    raw = log.read_text().splitlines()
    assert raw[0] == ('{"log":"hello\\n","stream":"stdout",'
                      '"time":"2023-11-14T22:13:20Z"}')
    got = [(e["stream"], e["log"]) for e in entries(log)]
    assert got == [("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "world\n"),
                   ("stdout", "\ufffd\n")]  # invalid UTF-8 replaced, as Docker does


def test_long_lines_split_at_16k_and_unfinished_line_is_flushed(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), clock=clock())
    w.write("stdout", b"x" * (PARTIAL_MAX * 2 + 10) + b"\nlast")
    assert w.pending("stdout") == b"last"
    w.close()
    got = [e["log"] for e in entries(log)]
    assert got == ["x" * PARTIAL_MAX, "x" * PARTIAL_MAX, "x" * 10 + "\n", "last"]


def test_rotation_keeps_max_file_files_under_max_size(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), max_size=1000, max_file=3, clock=clock())
    for i in range(100):
        w.write("stdout", f"line {i}\n".encode())
    w.close()
    files = log_files(str(log))
    assert [Path(f).name for f in files] == ["c.log.2", "c.log.1", "c.log"]
    assert all(Path(f).stat().st_size <= 1000 for f in files)
    kept = [e.data for e in read_logs(str(log))]
    # The newest lines survive, in order, with no gap between the files.
    assert kept == [f"line {i}\n".encode() for i in range(100 - len(kept), 100)]
    assert 20 < len(kept) < 100


def test_max_file_one_truncates_in_place(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), max_size=500, max_file=1, clock=clock())
    for i in range(50):
        w.write("stdout", f"line {i}\n".encode())
    w.close()
    assert log_files(str(log)) == [str(log)]
    assert log.stat().st_size <= 500
    assert entries(log)[-1]["log"] == "line 49\n"


def test_unbounded_when_max_size_is_minus_one(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), max_size=-1, clock=clock())
    for _ in range(100):
        w.write("stdout", b"y" * 200 + b"\n")
    w.close()
    assert log_files(str(log)) == [str(log)] and len(entries(log)) == 100


def test_tail_since_until_and_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    t0 = 1_700_000_000_000_000_000
    w = LogWriter(str(log), max_size=600, max_file=5, clock=clock(t0, 1_000_000_000))
    for i in range(30):
        w.write("stderr" if i % 2 else "stdout", f"{i}\n".encode())
    w.close()
    assert len(log_files(str(log))) > 1
    assert [e.data for e in read_logs(str(log), tail=3)] == [b"27\n", b"28\n", b"29\n"]
    assert list(read_logs(str(log), tail=0)) == []
    since = [e.data for e in read_logs(str(log), since_ns=t0 + 25 * 10**9)]
    assert since == [b"25\n", b"26\n", b"27\n", b"28\n", b"29\n"]
    until = [e.data for e in read_logs(str(log), until_ns=t0 + 2 * 10**9)]
    assert until == [b"0\n", b"1\n", b"2\n"]
    # tail is taken first, then since (Docker's order): tail 5 since 27 -> 27, 28, 29.
    both = [e.data for e in read_logs(str(log), tail=5, since_ns=t0 + 27 * 10**9)]
    assert both == [b"27\n", b"28\n", b"29\n"]
    first = next(iter(read_logs(str(log), tail=1)))
    assert first.stream == "stderr"
    assert first.format(timestamps=True) == b"2023-11-14T22:13:49.000000000Z 29\n"
    assert first.format() == b"29\n"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), clock=clock())
    w.write("stdout", b"whole\n")
    w.close()
    with open(log, "a") as f:
        f.write('{"log":"torn')
    assert [e.data for e in read_logs(str(log))] == [b"whole\n"]


def test_follow_reads_through_every_rotation_when_it_keeps_up(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), max_size=300, max_file=2, clock=clock())
    w.write("stdout", b"before\n")
    written = iter(range(60))
    done = [False]

    def stop() -> bool:
        # Called whenever the follower is at the end: the writer adds a few lines each time
        # (less than a file holds), so the follower always keeps up and must miss nothing.
        for _ in range(3):
            i = next(written, None)
            if i is None:
                done[0] = True
                break
            w.write("stdout", f"line {i}\n".encode())
        return done[0]

    got = [e.data for e in read_logs(str(log), follow=True, stop=stop, poll=0.001)]
    w.close()
    assert got == [b"before\n", *(f"line {i}\n".encode() for i in range(60))]
    assert len(log_files(str(log))) == 2  # it did rotate, many times


def test_follow_from_a_thread_sees_new_lines_and_ends_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = LogWriter(str(log), clock=clock())
    w.write("stdout", b"old\n")
    finished = threading.Event()
    follower = read_logs(str(log), tail=0, follow=True, stop=finished.is_set, poll=0.005)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(e.data for e in follower))
    reader.start()
    for i in range(5):
        w.write("stdout", f"new {i}\n".encode())
    finished.set()
    reader.join(timeout=10)
    w.close()
    assert not reader.is_alive()
    assert got == [f"new {i}\n".encode() for i in range(5)]


def test_parse_size() -> None:
    assert parse_size("10m") == 10 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024
    assert parse_size("1g") == 1024**3
    assert parse_size("2kb") == 2048
    assert parse_size("123") == 123
    assert parse_size("-1") == -1
    for bad in ("", "ten", "0", "-5m"):
        with pytest.raises(InvalidArgument):
            parse_size(bad)


def test_writer_rejects_zero_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        LogWriter(str(tmp_path / "c.log"), max_file=0)


def test_time_formats_match_go() -> None:
    t = 1_700_000_000_120_000_000
    assert timefmt.format_nano(t) == "2023-11-14T22:13:20.12Z"
    assert timefmt.format_nano(1_700_000_000 * 10**9) == "2023-11-14T22:13:20Z"
    assert timefmt.format_fixed(t) == "2023-11-14T22:13:20.120000000Z"
    assert timefmt.parse("2023-11-14T22:13:20.12Z") == t
    assert timefmt.parse("2023-11-14T23:13:20.12+01:00") == t
    assert timefmt.parse(timefmt.format_nano(t + 7)) == t + 7
    with pytest.raises(InvalidArgument):
        timefmt.parse("yesterday")
