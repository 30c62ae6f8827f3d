"""Unpack: an image's layers -> a chain of committed snapshots keyed by chain ID.

For each layer, bottom up: if the snapshot named by its chain ID exists, it is shared (another
image or an earlier pull made it); otherwise prepare a scratch snapshot on the parent chain ID,
apply the layer into it, check the diffID the applier computed against the image config, and
commit it under the chain ID. A failed layer removes its scratch snapshot, so nothing half
applied is ever visible under a chain ID. Two unpacks racing for the same chain ID are fine:
the loser's commit meets Conflict, it discards its copy and uses the winner's.

Works over core protocols only; the applier (the tar diff plugin) is passed in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from skiff.core.content import ContentStore, Descriptor, Digest
from skiff.core.diff import Applier, BytesProgress
from skiff.core.images import chain_ids
from skiff.core.progress import LayerProgress
from skiff.core.snapshots import Kind, Snapshotter
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError

DIFF_ID_LABEL = "skiff.snapshot.diff-id"
LAYER_LABEL = "skiff.snapshot.layer-digest"


def _present(snapshotter: Snapshotter, key: str) -> bool:
    try:
        return snapshotter.stat(key).kind is Kind.COMMITTED
    except NotFound:
        return False


def _apply_one(content: ContentStore, snapshotter: Snapshotter, applier: Applier,
               layer: Descriptor, diff_id: Digest, chain_id: str, parent: str | None,
               progress: BytesProgress | None) -> None:
    scratch = f"extract-{uuid.uuid4().hex}-{chain_id}"
    snapshotter.prepare(scratch, parent, labels={LAYER_LABEL: str(layer.digest)})
    try:
        dirs = snapshotter.layer_dirs(scratch)
        with content.open(layer.digest) as blob:
            try:
                applied = applier.apply(dirs, blob, layer.media_type, progress)
            except InvalidArgument as exc:
                raise InvalidArgument(f"layer {layer.digest}: {exc}") from exc
        if applied.diff_id != diff_id:
            raise InvalidArgument(f"layer {layer.digest}: its content has diffID {applied.diff_id}, "
                                  f"but the image config says {diff_id}")
        try:
            snapshotter.commit(chain_id, scratch, labels={DIFF_ID_LABEL: str(diff_id)})
        except Conflict:
            if not _present(snapshotter, chain_id):
                raise
            snapshotter.remove(scratch)  # a concurrent unpack committed the same layer first
    except BaseException:
        try:
            snapshotter.remove(scratch)
        except NotFound:
            pass  # committed, or never created
        except SkiffError:
            pass  # the original error matters more; the store's GC gets the rest
        raise


def unpack(content: ContentStore, snapshotter: Snapshotter, layers: Sequence[Descriptor],
           diff_ids: Sequence[Digest], progress: LayerProgress | None = None, *,
           applier: Applier) -> str:
    """Unpack ``layers`` (bottom first) into snapshots; return the top chain ID.

    ``diff_ids`` are the image config's rootfs.diff_ids, one per layer. Layers whose chain ID
    is already committed are skipped (no progress for them). Raise InvalidArgument naming the
    layer for a hostile, corrupt or mismatching layer; earlier layers stay committed (they
    are valid and shareable), nothing of the failed one remains.
    """
    if len(layers) != len(diff_ids):
        raise InvalidArgument(f"unpack: {len(layers)} layers but {len(diff_ids)} diffIDs in the "
                              "image config")
    if not layers:
        raise InvalidArgument("unpack: an image without layers has no root filesystem")
    chains = chain_ids(diff_ids)
    parent: str | None = None
    for layer, diff_id, chain_id in zip(layers, diff_ids, chains, strict=True):
        if not _present(snapshotter, chain_id):
            report: BytesProgress | None = None
            if progress is not None:
                report = _bind(progress, layer)
            _apply_one(content, snapshotter, applier, layer, diff_id, chain_id, parent, report)
        parent = chain_id
    return chains[-1]


def _bind(progress: LayerProgress, layer: Descriptor) -> BytesProgress:
    def report(consumed: int) -> None:
        progress(layer, consumed)
    return report


class Unpacker:
    """``unpack`` bound to its collaborators: the ``Unpacker`` callable the pull service takes."""

    def __init__(self, content: ContentStore, snapshotter: Snapshotter, applier: Applier) -> None:
        self.content = content
        self.snapshotter = snapshotter
        self.applier = applier

    def __call__(self, layers: Sequence[Descriptor], diff_ids: Sequence[Digest],
                 progress: LayerProgress | None = None) -> str:
        return unpack(self.content, self.snapshotter, layers, diff_ids, progress,
                      applier=self.applier)
