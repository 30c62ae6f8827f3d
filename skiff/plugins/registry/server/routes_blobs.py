"""Blob handlers: GET/HEAD (with Range), DELETE, and the upload protocol (monolithic,
chunked, resumable, cancel, cross-repository mount)."""

from __future__ import annotations

import re

from aiohttp import web

from skiff.core.content import Digest
from skiff.errors import NotFound

from .context import API_VERSION, Registry, pump, reg_of, repo_scope, writable
from .errors import RegistryError
from .names import check_name, parse_digest

_CONTENT_RANGE_RE = re.compile(r"^(?:bytes )?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single byte range, or None if it cannot be served."""
    m = _RANGE_RE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: the last N bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


async def get_blob(request: web.Request, name: str, digest_text: str) -> web.StreamResponse:
    reg = reg_of(request)
    await reg.guard.check(request, [repo_scope(name, "pull")])
    digest = parse_digest(digest_text)
    if reg.proxy is not None and not reg.storage.has_blob(name, digest):
        await reg.run(reg.proxy.blob, name, digest)
    try:
        size = reg.storage.blob_size(name, digest)
    except NotFound as exc:
        raise RegistryError("BLOB_UNKNOWN", {"digest": str(digest)}) from exc
    headers = {**API_VERSION, "Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes",
               "Content-Type": "application/octet-stream", "ETag": f'"{digest}"',
               "Cache-Control": "max-age=31536000"}
    if request.method == "HEAD":
        # A pusher checking for a blob is about to name it: refresh the link for the GC.
        await reg.shared(reg.storage.touch_blob, name, digest)
        headers["Content-Length"] = str(size)
        return web.Response(status=200, headers=headers)
    rng = request.headers.get("Range")
    if rng is not None and _parse_range(rng, size) is None:
        raise RegistryError("RANGE_INVALID", {"range": rng[:100], "size": size},
                            headers={"Content-Range": f"bytes */{size}"})
    return web.FileResponse(reg.storage.blob_path(digest), headers=headers)


async def delete_blob(request: web.Request, name: str, digest_text: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "delete")])
    if not reg.delete_enabled:
        raise RegistryError("UNSUPPORTED", "deletes are disabled in this registry")
    digest = parse_digest(digest_text)
    if not reg.storage.unlink_blob(name, digest):
        raise RegistryError("BLOB_UNKNOWN", {"digest": str(digest)})
    return web.Response(status=202, headers={"Docker-Content-Digest": str(digest),
                                             "Content-Length": "0"})


# --- uploads ----------------------------------------------------------------------------------


def _upload_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
    return {"Location": f"/v2/{name}/blobs/uploads/{upload_id}",
            "Range": f"0-{max(offset - 1, 0)}", "Docker-Upload-UUID": upload_id,
            "Content-Length": "0"}


def _blob_created(name: str, digest: Digest) -> web.Response:
    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                             "Docker-Content-Digest": str(digest),
                                             "Content-Length": "0"})


async def start_upload(request: web.Request, name: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "pull", "push")])
    q = request.query
    mount, source = q.get("mount"), q.get("from")
    if mount:
        digest = parse_digest(mount)
        if source and await _mountable(request, reg, source):
            def do_mount() -> bool:
                if not reg.storage.has_blob(source, digest):
                    return False
                reg.storage.link_blob(name, digest)
                return True
            if await reg.shared(do_mount):
                return _blob_created(name, digest)
        # The documented fallback: an ordinary upload session instead of the mount.
    digest_text = q.get("digest")
    if digest_text is not None:
        parse_digest(digest_text)  # refuse a malformed digest before making a session
    upload_id = await reg.run(reg.uploads.create, name)
    if digest_text is not None:  # monolithic: the whole blob in this POST
        return await _finish(request, reg, name, upload_id, digest_text)
    return web.Response(status=202, headers=_upload_headers(name, upload_id, 0))


async def _mountable(request: web.Request, reg: Registry, source: str) -> bool:
    """A mount needs pull on the source too; without it we fall back to an upload."""
    try:
        check_name(source)
        await reg.guard.check(request, [repo_scope(source, "pull")])
    except RegistryError:
        return False
    return True


async def upload_status(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "pull", "push")])
    offset = reg.uploads.size(name, upload_id)
    return web.Response(status=204, headers=_upload_headers(name, upload_id, offset))


async def patch_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "pull", "push")])
    up = await reg.run(reg.uploads.open, name, upload_id)
    try:
        crange = request.headers.get("Content-Range")
        if crange is not None:
            m = _CONTENT_RANGE_RE.match(crange.strip())
            start = int(m.group(1)) if m else -1
            end = int(m.group(2)) if m else -1
            length = request.content_length
            if m is None or start != up.offset or end < start or \
                    (length is not None and length != end - start + 1):
                raise RegistryError("BLOB_UPLOAD_INVALID",
                                    {"contentRange": crange[:100], "offset": up.offset},
                                    status=416, headers=_upload_headers(name, upload_id,
                                                                         up.offset))
        await pump(reg, request, up)
        offset = up.offset
    finally:
        await reg.run(up.close)
    return web.Response(status=202, headers=_upload_headers(name, upload_id, offset))


async def finish_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "pull", "push")])
    digest_text = request.query.get("digest")
    if not digest_text:
        raise RegistryError("DIGEST_INVALID", "digest query parameter is required")
    return await _finish(request, reg, name, upload_id, digest_text)


async def _finish(request: web.Request, reg: Registry, name: str, upload_id: str,
                  digest_text: str) -> web.StreamResponse:
    digest = parse_digest(digest_text)
    up = await reg.run(reg.uploads.open, name, upload_id)
    committed = False
    try:
        await pump(reg, request, up)
        await reg.shared(up.commit, digest)
        committed = True
    finally:
        if not committed:
            await reg.run(up.close)
    return _blob_created(name, digest)


async def cancel_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = reg_of(request)
    writable(reg)
    await reg.guard.check(request, [repo_scope(name, "pull", "push")])
    await reg.run(reg.uploads.cancel, name, upload_id)
    return web.Response(status=204, headers={"Content-Length": "0"})

