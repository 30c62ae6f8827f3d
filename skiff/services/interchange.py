"""Moving images in and out as files: save, load and import.

``save`` writes one tar that is both a ``docker save`` archive (``manifest.json``,
``repositories``) and an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``), as
Docker 25+ does, so that old and new docker, skopeo's ``docker-archive:`` and ``oci-archive:``
and containerd can all read it. Layers are written uncompressed (what ``docker load`` of any
version expects), so the saved manifest is a new one whose layers are the diffIDs.

``load`` reads either format, including the layout of old ``docker save`` (``<id>/layer.tar``
plus symlinks for repeated layers). The archive is read as a stream, never extracted: entry
names are only keys, and names that are absolute, contain ``..``, or symlinks that leave the
archive, devices and the like are refused with the entry named. Every blob goes through the
content store (digest-verified); a lease protects them until the image records exist.

``import_rootfs`` turns a root filesystem tar into a one-layer image (``docker import``).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import posixpath
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

from skiff.core.changes import apply_changes
from skiff.core.compression import SNIFF_BYTES, sniff
from skiff.core.content import Descriptor, Digest
from skiff.core.images import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Index,
    Manifest,
    Platform,
    chain_ids,
    children,
    index_json,
    load_json,
    manifest_json,
    parse_config,
    parse_manifest,
)
from skiff.core.metadata import MetadataStore
from skiff.core.reference import Reference, parse_reference
from skiff.errors import InvalidArgument, NotFound, SkiffError, Unavailable
from skiff.services.images import Image, ImageService

Decompressor = Callable[[BinaryIO, str], BinaryIO]
"""``decompress(blob, media_type)`` -> the uncompressed tar stream, the compression told by the
magic bytes (the diff plugin's ``open_layer`` fits); injected because services may not import
plugins. ``media_type`` is only a hint and may be empty (``import`` of any tar)."""

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20
_MAX_SMALL = max(MAX_MANIFEST_BYTES, MAX_CONFIG_BYTES)
_LEASE_TTL = 3600.0


def stdlib_decompress(blob: BinaryIO, media_type: str) -> BinaryIO:
    """The standard library's decoders (gzip, bzip2, xz); zstd needs the diff plugin's.

    Like the plugin's ``open_layer``, the magic bytes decide and ``media_type`` is ignored.
    """
    # peek() needs a buffered reader; any readable binary stream can be wrapped in one
    buffered = io.BufferedReader(cast("io.RawIOBase", blob), buffer_size=_CHUNK)
    kind = sniff(buffered.peek(SNIFF_BYTES)[:SNIFF_BYTES])
    src = cast(BinaryIO, buffered)
    if kind == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=src, mode="rb"))
    if kind == "bzip2":
        return cast(BinaryIO, bz2.BZ2File(src, "rb"))
    if kind == "xz":
        return cast(BinaryIO, lzma.LZMAFile(src, "rb"))
    if kind == "none":
        return src
    raise Unavailable(f"decompress {kind} data (layer type {media_type or 'unknown'}): "
                      "no decompressor configured")


def _sniff(head: bytes) -> str:
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}.get(sniff(head), OCI_LAYER)


@dataclass
class LoadResult:
    images: list[Image] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # docker's "Loaded image: ..." lines


class _Archive:
    """What a load found in the archive: small JSON documents and ingested blobs, by name."""

    def __init__(self) -> None:
        self.small: dict[str, bytes] = {}
        self.blobs: dict[str, tuple[Digest, int]] = {}
        self.links: dict[str, str] = {}

    def resolve(self, name: str) -> str:
        seen = 0
        while name in self.links:
            name = self.links[name]
            seen += 1
            if seen > 16:
                raise InvalidArgument(f"load: archive entry {name!r}: too many levels of links")
        return name


def _clean_name(raw: str) -> str:
    """An archive entry name as a key; refuse absolute names and ``..`` components."""
    if raw.startswith("/"):
        raise InvalidArgument(f"load: archive entry {raw!r}: absolute path refused")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"load: archive entry {raw!r}: '..' in path refused")
    if not parts:
        raise InvalidArgument(f"load: archive entry {raw!r}: empty name")
    return "/".join(parts)


def _is_small(name: str) -> bool:
    base = posixpath.basename(name)
    return base in ("manifest.json", "index.json", "oci-layout", "repositories", "json",
                    "VERSION") or base.endswith(".json")


Unpack = Callable[[Sequence[Descriptor], Sequence[Digest]], object]
"""``unpack(layers, diff_ids)``: the unpack service bound to a snapshotter (as pull takes it)."""


class Interchange:
    def __init__(self, images: ImageService, metadata: MetadataStore, *,
                 decompress: Decompressor | None = None, tmpdir: str | None = None,
                 unpack: Unpack | None = None) -> None:
        self.images = images
        self.content = images.content
        self.metadata = metadata
        self.decompress = decompress or stdlib_decompress
        self.tmpdir = tmpdir
        # when set, loaded and imported images are unpacked (verifying every diffID) before
        # they are named, as docker load does; a bad layer then fails the load
        self.unpack = unpack

    # --- save --------------------------------------------------------------------------

    def _plan(self, names: Sequence[str]) -> list[tuple[Image, list[Reference]]]:
        """Images to save with the tags to record for each (``repo`` alone means all its tags)."""
        plan: dict[Digest, tuple[Image, list[Reference]]] = {}
        all_imgs = self.images.images()
        for name in names:
            picked: list[tuple[Image, Reference | None]] = []
            try:
                ref: Reference | None = parse_reference(name, default_tag=False)
            except InvalidArgument:
                ref = None
            if ref is not None and ref.is_name_only:
                for img in all_imgs:
                    for _, r in img.named():
                        if r.name == ref.name and r.tag is not None and r.digest is None:
                            picked.append((img, r))
            if not picked:
                img = self.images.get(name)
                tagged: Reference | None = None
                if ref is not None:
                    full = parse_reference(name)
                    if full.tag is not None and full.digest is None and \
                            any(r.name == str(full) for r in img.records):
                        tagged = full
                picked.append((img, tagged))
            for img, maybe_tag in picked:
                entry = plan.setdefault(img.id, (img, []))
                if maybe_tag is not None and maybe_tag not in entry[1]:
                    entry[1].append(maybe_tag)
        return list(plan.values())

    def save(self, names: Sequence[str], out: BinaryIO) -> None:
        """Write ``names`` (references or IDs) as one docker-save + OCI-layout tar to ``out``."""
        if not names:
            raise InvalidArgument("save: no images named")
        plan = self._plan(names)
        tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        try:
            for d in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            written: set[Digest] = set()
            layer_sizes: dict[Digest, int] = {}  # uncompressed sizes of layers already written
            docker_manifest: list[dict[str, Any]] = []
            index_entries: list[Descriptor] = []
            repositories: dict[str, dict[str, str]] = {}
            for img, tags in plan:
                if len(img.manifest.layers) != len(img.config.diff_ids):
                    raise InvalidArgument(f"save: image {img.short_id}: manifest and config "
                                          "disagree on the number of layers")
                layer_descs = []
                for layer, diff_id in zip(img.manifest.layers, img.config.diff_ids, strict=True):
                    if diff_id not in layer_sizes:
                        layer_sizes[diff_id] = self._save_layer(tar, layer, diff_id, written)
                    layer_descs.append(Descriptor(OCI_LAYER, diff_id, layer_sizes[diff_id]))
                cfg_raw = img.config.raw
                self._add_bytes(tar, img.id, cfg_raw, written)
                cfg_desc = Descriptor(OCI_CONFIG, img.id, len(cfg_raw))
                mraw = manifest_json(cfg_desc, layer_descs)
                mdigest = Digest.from_bytes(mraw)
                self._add_bytes(tar, mdigest, mraw, written)
                mdesc = Descriptor(OCI_MANIFEST, mdigest, len(mraw))
                if tags:
                    for t in tags:
                        index_entries.append(Descriptor(
                            OCI_MANIFEST, mdigest, len(mraw),
                            annotations={ANNOTATION_IMAGE_NAME: str(t),
                                         ANNOTATION_REF_NAME: t.tag or "latest"}))
                        if img.config.diff_ids:
                            repositories.setdefault(t.familiar_name(), {})[t.tag or "latest"] = \
                                img.config.diff_ids[-1].hex
                else:
                    index_entries.append(mdesc)
                docker_manifest.append({
                    "Config": f"blobs/sha256/{img.id.hex}",
                    "RepoTags": [t.familiar() for t in tags] or None,
                    "Layers": [f"blobs/sha256/{d.digest.hex}" for d in layer_descs],
                })
            self._add_file(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            self._add_file(tar, "index.json", index_json(index_entries))
            self._add_file(tar, "manifest.json", json.dumps(docker_manifest).encode())
            if repositories:
                self._add_file(tar, "repositories", json.dumps(repositories).encode())
        finally:
            tar.close()

    @staticmethod
    def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    def _add_bytes(self, tar: tarfile.TarFile, digest: Digest, data: bytes,
                   written: set[Digest]) -> None:
        if digest in written:
            return
        self._add_file(tar, f"blobs/sha256/{digest.hex}", data)
        written.add(digest)

    def _uncompressed(self, layer: Descriptor, sink: Callable[[bytes], object] | None,
                      what: str) -> tuple[Digest, int]:
        """Stream ``layer`` uncompressed into ``sink``; return the diffID and size."""
        h = hashlib.sha256()
        size = 0
        with self.content.open(layer.digest) as blob:
            try:
                stream = self.decompress(blob, layer.media_type)
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    if sink is not None:
                        sink(chunk)
            except SkiffError:
                raise
            except Exception as exc:  # each decompressor library has its own error types
                raise InvalidArgument(f"{what}: layer {layer.digest}: corrupt compressed data "
                                      f"({type(exc).__name__}: {exc})") from exc
        return Digest("sha256", h.hexdigest()), size

    def _save_layer(self, tar: tarfile.TarFile, layer: Descriptor, diff_id: Digest,
                    written: set[Digest]) -> int:
        """Write the uncompressed layer as blobs/sha256/<diffID>; verify it on the way."""
        with tempfile.TemporaryFile(dir=self.tmpdir) as spool:
            got, size = self._uncompressed(layer, spool.write, "save")
            if got != diff_id:
                raise InvalidArgument(f"save: layer {layer.digest} uncompresses to {got}, "
                                      f"but the config says {diff_id}")
            spool.seek(0)
            info = tarfile.TarInfo(f"blobs/sha256/{diff_id.hex}")
            info.size = size
            info.mode = 0o644
            tar.addfile(info, spool)
            written.add(diff_id)
            return size

    # --- load --------------------------------------------------------------------------

    def load(self, archive: BinaryIO) -> LoadResult:
        """Load a docker-save or OCI-layout tar (optionally gzip/bzip2/xz compressed)."""
        lease = self.metadata.create_lease(ttl=_LEASE_TTL, labels={"op": "load"}).id
        try:
            found = self._read_archive(archive, lease)
            if "manifest.json" in found.small:
                return self._load_docker(found, lease)
            if "index.json" in found.small:
                return self._load_oci(found, lease)
            raise InvalidArgument("load: the archive has neither manifest.json nor index.json "
                                  "(not a docker save or OCI layout tar)")
        finally:
            self.metadata.delete_lease(lease)

    def _read_archive(self, archive: BinaryIO, lease: str) -> _Archive:
        found = _Archive()
        try:
            tf = tarfile.open(fileobj=archive, mode="r|*")  # noqa: SIM115
        except tarfile.TarError as exc:
            raise InvalidArgument(f"load: not a tar archive: {exc}") from exc
        try:
            for m in self._members(tf):
                name = _clean_name(m.name)
                if m.isdir():
                    continue
                if m.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                                               m.linkname))
                    if m.linkname.startswith("/") or target.startswith("../") or target == "..":
                        raise InvalidArgument(f"load: archive entry {m.name!r}: symlink to "
                                              f"{m.linkname!r} leaves the archive")
                    found.links[name] = target
                elif m.islnk():
                    found.links[name] = _clean_name(m.linkname)
                elif m.isreg():
                    f = tf.extractfile(m)
                    if f is None:  # pragma: no cover - regular members always have data
                        continue
                    if _is_small(name) and not name.startswith("blobs/"):
                        if m.size > _MAX_SMALL:
                            raise InvalidArgument(f"load: archive entry {m.name!r}: {m.size} "
                                                  f"bytes exceeds the limit of {_MAX_SMALL}")
                        found.small[name] = f.read()
                    else:
                        found.blobs[name] = self._ingest(f, name, lease)
                else:
                    raise InvalidArgument(f"load: archive entry {m.name!r}: type "
                                          f"{m.type!r} (device, fifo, ...) refused")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise InvalidArgument(f"load: corrupt or truncated archive: {exc}") from exc
        finally:
            tf.close()
        return found

    @staticmethod
    def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        while True:
            m = tf.next()
            if m is None:
                return
            yield m

    def _ingest(self, f: IO[bytes], name: str, lease: str) -> tuple[Digest, int]:
        w = self.content.writer(f"load-{uuid.uuid4().hex}")
        try:
            size = 0
            while chunk := f.read(_CHUNK):
                w.write(chunk)
                size += len(chunk)
            digest = w.digest()
            if name.startswith("blobs/sha256/") and posixpath.basename(name) != digest.hex:
                raise InvalidArgument(f"load: archive entry {name!r}: content has digest "
                                      f"{digest}, not the one its name says")
            self.metadata.add_lease_content(lease, digest)
            info = w.commit(digest, size)
        except BaseException:
            w.abort()
            raise
        return info.digest, info.size

    def _blob(self, found: _Archive, path: str, what: str) -> tuple[Digest, int]:
        name = found.resolve(_clean_name(path))
        if name in found.blobs:
            return found.blobs[name]
        if name in found.small:
            info = self.content.put(found.small[name])
            found.blobs[name] = (info.digest, info.size)
            return found.blobs[name]
        raise InvalidArgument(f"load: {what} {path!r} is not in the archive")

    def _layer_type(self, digest: Digest) -> str:
        with self.content.open(digest) as f:
            return _sniff(f.read(8))

    def _check_diff_id(self, digest: Digest, media_type: str, want: Digest, what: str) -> None:
        got = digest
        if media_type != OCI_LAYER:
            got, _ = self._uncompressed(Descriptor(media_type, digest, 0), None, f"load: {what}")
        if got != want:
            raise InvalidArgument(f"load: {what} has diffID {got}, but the config says {want}")

    def _load_docker(self, found: _Archive, lease: str) -> LoadResult:
        try:
            entries = json.loads(found.small["manifest.json"])
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"load: manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise InvalidArgument("load: manifest.json is not a list")
        oci_by_config = self._oci_manifests_by_config(found)
        result = LoadResult()
        for i, e in enumerate(entries):
            where = f"manifest.json[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("Config"), str) or \
                    not isinstance(e.get("Layers"), list):
                raise InvalidArgument(f"load: {where}: want Config and Layers")
            cdigest, _ = self._blob(found, e["Config"], f"{where} config")
            cfg_raw = self.content.read(cdigest, MAX_CONFIG_BYTES)
            cfg = parse_config(cfg_raw, f"load: {where} config {e['Config']}")
            if len(cfg.diff_ids) != len(e["Layers"]):
                raise InvalidArgument(f"load: {where}: {len(e['Layers'])} layers but the config "
                                      f"lists {len(cfg.diff_ids)} diffIDs")
            layers = []
            for path, diff_id in zip(e["Layers"], cfg.diff_ids, strict=True):
                if not isinstance(path, str):
                    raise InvalidArgument(f"load: {where}: layer paths must be strings")
                digest, size = self._blob(found, path, f"{where} layer")
                mt = self._layer_type(digest)
                self._check_diff_id(digest, mt, diff_id, f"layer {path!r}")
                layers.append(Descriptor(mt, digest, size))
            target = oci_by_config.get(cdigest)
            if target is None or [x.digest for x in target[1].layers] != [x.digest for x in layers]:
                mraw = manifest_json(Descriptor(OCI_CONFIG, cdigest, len(cfg_raw)), layers)
                minfo = self.content.put(mraw)
                mdesc = Descriptor(OCI_MANIFEST, minfo.digest, minfo.size)
            else:
                mdesc = target[0]
            tags = [parse_reference(t) for t in e.get("RepoTags") or [] if isinstance(t, str)]
            self._record(result, mdesc, tags, lease)
        return result

    def _oci_manifests_by_config(self, found: _Archive) -> dict[Digest, tuple[Descriptor,
                                                                              Manifest]]:
        """Docker 25+ archives carry OCI manifests too: reuse them to keep manifest digests."""
        out: dict[Digest, tuple[Descriptor, Manifest]] = {}
        if "index.json" not in found.small:
            return out
        try:
            idx = parse_manifest(found.small["index.json"], None, what="load: index.json")
        except InvalidArgument:
            return out
        if not isinstance(idx, Index):
            return out
        for d in idx.manifests:
            if d.media_type in INDEX_TYPES or not self.content.exists(d.digest):
                continue
            try:
                doc = parse_manifest(self.content.read(d.digest, MAX_MANIFEST_BYTES),
                                     d.media_type)
            except InvalidArgument:
                continue
            if isinstance(doc, Manifest):
                out[doc.config.digest] = (Descriptor(d.media_type, d.digest, d.size), doc)
        return out

    def _load_oci(self, found: _Archive, lease: str) -> LoadResult:
        layout = found.small.get("oci-layout")
        if layout is not None:
            ver = load_json(layout, "load: oci-layout", 4096).get("imageLayoutVersion")
            if not isinstance(ver, str) or not ver.startswith("1."):
                raise InvalidArgument(f"load: unsupported OCI layout version {ver!r}")
        idx = parse_manifest(found.small["index.json"], None, what="load: index.json")
        if not isinstance(idx, Index):
            raise InvalidArgument("load: index.json is not an image index")
        result = LoadResult()
        for i, d in enumerate(idx.manifests):
            self._check_complete(d, f"index.json manifests[{i}]")
            tags: list[Reference] = []
            name = d.annotations.get(ANNOTATION_IMAGE_NAME) or ""
            refname = d.annotations.get(ANNOTATION_REF_NAME) or ""
            for candidate in (name, refname):
                if candidate and ("/" in candidate or ":" in candidate or candidate == name):
                    try:
                        tags = [parse_reference(candidate)]
                        break
                    except InvalidArgument:
                        continue
            self._record(result, d, tags, lease)
        return result

    def _check_complete(self, desc: Descriptor, where: str) -> None:
        """Every blob our platform needs must have been in the archive."""
        try:
            mdesc, manifest, _ = self.images.resolve_target(desc)
        except NotFound as exc:
            raise InvalidArgument(f"load: {where} ({desc.digest}): {exc}") from exc
        for layer in manifest.layers:
            if not self.content.exists(layer.digest):
                raise InvalidArgument(f"load: {where}: layer {layer.digest} is not in the archive")
        for c in children(mdesc, self.content.read(mdesc.digest, MAX_MANIFEST_BYTES)):
            if not self.content.exists(c.digest) and c.media_type != OCI_INDEX:
                raise InvalidArgument(f"load: {where}: blob {c.digest} is not in the archive")

    def _record(self, result: LoadResult, target: Descriptor, tags: list[Reference],
                lease: str) -> None:
        if self.unpack is not None:
            _, manifest, cfg = self.images.resolve_target(target)
            for key in chain_ids(cfg.diff_ids):  # the collector must spare them until named
                self.metadata.add_lease_snapshot(lease, key)
            self.unpack(manifest.layers, cfg.diff_ids)
        img = self.images.record(target, tags)
        result.images.append(img)
        if tags:
            result.messages += [f"Loaded image: {t.familiar()}" for t in tags]
        else:
            result.messages.append(f"Loaded image ID: {img.id}")

    # --- import ------------------------------------------------------------------------

    def import_rootfs(self, stream: BinaryIO, *, names: Sequence[Reference] = (),
                      changes: Sequence[str] = (), message: str = "",
                      platform: Platform | None = None,
                      created: float | None = None) -> Image:
        """``docker import``: a (compressed) rootfs tar becomes a one-layer image."""
        config = apply_changes({}, changes)  # validate before reading a possibly huge stream
        plat = (platform or self.images.platform).normalized()
        lease = self.metadata.create_lease(ttl=_LEASE_TTL, labels={"op": "import"}).id
        try:
            tar = self._open_import(stream)
            w = self.content.writer(f"import-{uuid.uuid4().hex}")
            try:
                size = 0
                try:
                    while chunk := tar.read(_CHUNK):
                        w.write(chunk)
                        size += len(chunk)
                except SkiffError:
                    raise
                except Exception as exc:  # each decompressor library has its own error types
                    raise InvalidArgument(f"import: cannot decompress the input: "
                                          f"{type(exc).__name__}: {exc}") from exc
                digest = w.digest()
                self.metadata.add_lease_content(lease, digest)
                w.commit(digest, size)
            except BaseException:
                w.abort()
                raise
            self._check_tar(digest)
            now = created if created is not None else time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
                f".{int((now % 1) * 1e9):09d}Z"
            comment = message or "Imported from -"
            cfg: dict[str, Any] = {
                "architecture": plat.architecture, "os": plat.os, "created": stamp,
                "comment": comment,
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [str(digest)]},
                "history": [{"created": stamp, "created_by": "", "comment": comment}],
            }
            if plat.variant:
                cfg["variant"] = plat.variant
            layer = Descriptor(OCI_LAYER, digest, size)
            if self.unpack is not None:
                self.metadata.add_lease_snapshot(lease, str(digest))
                self.unpack([layer], [digest])
            return self.images.store_image(cfg, [layer], names)
        finally:
            self.metadata.delete_lease(lease)

    def _open_import(self, stream: BinaryIO) -> BinaryIO:
        # any compression docker import takes; the decompressor sniffs the magic bytes
        return self.decompress(stream, "")

    def _check_tar(self, digest: Digest) -> None:
        """Refuse input that is not a tar at all (hostile entries are the unpacker's job)."""
        with self.content.open(digest) as f:
            try:
                with tarfile.open(fileobj=f, mode="r|") as tf:
                    for _ in self._members(tf):
                        pass
            except tarfile.TarError as exc:
                raise InvalidArgument(f"import: the input is not a tar archive: {exc}") from exc

