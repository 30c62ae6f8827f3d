"""Docker's JSON progress messages and the CLI renderer."""

from __future__ import annotations

import io
import json

import pytest

from skiff.core import progress as p


def test_human_size_matches_go_units() -> None:
    assert p.human_size(0) == "0B"
    assert p.human_size(999) == "999B"
    assert p.human_size(1000) == "1kB"
    assert p.human_size(1234) == "1.234kB"
    assert p.human_size(32768) == "32.77kB"
    assert p.human_size(2759000) == "2.759MB"
    assert p.human_size(5 * 10**9) == "5GB"


def test_progress_bar_text() -> None:
    assert p.progress_bar(0, 0) == ""
    assert p.progress_bar(1500, 0) == "   1.5kB"  # %8v, as go-units pads it
    half = p.progress_bar(1_000_000, 2_000_000)
    assert half == "[" + "=" * 25 + ">" + " " * 25 + "]      1MB/2MB"
    done = p.progress_bar(2_759_000, 2_759_000)
    assert done == "[" + "=" * 50 + ">]  2.759MB/2.759MB"
    # More than the total (a server that lied): no bar overflow, no "x/y".
    assert p.progress_bar(3000, 2000).endswith("]      3kB")


def test_message_shapes_are_dockerds() -> None:
    assert p.pulling_from("library/busybox", "latest") == {
        "status": "Pulling from library/busybox", "id": "latest"}
    assert p.pulling_fs_layer("a3ed95caeb02") == {
        "status": "Pulling fs layer", "progressDetail": {}, "id": "a3ed95caeb02"}
    d = p.downloading("a3ed95caeb02", 10, 20)
    assert d["progressDetail"] == {"current": 10, "total": 20}
    assert d["progress"] == p.progress_bar(10, 20)
    assert p.extracting("x", 5, 0)["progressDetail"] == {"current": 5}
    assert p.already_exists("x")["status"] == "Already exists"
    assert p.digest("sha256:ab") == {"status": "Digest: sha256:ab"}
    assert p.downloaded_newer("busybox:latest") == {
        "status": "Status: Downloaded newer image for busybox:latest"}
    assert p.up_to_date("busybox:latest")["status"] == "Status: Image is up to date for busybox:latest"
    assert p.push_refers_to("docker.io/library/x") == {
        "status": "The push refers to repository [docker.io/library/x]"}
    assert p.mounted_from("x", "library/alpine")["status"] == "Mounted from library/alpine"
    assert p.layer_already_exists("x")["status"] == "Layer already exists"
    line, aux = p.push_digest("latest", "sha256:ab", 527)
    assert line == {"status": "latest: digest: sha256:ab size: 527"}
    assert aux == {"progressDetail": {}, "aux": {"Tag": "latest", "Digest": "sha256:ab", "Size": 527}}
    assert p.error("boom") == {"errorDetail": {"message": "boom"}, "error": "boom"}
    assert p.short_id("sha256:" + "0123456789abcdef" * 4) == "0123456789ab"
    wire = p.encode(p.pulling_fs_layer("x"))
    assert wire.endswith(b"\r\n") and json.loads(wire) == p.pulling_fs_layer("x")


def test_plain_renderer_prints_state_changes_only() -> None:
    out = io.StringIO()
    r = p.Renderer(out, tty=False)
    for m in [p.pulling_from("library/busybox", "latest"), p.pulling_fs_layer("aaa"),
              p.downloading("aaa", 1, 10), p.downloading("aaa", 10, 10),
              p.download_complete("aaa"), p.pull_complete("aaa"), p.digest("sha256:x"),
              p.push_digest("t", "sha256:x", 1)[1]]:
        r.feed(m)
    assert out.getvalue().splitlines() == [
        "latest: Pulling from library/busybox", "aaa: Pulling fs layer",
        "aaa: Download complete", "aaa: Pull complete", "Digest: sha256:x"]


def test_tty_renderer_redraws_each_layer_in_place() -> None:
    out = io.StringIO()
    r = p.Renderer(out, tty=True)
    r.feed(p.pulling_fs_layer("aaa"))
    r.feed(p.pulling_fs_layer("bbb"))
    before = out.getvalue()
    r.feed(p.downloading("aaa", 5, 10))
    update = out.getvalue()[len(before):]
    # aaa is two lines up from the cursor: up 2, clear, redraw, back down 2.
    assert update.startswith("\x1b[2A\x1b[2K\r" + "aaa: Downloading [")
    assert update.endswith("\r\x1b[2B")
    r.feed(p.downloading("bbb", 5, 10))
    assert out.getvalue().endswith("\x1b[1B")
    r.feed(p.digest("sha256:x"))  # a new line below the layers
    assert out.getvalue().endswith("\x1b[2K\rDigest: sha256:x\n")
    # Three lines drawn, each layer kept its own line: the text has exactly three newlines.
    assert out.getvalue().count("\n") == 3


def test_renderer_raises_stream_errors_and_skips_keepalives() -> None:
    r = p.Renderer(io.StringIO(), tty=False)
    r.feed_line(b"\r\n")
    with pytest.raises(p.StreamError, match="manifest unknown"):
        r.feed_line(p.encode(p.error("manifest unknown")))
