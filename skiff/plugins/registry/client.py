"""The OCI distribution client: manifests and blobs over HTTP(S), with auth and mirrors.

A synchronous ``httpx`` client shared by worker threads (httpx pools connections and is
thread-safe), so the pull service can download several layers at once without the daemon's
event loop being involved in byte copying.

Transport rules:
* HTTPS with the system CA store, except for loopback hosts and registries configured insecure,
  which are tried over HTTPS without verification first and then plain HTTP (as dockerd does).
* ``docker.io`` goes to ``registry-1.docker.io``; configured mirrors are tried first for pulls
  and any failure there falls back to the next mirror, then upstream.
* Errors: 401/403 -> PermissionDenied, 404 -> NotFound naming the repository and object,
  network errors and other statuses -> Unavailable naming the registry.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from skiff.core.content import BlobInfo, ContentStore, Descriptor, Digest, Writer
from skiff.core.images import MAX_MANIFEST_BYTES
from skiff.core.registry import ByteProgress, PushOutcome, Repository
from skiff.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SkiffError,
    Unavailable,
)
from skiff.plugins.registry.auth import Authenticator
from skiff.plugins.registry.credentials import Credentials, CredentialStore

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"


MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
USER_AGENT = "skiff/0.1"

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryConfig:
    insecure: frozenset[str] = frozenset()  # "host", "host:port" or CIDR allowed over plain HTTP
    mirrors: tuple[str, ...] = ()  # URLs ("https://mirror.example", "http://127.0.0.1:5000") for docker.io
    hub_endpoint: str = f"https://{DOCKER_HUB_HOST}"  # where docker.io really lives (tests override)
    chunk_size: int = 1 << 20
    monolithic_limit: int = 64 << 20  # larger blobs are uploaded in PATCH chunks of this size
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class _Endpoint:
    base: str  # "https://host:port", no trailing slash
    host: str  # "host:port" as the auth and credential key
    mirror: bool = False


@dataclass
class _Cache:
    """Per-client memory: which scheme an insecure host speaks, what resolve() already fetched."""

    schemes: dict[str, str] = field(default_factory=dict)
    manifests: dict[Digest, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1 (with or without a port)."""
    name = host
    if name.startswith("["):
        name = name[1:name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HttpRegistryClient:
    """RegistryClient over HTTP. ``credentials(host)`` gives stored credentials per registry."""

    def __init__(self, config: RegistryConfig | None = None,
                 credentials: CredentialStore | Callable[[str], Credentials] | None = None,
                 ) -> None:
        self.config = config or RegistryConfig()
        if isinstance(credentials, CredentialStore):
            self._credentials: Callable[[str], Credentials] = credentials.get
        elif credentials is not None:
            self._credentials = credentials
        else:
            self._credentials = lambda _host: Credentials()
        timeout = httpx.Timeout(self.config.read_timeout, connect=self.config.connect_timeout)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        common: dict[str, Any] = {"timeout": timeout, "limits": limits, "follow_redirects": True,
                                  "headers": {"User-Agent": USER_AGENT}}
        self._http = httpx.Client(verify=ssl.create_default_context(), **common)
        # Insecure registries may still speak TLS with a self-signed certificate.
        self._http_noverify = httpx.Client(verify=False, **common)
        self.auth = Authenticator(self._http, self._credentials)
        self._cache = _Cache()

    def with_credentials(self, credentials: Callable[[str], Credentials]) -> HttpRegistryClient:
        """A client for one caller's credentials (the daemon's X-Registry-Auth) that shares
        this one's connection pools and caches but has its own token cache. Close only the
        original: the view owns nothing.
        """
        view = copy.copy(self)
        view._credentials = credentials
        view.auth = Authenticator(self._http, credentials)
        return view

    def close(self) -> None:
        self._http.close()
        self._http_noverify.close()

    def __enter__(self) -> HttpRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- endpoints -------------------------------------------------------------------

    def _insecure(self, host: str) -> bool:
        """Loopback, or listed in ``insecure`` as host, host:port or CIDR (as dockerd's
        ``insecure-registries``)."""
        bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if is_loopback(host) or host in self.config.insecure or bare in self.config.insecure:
            return True
        try:
            addr = ipaddress.ip_address(bare.strip("[]"))
        except ValueError:
            return False
        for entry in self.config.insecure:
            if "/" in entry:
                try:
                    if addr in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
        return False

    def _endpoints(self, domain: str, pull: bool) -> list[_Endpoint]:
        if domain == DOCKER_HUB_DOMAIN:
            eps = [self._mirror(m) for m in self.config.mirrors] if pull else []
            hub = self._mirror(self.config.hub_endpoint)
            return [*eps, _Endpoint(hub.base, hub.host)]
        return [_Endpoint("", domain)]  # base decided lazily by _base()

    def _mirror(self, url: str) -> _Endpoint:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"registry endpoint {url!r}: want http(s)://host[:port]")
        if parts.scheme == "http" and not self._insecure(parts.netloc):
            raise InvalidArgument(f"registry endpoint {url}: plain HTTP is only allowed for "
                                  f"loopback or insecure registries")
        return _Endpoint(f"{parts.scheme}://{parts.netloc}", parts.netloc, mirror=True)

    def _base(self, ep: _Endpoint) -> str:
        if ep.base:
            return ep.base
        host = ep.host
        if not self._insecure(host):
            return f"https://{host}"
        with self._cache.lock:
            known = self._cache.schemes.get(host)
        if known:
            return f"{known}://{host}"
        # Probe once: TLS (unverified) first, plain HTTP if the handshake fails.
        scheme = "http"
        try:
            self._http_noverify.get(f"https://{host}/v2/", timeout=5.0)
            scheme = "https"
        except httpx.HTTPError:
            pass
        with self._cache.lock:
            self._cache.schemes[host] = scheme
        return f"{scheme}://{host}"

    def _client_for(self, url: str) -> httpx.Client:
        host = urlsplit(url).netloc
        return self._http_noverify if self._insecure(host) else self._http

    def _with_fallback(self, repo: Repository, pull: bool, op: Callable[[_Endpoint], T]) -> T:
        """Run ``op`` on each endpoint in turn; mirrors' failures fall through to the next."""
        eps = self._endpoints(repo.domain, pull)
        last: SkiffError | None = None
        for ep in eps:
            try:
                return op(ep)
            except SkiffError as exc:
                if not ep.mirror:
                    raise
                last = exc
        assert last is not None
        raise last

    # --- requests --------------------------------------------------------------------

    def _send(self, ep: _Endpoint, method: str, url: str, scopes: Sequence[str], what: str, *,
              headers: dict[str, str] | None = None, content: bytes | Iterator[bytes] | None = None,
              params: dict[str, str] | None = None, stream: bool = False) -> httpx.Response:
        """One request with the auth dance: pre-authorise if we know the challenge, answer one 401.

        Streamed bodies (iterators) cannot be replayed, so callers only send them on URLs a
        previous request already authorised.
        """
        if not url.startswith(("http://", "https://")):
            url = self._base(ep) + url
        client = self._client_for(url)
        hdrs = dict(headers or {})
        sent = self.auth.authorization(ep.host, scopes)
        for attempt in range(2):
            if sent is not None:
                hdrs["Authorization"] = sent
            try:
                req = client.build_request(method, url, headers=hdrs, content=content,
                                           params=params)
                resp = client.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise Unavailable(f"{what}: cannot reach registry {ep.host}: "
                                  f"{type(exc).__name__}: {exc}") from exc
            if resp.status_code != 401 or attempt == 1 or not isinstance(content, bytes | None):
                return resp
            challenge = resp.headers.get("WWW-Authenticate")
            resp.close()
            sent = self.auth.on_unauthorized(ep.host, challenge, scopes, sent)
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(resp: httpx.Response, what: str, ep: _Endpoint) -> SkiffError:
        """The error for an unexpected response; reads the registry's error body if present."""
        try:
            resp.read()
            detail = _registry_errors(resp)
        except httpx.HTTPError:
            detail = ""
        finally:
            resp.close()
        suffix = f": {detail}" if detail else ""
        code = resp.status_code
        if code in (401, 403):
            return PermissionDenied(f"{what}: access denied by registry {ep.host}{suffix}")
        if code == 404:
            return NotFound(f"{what}: not found on registry {ep.host}{suffix}")
        if code == 429:
            return Unavailable(f"{what}: registry {ep.host} is rate limiting (HTTP 429){suffix}")
        return Unavailable(f"{what}: registry {ep.host} answered HTTP {code}{suffix}")

    # --- public API ------------------------------------------------------------------

    def ping(self, domain: str, credentials: Credentials | None = None) -> None:
        """Check the registry speaks /v2/ and, with ``credentials``, that they are accepted.

        Used by ``login``: the credentials are tried without being stored.
        """
        ep = self._endpoints(domain, pull=False)[-1]
        if credentials is None:
            auth = self.auth
        else:
            auth = Authenticator(self._http_noverify if self._insecure(ep.host) else self._http,
                                 lambda _host: credentials)
        url = self._base(ep) + "/v2/"
        client = self._client_for(url)
        sent: str | None = None
        for _ in range(2):
            try:
                resp = client.get(url, headers={"Authorization": sent} if sent else {})
            except httpx.HTTPError as exc:
                raise Unavailable(f"ping registry {ep.host}: {type(exc).__name__}: {exc}") from exc
            if resp.status_code == 200:
                return
            if resp.status_code != 401:
                raise self._fail(resp, f"ping registry {ep.host}", ep)
            sent = auth.on_unauthorized(ep.host, resp.headers.get("WWW-Authenticate"), (), sent)
        raise PermissionDenied(f"login to registry {ep.host}: credentials refused")

    def resolve(self, repo: Repository, reference: str) -> Descriptor:
        return self._with_fallback(repo, True, lambda ep: self._resolve(ep, repo, reference))

    def _resolve(self, ep: _Endpoint, repo: Repository, reference: str) -> Descriptor:
        what = f"manifest {repo}:{reference}" if ":" not in reference else f"manifest {repo}@{reference}"
        url = f"/v2/{repo.path}/manifests/{reference}"
        scopes = (_scope(repo, "pull"),)
        resp = self._send(ep, "HEAD", url, scopes, what, headers={"Accept": _ACCEPT})
        if resp.status_code == 200:
            dg = resp.headers.get("Docker-Content-Digest")
            mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
            length = resp.headers.get("Content-Length")
            if dg and mt in MANIFEST_MEDIA_TYPES and length and length.isdigit():
                desc = Descriptor(mt, Digest.parse(dg), int(length))
                if reference.startswith("sha") and str(desc.digest) != reference:
                    raise InvalidArgument(f"{what}: registry {ep.host} answered with digest "
                                          f"{desc.digest}")
                return desc
        elif resp.status_code not in (405, 501):
            # Some registries do not implement HEAD; for anything else the GET would fail alike.
            raise self._fail(resp, what, ep)
        # Fall back to GET: the registry did not give us enough in the HEAD answer.
        raw, mt = self._get_manifest(ep, repo, reference, what, None)
        dg = Digest.from_bytes(raw)
        if reference.startswith("sha") and str(dg) != reference:
            raise InvalidArgument(f"{what}: content has digest {dg}, not {reference}")
        with self._cache.lock:
            self._cache.manifests[dg] = raw
        return Descriptor(mt, dg, len(raw))

    def _get_manifest(self, ep: _Endpoint, repo: Repository, reference: str, what: str,
                      limit: int | None) -> tuple[bytes, str]:
        limit = MAX_MANIFEST_BYTES if limit is None else limit
        resp = self._send(ep, "GET", f"/v2/{repo.path}/manifests/{reference}",
                          (_scope(repo, "pull"),), what, headers={"Accept": _ACCEPT}, stream=True)
        if resp.status_code != 200:
            raise self._fail(resp, what, ep)
        try:
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > limit:
                    raise InvalidArgument(f"{what}: larger than {limit} bytes; refusing it")
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what}: reading from registry {ep.host}: {exc}") from exc
        finally:
            resp.close()
        mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return bytes(buf), mt

    def fetch_manifest(self, repo: Repository, desc: Descriptor) -> bytes:
        what = f"manifest {repo}@{desc.digest}"
        if desc.size > MAX_MANIFEST_BYTES:
            raise InvalidArgument(f"{what}: size {desc.size} exceeds the {MAX_MANIFEST_BYTES} "
                                  f"byte limit for manifests")
        with self._cache.lock:
            cached = self._cache.manifests.pop(desc.digest, None)
        if cached is not None:
            return cached

        def get(ep: _Endpoint) -> bytes:
            raw, _ = self._get_manifest(ep, repo, str(desc.digest), what, desc.size)
            _verify(raw, desc, what)
            return raw

        return self._with_fallback(repo, True, get)

    def fetch_blob(self, repo: Repository, desc: Descriptor, writer: Writer,
                   progress: ByteProgress | None = None) -> BlobInfo:
        what = f"blob {desc.digest} of {repo}"
        if writer.offset > desc.size:
            writer.abort()
            raise InvalidArgument(f"{what}: partial download is larger ({writer.offset}) than the "
                                  f"blob ({desc.size}); discarded it")
        if writer.offset < desc.size or desc.size == 0:
            self._with_fallback(repo, True,
                                lambda ep: self._download(ep, repo, desc, writer, what, progress))
        try:
            return writer.commit(desc.digest, desc.size)
        except InvalidArgument as exc:
            # Wrong bytes must not be resumed from: start clean next time.
            writer.abort()
            raise InvalidArgument(f"{what}: {exc.message}") from exc

    def _download(self, ep: _Endpoint, repo: Repository, desc: Descriptor, writer: Writer,
                  what: str, progress: ByteProgress | None) -> None:
        start = writer.offset
        # identity: the bytes must be the blob itself, never a transfer-compressed form of it.
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        resp = self._send(ep, "GET", f"/v2/{repo.path}/blobs/{desc.digest}",
                          (_scope(repo, "pull"),), what, headers=headers, stream=True)
        try:
            if resp.status_code not in (200, 206):
                raise self._fail(resp, what, ep)
            # A server that ignores Range sends everything: skip what we already hold.
            skip = start if (start and resp.status_code == 200) else 0
            done = start
            # Unbuffered: whatever arrived before a cut is written, so a resume loses nothing.
            for chunk in resp.iter_raw():
                if skip:
                    cut = min(skip, len(chunk))
                    chunk = chunk[cut:]
                    skip -= cut
                    if not chunk:
                        continue
                if done + len(chunk) > desc.size:
                    writer.abort()
                    raise InvalidArgument(f"{what}: registry {ep.host} sent more than the "
                                          f"{desc.size} bytes the manifest declares")
                writer.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done)
        except httpx.HTTPError as exc:
            # Keep the partial ingest: the next attempt resumes from writer.offset.
            raise Unavailable(f"{what}: download from registry {ep.host} interrupted at "
                              f"{writer.offset} of {desc.size} bytes: {exc}") from exc
        finally:
            resp.close()
        if done < desc.size:
            raise Unavailable(f"{what}: registry {ep.host} closed the download at {done} of "
                              f"{desc.size} bytes; pull again to resume")

    def blob_exists(self, repo: Repository, digest: Digest, *, actions: str = "pull") -> bool:
        """HEAD the blob; ``actions`` lets push ask under its pull,push token (one token)."""
        ep = self._endpoints(repo.domain, pull=False)[-1]
        what = f"blob {digest} of {repo}"
        resp = self._send(ep, "HEAD", f"/v2/{repo.path}/blobs/{digest}",
                          (_scope(repo, actions),), what)
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._fail(resp, what, ep)

    def push_blob(self, repo: Repository, desc: Descriptor, content: ContentStore,
                  mount_from: str | None = None,
                  progress: ByteProgress | None = None) -> str:
        ep = self._endpoints(repo.domain, pull=False)[-1]
        what = f"push blob {desc.digest} to {repo}"
        scopes: tuple[str, ...] = (_scope(repo, "pull,push"),)
        if self.blob_exists(repo, desc.digest, actions="pull,push"):
            return PushOutcome.EXISTS
        upload_url = f"/v2/{repo.path}/blobs/uploads/"
        params: dict[str, str] | None = None
        if mount_from and mount_from != repo.path:
            scopes = (*scopes, f"repository:{mount_from}:pull")
            params = {"mount": str(desc.digest), "from": mount_from}
        resp = self._send(ep, "POST", upload_url, scopes, what, params=params, content=b"")
        resp.close()
        if resp.status_code == 201 and params is not None:
            return PushOutcome.MOUNTED
        if resp.status_code != 202:
            raise self._fail(resp, what, ep)
        location = self._location(ep, resp, what)
        if desc.size <= self.config.monolithic_limit:
            body = _file_chunks(content, desc.digest, 0, desc.size, self.config.chunk_size,
                                progress)
            resp = self._send(ep, "PUT", _add_query(location, "digest", str(desc.digest)), scopes,
                              what, content=body,
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(desc.size)})
        else:
            offset = 0
            while offset < desc.size:
                end = min(offset + self.config.monolithic_limit, desc.size)
                body = _file_chunks(content, desc.digest, offset, end, self.config.chunk_size,
                                    progress)
                resp = self._send(ep, "PATCH", location, scopes, what, content=body, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end - 1}",
                    "Content-Length": str(end - offset)})
                resp.close()
                if resp.status_code != 202:
                    raise self._fail(resp, what, ep)
                location = self._location(ep, resp, what)
                offset = end
            resp = self._send(ep, "PUT", _add_query(location, "digest", str(desc.digest)), scopes,
                              what, content=b"")
        resp.close()
        if resp.status_code != 201:
            raise self._fail(resp, what, ep)
        return PushOutcome.PUSHED

    def _location(self, ep: _Endpoint, resp: httpx.Response, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise Unavailable(f"{what}: registry {ep.host} gave no upload Location")
        return urljoin(str(resp.request.url), str(loc))

    def push_manifest(self, repo: Repository, reference: str, media_type: str,
                      raw: bytes) -> Digest:
        ep = self._endpoints(repo.domain, pull=False)[-1]
        what = f"push manifest {repo}:{reference}"
        resp = self._send(ep, "PUT", f"/v2/{repo.path}/manifests/{reference}",
                          (_scope(repo, "pull,push"),), what, content=raw,
                          headers={"Content-Type": media_type})
        resp.close()
        if resp.status_code not in (200, 201):
            raise self._fail(resp, what, ep)
        digest = Digest.from_bytes(raw)
        answered = resp.headers.get("Docker-Content-Digest")
        if answered and answered != str(digest):
            raise Unavailable(f"{what}: registry {ep.host} stored it as {answered}, "
                              f"we sent {digest}")
        return digest

    def list_tags(self, repo: Repository) -> list[str]:
        def run(ep: _Endpoint) -> list[str]:
            what = f"list tags of {repo}"
            url: str | None = f"/v2/{repo.path}/tags/list"
            tags: list[str] = []
            while url:
                resp = self._send(ep, "GET", url, (_scope(repo, "pull"),), what)
                if resp.status_code != 200:
                    raise self._fail(resp, what, ep)
                try:
                    body = resp.json()
                except ValueError as exc:
                    raise Unavailable(f"{what}: registry {ep.host} sent invalid JSON") from exc
                tags.extend(t for t in (body.get("tags") or []) if isinstance(t, str))
                url = _next_link(resp)
                if url:
                    url = urljoin(str(resp.request.url), url)
            return tags

        return self._with_fallback(repo, True, run)


def _scope(repo: Repository, actions: str) -> str:
    return f"repository:{repo.path}:{actions}"


def _verify(raw: bytes, desc: Descriptor, what: str) -> None:
    if len(raw) != desc.size:
        raise InvalidArgument(f"{what}: got {len(raw)} bytes, descriptor says {desc.size}")
    h = hashlib.new(desc.digest.algorithm, raw).hexdigest()
    if h != desc.digest.hex:
        raise InvalidArgument(f"{what}: content has digest {desc.digest.algorithm}:{h}")


def _file_chunks(content: ContentStore, digest: Digest, start: int, end: int, size: int,
                 progress: ByteProgress | None) -> Iterator[bytes]:
    with content.open(digest) as f:
        f.seek(start)
        pos = start
        while pos < end:
            chunk = f.read(min(size, end - pos))
            if not chunk:
                raise Unavailable(f"read blob {digest}: ended at {pos} of {end} bytes")
            pos += len(chunk)
            yield chunk
            if progress is not None:
                progress(pos)


def _add_query(url: str, key: str, value: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{key}={value}"


def _next_link(resp: httpx.Response) -> str | None:
    link = resp.headers.get("Link")
    if not link:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return str(m.group(1)) if m else None


def _registry_errors(resp: httpx.Response) -> str:
    """``{"errors": [{"code": ..., "message": ...}]}`` -> "CODE: message; ..."."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    errs = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errs, list):
        return ""
    parts = []
    for e in errs:
        if isinstance(e, dict):
            parts.append(f"{e.get('code', '')}: {e.get('message', '')}".strip(": "))
    return "; ".join(parts)


def login(store: CredentialStore, client: HttpRegistryClient, registry: str,
          creds: Credentials) -> None:
    """Verify ``creds`` against the registry, then record them (PermissionDenied if refused)."""
    client.ping(registry, creds)
    store.store(registry, creds)


def logout(store: CredentialStore, registry: str) -> None:
    """Forget the credentials of ``registry`` (NotFound when none were stored)."""
    store.erase(registry)
