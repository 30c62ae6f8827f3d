"""Image formats: media types, manifests, indexes, configs, platforms and chain IDs.

Covers the OCI image manifest and index and Docker's schema2 manifest and manifest list. Docker
schema1 is refused (it has been deprecated since 2017 and cannot be verified the same way).
Parsing validates what the rest of the engine relies on, so that a bad blob fails here with a
message naming it instead of deep inside a pull or an unpack.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skiff.core.content import Descriptor, Digest
from skiff.errors import InvalidArgument, NotFound

# --- media types -------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES_GZIP = frozenset({OCI_LAYER_GZIP, OCI_LAYER_ND_GZIP, DOCKER_LAYER_GZIP,
                              DOCKER_LAYER_FOREIGN})
LAYER_TYPES_ZSTD = frozenset({OCI_LAYER_ZSTD, OCI_LAYER_ND_ZSTD, DOCKER_LAYER_ZSTD})
LAYER_TYPES_PLAIN = frozenset({OCI_LAYER, OCI_LAYER_ND, DOCKER_LAYER})
LAYER_TYPES = LAYER_TYPES_GZIP | LAYER_TYPES_ZSTD | LAYER_TYPES_PLAIN
NONDISTRIBUTABLE_TYPES = frozenset({OCI_LAYER_ND, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD,
                                    DOCKER_LAYER_FOREIGN})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# Manifests and configs are read whole into memory; registries cap manifests at 4 MiB and a
# bigger one is hostile or broken. Configs of real images stay far below 8 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024

SCHEMA1_MESSAGE = (
    "Docker schema1 manifests are not supported; the image must be rebuilt or pushed again "
    "with a current client (schema2 or OCI)"
)


def layer_compression(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``none`` for a layer media type; InvalidArgument if not a layer."""
    if media_type in LAYER_TYPES_GZIP:
        return "gzip"
    if media_type in LAYER_TYPES_ZSTD:
        return "zstd"
    if media_type in LAYER_TYPES_PLAIN:
        return "none"
    raise InvalidArgument(f"unsupported layer media type {media_type!r}")


# --- platforms -------------------------------------------------------------------------------

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386",
                 "i686": "386", "armhf": "arm", "armel": "arm"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm/v7``, ``linux/arm64/v8`` (or just ``linux``)."""
        parts = text.strip().lower().split("/")
        if not parts[0] or len(parts) > 3 or any(not p for p in parts):
            raise InvalidArgument(f"invalid platform {text!r}: want os[/arch[/variant]]")
        if len(parts) == 1:
            return cls(parts[0], cls.default().architecture).normalized()
        arch = parts[1]
        variant = parts[2] if len(parts) == 3 else None
        if arch == "armhf" and variant is None:
            variant = "v7"
        if arch == "armel" and variant is None:
            variant = "v6"
        return cls(parts[0], arch, variant).normalized()

    @classmethod
    def default(cls) -> Platform:
        """The platform this engine runs images for: linux/amd64."""
        return cls("linux", "amd64")

    @classmethod
    def from_json(cls, obj: Mapping[str, object] | None) -> Platform | None:
        if not obj:
            return None
        os_ = obj.get("os")
        arch = obj.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            return None
        variant = obj.get("variant")
        osv = obj.get("os.version")
        return cls(os_, arch, variant if isinstance(variant, str) and variant else None,
                   osv if isinstance(osv, str) and osv else None)

    def normalized(self) -> Platform:
        """Canonical spelling, as containerd does: x86_64 -> amd64, arm -> arm/v7, arm64/v8 -> arm64."""
        arch = _ARCH_ALIASES.get(self.architecture.lower(), self.architecture.lower())
        variant = self.variant.lower() if self.variant else None
        if variant and variant.isdigit():
            variant = "v" + variant
        if arch == "arm" and variant is None:
            variant = "v7"
        if arch == "arm64" and variant == "v8":
            variant = None
        if arch == "amd64" and variant == "v1":
            variant = None
        return Platform(self.os.lower(), arch, variant, self.os_version)

    def candidates(self) -> list[Platform]:
        """Platforms this one can run, best first (arm/v7 runs v6 and v5 images too)."""
        me = self.normalized()
        out = [me]
        if me.architecture == "arm" and me.variant in ("v8", "v7", "v6"):
            order = ["v8", "v7", "v6", "v5"]
            out += [Platform(me.os, "arm", v) for v in order[order.index(me.variant) + 1:]]
        elif me.architecture == "arm64":
            out += [Platform(me.os, "arm", v) for v in ("v8", "v7", "v6", "v5")]
        elif me.architecture == "amd64" and me.variant is not None:
            # amd64/v3 runs v2 and baseline images
            level = int(me.variant[1:]) if me.variant[1:].isdigit() else 1
            out += [Platform(me.os, "amd64", f"v{v}" if v > 1 else None)
                    for v in range(level - 1, 0, -1)]
        return out

    def matches(self, other: Platform) -> bool:
        a, b = self.normalized(), other.normalized()
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        if self.variant:
            out += f"/{self.variant}"
        return out

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out


# --- manifests and indexes -------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""
    artifact_type: str | None = None

    @property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.raw)

    def validate_image(self, where: str = "manifest") -> None:
        """Refuse a manifest that is not a runnable image (artifact, unknown layer type)."""
        if self.config.media_type not in CONFIG_TYPES:
            raise InvalidArgument(
                f"{where}: config media type {self.config.media_type!r} is not an image config"
            )
        for i, layer in enumerate(self.layers):
            if layer.media_type not in LAYER_TYPES:
                raise InvalidArgument(
                    f"{where}: layer {i} ({layer.digest}) has unsupported media type "
                    f"{layer.media_type!r}"
                )


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: list[Descriptor]
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.raw)


def load_json(raw: bytes, what: str, limit: int) -> dict[str, Any]:
    """Decode a JSON object, refusing oversize or non-object input with a message naming ``what``."""
    if len(raw) > limit:
        raise InvalidArgument(f"{what}: {len(raw)} bytes exceeds the limit of {limit} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what}: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return obj


def _descriptors(obj: object, where: str) -> list[Descriptor]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise InvalidArgument(f"{where}: not a list")
    return [Descriptor.from_json(item, f"{where}[{i}]") for i, item in enumerate(obj)]


def _annotations(obj: object, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise InvalidArgument(f"{where}: annotations must map strings to strings")
    return dict(obj)


def detect_media_type(obj: Mapping[str, Any]) -> str | None:
    """The media type a document declares, or infer it for OCI documents that omit it."""
    mt = obj.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if obj.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in obj:
        return OCI_INDEX
    if "config" in obj:
        return OCI_MANIFEST
    return None


def parse_manifest(raw: bytes, media_type: str | None = None, *,
                   what: str = "manifest") -> Manifest | Index:
    """Parse a manifest or index; ``media_type`` is what the registry/descriptor said it is.

    Raises InvalidArgument for oversize, non-JSON, schema1, unknown media types, or a document
    whose declared type disagrees with ``media_type``.
    """
    if media_type in SCHEMA1_TYPES:
        raise InvalidArgument(f"{what}: {SCHEMA1_MESSAGE}")
    obj = load_json(raw, what, MAX_MANIFEST_BYTES)
    declared = detect_media_type(obj)
    if declared in SCHEMA1_TYPES or obj.get("schemaVersion") == 1:
        raise InvalidArgument(f"{what}: {SCHEMA1_MESSAGE}")
    if obj.get("schemaVersion") != 2:
        raise InvalidArgument(f"{what}: schemaVersion must be 2, got {obj.get('schemaVersion')!r}")
    mt = media_type or declared
    if mt is None:
        raise InvalidArgument(f"{what}: cannot tell manifest from index: no mediaType")
    if media_type and "mediaType" in obj and obj["mediaType"] != media_type:
        raise InvalidArgument(
            f"{what}: declared media type {obj['mediaType']!r} does not match {media_type!r}"
        )
    annotations = _annotations(obj.get("annotations"), f"{what}.annotations")
    if mt in MANIFEST_TYPES:
        if "config" not in obj:
            raise InvalidArgument(f"{what}: config missing")
        if "manifests" in obj:
            raise InvalidArgument(f"{what}: a manifest may not contain 'manifests'")
        subject_obj = obj.get("subject")
        at = obj.get("artifactType")
        return Manifest(
            media_type=mt,
            config=Descriptor.from_json(obj["config"], f"{what}.config"),
            layers=_descriptors(obj.get("layers"), f"{what}.layers"),
            subject=Descriptor.from_json(subject_obj, f"{what}.subject") if subject_obj else None,
            annotations=annotations,
            raw=raw,
            artifact_type=at if isinstance(at, str) else None,
        )
    if mt in INDEX_TYPES:
        if "config" in obj or "layers" in obj:
            raise InvalidArgument(f"{what}: an index may not contain 'config' or 'layers'")
        if "manifests" not in obj:
            raise InvalidArgument(f"{what}: manifests missing")
        return Index(mt, _descriptors(obj["manifests"], f"{what}.manifests"), annotations, raw)
    raise InvalidArgument(f"{what}: unsupported media type {mt!r}")


def select_platform(index: Index, platform: Platform | None = None) -> Descriptor:
    """The best manifest of ``index`` for ``platform`` (default linux/amd64).

    Exact matches win over compatible ones (arm/v7 accepts v6 images); entries without a
    platform, or whose media type is not a manifest or index, are skipped. NotFound lists what
    the index offers.
    """
    want = platform or Platform.default()
    entries: list[tuple[Platform, Descriptor]] = []
    for desc in index.manifests:
        if desc.media_type not in MANIFEST_TYPES | INDEX_TYPES:
            continue
        p = Platform.from_json(desc.platform)
        if p is not None:
            entries.append((p, desc))
    for cand in want.candidates():
        for p, desc in entries:
            if cand.matches(p):
                return desc
    offered = sorted({str(p.normalized()) for p, _ in entries})
    raise NotFound(
        f"no matching manifest for {want} in the manifest list entries "
        f"(offered: {', '.join(offered) or 'none'})"
    )


# --- image config ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    created: str | None
    created_by: str
    comment: str
    author: str
    empty_layer: bool


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config (OCI / Docker) the engine uses; ``raw_json`` keeps the rest."""

    architecture: str
    os: str
    variant: str | None
    created: str | None
    author: str
    config: Mapping[str, Any]
    diff_ids: list[Digest]
    history: list[HistoryEntry]
    raw_json: Mapping[str, Any]
    raw: bytes

    @property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.raw)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def parse_config(raw: bytes, what: str = "image config") -> ImageConfig:
    obj = load_json(raw, what, MAX_CONFIG_BYTES)
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidArgument(f"{what}: rootfs missing or not an object")
    if rootfs.get("type") != "layers":
        raise InvalidArgument(f"{what}: rootfs.type must be 'layers', got {rootfs.get('type')!r}")
    ids = rootfs.get("diff_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidArgument(f"{what}: rootfs.diff_ids must be a list of digests")
    diff_ids = [Digest.parse(i) for i in ids]
    cfg = obj.get("config")
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise InvalidArgument(f"{what}: config is not an object")
    hist_raw = obj.get("history")
    if hist_raw is None:
        hist_raw = []
    if not isinstance(hist_raw, list):
        raise InvalidArgument(f"{what}: history is not a list")
    history = []
    for i, h in enumerate(hist_raw):
        if not isinstance(h, dict):
            raise InvalidArgument(f"{what}: history[{i}] is not an object")
        history.append(HistoryEntry(
            created=_str_or_none(h.get("created")),
            created_by=_str_or_none(h.get("created_by")) or "",
            comment=_str_or_none(h.get("comment")) or "",
            author=_str_or_none(h.get("author")) or "",
            empty_layer=bool(h.get("empty_layer", False)),
        ))
    arch = obj.get("architecture")
    os_ = obj.get("os")
    if not isinstance(arch, str) or not isinstance(os_, str):
        raise InvalidArgument(f"{what}: architecture and os are required strings")
    return ImageConfig(
        architecture=arch,
        os=os_,
        variant=_str_or_none(obj.get("variant")),
        created=_str_or_none(obj.get("created")),
        author=_str_or_none(obj.get("author")) or "",
        config=cfg,
        diff_ids=diff_ids,
        history=history,
        raw_json=obj,
        raw=raw,
    )


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


def chain_ids(diff_ids: Sequence[Digest | str]) -> list[str]:
    """The chain ID of each layer stack: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)).

    Strings (``sha256:<hex>``) because they are used as snapshot keys.
    """
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(str(d))
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def manifest_json(config: Descriptor, layers: Sequence[Descriptor],
                  media_type: str = OCI_MANIFEST,
                  annotations: Mapping[str, str] | None = None) -> bytes:
    """Serialise an image manifest (canonical-ish: sorted keys are not required, stable order)."""
    obj: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type,
                              "config": config.to_json(),
                              "layers": [layer.to_json() for layer in layers]}
    if annotations:
        obj["annotations"] = dict(annotations)
    return json.dumps(obj, separators=(",", ":")).encode()


def index_json(manifests: Sequence[Descriptor], media_type: str = OCI_INDEX,
               annotations: Mapping[str, str] | None = None) -> bytes:
    obj: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type,
                              "manifests": [m.to_json() for m in manifests]}
    if annotations:
        obj["annotations"] = dict(annotations)
    return json.dumps(obj, separators=(",", ":")).encode()


def children(desc: Descriptor, raw: bytes) -> list[Descriptor]:
    """What a manifest or index blob refers to (config, layers, subject, manifests).

    Anything that is not a manifest or an index has no children. Used by garbage collection and
    by save, which both walk the graph from an image's target.
    """
    if desc.media_type not in MANIFEST_TYPES | INDEX_TYPES:
        return []
    doc = parse_manifest(raw, desc.media_type, what=f"manifest {desc.digest}")
    if isinstance(doc, Index):
        return list(doc.manifests)
    out = [doc.config, *doc.layers]
    if doc.subject is not None:
        out.append(doc.subject)
    return out
