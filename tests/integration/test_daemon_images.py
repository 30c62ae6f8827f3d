"""skiffd's image verbs end to end: the stock docker CLI and docker-py against private skiffds
and loopback registries (Debian's docker-registry, plain and with htpasswd auth).

pull / push / tag / rmi / save / load / history / prune / login, their progress streams and
events, and the errors (bad references, unknown images, refused credentials, bad filters).
Two daemons per module: images pushed from one are pulled, or loaded, into the other.
"""

from __future__ import annotations

import base64
import json
import os
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.core.content import Digest
from skiff.devtools.daemon import UnixHTTP
from skiff.devtools.images import BuiltImage, Registry, build_image, skopeo_push
from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd
from tests.integration.support import PASSWORD, USER


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


@pytest.fixture(scope="module")
def other(busybox_rootfs: Path) -> Iterator[Skiffd]:
    """A second daemon: what the first pushes or saves must arrive here intact."""
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> BuiltImage:
    """A runnable two-layer image (busybox + a file) to seed registries with skopeo."""
    return build_image(tmp_path_factory.mktemp("img") / "layout",
                       [{"etc/skiff-motd": b"pulled through skiffd\n"}], rootfs=busybox_rootfs)


def raw(d: Skiffd, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, whole body) of one request."""
    conn = UnixHTTP(str(d.sock), 120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def q(filters: dict[str, list[str]]) -> str:
    return urllib.parse.quote(json.dumps(filters))


def lines(payload: bytes) -> list[dict[str, Any]]:
    return [json.loads(x) for x in payload.splitlines() if x.strip()]


def image_events(d: Skiffd, since: float) -> list[tuple[str, str, str]]:
    """(action, actor id, name attribute) of the image events since ``since``."""
    status, _, body = raw(d, "GET", f"/events?since={since:.3f}&until={time.time() + 1:.3f}"
                          "&filters=" + q({"type": ["image"]}))
    assert status == 200
    return [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"].get("name", ""))
            for e in lines(body)]


def auth_header(user: str, password: str, server: str) -> str:
    obj = {"username": user, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()


# --- pull ------------------------------------------------------------------------------------


def test_pull_streams_docker_progress_then_runs(skiffd: Skiffd, registry: Registry,
                                                built: BuiltImage) -> None:
    skopeo_push(built, registry, "pulled/app", "v1")
    ref = f"{registry.host}/pulled/app:v1"
    since = time.time()
    status, ctype, body = raw(skiffd, "POST",
                              f"/images/create?fromImage={registry.host}/pulled/app&tag=v1")
    assert status == 200 and ctype == "application/json"
    msgs = lines(body)
    assert msgs[0] == {"status": "Pulling from pulled/app", "id": "v1"}
    layer = msgs[1]["id"]
    states = [m["status"] for m in msgs if m.get("id") == layer]
    assert states[0] == "Pulling fs layer" and states[-1] == "Pull complete"
    assert any(m.get("progressDetail", {}).get("total") for m in msgs)
    assert msgs[-2] == {"status": f"Digest: {built.manifest_digest}"}
    assert msgs[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
    assert ("pull", ref, ref) in image_events(skiffd, since)

    # the docker CLI: up to date now; the image lists, inspects with its digest, and runs
    out = skiffd.out("pull", ref)
    assert f"Status: Image is up to date for {ref}" in out
    assert ref in skiffd.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    digests = json.loads(skiffd.out("image", "inspect", ref))[0]["RepoDigests"]
    assert digests == [f"{registry.host}/pulled/app@{built.manifest_digest}"]
    assert skiffd.out("run", "--rm", ref, "cat", "/etc/skiff-motd") == "pulled through skiffd\n"
    # by digest: the CLI sends the digest as the tag
    pinned = f"{registry.host}/pulled/app@{built.manifest_digest}"
    assert f"Digest: {built.manifest_digest}" in skiffd.out("pull", pinned)
    assert json.loads(skiffd.out("image", "inspect", pinned))[0]["Id"] == \
        json.loads(skiffd.out("image", "inspect", ref))[0]["Id"]
    skiffd.docker("rmi", ref, pinned)


def test_docker_run_pulls_a_missing_image(skiffd: Skiffd, registry: Registry,
                                          built: BuiltImage) -> None:
    skopeo_push(built, registry, "pulled/onrun")
    ref = f"{registry.host}/pulled/onrun:latest"
    res = skiffd.docker("run", "--rm", ref, "echo", "pulled on run")
    assert res.stdout == b"pulled on run\n"
    assert b"Downloaded newer image" in res.stderr
    skiffd.docker("rmi", ref)


def test_pull_errors_have_status_and_message(skiffd: Skiffd, registry: Registry) -> None:
    # an image the registry lacks: 404 before any stream, as dockerd
    status, _, body = raw(skiffd, "POST",
                          f"/images/create?fromImage={registry.host}/no/such&tag=latest")
    assert status == 404, body
    assert "not found" in json.loads(body)["message"]
    res = skiffd.docker("pull", f"{registry.host}/no/such:v9", check=False)
    assert res.returncode != 0 and b"not found" in res.stderr
    # a bad reference, a bad tag, a bad platform: 400 naming it
    for query, word in (("fromImage=UPPER/Case", "invalid reference format"),
                        ("fromImage=busybox&tag=bad%20tag", "invalid tag format"),
                        (f"fromImage={registry.host}/x&platform=linux//", "invalid platform"),
                        ("fromImage=", "fromImage")):
        status, _, body = raw(skiffd, "POST", f"/images/create?{query}")
        assert status == 400 and word in json.loads(body)["message"], (query, body)
    # nothing listens there: unavailable, naming the registry
    status, _, body = raw(skiffd, "POST", "/images/create?fromImage=127.0.0.1:9/x&tag=latest")
    assert status == 503 and "127.0.0.1:9" in json.loads(body)["message"]
    # a garbage X-Registry-Auth is the caller's fault
    status, _, body = raw(skiffd, "POST", f"/images/create?fromImage={registry.host}/x",
                          headers={"X-Registry-Auth": "!!not base64!!"})
    assert status == 400 and "X-Registry-Auth" in json.loads(body)["message"]


def test_failure_mid_pull_goes_in_the_stream(skiffd: Skiffd, registry: Registry,
                                              tmp_path: Path) -> None:
    img = build_image(tmp_path / "layout", [{"a": os.urandom(4096)}, {"b": os.urandom(4096)}])
    skopeo_push(img, registry, "broken/app")
    gone = Digest.from_bytes(img.layers[1])
    blob = registry.root / "storage/docker/registry/v2/blobs/sha256" / gone.hex[:2] / gone.hex
    (blob / "data").unlink()
    status, _, body = raw(skiffd, "POST",
                          f"/images/create?fromImage={registry.host}/broken/app&tag=latest")
    assert status == 200  # the manifest resolved: progress went out before the blob failed
    msgs = lines(body)
    assert msgs[0] == {"status": "Pulling from broken/app", "id": "latest"}
    assert {"status": "Pulling fs layer", "progressDetail": {}, "id": gone.hex[:12]} in msgs
    last = msgs[-1]
    assert last["error"] == last["errorDetail"]["message"] and gone.hex in last["error"]
    res = skiffd.docker("pull", f"{registry.host}/broken/app", check=False)
    assert res.returncode != 0 and gone.hex.encode() in res.stderr
    assert raw(skiffd, "GET", f"/images/{registry.host}/broken/app:latest/json")[0] == 404


# --- tag / push ------------------------------------------------------------------------------


def test_tag_push_then_pull_into_another_daemon(skiffd: Skiffd, other: Skiffd,
                                                registry: Registry) -> None:
    ref = f"{registry.host}/pushed/busybox:v1"
    since = time.time()
    skiffd.docker("tag", IMAGE, ref)
    image_id = json.loads(skiffd.out("image", "inspect", IMAGE))[0]["Id"]
    assert json.loads(skiffd.out("image", "inspect", ref))[0]["Id"] == image_id
    out = skiffd.out("push", ref)
    assert f"The push refers to repository [{registry.host}/pushed/busybox]" in out
    assert "Pushed" in out and "v1: digest: sha256:" in out
    events = image_events(skiffd, since)
    assert ("tag", image_id, ref) in events and ("push", ref, ref) in events
    # again: the registry has every layer
    assert "Layer already exists" in skiffd.out("push", ref)

    pulled = other.out("pull", ref)
    assert f"Downloaded newer image for {ref}" in pulled
    # the other daemon imported the same busybox tree: its layer is not fetched again
    assert "v1: Pulling from pushed/busybox" in pulled and "Already exists" in pulled
    assert other.out("run", "--rm", ref, "echo", "it travelled") == "it travelled\n"
    assert json.loads(other.out("image", "inspect", ref))[0]["RootFS"] == \
        json.loads(skiffd.out("image", "inspect", ref))[0]["RootFS"]
    other.docker("rmi", ref)
    skiffd.docker("rmi", ref)


def test_push_and_pull_without_tag_move_every_tag(skiffd: Skiffd, other: Skiffd,
                                                   registry: Registry) -> None:
    repo = f"{registry.host}/pushed/alltags"
    for tag in ("a", "b"):
        skiffd.docker("tag", IMAGE, f"{repo}:{tag}")
    status, _, body = raw(skiffd, "POST", f"/images/{repo}/push",
                          headers={"X-Registry-Auth": "e30="})  # "{}": anonymous
    assert status == 200, body
    done = [m["aux"]["Tag"] for m in lines(body) if "aux" in m]
    assert sorted(done) == ["a", "b"]
    out = other.out("pull", "-a", repo)  # the CLI sends no tag: every tag the registry lists
    assert "Pulling from pushed/alltags" in out
    assert sorted(other.out("images", "--format", "{{.Tag}}", repo).split()) == ["a", "b"]
    other.docker("rmi", f"{repo}:a", f"{repo}:b")
    for tag in ("a", "b"):
        skiffd.docker("rmi", f"{repo}:{tag}")


def test_push_and_tag_errors(skiffd: Skiffd, registry: Registry) -> None:
    status, _, body = raw(skiffd, "POST", f"/images/{registry.host}/never/tagged/push?tag=x")
    assert status == 404
    assert "An image does not exist locally with the tag" in json.loads(body)["message"]
    res = skiffd.docker("push", f"{registry.host}/never/tagged:x", check=False)
    assert res.returncode != 0 and b"does not exist locally" in res.stderr
    status, _, body = raw(skiffd, "POST", f"/images/{IMAGE}/tag?repo=Bad%20Name")
    assert status == 400 and "invalid reference format" in json.loads(body)["message"]
    status, _, body = raw(skiffd, "POST", "/images/no-such-image/tag?repo=x&tag=y")
    assert status == 404 and "No such image" in json.loads(body)["message"]
    status, _, body = raw(skiffd, "POST", f"/images/{IMAGE}/tag?repo=")
    assert status == 400
    # the API says 201 Created
    status, _, _ = raw(skiffd, "POST", f"/images/{IMAGE}/tag?repo=tagged/by-api&tag=t1")
    assert status == 201
    assert "tagged/by-api:t1" in skiffd.out("images", "--format", "{{.Repository}}:{{.Tag}}")
    skiffd.docker("rmi", "tagged/by-api:t1")


# --- credentials -----------------------------------------------------------------------------


def test_login_then_push_and_pull_with_credentials(skiffd: Skiffd, other: Skiffd,
                                                   auth_registry: Registry) -> None:
    host = auth_registry.host
    ref = f"{host}/private/busybox:latest"
    skiffd.docker("tag", IMAGE, ref)
    # anonymous: refused before any stream
    res = skiffd.docker("push", ref, check=False)
    assert res.returncode != 0 and host.encode() in res.stderr
    # wrong password: 401 with a message the CLI shows
    res = skiffd.docker("login", host, "-u", USER, "--password-stdin", input=b"wrong\n",
                        check=False)
    assert res.returncode != 0 and b"access denied for skiffer" in res.stderr
    status, _, body = raw(skiffd, "POST", "/auth", json.dumps(
        {"username": USER, "password": "wrong", "serveraddress": host}).encode())
    assert status == 401 and host in json.loads(body)["message"]

    for d in (skiffd, other):
        res = d.docker("login", host, "-u", USER, "--password-stdin",
                       input=PASSWORD.encode() + b"\n")
        assert b"Login Succeeded" in res.stdout
    status, _, body = raw(skiffd, "POST", "/auth", json.dumps(
        {"username": USER, "password": PASSWORD, "serveraddress": f"http://{host}"}).encode())
    assert status == 200
    assert json.loads(body) == {"Status": "Login Succeeded", "IdentityToken": ""}

    assert "digest: sha256:" in skiffd.out("push", ref)
    assert "Downloaded newer image" in other.out("pull", ref)
    assert other.out("run", "--rm", ref, "true") == ""
    other.docker("rmi", ref)
    # the credentials are the caller's: a client without them is refused again
    status, _, body = raw(other, "POST", f"/images/create?fromImage={host}/private/busybox")
    assert status == 403 and host in json.loads(body)["message"]
    status, _, body = raw(other, "POST", f"/images/create?fromImage={host}/private/busybox",
                          headers={"X-Registry-Auth": auth_header(USER, "bad", host)})
    assert status == 403
    skiffd.docker("rmi", ref)


def test_auth_bad_requests(skiffd: Skiffd) -> None:
    status, _, body = raw(skiffd, "POST", "/auth", b"not json")
    assert status == 400 and "invalid JSON" in json.loads(body)["message"]
    status, _, body = raw(skiffd, "POST", "/auth", json.dumps({"username": 7}).encode())
    assert status == 400 and "username" in json.loads(body)["message"]
    status, _, body = raw(skiffd, "POST", "/auth", json.dumps(
        {"username": "u", "password": "p", "serveraddress": "127.0.0.1:9"}).encode())
    assert status == 503 and "127.0.0.1:9" in json.loads(body)["message"]


# --- rmi -------------------------------------------------------------------------------------


def test_rmi_untag_in_use_conflicts_and_force(skiffd: Skiffd, registry: Registry,
                                              built: BuiltImage) -> None:
    skopeo_push(built, registry, "rmi/app")
    ref = f"{registry.host}/rmi/app:latest"
    skiffd.docker("pull", ref)
    image_id = json.loads(skiffd.out("image", "inspect", ref))[0]["Id"]
    # a second tag: rmi of one name only untags
    skiffd.docker("tag", ref, "rmi/second:x")
    status, _, body = raw(skiffd, "DELETE", "/images/rmi/second:x")
    assert status == 200 and json.loads(body) == [{"Untagged": "rmi/second:x"}]

    since = time.time()
    cid = skiffd.out("create", ref, "true").strip()
    skiffd.seen.add(cid)
    res = skiffd.docker("rmi", ref, check=False)
    assert res.returncode != 0
    assert f"container {cid[:12]} is using its referenced image".encode() in res.stderr
    status, _, body = raw(skiffd, "DELETE", f"/images/{image_id}")
    assert status == 409 and "must be forced" in json.loads(body)["message"]
    # forced: the name goes, the image stays (the container needs it) as <none>
    status, _, body = raw(skiffd, "DELETE", f"/images/{ref}?force=1")
    assert status == 200 and json.loads(body) == [{"Untagged": ref}]
    dangling = skiffd.out("images", "-q", "--no-trunc", "--filter", "dangling=true").split()
    assert image_id in dangling
    assert ("untag", image_id, image_id) in image_events(skiffd, since)
    skiffd.docker("rm", cid)
    out = json.loads(raw(skiffd, "DELETE", f"/images/{image_id}")[2])
    assert out == [{"Deleted": image_id}]
    assert ("delete", image_id, image_id) in image_events(skiffd, since)
    status, _, body = raw(skiffd, "DELETE", f"/images/{image_id}")
    assert status == 404 and "No such image" in json.loads(body)["message"]


def test_running_containers_image_cannot_be_forced(skiffd: Skiffd) -> None:
    image_id = json.loads(skiffd.out("image", "inspect", IMAGE))[0]["Id"]
    cid = skiffd.run_d(IMAGE, "sleep", "30")
    try:
        res = skiffd.docker("rmi", "-f", image_id, check=False)
        assert res.returncode != 0 and b"cannot be forced" in res.stderr
        assert b"running container" in res.stderr
    finally:
        skiffd.docker("rm", "-f", cid)
    assert IMAGE in skiffd.out("images", "--format", "{{.Repository}}:{{.Tag}}")


# --- save / load / history -------------------------------------------------------------------


def test_save_load_round_trip_into_another_daemon(skiffd: Skiffd, other: Skiffd,
                                                  tmp_path: Path) -> None:
    skiffd.docker("tag", IMAGE, "saved/one:v1")
    archive = tmp_path / "saved.tar"
    since = time.time()
    skiffd.docker("save", "-o", str(archive), "saved/one:v1")
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "index.json" in names and manifest[0]["RepoTags"] == ["saved/one:v1"]
    image_id = json.loads(skiffd.out("image", "inspect", IMAGE))[0]["Id"]
    assert ("save", image_id, image_id) in image_events(skiffd, since)

    since = time.time()
    res = other.docker("load", "-i", str(archive))
    assert b"Loaded image: saved/one:v1" in res.stdout
    assert ("load", image_id, image_id) in image_events(other, since)
    assert other.out("run", "--rm", "saved/one:v1", "echo", "loaded") == "loaded\n"
    other.docker("rmi", "saved/one:v1")

    # several names in one archive through /images/get
    skiffd.docker("tag", IMAGE, "saved/two:v2")
    status, ctype, body = raw(skiffd, "GET", "/images/get?names=saved/one:v1&names=saved/two:v2")
    assert status == 200 and ctype == "application/x-tar"
    (tmp_path / "two.tar").write_bytes(body)
    with tarfile.open(tmp_path / "two.tar") as tf:
        tags = json.loads(tf.extractfile("manifest.json").read())[0]["RepoTags"]  # type: ignore[union-attr]
    assert sorted(tags) == ["saved/one:v1", "saved/two:v2"]
    skiffd.docker("rmi", "saved/one:v1", "saved/two:v2")


def test_save_errors_come_before_the_archive(skiffd: Skiffd, tmp_path: Path) -> None:
    status, _, body = raw(skiffd, "GET", "/images/no-such:x/get")
    assert status == 404 and "No such image" in json.loads(body)["message"]
    status, _, body = raw(skiffd, "GET", f"/images/get?names={IMAGE}&names=nope:1")
    assert status == 404
    status, _, body = raw(skiffd, "GET", "/images/get")
    assert status == 400 and "no images named" in json.loads(body)["message"]
    res = skiffd.docker("save", "-o", str(tmp_path / "x.tar"), "no-such:x", check=False)
    assert res.returncode != 0 and b"No such image" in res.stderr


def test_history(skiffd: Skiffd, registry: Registry, built: BuiltImage) -> None:
    skopeo_push(built, registry, "hist/app")
    ref = f"{registry.host}/hist/app:latest"
    skiffd.docker("pull", ref)
    status, _, body = raw(skiffd, "GET", f"/images/{ref}/history")
    assert status == 200
    hist = json.loads(body)
    assert [h["CreatedBy"] for h in hist] == ["layer 1", "layer 0"]  # newest first
    assert hist[0]["Tags"] == [ref] and hist[0]["Id"].startswith("sha256:")
    assert hist[0]["Size"] > 0
    out = skiffd.out("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref).split("\n")
    assert out[:2] == ["layer 1", "layer 0"]
    assert raw(skiffd, "GET", "/images/nope:1/history")[0] == 404
    skiffd.docker("rmi", ref)


# --- prune / search --------------------------------------------------------------------------


def _import_dangling(d: Skiffd, tmp_path: Path, label: str) -> str:
    """A fresh dangling image (imported without a name), labelled so tests can tell it."""
    src = tmp_path / "rootfs"
    src.mkdir(exist_ok=True)
    (src / "f").write_text(label + str(time.time_ns()))
    tar = tmp_path / f"{label}.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(src / "f", "f")
    return d.out("import", "--change", f"LABEL which={label}", str(tar)).strip()


def test_image_prune_with_filters(skiffd: Skiffd, tmp_path: Path) -> None:
    keep = _import_dangling(skiffd, tmp_path, "keep")
    drop = _import_dangling(skiffd, tmp_path, "drop")
    # created just now: "until 1h ago" spares both, a label picks one
    status, _, body = raw(skiffd, "POST", "/images/prune?filters=" +
                          q({"until": ["1h"]}))
    assert status == 200 and json.loads(body)["ImagesDeleted"] is None
    since = time.time()
    out = skiffd.out("image", "prune", "-f", "--filter", "label=which=drop")
    assert drop in out and keep not in out
    assert ("delete", drop, drop) in image_events(skiffd, since)
    ids = skiffd.out("images", "-q", "--no-trunc").split()
    assert keep in ids and drop not in ids
    # tagged images survive a dangling prune
    out = json.loads(raw(skiffd, "POST", "/images/prune")[2])
    assert {"Deleted": keep} in out["ImagesDeleted"] and out["SpaceReclaimed"] >= 0
    assert IMAGE in skiffd.out("images", "--format", "{{.Repository}}:{{.Tag}}")

    for filters, word in (({"bogus": ["1"]}, "invalid filter 'bogus'"),
                          ({"dangling": ["maybe"]}, "dangling=maybe"),
                          ({"until": ["yesterday-ish"]}, "until=yesterday-ish"),
                          ({"until": ["1h", "2h"]}, "more than one")):
        status, _, body = raw(skiffd, "POST", "/images/prune?filters=" + q(filters))
        assert status == 400 and word in json.loads(body)["message"], (filters, body)
    res = skiffd.docker("image", "prune", "-f", "--filter", "bogus=1", check=False)
    assert res.returncode != 0 and b"invalid filter" in res.stderr


def test_search_says_it_is_not_offered(skiffd: Skiffd) -> None:
    status, _, body = raw(skiffd, "GET", "/images/search?term=busybox")
    assert status == 503 and "does not search" in json.loads(body)["message"]
    assert raw(skiffd, "GET", "/images/search")[0] == 400


# --- docker-py -------------------------------------------------------------------------------


def test_docker_py_pull_push_get_remove(skiffd: Skiffd, registry: Registry,
                                        built: BuiltImage) -> None:
    docker = pytest.importorskip("docker", reason="docker-py is a dev dependency "
                                 "(pip install docker)")
    skopeo_push(built, registry, "py/app", "v1")
    client = docker.DockerClient(base_url=f"unix://{skiffd.sock}", version="1.44")
    try:
        img = client.images.pull(f"{registry.host}/py/app", tag="v1")
        assert f"{registry.host}/py/app:v1" in img.tags
        assert img.tag(f"{registry.host}/py/copy", "v2")
        lines_ = list(client.images.push(f"{registry.host}/py/copy", tag="v2", stream=True,
                                         decode=True))
        assert any("aux" in m for m in lines_) and not any("error" in m for m in lines_)
        assert client.images.get(f"{registry.host}/py/copy:v2").id == img.id
        chunks = b"".join(img.save())
        assert len(chunks) > 1000
        client.images.remove(f"{registry.host}/py/copy:v2")
        client.images.remove(f"{registry.host}/py/app:v1")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(f"{registry.host}/py/app:v1")
        with pytest.raises(docker.errors.NotFound):
            client.images.pull(f"{registry.host}/py/none", tag="v1")
    finally:
        client.close()
    assert os.path.exists(skiffd.sock)
