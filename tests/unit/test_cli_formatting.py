"""Tables, sizes and durations as the docker CLI prints them."""

from __future__ import annotations

import io
from typing import Any

import pytest

from skiff.cli.commands.containers import PS_HEADERS, PS_TABLE, format_ports, ps_row
from skiff.cli.commands.images import IMAGE_HEADERS, IMAGE_TABLE, image_rows
from skiff.cli.formatting import ellipsis, human_duration, human_size, render, tabulate


def test_tabulate_pads_like_go_tabwriter() -> None:
    # minwidth 10, padding 3; the last cell is never padded
    out = tabulate([["CONTAINER ID", "IMAGE", "NAMES"], ["abc", "busybox:latest", "x"]])
    assert out == ("CONTAINER ID   IMAGE            NAMES\n"
                   "abc            busybox:latest   x\n")
    assert tabulate([["A", "B"], ["x", "y"]]) == "A         B\nx         y\n"


@pytest.mark.parametrize(("seconds", "want"), [
    (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (150, "2 minutes"), (3600, "About an hour"), (3 * 3600, "3 hours"),
    (47 * 3600, "47 hours"), (3 * 86400, "3 days"), (20 * 86400, "2 weeks"),
    (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration(seconds: float, want: str) -> None:
    assert human_duration(seconds) == want


@pytest.mark.parametrize(("size", "want"), [
    (0, "0B"), (999, "999B"), (4096, "4.1kB"), (2_060_000, "2.06MB"), (1_234_567_890, "1.23GB"),
])
def test_human_size(size: int, want: str) -> None:
    assert human_size(size) == want


def test_ellipsis() -> None:
    assert ellipsis("sleep 100", 20) == "sleep 100"
    assert ellipsis("sh -c echo out; echo err", 20) == "sh -c echo out; ech…"


def test_ps_row_and_table() -> None:
    c = {"Id": "5fda4d32a60e" + "0" * 52, "Names": ["/bg"], "Image": "busybox",
         "Command": "sh -c 'echo out; echo err'", "Created": 1000, "Status": "Up 2 seconds",
         "State": "running", "Labels": {"a": "b"},
         "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp", "IP": "0.0.0.0"},
                   {"PrivatePort": 53, "Type": "udp"}]}
    row = ps_row(c, trunc=True, now=1010)
    assert row["ID"] == "5fda4d32a60e"
    assert row["Command"] == '"sh -c \'echo out; ec…"'
    assert row["RunningFor"] == "10 seconds ago"
    assert row["Ports"] == "0.0.0.0:8080->80/tcp, 53/udp"
    assert ps_row(c, trunc=False, now=1010)["ID"] == c["Id"]
    out = io.StringIO()
    render([row], PS_TABLE, PS_HEADERS, out)
    head, line = out.getvalue().splitlines()
    assert head.split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                            "PORTS", "NAMES"]
    assert line.startswith("5fda4d32a60e   busybox   ")
    assert line.endswith("bg")


def test_render_formats() -> None:
    rows = [{"ID": "a", "Names": "x"}, {"ID": "b", "Names": "y"}]
    out = io.StringIO()
    render(rows, "{{.ID}}:{{.Names}}", PS_HEADERS, out)
    assert out.getvalue() == "a:x\nb:y\n"
    out = io.StringIO()
    render(rows, "table {{.Names}}\\t{{.ID}}", PS_HEADERS, out)  # a typed backslash-t
    assert out.getvalue() == "NAMES     CONTAINER ID\nx         a\ny         b\n"
    out = io.StringIO()
    render(rows, "json", PS_HEADERS, out)
    assert out.getvalue() == '{"ID":"a","Names":"x"}\n{"ID":"b","Names":"y"}\n'


def test_image_rows_one_per_tag_and_none() -> None:
    images: list[dict[str, Any]] = [{"Id": "sha256:" + "ab" * 32, "RepoTags": ["busybox:latest", "bb:1"],
               "RepoDigests": [], "Created": 0, "Size": 2_060_000},
              {"Id": "sha256:" + "cd" * 32, "RepoTags": None, "Created": 0, "Size": 5}]
    rows = image_rows(images, trunc=True, now=3 * 86400)
    assert [(r["Repository"], r["Tag"], r["ID"]) for r in rows] == [
        ("busybox", "latest", "ab" * 6), ("bb", "1", "ab" * 6), ("<none>", "<none>", "cd" * 6)]
    assert rows[0]["Size"] == "2.06MB" and rows[0]["CreatedSince"] == "3 days ago"
    out = io.StringIO()
    render(rows[:1], IMAGE_TABLE, IMAGE_HEADERS, out)
    assert out.getvalue().splitlines()[0] == "REPOSITORY   TAG       IMAGE ID       CREATED      SIZE"


def test_format_ports_ipv6() -> None:
    assert format_ports([{"IP": "::", "PrivatePort": 80, "PublicPort": 81, "Type": "tcp"}]) \
        == "[::]:81->80/tcp"
