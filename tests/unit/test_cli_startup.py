"""What keeps `skiff run` starting fast: no heavy modules on the way to the first request, our
own percent-encoding (checked against urllib's), help laid out as argparse's default would."""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
import urllib.parse

import pytest

from skiff.cli import urlcode
from skiff.cli.client import encode_query, path_arg
from skiff.cli.hosts import Endpoint
from skiff.cli.parsing import Parser, parser
from skiff.cli.runflags import add_run_flags
from skiff.cli.streams import Demuxer, raw_terminal

TRICKY = ["", "plain", "a b", "a+b", "a/b", "a?b", "a&b=c", "100%", "~user_name.-x",
          "héllo wörld", "日本語/タグ", "emoji \U0001f433", "tab\tnew\nline", "#frag",
          "[::1]:80", "@:;,$!*'()", "sha256:abc@def", "\x00\x7f", "   ", "+ +", "%2F"]

# Imported at run time by the CLI before, and too slow for its start (see the module docs)
HEAVY = ["typing", "urllib.parse", "ipaddress", "socket", "selectors", "shutil", "locale",
         "contextlib", "struct", "importlib.util"]
# ... and what only an attached session needs, loaded after the create request
SESSION = ["threading", "signal", "skiff.cli.session"]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("safe", ["/", "", "/:@", " ", "é/"])
def test_quote_matches_urllib(text: str, safe: str) -> None:
    assert urlcode.quote(text, safe) == urllib.parse.quote(text, safe)


@pytest.mark.parametrize("text", TRICKY)
def test_form_encoding_and_path_arg_match_urllib(text: str) -> None:
    assert urlcode.quote_form(text) == urllib.parse.quote_plus(text)
    assert path_arg(text) == urllib.parse.quote(text, safe="/:@")


def test_urlencode_matches_urllib_with_repeats_and_order() -> None:
    pairs = [(k, v) for k, v in zip(TRICKY, reversed(TRICKY), strict=True)]
    pairs += [("changes", "ENV a=b"), ("changes", "CMD [\"x\"]"), ("k y", "")]
    assert urlcode.urlencode(pairs) == urllib.parse.urlencode(pairs)
    assert urlcode.urlencode([]) == ""


def test_encode_query_is_urllib_form_encoding() -> None:
    filters = json.dumps({"label": ["a=b c"]})
    query: dict[str, str | int | bool | list[str] | None] = {
        "filters": filters, "all": True, "force": False, "size": 10, "skip": None,
        "changes": ["ENV x=1", "CMD a&b"], "t": "näme:1"}
    expected = [("filters", filters), ("all", "1"), ("force", "0"), ("size", "10"),
                ("changes", "ENV x=1"), ("changes", "CMD a&b"), ("t", "näme:1")]
    assert encode_query(query) == "?" + urllib.parse.urlencode(expected)
    assert encode_query({"skip": None}) == ""


def test_endpoint_compares_hashes_and_prints_by_value() -> None:
    a = Endpoint("tcp", host="h", port=5, tls=True)
    assert a == Endpoint("tcp", "", "h", 5, True)
    assert a != Endpoint("tcp", host="h", port=5)
    assert a != ("tcp", "", "h", 5, True)
    assert len({a, Endpoint("tcp", host="h", port=5, tls=True)}) == 1
    assert repr(a) == "Endpoint(scheme='tcp', path='', host='h', port=5, tls=True)"
    assert str(Endpoint("unix", path="/s.sock")) == "unix:///s.sock"


def _plain_run_parser() -> argparse.ArgumentParser:
    """The run parser as stock argparse builds it (default formatter width handling)."""
    plain = argparse.ArgumentParser(prog="skiff run", description="Create and run",
                                    allow_abbrev=False, add_help=False)
    plain.add_argument("--help", action="help", help="print usage")
    plain.flag = Parser.flag.__get__(plain)  # type: ignore[attr-defined]
    add_run_flags(plain)  # type: ignore[arg-type]
    return plain


@pytest.mark.parametrize("columns", ["30", "80", "132", "250"])
def test_help_and_usage_laid_out_for_the_terminal_as_argparse_does(
        columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)  # what shutil.get_terminal_size reads first
    ours = parser("skiff run", "Create and run")
    add_run_flags(ours)
    assert ours.format_help() == _plain_run_parser().format_help()
    assert ours.format_usage() == _plain_run_parser().format_usage()


def test_help_width_follows_the_terminal_not_the_placeholder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def lines_at(columns: str) -> int:
        monkeypatch.setenv("COLUMNS", columns)
        p = parser("skiff run", "Create and run")
        add_run_flags(p)
        return len(p.format_help().splitlines())

    assert lines_at("40") > lines_at("80") > lines_at("300")


def _modules_after(code: str) -> list[str]:
    """Modules a fresh interpreter has after ``code`` beyond those it starts with."""
    probe = ("import sys; before = set(sys.modules)\n" + code +
             "\nprint(' '.join(sorted(set(sys.modules) - before)))")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LANG", "LC_ALL")}
    env["LANG"] = "en_US.UTF-8"  # gettext would search catalogues for it (importing locale)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, check=True, timeout=60)
    return out.stdout.split()


def test_run_reaches_its_first_request_without_heavy_modules() -> None:
    loaded = _modules_after(
        "from skiff.cli import main\n"
        "from skiff.cli.commands import lifecycle as L\n"
        "p = L.parser('skiff run'); L.add_run_flags(p)\n"
        "a = p.parse(['--rm', '--network', 'none', '-e', 'A=b', 'busybox', 'true'])\n"
        "b = L.create_body(a, {}, detach=False, auto_remove=True)\n"
        "from skiff.cli.client import encode_query\n"
        "encode_query({'name': 'x y', 'condition': 'removed'})\n"
        "main.Cli(main.Globals(), {'DOCKER_HOST': 'unix:///nowhere.sock'}).client\n")
    assert "skiff.cli.commands.lifecycle" in loaded  # the probe did load the run path
    assert [m for m in HEAVY + SESSION if m in loaded] == []


def test_ps_reaches_its_first_request_without_heavy_modules() -> None:
    loaded = _modules_after(
        "from skiff.cli.commands import containers as C\n"
        "from skiff.cli.formatting import render\n"
        "C.parser('skiff ps').parse([])\n")
    assert "skiff.cli.commands.containers" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_help_still_imports_what_it_needs() -> None:
    # the lazy width: shutil comes in only once help is formatted, and then it is used
    loaded = _modules_after("from skiff.cli.parsing import parser\n"
                            "parser('x').format_help()\n")
    assert "shutil" in loaded


def test_unix_connection_refused_is_reported_without_socket_py() -> None:
    loaded = _modules_after(
        "from skiff.cli.main import main\n"
        "assert main(['-H', 'unix:///nonexistent/skiff.sock', 'ps']) == 125\n")
    assert "socket" not in loaded


def test_demuxer_reads_four_byte_big_endian_lengths() -> None:
    out: list[bytes] = []
    err: list[bytes] = []
    big = bytes(range(256)) * 300  # 76800 bytes: all four length bytes matter
    d = Demuxer(out.append, err.append)
    d.feed(b"\x02\x00\x00\x00" + len(big).to_bytes(4, "big") + big + b"\x00\x00\x00\x00")
    assert err == [big] and not out
    d.feed(b"\x00\x00\x00\x01!")  # stream 0 (stdin echo) goes to stdout
    assert out == [b"!"]


def test_raw_terminal_restores_the_terminal_and_passes_non_terminals() -> None:
    import termios

    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with raw_terminal(null) as is_tty:
            assert is_tty is False
    finally:
        os.close(null)
    leader, follower = pty.openpty()
    try:
        before = termios.tcgetattr(follower)
        with raw_terminal(follower) as is_tty:
            assert is_tty is True
            assert not termios.tcgetattr(follower)[3] & termios.ICANON  # raw: no line editing
        assert termios.tcgetattr(follower) == before
        with pytest.raises(RuntimeError), raw_terminal(follower):
            raise RuntimeError("the session failed")
        assert termios.tcgetattr(follower) == before
    finally:
        os.close(leader)
        os.close(follower)

