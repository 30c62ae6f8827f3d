"""Pull and push: images between a registry and the local content store.

Pull resolves the reference (index -> platform manifest -> config), downloads the layers a few
at a time into the content store, records the image and optionally unpacks it. It is resumable:
each blob is ingested under a ref derived from its digest, so a pull interrupted mid-layer
continues from the bytes already on disk, and blobs already present are not fetched again.
A lease covers everything the pull writes, so a concurrent GC cannot collect blobs before the
image record that references them exists.

Push sends the config and layers the registry lacks (mounting them from another repository of
the same registry when we know where they came from), then the manifest.

Progress goes to a ``ProgressSink`` as Docker's JSON messages; the sink is called from worker
threads but never concurrently (one lock serialises it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from skiff.core import progress as msg
from skiff.core.content import ContentStore, Descriptor, Digest, Writer
from skiff.core.images import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_manifest,
    select_platform,
)
from skiff.core.metadata import ImageRecord, MetadataStore
from skiff.core.progress import LayerProgress, ProgressSink
from skiff.core.reference import Reference
from skiff.core.registry import PushOutcome, RegistryClient, Repository
from skiff.errors import Conflict, InvalidArgument, NotFound, Unavailable
from skiff.services.images import PULL_SOURCE_LABEL, ImageService

DOWNLOAD_CONCURRENCY = 3  # dockerd's default max-concurrent-downloads
UPLOAD_CONCURRENCY = 5  # dockerd's default max-concurrent-uploads
_PROGRESS_INTERVAL = 0.1  # seconds between byte-count messages of one layer
_LEASE_TTL = 24 * 3600.0
SOURCE_LABEL = PULL_SOURCE_LABEL
"""Image label naming the repository an image was pulled from (for cross-repo mounts)."""
_WRITER_PATIENCE = 600.0  # how long to wait for another pull that is fetching the same blob


Unpacker = Callable[[Sequence[Descriptor], Sequence[Digest], LayerProgress], object]
"""Called as ``unpack(layers, diff_ids, progress)`` once all blobs are present; the daemon
binds the content store and snapshotter (``partial(services.unpack.unpack, content, snap)``)."""


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    target: Descriptor  # what the name points at (an index or a manifest)
    manifest: Descriptor  # the platform manifest that was pulled
    config: ImageConfig
    record: ImageRecord
    fetched_bytes: int  # bytes that crossed the network for blobs (resumed prefixes excluded)
    up_to_date: bool
    unpacked: object = None  # what the unpacker returned (the top chain ID for skiff's)


class _Sink:
    """Serialises progress from worker threads and rate-limits byte counts per layer.

    It also carries the cancel flag: every byte count passes through here, so a cancelled
    transfer stops at its next chunk (keeping what it wrote, for a later resume).
    """

    def __init__(self, sink: ProgressSink, cancel: threading.Event | None, what: str) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._cancel = cancel
        self._what = what

    def check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Unavailable(f"{self._what}: cancelled")

    def __call__(self, m: msg.Message) -> None:
        with self._lock:
            self._sink(m)

    def bytes(self, make: Callable[[str, int, int], msg.Message], id: str, done: int,
              total: int) -> None:
        self.check()
        now = time.monotonic()
        with self._lock:
            if done < total and now - self._last.get(id, 0.0) < _PROGRESS_INTERVAL:
                return
            self._last[id] = now
            self._sink(make(id, done, total))


def _target_of(ref: Reference) -> str:
    return str(ref.digest) if ref.digest is not None else (ref.tag or "latest")


def _store_manifest(content: ContentStore, raw: bytes, desc: Descriptor) -> None:
    if not content.exists(desc.digest):
        content.put(raw, desc.digest)


def _fetch_manifest(client: RegistryClient, content: ContentStore, repo: Repository,
                    desc: Descriptor) -> tuple[bytes, bool]:
    """The manifest bytes, from the store when present; the bool says whether it was fetched."""
    if content.exists(desc.digest):
        return content.read(desc.digest, MAX_MANIFEST_BYTES), False
    raw = client.fetch_manifest(repo, desc)
    _store_manifest(content, raw, desc)
    return raw, True


def _open_writer(content: ContentStore, digest: Digest,
                 patience: float = _WRITER_PATIENCE) -> Writer | None:
    """The ingest writer for ``digest``; None if the blob became present while we waited.

    Another pull downloading the same blob holds the ingest (Conflict); rather than fail or
    download it twice, wait for that pull to finish or give up the ingest.
    """
    deadline = time.monotonic() + patience
    while True:
        if content.exists(digest):
            return None
        try:
            return content.writer(_ingest_ref(digest))
        except Conflict:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _ingest_ref(digest: Digest) -> str:
    # Keyed by digest alone so a later pull, from any repository, resumes the same ingest.
    return f"pull-{digest.algorithm}-{digest.hex}"


def pull(ref: Reference, *, client: RegistryClient, content: ContentStore,
         metadata: MetadataStore, platform: Platform | None = None,
         progress: ProgressSink = msg.discard, unpack: Unpacker | None = None,
         concurrency: int = DOWNLOAD_CONCURRENCY,
         cancel: threading.Event | None = None,
         images: ImageService | None = None) -> PullResult:
    """Pull ``ref`` into the store; record it under its name; unpack it if asked.

    Blocking (run it in a worker thread from the daemon); ``cancel`` stops it between chunks
    with Unavailable, leaving partial downloads for the next pull to resume. The name is set
    through the image service (``images``, by default one over ``content`` and ``metadata``
    for ``platform``), so an image the tag moves away from is kept as dangling, as in Docker.
    """
    sink = _Sink(progress, cancel, f"pull {ref}")
    repo = Repository(ref.domain, ref.path)
    want = platform or Platform.default()
    sink(msg.pulling_from(ref.path, _target_of(ref)))
    # The TTL bounds how long a crashed pull can pin blobs; the finally below ends it sooner.
    lease = metadata.create_lease(f"pull-{uuid.uuid4().hex}", ttl=_LEASE_TTL,
                                  labels={"ref": str(ref)}).id
    try:
        target, manifest_desc, manifest, fresh = _resolve_image(
            client, content, metadata, lease, repo, ref, want)
        fetched = 0
        metadata.add_lease_content(lease, manifest.config.digest)
        writer = _open_writer(content, manifest.config.digest)
        if writer is not None:
            fresh = True
            try:
                client.fetch_blob(repo, manifest.config, writer)
            finally:
                writer.close()
            fetched += manifest.config.size
        config = parse_config(content.read(manifest.config.digest, MAX_CONFIG_BYTES),
                              f"image config {manifest.config.digest}")
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"image {ref}: manifest has {len(manifest.layers)} layers but the config lists "
                f"{len(config.diff_ids)} diff IDs")
        for layer in manifest.layers:
            metadata.add_lease_content(lease, layer.digest)
        got, new_layers = _download_layers(client, content, repo, manifest.layers, sink,
                                           concurrency)
        fetched += got
        fresh = fresh or bool(new_layers)
        unpacked: object = None
        if unpack is not None:
            unpacked = _unpack(unpack, manifest.layers, config.diff_ids, new_layers, sink)
        else:
            for layer in new_layers:
                sink(msg.pull_complete(msg.short_id(layer.digest)))
        name = str(ref)
        previous = _current(metadata, name)
        same = previous is not None and previous.target.digest == target.digest
        # a moved tag starts afresh: the old record's labels described the old image
        labels = dict(previous.labels) if previous is not None and same else {}
        labels[SOURCE_LABEL] = str(repo)
        service = images or ImageService(content, metadata, platform=want)
        service.record(target, [ref], labels)
        record = metadata.get_image(name)
        up_to_date = not fresh and same
        sink(msg.digest(target.digest))
        familiar = ref.familiar()
        sink(msg.up_to_date(familiar) if up_to_date else msg.downloaded_newer(familiar))
        return PullResult(ref, target, manifest_desc, config, record, fetched, up_to_date,
                          unpacked)
    finally:
        metadata.delete_lease(lease)


def _resolve_image(client: RegistryClient, content: ContentStore, metadata: MetadataStore,
                   lease: str, repo: Repository, ref: Reference,
                   want: Platform) -> tuple[Descriptor, Descriptor, Manifest, bool]:
    """Tag/digest -> (target, platform manifest descriptor, manifest, anything fetched?).

    Both the index and the chosen manifest are stored (a pulled image can be pushed or saved
    as-is) and leased before they are written.
    """
    target = client.resolve(repo, _target_of(ref))
    metadata.add_lease_content(lease, target.digest)
    raw, fresh = _fetch_manifest(client, content, repo, target)
    doc = parse_manifest(raw, target.media_type, what=f"manifest {ref}")
    manifest_desc = target
    if isinstance(doc, Index):
        manifest_desc = select_platform(doc, want)
        metadata.add_lease_content(lease, manifest_desc.digest)
        raw, more = _fetch_manifest(client, content, repo, manifest_desc)
        fresh = fresh or more
        doc = parse_manifest(raw, manifest_desc.media_type,
                             what=f"manifest {ref}@{manifest_desc.digest}")
        if not isinstance(doc, Manifest):
            raise InvalidArgument(f"manifest {ref}@{manifest_desc.digest}: nested index "
                                  f"for platform {want} is not supported")
    doc.validate_image(f"manifest {ref}@{manifest_desc.digest}")
    return target, manifest_desc, doc, fresh


def _unpack(unpack: Unpacker, layers: Sequence[Descriptor], diff_ids: Sequence[Digest],
            new_layers: Sequence[Descriptor], sink: _Sink) -> object:
    """Run the unpacker, turning its byte counts into Extracting / Pull complete lines.

    Layers that were "Already exists" get no further line, as in docker's output.
    """
    done: set[Digest] = {d.digest for d in layers} - {d.digest for d in new_layers}

    def on_progress(layer: Descriptor, consumed: int) -> None:
        lid = msg.short_id(layer.digest)
        sink.bytes(msg.extracting, lid, consumed, layer.size)
        if consumed >= layer.size and layer.digest not in done:
            done.add(layer.digest)
            sink(msg.pull_complete(lid))

    result = unpack(layers, diff_ids, on_progress)
    # Layers the unpacker skipped (already unpacked) or did not report still completed.
    for layer in layers:
        if layer.digest not in done:
            done.add(layer.digest)
            sink(msg.pull_complete(msg.short_id(layer.digest)))
    return result


def _current(metadata: MetadataStore, name: str) -> ImageRecord | None:
    try:
        return metadata.get_image(name)
    except NotFound:
        return None


def _download_layers(client: RegistryClient, content: ContentStore, repo: Repository,
                     layers: Sequence[Descriptor], sink: _Sink,
                     concurrency: int) -> tuple[int, list[Descriptor]]:
    """Fetch the missing layers ``concurrency`` at a time.

    Returns the bytes transferred and the layers that were missing.
    """
    todo: list[Descriptor] = []
    seen: set[Digest] = set()
    for layer in layers:
        lid = msg.short_id(layer.digest)
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        if content.exists(layer.digest):
            sink(msg.already_exists(lid))
        else:
            sink(msg.pulling_fs_layer(lid))
            todo.append(layer)
    for layer in todo[concurrency:]:
        sink(msg.waiting(msg.short_id(layer.digest)))
    if not todo:
        return 0, []

    def fetch(layer: Descriptor) -> int:
        sink.check()
        lid = msg.short_id(layer.digest)
        writer = _open_writer(content, layer.digest)
        if writer is None:  # another pull finished it meanwhile
            sink(msg.download_complete(lid))
            return 0
        start = writer.offset

        def on_bytes(done: int) -> None:
            sink.bytes(msg.downloading, lid, done, layer.size)
            if done == layer.size:
                sink(msg.verifying_checksum(lid))

        try:
            client.fetch_blob(repo, layer, writer, on_bytes)
        finally:
            writer.close()  # keeps a partial ingest for the next pull to resume
        sink(msg.download_complete(lid))
        return layer.size - min(start, layer.size)

    return sum(_run_all(fetch, todo, concurrency, "pull-layer")), todo


def _run_all(fn: Callable[[Descriptor], int], items: Sequence[Descriptor], concurrency: int,
             name: str) -> list[int]:
    """Run ``fn`` over ``items`` in a thread pool; the first failure is raised after the rest end.

    Waiting for the others (rather than abandoning them) keeps every ingest in a consistent,
    resumable state when the call returns.
    """
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix=name) as pool:
        futures: list[Future[int]] = [pool.submit(fn, item) for item in items]
    results: list[int] = []
    first: BaseException | None = None
    for fut in futures:
        exc = fut.exception()
        if exc is not None:
            first = first or exc
        else:
            results.append(fut.result())
    if first is not None:
        raise first
    return results


# --- push --------------------------------------------------------------------------------


MountSource = Callable[[Descriptor], Iterable[Repository]]
"""Repositories a blob is known to exist in (e.g. where it was pulled from)."""


def push(ref: Reference, *, client: RegistryClient, content: ContentStore,
         metadata: MetadataStore, progress: ProgressSink = msg.discard,
         sources: MountSource | None = None,
         concurrency: int = UPLOAD_CONCURRENCY,
         cancel: threading.Event | None = None) -> Descriptor:
    """Push the local image named ``ref`` to its registry; returns the pushed target descriptor.

    ``sources`` says which repositories of the same registry hold a blob (for cross-repository
    mounts); by default, those the local images carrying it were pulled from.
    """
    sink = _Sink(progress, cancel, f"push {ref}")
    repo = Repository(ref.domain, ref.path)
    name = str(ref)
    try:
        record = metadata.get_image(name)
    except NotFound as exc:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name()}"
                       ) from exc
    target = record.target
    if sources is None:
        sources = _known_sources(metadata, content, repo)
    sink(msg.push_refers_to(ref.name))
    raw = content.read(target.digest, MAX_MANIFEST_BYTES)
    doc = parse_manifest(raw, target.media_type, what=f"manifest {ref}")
    if isinstance(doc, Index):
        # Check first, so a push that must fail uploads nothing.
        present = [c for c in doc.manifests if content.exists(c.digest)]
        for child in doc.manifests:
            if child not in present:
                _require_remote_manifest(client, repo, ref, child)
        for child in present:
            child_raw = content.read(child.digest, MAX_MANIFEST_BYTES)
            child_doc = parse_manifest(child_raw, child.media_type,
                                       what=f"manifest {ref}@{child.digest}")
            if isinstance(child_doc, Manifest):
                _push_manifest_blobs(client, content, repo, child_doc, sink, sources,
                                     concurrency)
            client.push_manifest(repo, str(child.digest), child.media_type, child_raw)
    else:
        _push_manifest_blobs(client, content, repo, doc, sink, sources, concurrency)
    tag = ref.tag or str(target.digest)
    client.push_manifest(repo, tag, target.media_type, raw)
    # The registry now holds the image: record it as a source (docker then shows a RepoDigest,
    # and later pushes elsewhere on this registry can mount from here).
    metadata.put_image(name, target, {**record.labels, SOURCE_LABEL: str(repo)})
    for m in msg.push_digest(tag, target.digest, target.size):
        sink(m)
    return target


def _require_remote_manifest(client: RegistryClient, repo: Repository, ref: Reference,
                             child: Descriptor) -> None:
    """An index entry we never pulled can only be pushed if the registry already has it."""
    try:
        client.resolve(repo, str(child.digest))
    except NotFound as exc:
        plat = child.platform or {}
        where = "/".join(str(plat[k]) for k in ("os", "architecture", "variant") if k in plat)
        raise NotFound(
            f"push {ref}: the index lists manifest {child.digest} ({where or 'no platform'}) "
            f"which is neither in the local store nor on {repo}; pull all platforms first"
        ) from exc


def _known_sources(metadata: MetadataStore, content: ContentStore,
                   repo: Repository) -> MountSource:
    """Where each blob is known to exist on ``repo``'s registry: the repositories that images
    carrying the blob were pulled from (their SOURCE_LABEL). Unreadable images are skipped:
    a missed mount only costs an upload.
    """
    where: dict[Digest, list[Repository]] = {}
    for rec in metadata.list_images():
        src = rec.labels.get(SOURCE_LABEL, "")
        domain, _, path = src.partition("/")
        if domain != repo.domain or not path or path == repo.path:
            continue
        try:
            blobs = _image_blobs(content, rec.target)
        except (NotFound, InvalidArgument):
            continue
        for d in blobs:
            where.setdefault(d, []).append(Repository(domain, path))
    return lambda desc: where.get(desc.digest, [])


def _image_blobs(content: ContentStore, target: Descriptor) -> set[Digest]:
    doc = parse_manifest(content.read(target.digest, MAX_MANIFEST_BYTES), target.media_type)
    manifests = [doc] if isinstance(doc, Manifest) else []
    if isinstance(doc, Index):
        for child in doc.manifests:
            if content.exists(child.digest):
                m = parse_manifest(content.read(child.digest, MAX_MANIFEST_BYTES),
                                   child.media_type)
                if isinstance(m, Manifest):
                    manifests.append(m)
    out: set[Digest] = set()
    for m in manifests:
        out.add(m.config.digest)
        out.update(layer.digest for layer in m.layers)
    return out


def _push_manifest_blobs(client: RegistryClient, content: ContentStore, repo: Repository,
                         manifest: Manifest, sink: _Sink, sources: MountSource | None,
                         concurrency: int) -> None:
    layers = list({d.digest: d for d in manifest.layers}.values())  # dedupe, keep order
    # Docker lists layers top (last) first.
    shown = list(reversed(layers))
    for layer in shown:
        sink(msg.preparing(msg.short_id(layer.digest)))
    for layer in shown[concurrency:]:
        sink(msg.waiting(msg.short_id(layer.digest)))

    def mount_from(desc: Descriptor) -> str | None:
        if sources is None:
            return None
        for src in sources(desc):
            if src.domain == repo.domain and src.path != repo.path:
                return src.path
        return None

    def send(layer: Descriptor) -> int:
        sink.check()
        lid = msg.short_id(layer.digest)
        if not content.exists(layer.digest):
            raise NotFound(f"push {repo}: layer {layer.digest} is not in the local content store")
        src = mount_from(layer)
        outcome = client.push_blob(repo, layer, content, src,
                                   lambda done: sink.bytes(msg.pushing, lid, done, layer.size))
        if outcome == PushOutcome.EXISTS:
            sink(msg.layer_already_exists(lid))
        elif outcome == PushOutcome.MOUNTED:
            sink(msg.mounted_from(lid, src or ""))
        else:
            sink(msg.pushed(lid))
        return layer.size

    _run_all(send, shown, concurrency, "push-layer")
    # The config goes after the layers and without a progress line, as dockerd does.
    if not content.exists(manifest.config.digest):
        raise NotFound(f"push {repo}: config {manifest.config.digest} is not in the local "
                       f"content store")
    client.push_blob(repo, manifest.config, content, mount_from(manifest.config))
