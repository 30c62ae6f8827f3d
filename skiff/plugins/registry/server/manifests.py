"""Checks on a pushed manifest before it is stored, and what it references (for GC).

A manifest is accepted only if it parses, its media type is one we serve and agrees with the
Content-Type it was sent with, and everything it references is already in the repository with
the declared size: so a tag can never name a manifest whose blobs cannot be pulled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from skiff.core.content import Descriptor, Digest
from skiff.errors import InvalidArgument, NotFound

from .errors import RegistryError
from .storage import Storage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES
MAX_MANIFEST = 4 << 20  # the spec asks registries to accept at least 4 MiB
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream"})


@dataclass(frozen=True)
class Checked:
    media_type: str
    subject: Digest | None
    referrer: dict[str, Any]  # the descriptor a referrers list shows for this manifest


def _invalid(reason: str, **extra: Any) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", {"reason": reason, **extra})


def _descriptor(obj: object, where: str) -> Descriptor:
    try:
        return Descriptor.from_json(obj, where)
    except InvalidArgument as exc:
        raise _invalid(str(exc)) from exc


def parse(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _invalid("not a JSON object")
    return doc


def media_type_of(doc: dict[str, Any], content_type: str | None) -> str:
    declared = doc.get("mediaType")
    sent = (content_type or "").split(";")[0].strip().lower()
    if sent in _GENERIC_TYPES:
        sent = ""
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType is not a string")
    if declared and sent and declared != sent:
        raise _invalid("mediaType does not match Content-Type",
                       mediaType=declared, contentType=sent)
    mt = declared or sent
    if not mt:
        # OCI manifests may omit mediaType; their shape says what they are.
        mt = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if mt not in MANIFEST_TYPES:
        raise _invalid("unsupported manifest media type", mediaType=mt)
    return mt


def check(storage: Storage, name: str, raw: bytes, content_type: str | None,
          digest: Digest) -> Checked:
    if len(raw) > MAX_MANIFEST:
        raise RegistryError("MANIFEST_INVALID", {"reason": "manifest too large",
                                                 "limit": MAX_MANIFEST, "size": len(raw)},
                            status=413)
    doc = parse(raw)
    mt = media_type_of(doc, content_type)
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType is not a string")
    if mt in IMAGE_TYPES:
        config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise _invalid("layers is not a list")
        for i, obj in enumerate(layers):
            layer = _descriptor(obj, f"layers[{i}]")
            if not layer.urls:  # foreign layers live elsewhere by design
                _need_blob(storage, name, layer)
        _need_blob(storage, name, config)
        artifact_type = artifact_type or config.media_type
    else:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise _invalid("manifests is not a list")
        for i, obj in enumerate(children):
            child = _descriptor(obj, f"manifests[{i}]")
            try:
                storage.manifest_media_type(name, child.digest)
            except NotFound as exc:
                raise RegistryError("MANIFEST_BLOB_UNKNOWN",
                                    {"digest": str(child.digest)}) from exc
    subject = None
    if doc.get("subject") is not None:
        subject = _descriptor(doc.get("subject"), "subject").digest
    referrer: dict[str, Any] = {"mediaType": mt, "digest": str(digest), "size": len(raw)}
    if artifact_type:
        referrer["artifactType"] = artifact_type
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        referrer["annotations"] = annotations
    return Checked(mt, subject, referrer)


def _need_blob(storage: Storage, name: str, desc: Descriptor) -> None:
    try:
        size = storage.blob_size(name, desc.digest)
    except NotFound as exc:
        raise RegistryError("MANIFEST_BLOB_UNKNOWN", {"digest": str(desc.digest)}) from exc
    if size != desc.size:
        raise _invalid("descriptor size does not match the blob", digest=str(desc.digest),
                       declared=desc.size, actual=size)
    storage.touch_blob(name, desc.digest)


def references(raw: bytes) -> list[Digest]:
    """Every digest a stored manifest keeps alive (config, layers, child manifests)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return []
    out = []
    if not isinstance(doc, dict):
        return []
    items: list[object] = [doc.get("config")]
    for key in ("layers", "manifests"):
        value = doc.get(key)
        if isinstance(value, list):
            items.extend(value)
    for obj in items:
        if isinstance(obj, dict) and isinstance(obj.get("digest"), str):
            try:
                out.append(Digest.parse(obj["digest"]))
            except InvalidArgument:
                continue
    return out
