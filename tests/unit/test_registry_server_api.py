"""The registry API against the real aiohttp app on loopback, driven with plain HTTP."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.unit.test_registry_server_support import (
    OCI_INDEX,
    OCI_MANIFEST,
    ServerThread,
    digest_of,
    errors,
    make_image,
    push_blob,
    push_image,
    serve,
    snapshot,
)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerThread]:
    with serve(tmp_path / "root") as s:
        yield s


@pytest.fixture
def c(srv: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        yield client


def root_of(srv: ServerThread) -> Path:
    return Path(srv.config.root)


def test_base_and_error_format(c: httpx.Client) -> None:
    r = c.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    r = c.get("/v2/nothere/tags/list")
    assert r.status_code == 404
    body = r.json()
    assert body["errors"][0]["code"] == "NAME_UNKNOWN"
    assert body["errors"][0]["message"]


def raw(srv: ServerThread, method: str, path: str) -> tuple[int, dict[str, object]]:
    """A request with the path sent exactly as written (HTTP clients normalise ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, body=b"{}" if method in ("PUT", "POST") else None)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize("path", [
    "/v2/Upper/tags/list", "/v2/a/../b/tags/list", "/v2/a//b/tags/list",
    "/v2/a/%2e%2e/b/tags/list", "/v2/_layers/tags/list", "/v2/a/_manifests/tags/list",
    "/v2/-a/tags/list", "/v2/" + "a" * 256 + "/tags/list",
])
def test_path_tricks_in_names_are_refused(srv: ServerThread, c: httpx.Client, path: str) -> None:
    push_image(c, "good/repo", make_image("x"), "v1")
    before = snapshot(root_of(srv))
    for method in ("GET", "POST", "PUT", "DELETE"):
        target = path.replace("tags/list", "blobs/uploads/") if method == "POST" else \
            path.replace("tags/list", "manifests/v1") if method in ("PUT", "DELETE") else path
        status, body = raw(srv, method, target)
        assert status in (400, 404), (method, target, status)
        codes = [e["code"] for e in body["errors"]]  # type: ignore[attr-defined]
        assert codes == ["NAME_INVALID"], (method, target, body)
    assert snapshot(root_of(srv)) == before


def test_monolithic_uploads_and_blob_reads(srv: ServerThread, c: httpx.Client) -> None:
    data = os.urandom(100_000)
    d = digest_of(data)
    # POST then PUT with the body
    r = c.post("/v2/x/y/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert r.headers["Docker-Upload-UUID"] in loc
    r = c.put(loc, params={"digest": d}, content=data)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"] == f"/v2/x/y/blobs/{d}"
    r = c.head(f"/v2/x/y/blobs/{d}")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == d
    assert c.get(f"/v2/x/y/blobs/{d}").content == data
    # single POST
    other = b"single post"
    r = c.post("/v2/x/y/blobs/uploads/", params={"digest": digest_of(other)}, content=other)
    assert r.status_code == 201
    assert c.get(f"/v2/x/y/blobs/{digest_of(other)}").content == other
    # visible only in the repository that has it
    r = c.get(f"/v2/x/z/blobs/{d}")
    assert r.status_code == 404 and errors(r) == ["BLOB_UNKNOWN"]


def test_ranges(c: httpx.Client) -> None:
    data = bytes(range(256)) * 40
    d = push_blob(c, "r/r", data)
    r = c.get(f"/v2/r/r/blobs/{d}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = c.get(f"/v2/r/r/blobs/{d}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = c.get(f"/v2/r/r/blobs/{d}", headers={"Range": "bytes=100-"})
    assert r.content == data[100:]
    for bad in ("bytes=99999-", "bytes=5-2", "bytes=abc", "bytes=0-1,4-5", "items=0-1"):
        r = c.get(f"/v2/r/r/blobs/{d}", headers={"Range": bad})
        assert r.status_code == 416, bad
        assert errors(r) == ["RANGE_INVALID"]
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_chunked_upload_status_resume_and_cancel(srv: ServerThread, c: httpx.Client) -> None:
    data = os.urandom(300_000)
    d = digest_of(data)
    loc = c.post("/v2/ch/un/blobs/uploads/").headers["Location"]
    r = c.patch(loc, content=data[:100_000], headers={"Content-Range": "0-99999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    # A chunk that does not start at the offset is refused and says where to resume.
    r = c.patch(loc, content=data[150_000:200_000], headers={"Content-Range": "150000-199999"})
    assert r.status_code == 416 and errors(r) == ["BLOB_UPLOAD_INVALID"]
    assert r.headers["Range"] == "0-99999"
    # Status, then resume from what it reports; a chunk without Content-Range (streamed) too.
    r = c.get(loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-99999"
    r = c.patch(loc, content=data[100_000:200_000],
                headers={"Content-Range": "100000-199999"})
    assert r.headers["Range"] == "0-199999"
    r = c.patch(loc, content=iter([data[200_000:250_000], data[250_000:]]))
    assert r.headers["Range"] == "0-299999"
    r = c.put(loc, params={"digest": d})
    assert r.status_code == 201
    assert c.get(f"/v2/ch/un/blobs/{d}").content == data
    assert c.get(loc).status_code == 404
    # cancel
    loc = c.post("/v2/ch/un/blobs/uploads/").headers["Location"]
    c.patch(loc, content=b"partial")
    assert c.delete(loc).status_code == 204
    r = c.get(loc)
    assert r.status_code == 404 and errors(r) == ["BLOB_UPLOAD_UNKNOWN"]
    assert not any((root_of(srv) / "repositories/ch/un/_uploads").iterdir())
    # an id that is not ours never reaches the filesystem
    r = c.get("/v2/ch/un/blobs/uploads/..%2F..%2Fetc")
    assert r.status_code == 404


def test_wrong_digest_leaves_nothing_visible(srv: ServerThread, c: httpx.Client) -> None:
    push_blob(c, "w/d", b"existing")
    before = snapshot(root_of(srv))
    data = b"the real bytes"
    wrong = digest_of(b"other bytes")
    r = c.post("/v2/w/d/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    loc = c.post("/v2/w/d/blobs/uploads/").headers["Location"]
    r = c.put(loc, params={"digest": wrong}, content=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    loc = c.post("/v2/w/d/blobs/uploads/").headers["Location"]
    r = c.put(loc, params={"digest": "sha256:nothex"}, content=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    assert c.delete(loc).status_code == 204  # that session stays open until cancelled
    for d in (wrong, digest_of(data)):
        assert c.head(f"/v2/w/d/blobs/{d}").status_code == 404
    r = c.post("/v2/w/d/blobs/uploads/", params={"digest": "md5:abc"}, content=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    assert snapshot(root_of(srv)) == before


def test_cross_repo_mount_and_fallback(c: httpx.Client) -> None:
    d = push_blob(c, "src/repo", b"shared layer")
    r = c.post("/v2/dst/repo/blobs/uploads/", params={"mount": d, "from": "src/repo"})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == d
    assert c.get(f"/v2/dst/repo/blobs/{d}").content == b"shared layer"
    # Source lacks it (or names nonsense): an upload session instead, as the spec says.
    for src in ("empty/repo", "../x"):
        r = c.post("/v2/dst/other/blobs/uploads/", params={"mount": d, "from": src})
        assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]


def test_manifests_by_tag_and_digest(c: httpx.Client) -> None:
    img = make_image("one")
    r = push_image(c, "m/one", img, "v1")
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == img.digest
    assert r.headers["Location"] == f"/v2/m/one/manifests/{img.digest}"
    for ref in ("v1", img.digest):
        r = c.get(f"/v2/m/one/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == img.manifest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == img.digest
        h = c.head(f"/v2/m/one/manifests/{ref}")
        assert h.headers["Content-Length"] == str(len(img.manifest))
    r = c.get("/v2/m/one/manifests/nope")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    # push by digest, no tag
    img2 = make_image("two")
    assert push_image(c, "m/one", img2, img2.digest).status_code == 201
    assert c.get("/v2/m/one/tags/list").json()["tags"] == ["v1"]


def test_hostile_manifests_refused_storage_unchanged(srv: ServerThread, c: httpx.Client) -> None:
    img = make_image("base")
    push_image(c, "h/m", img, "v1")
    before = snapshot(root_of(srv))
    doc = json.loads(img.manifest)

    def put(body: bytes, ref: str = "v2", ct: str = OCI_MANIFEST) -> httpx.Response:
        return c.put(f"/v2/h/m/manifests/{ref}", content=body, headers={"Content-Type": ct})

    missing = dict(doc, layers=[{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                 "digest": digest_of(b"ghost"), "size": 5}])
    cases = [
        (put(b"{not json"), 400, "MANIFEST_INVALID"),
        (put(b"[1, 2]"), 400, "MANIFEST_INVALID"),
        (put(json.dumps(missing).encode()), 400, "MANIFEST_BLOB_UNKNOWN"),
        (put(json.dumps(dict(doc, schemaVersion=1)).encode()), 400, "MANIFEST_INVALID"),
        (put(img.manifest, ct=OCI_INDEX), 400, "MANIFEST_INVALID"),
        (put(img.manifest, ref=digest_of(b"something else")), 400, "DIGEST_INVALID"),
        (put(b"{" + b" " * (4 << 20) + b"}"), 413, "MANIFEST_INVALID"),
        (put(img.manifest, ref="bad:tag:x"), 400, "DIGEST_INVALID"),
        (put(img.manifest, ref="-bad"), 400, "MANIFEST_INVALID"),
        (put(json.dumps(dict(doc, config=dict(doc["config"], size=1))).encode()),
         400, "MANIFEST_INVALID"),
        (put(json.dumps(dict(doc, mediaType="application/x-weird")).encode(),
             ct="application/x-weird"), 400, "MANIFEST_INVALID"),
    ]
    for i, (r, status, code) in enumerate(cases):
        assert (r.status_code, errors(r)) == (status, [code]), (i, r.text)
    assert snapshot(root_of(srv)) == before


def test_index_and_content_negotiation(c: httpx.Client) -> None:
    amd, arm = make_image("amd64"), make_image("arm64")
    for img in (amd, arm):
        push_image(c, "n/idx", img, img.digest)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": len(arm.manifest),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": len(amd.manifest),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    r = c.put("/v2/n/idx/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201
    r = c.get("/v2/n/idx/manifests/multi", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert r.content == index and r.headers["Content-Type"] == OCI_INDEX
    # A client that takes only image manifests gets the amd64 one, with its own digest.
    r = c.get("/v2/n/idx/manifests/multi", headers={"Accept": OCI_MANIFEST})
    assert r.content == amd.manifest and r.headers["Docker-Content-Digest"] == amd.digest
    r = c.get("/v2/n/idx/manifests/multi", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v1+prettyjws"})
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    # By digest the client gets exactly those bytes, whatever it accepts.
    r = c.get(f"/v2/n/idx/manifests/{digest_of(index)}", headers={"Accept": OCI_MANIFEST})
    assert r.content == index
    # An index naming a manifest this repository does not have is refused.
    ghost = make_image("ghost")
    bad = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": ghost.digest, "size": len(ghost.manifest)}]})
    r = c.put("/v2/n/idx/manifests/bad", content=bad, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 400 and errors(r) == ["MANIFEST_BLOB_UNKNOWN"]


def test_tag_and_catalog_pagination(c: httpx.Client) -> None:
    img = make_image("p")
    for tag in ("c", "a", "e", "b", "d"):
        assert push_image(c, "p/q", img, tag).status_code == 201
    for repo in ("z/z", "a/a"):
        push_blob(c, repo, b"x")
    r = c.get("/v2/p/q/tags/list")
    assert r.json() == {"name": "p/q", "tags": ["a", "b", "c", "d", "e"]}
    r = c.get("/v2/p/q/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert r.headers["Link"] == '</v2/p/q/tags/list?n=2&last=b>; rel="next"'
    r = c.get("/v2/p/q/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"]
    r = c.get("/v2/p/q/tags/list", params={"n": 2, "last": "d"})
    assert r.json()["tags"] == ["e"] and "Link" not in r.headers
    assert c.get("/v2/p/q/tags/list", params={"n": 0}).json()["tags"] == []
    r = c.get("/v2/p/q/tags/list", params={"n": "-1"})
    assert r.status_code == 400 and errors(r) == ["PAGINATION_NUMBER_INVALID"]
    assert c.get("/v2/_catalog").json() == {"repositories": ["a/a", "p/q", "z/z"]}
    r = c.get("/v2/_catalog", params={"n": 1, "last": "a/a"})
    assert r.json() == {"repositories": ["p/q"]} and "last=p%2Fq" in r.headers["Link"]


def test_referrers(c: httpx.Client) -> None:
    base = make_image("subject")
    push_image(c, "ref/r", base, "v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": base.digest, "size": len(base.manifest)}
    sig = make_image("sig", artifact_type="application/vnd.example.sig", subject=subject)
    sbom = make_image("sbom", artifact_type="application/vnd.example.sbom", subject=subject)
    for art in (sig, sbom):
        r = push_image(c, "ref/r", art, art.digest)
        assert r.status_code == 201 and r.headers["OCI-Subject"] == base.digest
    r = c.get(f"/v2/ref/r/referrers/{base.digest}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(OCI_INDEX)
    got = {m["digest"]: m for m in r.json()["manifests"]}
    assert set(got) == {sig.digest, sbom.digest}
    assert got[sig.digest]["artifactType"] == "application/vnd.example.sig"
    assert got[sig.digest]["size"] == len(sig.manifest)
    r = c.get(f"/v2/ref/r/referrers/{base.digest}",
              params={"artifactType": "application/vnd.example.sbom"})
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom.digest]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    # a subject with no referrers (or that does not exist) is an empty list, not an error
    r = c.get(f"/v2/ref/r/referrers/{digest_of(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    # deleting a referrer drops it from the list
    assert c.delete(f"/v2/ref/r/manifests/{sig.digest}").status_code == 202
    r = c.get(f"/v2/ref/r/referrers/{base.digest}")
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom.digest]


def test_deletes(c: httpx.Client) -> None:
    img = make_image("del")
    push_image(c, "d/d", img, "v1")
    c.put("/v2/d/d/manifests/v2", content=img.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert c.delete("/v2/d/d/manifests/v2").status_code == 202  # a tag
    assert c.get("/v2/d/d/tags/list").json()["tags"] == ["v1"]
    assert c.delete(f"/v2/d/d/manifests/{img.digest}").status_code == 202
    assert c.get("/v2/d/d/tags/list").json()["tags"] == []
    r = c.get(f"/v2/d/d/manifests/{img.digest}")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    r = c.delete(f"/v2/d/d/manifests/{img.digest}")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    layer = digest_of(img.layers[0])
    assert c.delete(f"/v2/d/d/blobs/{layer}").status_code == 202
    assert c.head(f"/v2/d/d/blobs/{layer}").status_code == 404
    r = c.delete(f"/v2/d/d/blobs/{layer}")
    assert r.status_code == 404 and errors(r) == ["BLOB_UNKNOWN"]


def test_deletes_can_be_disabled(tmp_path: Path) -> None:
    with serve(tmp_path / "root", delete_enabled=False) as s, \
            httpx.Client(base_url=s.url) as c:
        img = make_image("keep")
        push_image(c, "k/k", img, "v1")
        r = c.delete(f"/v2/k/k/manifests/{img.digest}")
        assert r.status_code == 405 and errors(r) == ["UNSUPPORTED"]
        assert c.get("/v2/k/k/manifests/v1").status_code == 200
