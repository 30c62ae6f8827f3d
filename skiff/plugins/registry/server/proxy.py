"""Pull-through cache: serve a remote registry's repositories, keeping what was pulled.

Manifests are looked up upstream (a tag is re-checked when its local copy is older than
``ttl`` seconds; a digest never is) and stored like pushed ones, but without the blob checks:
their blobs arrive lazily, on the first GET, through skiff's registry client (which verifies
every byte against the digest) into the content store, and are linked into the repository.
When the upstream cannot be reached, what is cached is served. Blob sizes come from the cached
manifests of the repository: a client always reads a manifest before its blobs.
Blocking (the registry client is synchronous): the app calls it on its thread pool.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlsplit

from skiff.core.content import Descriptor, Digest
from skiff.core.registry import Repository
from skiff.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, Unavailable
from skiff.plugins.registry.client import HttpRegistryClient, RegistryConfig
from skiff.plugins.registry.credentials import Credentials

from .errors import RegistryError
from .names import is_digest
from .storage import Storage, atomic_write

_WAIT_FOR_PEER = 300.0  # seconds to wait for another request fetching the same blob


class Proxy:
    def __init__(self, storage: Storage, remote_url: str, *, username: str = "",
                 password: str = "", ttl: float = 60.0) -> None:
        parts = urlsplit(remote_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"proxy remoteurl {remote_url!r}: want http(s)://host[:port]")
        self.domain = parts.netloc
        insecure = frozenset({self.domain}) if parts.scheme == "http" else frozenset()
        creds = Credentials(username, password)
        self.client = HttpRegistryClient(RegistryConfig(insecure=insecure),
                                         credentials=lambda _host: creds)
        self.storage = storage
        self.ttl = ttl

    def close(self) -> None:
        self.client.close()

    def _fresh(self, name: str, ref: str) -> bool:
        try:
            age = time.time() - os.stat(self.storage.tag_path(name, ref)).st_mtime
        except OSError:
            return False
        return age < self.ttl

    def manifest(self, name: str, ref: str) -> None:
        """Make ``name``:``ref`` present locally (fetching it upstream if needed)."""
        if is_digest(ref):
            try:
                self.storage.manifest_media_type(name, Digest.parse(ref))
                return
            except NotFound:
                pass
        elif self._fresh(name, ref):
            return
        repo = Repository(self.domain, name)
        try:
            desc = self.client.resolve(repo, ref)
            try:
                self.storage.manifest_media_type(name, desc.digest)
            except NotFound:
                raw = self.client.fetch_manifest(repo, desc)  # verified against desc.digest
                self._store(name, raw, desc)
            if not is_digest(ref):
                atomic_write(self.storage.tag_path(name, ref), str(desc.digest).encode())
        except NotFound as exc:
            raise RegistryError("MANIFEST_UNKNOWN", {"upstream": str(exc)}) from exc
        except (Unavailable, PermissionDenied, InvalidArgument) as exc:
            # Upstream down or refusing: what we cached still serves.
            if not is_digest(ref) and os.path.exists(self.storage.tag_path(name, ref)):
                return
            raise RegistryError("UNKNOWN", {"upstream": str(exc)}, status=502,
                                message="upstream registry unavailable") from exc

    def _store(self, name: str, raw: bytes, desc: Descriptor) -> None:
        self.storage.content.put(raw, desc.digest)
        atomic_write(self.storage.revision_link(name, desc.digest), desc.media_type.encode())

    def _find(self, name: str, digest: Digest) -> Descriptor:
        for rev, _ in self.storage.revisions(name):
            try:
                raw, _mt = self.storage.get_manifest(name, rev)
                doc = json.loads(raw)
            except (NotFound, ValueError):
                continue
            items = [doc.get("config"), *(doc.get("layers") or [])]
            for obj in items:
                if isinstance(obj, dict) and obj.get("digest") == str(digest):
                    return Descriptor.from_json(obj)
        raise RegistryError("BLOB_UNKNOWN", {"digest": str(digest),
                                             "reason": "no cached manifest names it"})

    def blob(self, name: str, digest: Digest) -> None:
        """Make the blob present in ``name`` (fetched upstream, verified) or raise."""
        # Only blobs a cached manifest of this repository names: the shared blob store must
        # not leak another repository's blobs through this one.
        desc = self._find(name, digest)
        if self.storage.content.exists(digest):
            self.storage.link_blob(name, digest)
            return
        deadline = time.monotonic() + _WAIT_FOR_PEER
        while True:
            try:
                writer = self.storage.content.writer(f"proxy-{digest}")
            except Conflict:
                # Another request (or process) is fetching it: wait for its result.
                if self.storage.content.exists(digest):
                    break
                if time.monotonic() > deadline:
                    raise RegistryError("UNKNOWN", {"digest": str(digest)}, status=502,
                                        message="upstream fetch timed out") from None
                time.sleep(0.1)
                continue
            try:
                self.client.fetch_blob(Repository(self.domain, name), desc, writer)
            except NotFound as exc:
                writer.close()
                raise RegistryError("BLOB_UNKNOWN", {"digest": str(digest)}) from exc
            except (Unavailable, PermissionDenied, InvalidArgument) as exc:
                writer.close()  # keep the bytes: the next request resumes
                raise RegistryError("UNKNOWN", {"upstream": str(exc)}, status=502,
                                    message="upstream registry unavailable") from exc
            break
        self.storage.link_blob(name, digest)
