"""A container's changes to its image: as a list (``docker diff``) and as a new image (commit).

Both read the container's snapshot through ``Snapshotter.layer_dirs``: with overlayfs the
upper directory holds exactly the changes (whiteouts are char 0:0 devices), with the copy
snapshotter the whole tree is compared with the parent's. Commit writes the diff as an
uncompressed tar layer with the same writer image builds use, stores it in the content store
under a lease (so GC cannot take it before the image names it), and records an image whose
config is the parent's with the container's config, the ``--change`` lines and one history
entry added. As Docker does, an empty diff adds no layer, only a history entry marked
``empty_layer``.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from skiff.core.changes import apply_changes
from skiff.core.content import Descriptor
from skiff.core.images import DOCKER_LAYER, DOCKER_MANIFEST, OCI_LAYER, OCI_MANIFEST
from skiff.core.reference import Reference
from skiff.core.snapshots import LayerDirs, Snapshotter, WhiteoutForm
from skiff.daemon.containers.record import Container
from skiff.daemon.layerstore import store_diff
from skiff.errors import InvalidArgument, SkiffError, os_error
from skiff.services.images import Image, ImageService

MODIFIED, ADDED, DELETED = 0, 1, 2
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_LEASE_TTL = 3600.0
# container settings that describe one run, not the image (Docker keeps them out as well)
_NOT_IMAGE = ("Image", "HostConfig", "NetworkingConfig")


# --- docker diff ---------------------------------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _in_lowers(lowers: Sequence[str], rel: str) -> bool:
    """Whether the merged lower layers show something at ``rel`` (nearest layer wins)."""
    for lower in lowers:
        st = _lstat(os.path.join(lower, rel))
        if st is not None:
            return not _is_whiteout(st)
        parent = os.path.dirname(rel)
        while parent:  # an opaque directory on the way hides everything lower
            try:
                if os.getxattr(os.path.join(lower, parent), _OPAQUE_XATTR,
                               follow_symlinks=False) == b"y":
                    return False
            except OSError:
                pass
            parent = os.path.dirname(parent)
    return False


def _overlay_changes(upper: str, lowers: Sequence[str], rel: str = "") -> Iterator[tuple[str, int]]:
    for name in sorted(os.listdir(os.path.join(upper, rel) if rel else upper)):
        crel = os.path.join(rel, name)
        st = os.lstat(os.path.join(upper, crel))
        if _is_whiteout(st):
            yield crel, DELETED
            continue
        yield crel, MODIFIED if _in_lowers(lowers, crel) else ADDED
        if stat.S_ISDIR(st.st_mode):
            yield from _overlay_changes(upper, lowers, crel)


def _same(a: os.stat_result, b: os.stat_result, apath: str, bpath: str) -> bool:
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(apath) == os.readlink(bpath)
    if stat.S_ISDIR(a.st_mode):
        return True  # a directory counts as changed through its children, as Docker does
    return (a.st_size, a.st_mtime_ns, a.st_rdev) == (b.st_size, b.st_mtime_ns, b.st_rdev)


def _tree_changes(new: str, old: str | None, rel: str = "") -> Iterator[tuple[str, int]]:
    here_new = os.path.join(new, rel) if rel else new
    here_old = (os.path.join(old, rel) if rel else old) if old is not None else None
    new_names = set(os.listdir(here_new))
    old_names = set(os.listdir(here_old)) if here_old is not None else set()
    for name in sorted(new_names | old_names):
        crel = os.path.join(rel, name)
        if name not in new_names:
            yield crel, DELETED  # only the top of a deleted tree, as Docker lists it
            continue
        npath = os.path.join(new, crel)
        nst = os.lstat(npath)
        ost = None
        if name in old_names and old is not None:
            ost = os.lstat(os.path.join(old, crel))
        sub_old = old if ost is not None and stat.S_ISDIR(ost.st_mode) else None
        if ost is None:
            yield crel, ADDED
        else:
            children = list(_tree_changes(new, sub_old, crel)) if stat.S_ISDIR(
                nst.st_mode) else []
            if children or not _same(nst, ost, npath, os.path.join(old or "", crel)):
                yield crel, MODIFIED
            yield from children
            continue
        if stat.S_ISDIR(nst.st_mode):
            yield from _tree_changes(new, None, crel)


def container_changes(snapshotter: Snapshotter, c: Container) -> list[dict[str, Any]]:
    """``GET /containers/{id}/changes``: ``[{"Path": "/x", "Kind": 0|1|2}]`` sorted by path."""
    dirs = snapshotter.layer_dirs(c.snapshot_key)
    try:
        if dirs.whiteouts is WhiteoutForm.OVERLAY:
            found = list(_overlay_changes(dirs.upper, dirs.lowers))
        else:
            found = list(_tree_changes(dirs.upper, dirs.lower))
    except OSError as exc:
        raise os_error("list changes of container", c.id, exc) from exc
    return [{"Path": "/" + rel, "Kind": kind} for rel, kind in sorted(found)]


# --- commit ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitRequest:
    """What ``POST /commit`` asks for (the query and the optional Config body)."""

    names: tuple[Reference, ...] = ()
    comment: str = ""
    author: str = ""
    changes: tuple[str, ...] = ()
    config: Mapping[str, Any] | None = None


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e9):09d}Z"


def image_config(container: Mapping[str, Any], body: Mapping[str, Any] | None,
                 changes: Sequence[str]) -> dict[str, Any]:
    """The new image's ``config``: the body's fields over the container's, then the changes.

    Docker merges the request's Config into the container's (a field the request leaves
    empty keeps the container's value) before the ``--change`` lines apply.
    """
    merged = {k: v for k, v in container.items() if k not in _NOT_IMAGE}
    for key, value in (body or {}).items():
        if key in _NOT_IMAGE:
            continue
        if value not in (None, "", [], {}):
            merged[key] = value
    return apply_changes(merged, changes)


def _is_empty_tar(f: BinaryIO) -> bool:
    try:
        with tarfile.open(fileobj=f, mode="r|") as tar:
            return tar.next() is None
    except tarfile.TarError as exc:
        raise InvalidArgument(f"commit: the diff written is not a tar: {exc}") from exc


def _write_layer(images: ImageService, dirs: LayerDirs, lease: str) -> tuple[Descriptor, bool]:
    """The container's diff in the content store: (its descriptor, whether it is empty)."""
    layer = store_diff(images, dirs, lease, "commit")
    with images.content.open(layer.diff_id) as f:
        empty = _is_empty_tar(f)
    return Descriptor(OCI_LAYER, layer.diff_id, layer.size), empty


def commit(images: ImageService, snapshotter: Snapshotter, c: Container,
           req: CommitRequest) -> Image:
    """Record the container's changes as a new image on top of its own image (blocking)."""
    config = image_config(c.config, req.config, req.changes)  # bad --change: before any work
    parent = images.get(c.image_id)
    lease = images.metadata.create_lease(ttl=_LEASE_TTL, labels={"op": "commit"}).id
    try:
        layer, empty = _write_layer(images, snapshotter.layer_dirs(c.snapshot_key), lease)
        raw: dict[str, Any] = json.loads(parent.config.raw)
        created = _now()
        cmd = c.config.get("Cmd") or []
        history = list(raw.get("history") or [])
        if not history and parent.config.diff_ids:
            # the parent recorded none: one entry per layer keeps history and layers aligned
            history = [{"created": raw.get("created") or created}
                       for _ in parent.config.diff_ids]
        entry: dict[str, Any] = {"created": created,
                                 "created_by": " ".join(str(x) for x in cmd)}
        if req.author:
            entry["author"] = req.author
        if req.comment:
            entry["comment"] = req.comment
        if empty:
            entry["empty_layer"] = True
        history.append(entry)
        diff_ids = [str(d) for d in parent.config.diff_ids]
        layers = list(parent.manifest.layers)
        media_type = parent.manifest_desc.media_type
        if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            media_type = OCI_MANIFEST
        if not empty:
            diff_ids.append(str(layer.digest))
            kind = DOCKER_LAYER if media_type == DOCKER_MANIFEST else OCI_LAYER
            layers.append(Descriptor(kind, layer.digest, layer.size))
        raw.update({"created": created, "config": config, "container": c.id,
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history})
        raw.pop("container_config", None)
        if req.author:
            raw["author"] = req.author
        else:
            raw.pop("author", None)
        if req.comment:
            raw["comment"] = req.comment
        else:
            raw.pop("comment", None)
        return images.store_image(raw, layers, req.names, media_type=media_type)
    except SkiffError:
        raise
    except OSError as exc:
        raise os_error("commit container", c.id, exc) from exc
    finally:
        images.metadata.delete_lease(lease)
