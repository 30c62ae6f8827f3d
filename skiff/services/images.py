"""The image service: lookup, list, inspect, history, tag, remove, prune and disk usage.

Works over the core protocols only (content store, metadata store, optionally a snapshotter).
An image's ID is the digest of its config, as in Docker's classic store and ``docker save``;
several names (records) may point at the same image, through the same manifest or through an
index that resolves to it for our platform.

Images that lose their last tag while something still needs them (re-tagging a name onto a
new image, ``rmi -f`` of an image a container uses) are kept under a *dangling* record so that
they show up as ``<none>:<none>`` and ``image prune`` can find them, as in Docker.
Sizes are the unpacked sizes of the layers when the snapshotter has them, otherwise the
compressed sizes of the layer blobs.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skiff.core.content import ContentStore, Descriptor, Digest
from skiff.core.images import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_MANIFEST,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    chain_ids,
    manifest_json,
    parse_config,
    parse_manifest,
    select_platform,
)
from skiff.core.metadata import GCResult, ImageRecord, MetadataStore, SnapshotCollector
from skiff.core.reference import (
    Reference,
    is_full_id,
    parse_reference,
)
from skiff.core.snapshots import Kind, Snapshotter, WhiteoutForm
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError

DANGLING_PREFIX = "dangling@"
"""Record names for untagged images that must be kept; never a valid reference."""

PULL_SOURCE_LABEL = "skiff.distribution.source"
"""Set by pull on images that came from a registry: their target digest is a RepoDigest."""

InUse = Callable[[str], Sequence[tuple[str, bool]]]
"""``in_use(image_id)`` -> the containers using the image, as (container id, running)."""

_ZERO_TIME = "0001-01-01T00:00:00Z"
_RESOLVE_CACHE = 4096  # resolved targets kept in memory (a few KiB each)


def _no_containers(_image_id: str) -> Sequence[tuple[str, bool]]:
    return ()


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 with up to nanoseconds (Go's format), which ``fromisoformat`` cannot take whole."""
    if not text:
        return None
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    if "." in t:
        head, _, rest = t.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        t = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _unix(text: str | None) -> int:
    dt = parse_time(text)
    return int(dt.timestamp()) if dt else 0


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Image:
    """One image as the service sees it: the records naming it and the resolved documents."""

    id: Digest  # config digest
    records: list[ImageRecord]
    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig
    # Per layer: unpacked size on disk (or the blob's). Measuring walks the layer's files, so
    # it happens on first use: a lookup (every `run`, every build's tag) must not walk every
    # image on the machine.
    sizer: Callable[[], list[int]] | None = field(default=None, repr=False, compare=False)
    _sizes: list[int] | None = field(default=None, repr=False, compare=False)

    @property
    def layer_sizes(self) -> list[int]:
        if self._sizes is None:
            self._sizes = self.sizer() if self.sizer is not None else \
                [layer.size for layer in self.manifest.layers]
        return self._sizes

    @property
    def short_id(self) -> str:
        return self.id.hex[:12]

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.config.diff_ids)

    def named(self) -> list[tuple[ImageRecord, Reference]]:
        """The records that are real names (not dangling markers), with their references."""
        out = []
        for r in self.records:
            if r.name.startswith(DANGLING_PREFIX):
                continue
            try:
                out.append((r, parse_reference(r.name, default_tag=False)))
            except InvalidArgument:
                continue
        return out

    @property
    def repo_tags(self) -> list[str]:
        return sorted({ref.familiar() for _, ref in self.named()
                       if ref.tag is not None and ref.digest is None})

    @property
    def repo_digests(self) -> list[str]:
        out = set()
        for rec, ref in self.named():
            if ref.digest is not None:
                out.add(f"{ref.familiar_name()}@{ref.digest}")
            elif PULL_SOURCE_LABEL in rec.labels:
                out.add(f"{ref.familiar_name()}@{rec.target.digest}")
        return sorted(out)

    @property
    def dangling(self) -> bool:
        return not self.repo_tags

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def created(self) -> int:
        return _unix(self.config.created)

    @property
    def last_tag_time(self) -> float | None:
        named = self.named()
        return max(r.updated for r, _ in named) if named else None


class ImageService:
    def __init__(self, content: ContentStore, metadata: MetadataStore,
                 snapshotter: Snapshotter | None = None, *,
                 platform: Platform | None = None, in_use: InUse | None = None,
                 collect_snapshots: SnapshotCollector | None = None,
                 graph_driver: str = "overlayfs") -> None:
        self.content = content
        self.metadata = metadata
        self.snapshotter = snapshotter
        self.platform = platform or Platform.default()
        self.in_use: InUse = in_use or _no_containers
        self.collect_snapshots = collect_snapshots
        self.graph_driver = graph_driver
        self._resolved: dict[tuple[Digest, Platform],
                             tuple[Descriptor, Manifest, ImageConfig]] = {}

    # --- resolution --------------------------------------------------------------------

    def resolve_target(self, target: Descriptor, platform: Platform | None = None
                       ) -> tuple[Descriptor, Manifest, ImageConfig]:
        """Target (index or manifest) -> platform manifest and parsed config.

        Content is immutable, so results are cached by digest (the cache only checks that the
        config blob is still there, in case it was collected).
        """
        key = (target.digest, platform or self.platform)
        hit = self._resolved.get(key)
        if hit is not None and self.content.exists(hit[1].config.digest):
            return hit
        got = self._resolve(target, platform)
        if len(self._resolved) >= _RESOLVE_CACHE:
            self._resolved.pop(next(iter(self._resolved)))
        self._resolved[key] = got
        return got

    def _resolve(self, target: Descriptor, platform: Platform | None
                 ) -> tuple[Descriptor, Manifest, ImageConfig]:
        desc = target
        for _ in range(4):  # an index may nest one more index; more is not sensible
            raw = self.content.read(desc.digest, MAX_MANIFEST_BYTES)
            doc = parse_manifest(raw, desc.media_type if desc.media_type in
                                 MANIFEST_TYPES | INDEX_TYPES else None,
                                 what=f"manifest {desc.digest}")
            if isinstance(doc, Index):
                desc = select_platform(doc, platform or self.platform)
                continue
            cfg = parse_config(self.content.read(doc.config.digest, MAX_CONFIG_BYTES),
                               f"image config {doc.config.digest}")
            return desc, doc, cfg
        raise InvalidArgument(f"manifest {target.digest}: indexes nested too deeply")

    def _layer_sizes(self, manifest: Manifest, config: ImageConfig) -> list[int]:
        """Per layer: its unpacked size on disk if unpacked, else its compressed blob size."""
        sizes = [layer.size for layer in manifest.layers]
        if self.snapshotter is None:
            return sizes
        below = 0  # usage of the parent, for snapshotters whose directories hold whole trees
        for i, key in enumerate(chain_ids(config.diff_ids)[:len(sizes)]):
            try:
                used = self.snapshotter.usage(key)[0]
                whole_tree = self.snapshotter.layer_dirs(key).whiteouts is WhiteoutForm.DELETE
            except SkiffError:
                break  # not unpacked (from here up): keep the compressed sizes
            sizes[i] = max(0, used - below) if whole_tree else used
            below = used
        return sizes

    def images(self) -> list[Image]:
        """Every image with the records naming it, newest first; unresolvable records skipped."""
        by_id: dict[Digest, Image] = {}
        cache: dict[Digest, tuple[Descriptor, Manifest, ImageConfig] | None] = {}
        for rec in self.metadata.list_images():
            if rec.target.digest not in cache:
                try:
                    cache[rec.target.digest] = self.resolve_target(rec.target)
                except SkiffError:
                    cache[rec.target.digest] = None  # blobs missing or foreign platform
            got = cache[rec.target.digest]
            if got is None:
                continue
            mdesc, manifest, cfg = got
            img = by_id.get(manifest.config.digest)
            if img is None:
                img = Image(manifest.config.digest, [], mdesc, manifest, cfg,
                            functools.partial(self._layer_sizes, manifest, cfg))
                by_id[img.id] = img
            img.records.append(rec)
        return sorted(by_id.values(), key=lambda i: (-i.created, str(i.id)))

    def get(self, name: str) -> Image:
        """Look an image up as docker does: name[:tag], name@digest, full or short ID."""
        text = name.strip()
        imgs = self.images()
        hexid = text[7:] if text.startswith("sha256:") else text
        if is_full_id(hexid):
            for img in imgs:
                if img.id.hex == hexid:
                    return img
            raise NotFound(f"No such image: {text}")
        ref: Reference | None = None
        try:
            ref = parse_reference(text)
        except InvalidArgument:
            ref = None
        if ref is not None:
            found = self._by_reference(imgs, ref)
            if found is not None:
                return found
        is_hex = bool(hexid) and all(c in "0123456789abcdef" for c in hexid)
        # a bare hex word is tried as a name first (docker does the same), then as an ID prefix
        if is_hex and (text.startswith("sha256:") or ("/" not in text and ":" not in text)):
            matches = [img for img in imgs if img.id.hex.startswith(hexid)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(f"image ID prefix {text!r} is ambiguous: matches "
                                      f"{', '.join(m.short_id for m in matches)}")
        if ref is None:
            raise InvalidArgument(f"invalid reference format: {text!r}")
        raise NotFound(f"No such image: {ref.familiar()}")

    @staticmethod
    def _by_reference(imgs: list[Image], ref: Reference) -> Image | None:
        name = str(ref)
        for img in imgs:
            if any(r.name == name for r in img.records):
                return img
        if ref.digest is not None:
            # name@digest also finds an image of that repository pulled by tag, whose target
            # (or platform manifest) has that digest
            for img in imgs:
                for rec in img.records:
                    try:
                        rref = parse_reference(rec.name, default_tag=False)
                    except InvalidArgument:
                        continue
                    if rref.name == ref.name and ref.digest in (rec.target.digest,
                                                               img.manifest_desc.digest):
                        return img
        return None

    # --- list / inspect / history ------------------------------------------------------

    def list_images(self, *, dangling: bool | None = None,
                    reference: Sequence[str] = (), label: Sequence[str] = (),
                    before: str | None = None, since: str | None = None,
                    shared_size: bool = False) -> list[dict[str, Any]]:
        """Docker's ``GET /images/json`` entries, with its filters.

        ``before``/``since`` name an image (as for ``get``): only images created before/after it.
        """
        imgs = self.images()
        shared = self._shared_sizes(imgs) if shared_size else {}
        lo = self.get(since).created if since else None
        hi = self.get(before).created if before else None
        out = []
        for img in imgs:
            if dangling is not None and img.dangling != dangling:
                continue
            if (lo is not None and img.created <= lo) or (hi is not None and img.created >= hi):
                continue
            if reference and not any(self._ref_matches(img, pat) for pat in reference):
                continue
            if label and not all_labels_match(self._labels(img), label):
                continue
            out.append(self._summary(img, shared.get(img.id, -1), -1))
        return out

    @staticmethod
    def _ref_matches(img: Image, pattern: str) -> bool:
        for tag in img.repo_tags:
            repo = tag.rsplit(":", 1)[0]
            if fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(repo, pattern):
                return True
        return False

    @staticmethod
    def _labels(img: Image) -> dict[str, str]:
        labels = img.config.config.get("Labels")
        return dict(labels) if isinstance(labels, dict) else {}

    def _summary(self, img: Image, shared: int, containers: int) -> dict[str, Any]:
        return {
            "Id": str(img.id),
            "ParentId": "",
            "RepoTags": img.repo_tags,
            "RepoDigests": img.repo_digests,
            "Created": img.created,
            "Size": img.size,
            "SharedSize": shared,
            "VirtualSize": img.size,
            "Labels": self._labels(img),
            "Containers": containers,
        }

    def inspect(self, name: str) -> dict[str, Any]:
        """Docker's ``GET /images/{name}/json``."""
        img = self.get(name)
        raw = img.config.raw_json
        last_tag = img.last_tag_time
        out: dict[str, Any] = {
            "Id": str(img.id),
            "RepoTags": img.repo_tags,
            "RepoDigests": img.repo_digests,
            "Parent": "",
            "Comment": raw.get("comment", "") if isinstance(raw.get("comment"), str) else "",
            "Created": img.config.created or _ZERO_TIME,
            "Container": "",
            "DockerVersion": raw.get("docker_version", "") or "",
            "Author": img.config.author,
            "Config": dict(img.config.config) or None,
            "Architecture": img.config.architecture,
            "Os": img.config.os,
            "Size": img.size,
            "VirtualSize": img.size,
            "GraphDriver": {"Name": self.graph_driver, "Data": self._graph_data(img)},
            "RootFS": {"Type": "layers", "Layers": [str(d) for d in img.config.diff_ids]},
            "Metadata": {"LastTagTime": _rfc3339(last_tag) if last_tag else _ZERO_TIME},
        }
        if img.config.variant:
            out["Variant"] = img.config.variant
        osv = raw.get("os.version")
        if isinstance(osv, str) and osv:
            out["OsVersion"] = osv
        return out

    def _graph_data(self, img: Image) -> dict[str, str] | None:
        if self.snapshotter is None or not img.chain_ids:
            return None
        try:
            dirs = self.snapshotter.layer_dirs(img.chain_ids[-1])
        except SkiffError:
            return None
        return {"UpperDir": dirs.upper}

    def history(self, name: str) -> list[dict[str, Any]]:
        """Docker's ``GET /images/{name}/history``: newest first."""
        img = self.get(name)
        hist = img.config.history
        if not hist:
            # no history recorded: one synthetic entry per layer, as docker shows
            return [{"Id": str(img.id) if i == 0 else "<missing>", "Created": img.created,
                     "CreatedBy": "", "Tags": img.repo_tags if i == 0 else None,
                     "Size": size, "Comment": ""}
                    for i, size in enumerate(reversed(img.layer_sizes))]
        out = []
        layer = 0
        for h in hist:
            size = 0
            if not h.empty_layer and layer < len(img.layer_sizes):
                size = img.layer_sizes[layer]
                layer += 1
            out.append({"Id": "<missing>", "Created": _unix(h.created), "CreatedBy": h.created_by,
                        "Tags": None, "Size": size, "Comment": h.comment})
        out.reverse()
        out[0]["Id"] = str(img.id)
        out[0]["Tags"] = img.repo_tags
        return out

    # --- tag / remove / prune / df -----------------------------------------------------

    def _keep_dangling(self, img: Image, losing: set[str]) -> None:
        """If removing ``losing`` leaves ``img`` without names, give it a dangling record."""
        if any(r.name not in losing for r in img.records):
            return
        self.metadata.put_image(DANGLING_PREFIX + str(img.manifest_desc.digest), img.manifest_desc)

    def _drop_dangling(self, img: Image) -> None:
        for r in img.records:
            if r.name.startswith(DANGLING_PREFIX):
                self.metadata.delete_image(r.name)

    def tag(self, source: str, target: str) -> Reference:
        """``docker tag SOURCE TARGET``; the target gets ``:latest`` when it has no tag."""
        img = self.get(source)
        ref = parse_reference(target)
        if ref.digest is not None:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {target}")
        self.set_name(ref, img)
        return ref

    def set_name(self, ref: Reference, img: Image) -> None:
        """Point ``ref`` at ``img``, keeping a displaced image as dangling."""
        # the record keeps the target the image was known by (index or manifest)
        target = next((r.target for r in img.records if not r.name.startswith(DANGLING_PREFIX)),
                      img.manifest_desc)
        self._point(str(ref), target, img.id, None)
        self._drop_dangling(img)

    def _point(self, name: str, target: Descriptor, image_id: Digest,
               labels: Mapping[str, str] | None) -> None:
        """Make ``name`` point at ``target`` (image ``image_id``), as a tag move does in Docker.

        The image the name leaves keeps a dangling record when nothing else names it, so it
        shows as ``<none>`` and survives GC until pruned. The old record's labels describe the
        old image (where it was pulled from), so they are only carried over when the target is
        unchanged; ``labels`` given replace them.
        """
        for other in self.images():
            if other.id != image_id and any(r.name == name for r in other.records):
                self._keep_dangling(other, {name})
        if labels is None:
            try:
                old = self.metadata.get_image(name)
            except NotFound:
                old = None
            if old is not None and old.target.digest != target.digest:
                labels = {}
        self.metadata.put_image(name, target, labels)

    def remove(self, name: str, *, force: bool = False, prune: bool = True,
               in_use: InUse | None = None) -> list[dict[str, str]]:
        """``docker rmi``: untag a name, deleting the image when that was its last name.

        By ID: deletes the image, which needs ``force`` when it has several repository names
        or a stopped container uses it; a running container's image is never deleted.
        """
        check = in_use or self.in_use
        img = self.get(name)
        users = list(check(str(img.id)))
        running = [c for c, r in users if r]
        stopped = [c for c, r in users if not r]
        by_id = self._is_id_lookup(name, img)
        result: list[dict[str, str]] = []
        if not by_id:
            ref = parse_reference(name.strip())
            rec = next((r for r in img.records if r.name == str(ref)), None)
            if rec is None:
                # name@digest found an image pulled by tag: there is no such name to untag, and
                # guessing which tags the user meant would delete more than they named
                raise NotFound(
                    f"No such image reference: {ref.familiar()} (the image is known as "
                    f"{', '.join(img.repo_tags) or img.short_id}; remove it by tag or ID)")
            others = [r for r, _ in img.named() if r.name != rec.name]
            if others or not users or force:
                if not others and users:
                    self._keep_dangling(img, {rec.name})  # force: the container keeps it
                self.metadata.delete_image(rec.name)
                result.append({"Untagged": ref.familiar()})
                if not others and not users:
                    self._delete(img, skip={rec.name})
                    result.append({"Deleted": str(img.id)})
                    self._gc(prune)
                return result
            raise Conflict(
                f'conflict: unable to remove repository reference "{ref.familiar()}" (must force)'
                f" - container {users[0][0][:12]} is using its referenced image {img.short_id}"
            )
        if running:
            raise Conflict(f"conflict: unable to delete {img.short_id} (cannot be forced) - image "
                           f"is being used by running container {running[0][:12]}")
        if stopped and not force:
            raise Conflict(f"conflict: unable to delete {img.short_id} (must be forced) - image "
                           f"is being used by stopped container {stopped[0][:12]}")
        named = img.named()
        repos = {ref.name for _, ref in named}
        if len(repos) > 1 and not force:
            raise Conflict(f"conflict: unable to delete {img.short_id} (must be forced) - image "
                           f"is referenced in multiple repositories")
        for _, ref in named:
            result.append({"Untagged": ref.familiar()})
        self._delete(img)
        result.append({"Deleted": str(img.id)})
        self._gc(prune)
        return result

    @staticmethod
    def _is_id_lookup(name: str, img: Image) -> bool:
        text = name.strip()
        text = text[7:] if text.startswith("sha256:") else text
        if any(r.name == _try_normalise(name) for r in img.records):
            return False
        return bool(text) and img.id.hex.startswith(text)

    def _delete(self, img: Image, skip: set[str] | None = None) -> None:
        names = [r.name for r in img.records if r.name not in (skip or set())]
        if names:
            self.metadata.delete_images(names)

    def _collector(self) -> SnapshotCollector | None:
        if self.collect_snapshots is not None:
            return self.collect_snapshots
        snapshotter = self.snapshotter
        if snapshotter is None:
            return None
        started = time.time()

        def collect(keep: frozenset[str]) -> None:
            prune_snapshots(snapshotter, keep, older_than=started)

        return collect

    def _gc(self, run: bool = True) -> GCResult | None:
        if not run:
            return None
        return self.metadata.gc(self.content, self._collector())

    def prune(self, *, all_images: bool = False, label: Sequence[str] = (),
              until: float | None = None) -> dict[str, Any]:
        """``docker image prune``: dangling images (or, with ``all``, every unused one).

        ``until`` (seconds since the epoch) keeps images created at or after it.
        """
        deleted: list[dict[str, str]] = []
        for img in self.images():
            if not all_images and not img.dangling:
                continue
            if until is not None and img.created >= until:
                continue
            if self.in_use(str(img.id)):
                continue
            if label and not all_labels_match(self._labels(img), label):
                continue
            for t in img.repo_tags:
                deleted.append({"Untagged": t})
            self._delete(img)
            deleted.append({"Deleted": str(img.id)})
        before = self._snapshot_bytes()
        res = self.metadata.gc(self.content, self._collector())
        freed = res.bytes_freed + max(0, before - self._snapshot_bytes())
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": freed}

    def _snapshot_bytes(self) -> int:
        if self.snapshotter is None:
            return 0
        total = 0
        for info in self.snapshotter.walk():
            if info.kind is Kind.COMMITTED:
                try:
                    total += self.snapshotter.usage(info.key)[0]
                except SkiffError:
                    continue
        return total

    def _shared_sizes(self, imgs: list[Image]) -> dict[Digest, int]:
        users: dict[str, int] = {}
        for img in imgs:
            for key in set(img.chain_ids):
                users[key] = users.get(key, 0) + 1
        out = {}
        for img in imgs:
            out[img.id] = sum(size for key, size in zip(img.chain_ids, img.layer_sizes,
                                                        strict=False) if users[key] > 1)
        return out

    def disk_usage(self) -> dict[str, Any]:
        """The images part of ``GET /system/df``: shared layers are counted once."""
        imgs = self.images()
        shared = self._shared_sizes(imgs)
        unique: dict[str, int] = {}
        entries = []
        for img in imgs:
            for key, size in zip(img.chain_ids, img.layer_sizes, strict=False):
                unique[key] = size
            entries.append(self._summary(img, shared[img.id], len(self.in_use(str(img.id)))))
        return {"LayersSize": sum(unique.values()), "Images": entries}

    # --- creating images ---------------------------------------------------------------

    def store_image(self, config: Mapping[str, Any], layers: Sequence[Descriptor],
                    names: Sequence[Reference] = (), *,
                    media_type: str = OCI_MANIFEST) -> Image:
        """Write config and manifest blobs for ``layers`` (already in the store) and name it.

        With no names the image is recorded as dangling (``docker import`` without a name).
        """
        cfg_raw = json.dumps(config, separators=(",", ":")).encode()
        parsed = parse_config(cfg_raw)  # refuse configs the rest of the engine could not read
        if len(parsed.diff_ids) != len(layers):
            raise InvalidArgument(f"store image: {len(layers)} layers but the config lists "
                                  f"{len(parsed.diff_ids)} diffIDs")
        cfg_type = OCI_CONFIG if media_type == OCI_MANIFEST else \
            "application/vnd.docker.container.image.v1+json"
        if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise InvalidArgument(f"store image: unsupported manifest type {media_type!r}")
        for layer in layers:
            self.content.info(layer.digest)  # NotFound names the missing layer
        cinfo = self.content.put(cfg_raw)
        mraw = manifest_json(Descriptor(cfg_type, cinfo.digest, cinfo.size), layers, media_type)
        minfo = self.content.put(mraw)
        mdesc = Descriptor(media_type, minfo.digest, minfo.size)
        return self.record(mdesc, names)

    def record(self, target: Descriptor, names: Sequence[Reference],
               labels: Mapping[str, str] | None = None) -> Image:
        """Name an image whose blobs are in the store (dangling if ``names`` is empty).

        The path every new image takes (load, import, pull): a name moved off another image
        leaves that one dangling rather than garbage. ``labels`` (e.g. pull's source) are
        set on the named records; None keeps those of a record that already had this target.
        """
        _, manifest, _cfg = self.resolve_target(target)
        if not names:
            existing = [i for i in self.images() if i.id == manifest.config.digest]
            if not existing:
                self.metadata.put_image(DANGLING_PREFIX + str(target.digest), target)
        for ref in names:
            self._point(str(ref), target, manifest.config.digest, labels)
        img = next(i for i in self.images() if i.id == manifest.config.digest)
        if names:
            self._drop_dangling(img)
            img = next(i for i in self.images() if i.id == manifest.config.digest)
        return img


def prune_snapshots(snapshotter: Snapshotter, keep: frozenset[str], *,
                    older_than: float) -> list[str]:
    """Remove committed snapshots not in ``keep``, children before parents.

    Snapshots something else builds on (a container's writable layer, a view) make their
    parents refuse removal with Conflict; those are left alone, as are snapshots newer than
    ``older_than`` (an unpack racing the collection) and all ACTIVE or VIEW ones.
    """
    removed: list[str] = []
    progress = True
    while progress:
        progress = False
        for info in list(snapshotter.walk()):
            if info.kind is not Kind.COMMITTED or info.key in keep or info.created >= older_than:
                continue
            try:
                snapshotter.remove(info.key)
            except (Conflict, NotFound):
                continue
            removed.append(info.key)
            progress = True
    return removed


def _try_normalise(name: str) -> str | None:
    try:
        return str(parse_reference(name.strip()))
    except InvalidArgument:
        return None


def _label_matches(labels: Mapping[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == value


def all_labels_match(labels: Mapping[str, str], wants: Sequence[str]) -> bool:
    return all(_label_matches(labels, w) for w in wants)
