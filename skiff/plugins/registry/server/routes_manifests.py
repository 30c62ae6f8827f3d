"""Manifest handlers (GET/HEAD/PUT/DELETE by tag or digest, content negotiation), tag
listing and the referrers API."""

from __future__ import annotations

import contextlib
import hashlib
import json

from aiohttp import web

from skiff.core.content import Digest
from skiff.errors import NotFound

from . import manifests
from .context import Registry, paginate, read_limited, reg_of, repo_scope, writable
from .errors import RegistryError
from .names import check_reference, is_digest, parse_digest


def _accepted(request: web.Request) -> set[str]:
    out = set()
    for header in request.headers.getall("Accept", []):
        for part in header.split(","):
            mt = part.split(";")[0].strip().lower()
            if mt:
                out.add(mt)
    return out


def _resolve(reg: Registry, name: str, ref: str) -> Digest:
    if is_digest(ref):
        return parse_digest(ref)
    try:
        return reg.storage.resolve_tag(name, ref)
    except NotFound as exc:
        if not reg.storage.repo_exists(name):
            raise RegistryError("NAME_UNKNOWN", {"name": name}) from exc
        raise RegistryError("MANIFEST_UNKNOWN", {"tag": ref}) from exc


def _negotiate(reg: Registry, name: str, ref: str, raw: bytes, media_type: str,
               accepted: set[str]) -> tuple[bytes, str, Digest | None]:
    """Serve what the client accepts; an index to a client that takes only manifests gets
    the linux/amd64 entry (as distribution does), anything else MANIFEST_UNKNOWN."""
    # By digest the client asked for exactly these bytes: no substitution.
    if not accepted or media_type in accepted or "*/*" in accepted or is_digest(ref):
        return raw, media_type, None
    if media_type in manifests.INDEX_TYPES:
        entries = json.loads(raw).get("manifests") or []
        ranked = sorted(entries, key=lambda e: (e.get("platform") or {}).get(
            "architecture") != "amd64")
        for entry in ranked:
            if entry.get("mediaType") in accepted:
                child = Digest.parse(entry["digest"])
                with contextlib.suppress(NotFound):
                    craw, cmt = reg.storage.get_manifest(name, child)
                    return craw, cmt, child
    raise RegistryError("MANIFEST_UNKNOWN", {"reason": f"{media_type} is not in the Accept header",
                                             "mediaType": media_type})


async def get_manifest(request: web.Request, name: str, ref: str) -> web.StreamResponse:
    reg = reg_of(request)
    await reg.guard.check(request, [repo_scope(name, "pull")])
    check_reference(ref)
    if reg.proxy is not None:
        await reg.run(reg.proxy.manifest, name, ref)
    digest = _resolve(reg, name, ref)
    try:
        raw, media_type = reg.storage.get_manifest(name, digest)
    except NotFound as exc:
        if not reg.storage.repo_exists(name):
            raise RegistryError("NAME_UNKNOWN", {"name": name}) from exc
        raise RegistryError("MANIFEST_UNKNOWN", {"digest": str(digest)}) from exc
    raw, media_type, other = _negotiate(reg, name, ref, raw, media_type, _accepted(request))
    digest = other or digest
    headers = {"Docker-Content-Digest": str(digest), "ETag": f'"{digest}"',
               "Content-Type": media_type}
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(raw))
        return web.Response(status=200, headers=headers)
    return web.Response(status=200, body=raw, headers=headers)


async def put_manifest(request: web.Request, name: str, ref: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "pull", "push")])
    check_reference(ref)
    raw = await read_limited(request, manifests.MAX_MANIFEST)
    if is_digest(ref):
        want = parse_digest(ref)
        actual = Digest(want.algorithm, hashlib.new(want.algorithm, raw).hexdigest())
        if actual != want:
            raise RegistryError("DIGEST_INVALID", {"expected": str(want), "actual": str(actual)})
        tag = None
    else:
        actual, tag = Digest.from_bytes(raw), ref
    content_type = request.headers.get("Content-Type")

    def store() -> manifests.Checked:
        checked = manifests.check(reg.storage, name, raw, content_type, actual)
        referrer = (checked.subject, checked.referrer) if checked.subject else None
        reg.storage.put_manifest(name, raw, actual, checked.media_type, tag, referrer)
        return checked

    checked = await reg.shared(store)
    headers = {"Location": f"/v2/{name}/manifests/{actual}",
               "Docker-Content-Digest": str(actual), "Content-Length": "0"}
    if checked.subject is not None:
        headers["OCI-Subject"] = str(checked.subject)
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request, name: str, ref: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "delete")])
    if not reg.delete_enabled:
        raise RegistryError("UNSUPPORTED", "deletes are disabled in this registry")
    check_reference(ref)
    if is_digest(ref):
        digest = parse_digest(ref)
        if not await reg.run(reg.storage.delete_manifest, name, digest):
            raise RegistryError("MANIFEST_UNKNOWN", {"digest": str(digest)})
    elif not reg.storage.delete_tag(name, ref):
        raise RegistryError("MANIFEST_UNKNOWN", {"tag": ref})
    return web.Response(status=202, headers={"Content-Length": "0"})


async def list_tags(request: web.Request, name: str) -> web.StreamResponse:
    reg = reg_of(request)
    await reg.guard.check(request, [repo_scope(name, "pull")])
    if not reg.storage.repo_exists(name):
        raise RegistryError("NAME_UNKNOWN", {"name": name})
    tags = reg.storage.tags(name)
    return paginate(tags, request, f"/v2/{name}/tags/list", "tags", {"name": name})


async def referrers(request: web.Request, name: str, subject_text: str) -> web.StreamResponse:
    reg = reg_of(request)
    await reg.guard.check(request, [repo_scope(name, "pull")])
    subject = parse_digest(subject_text)
    found = await reg.run(reg.storage.referrers, name, subject)
    headers = {}
    wanted = request.query.get("artifactType")
    if wanted:
        found = [d for d in found if d.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    body = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": found}
    return web.Response(status=200, body=json.dumps(body).encode(), headers=headers,
                        content_type=manifests.OCI_INDEX)

