"""The builder's filesystem side in skiffd: snapshots, mounts, the runtime, layers, images.

Each filesystem step prepares an ACTIVE snapshot on the parent state's top chain ID (unpacking
the parent's layers first if their snapshots are gone), mounts it, does its work, unmounts,
writes the change as a layer into the content store (the same diff writer ``docker commit``
uses) and commits the snapshot under the new chain ID, so the next step starts from it
without unpacking anything. A step that changed nothing adds no layer. Whatever happens, the
mount point, the bundle and an uncommitted snapshot are gone when a step returns.

Layer blobs are protected from garbage collection by a lease of the build (until the cache
takes them over); the lease goes when the workspace is closed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence

from skiff.core.content import Descriptor, Digest
from skiff.core.images import DOCKER_LAYER, DOCKER_MANIFEST, chain_ids
from skiff.core.progress import Message
from skiff.core.reference import Reference, parse_reference
from skiff.core.snapshots import Kind, Snapshotter, WhiteoutForm
from skiff.daemon.builder.copyin import copy_into, mkdir_all
from skiff.daemon.builder.runstep import RunStep, RuntimeCommand, remove_bundle, run_step
from skiff.daemon.layerstore import store_diff
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError, os_error
from skiff.plugins.snapshots.mount import mount_all, unmount_all
from skiff.services.builder.build import (
    OCI_MANIFEST,
    CopyPlan,
    LayerResult,
    Output,
    RunResult,
    State,
    scratch_state,
)
from skiff.services.export import read_only
from skiff.services.images import ImageService
from skiff.services.unpack import DIFF_ID_LABEL, Unpacker

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
STEP_PREFIX = "build-"
"""Snapshot keys of build steps in progress (a crashed daemon's leftovers can be found)."""
_LEASE_TTL = 3600.0

Pull = Callable[[Reference, Callable[[Message], None]], None]


class DaemonWorkspace:
    def __init__(self, *, images: ImageService, snapshotter: Snapshotter, unpack: Unpacker,
                 runtime: RuntimeCommand, work_dir: str, pull: Pull | None = None) -> None:
        self.images = images
        self.snapshotter = snapshotter
        self.unpack = unpack
        self.runtime = runtime
        self.work_dir = work_dir  # bundles and mount points (under the exec root)
        self.pull = pull
        self._lease: str | None = None

    def close(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(NotFound):
                self.images.metadata.delete_lease(self._lease)
            self._lease = None

    # --- images -------------------------------------------------------------------------

    def scratch(self) -> State:
        return scratch_state(self.images.platform.architecture, self.images.platform.os)

    def base(self, name: str, *, pull: bool, out: Output) -> State:
        ref = parse_reference(name)
        img = None
        if not pull:
            with contextlib.suppress(NotFound):
                img = self.images.get(name)
        if img is None:
            if self.pull is None:
                raise NotFound(f"pull access denied for {ref.familiar_name()}: pulling is "
                               "not available to this builder")

            def progress(m: Message) -> None:
                status = m.get("status") if isinstance(m, dict) else None
                if status and not m.get("id"):
                    out(f"{status}\n")

            self.pull(ref, progress)
            img = self.images.get(str(ref))
        media_type = img.manifest_desc.media_type
        if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            media_type = OCI_MANIFEST
        return State.parse(img.config.raw.decode("utf-8"), img.manifest.layers, media_type)

    def store(self, state: State, names: Sequence[Reference]) -> str:
        img = self.images.store_image(state.doc, state.layers, names, media_type=state.media_type)
        if str(img.id) != state.id:
            raise InvalidArgument(f"store built image: its ID {img.id} is not the build's "
                                  f"{state.id}")
        return str(img.id)

    # --- snapshots ------------------------------------------------------------------------

    def _top(self, state: State) -> str | None:
        """The committed snapshot of ``state``'s layers (unpacked now if it is gone)."""
        if not state.layers:
            return None
        return self.unpack(state.layers, [Digest.parse(d) for d in state.diff_ids])

    def _lease_id(self) -> str:
        if self._lease is None:
            self._lease = self.images.metadata.create_lease(
                ttl=_LEASE_TTL, labels={"op": "build"}).id
        return self._lease

    @contextlib.contextmanager
    def _mounted(self, parent: State, where: str | None = None) -> Iterator[tuple[str, str]]:
        """(snapshot key, mounted root) of a new ACTIVE snapshot on ``parent``. The caller
        commits or leaves it; on any error it is removed."""
        key = f"{STEP_PREFIX}{uuid.uuid4().hex}"
        mounts = self.snapshotter.prepare(key, self._top(parent), labels={"skiff.build": "1"})
        made_dir = where is None
        try:
            if where is None:
                os.makedirs(self.work_dir, mode=0o700, exist_ok=True)
                where = tempfile.mkdtemp(prefix="mnt-", dir=self.work_dir)
            else:
                os.makedirs(where, mode=0o700, exist_ok=True)
        except OSError as exc:
            self._drop(key)
            raise os_error("create build mount point in", self.work_dir, exc) from exc
        try:
            mount_all(mounts, where)
            try:
                yield key, where
            finally:
                unmount_all(where, detach=True)
        except BaseException:
            self._drop(key)
            raise
        finally:
            if made_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(where)

    def _drop(self, key: str) -> None:
        with contextlib.suppress(SkiffError):
            self.snapshotter.remove(key)

    def _commit(self, key: str, parent: State) -> LayerResult | None:
        """The ACTIVE ``key``'s changes as a layer (None: nothing changed; ``key`` removed)."""
        try:
            dirs = self.snapshotter.layer_dirs(key)
            if dirs.whiteouts is WhiteoutForm.OVERLAY and not os.listdir(dirs.upper):
                self._drop(key)
                return None
            lease = self._lease_id()
            layer = store_diff(self.images, dirs, lease, "build")
            if self._empty(layer.diff_id):
                self._drop(key)
                return None
            chain = chain_ids([*parent.diff_ids, str(layer.diff_id)])[-1]
            try:
                self.snapshotter.commit(chain, key, labels={DIFF_ID_LABEL: str(layer.diff_id)})
            except Conflict:
                self._drop(key)  # the same layer on the same parent exists already
            kind = DOCKER_LAYER if parent.media_type == DOCKER_MANIFEST else OCI_LAYER
            return LayerResult(Descriptor(kind, layer.diff_id, layer.size), str(layer.diff_id))
        except BaseException:
            with contextlib.suppress(SkiffError):
                if self.snapshotter.stat(key).kind is Kind.ACTIVE:
                    self._drop(key)
            raise

    def _empty(self, digest: Digest) -> bool:
        with self.images.content.open(digest) as f:
            head = f.read(1024)
        return not head.strip(b"\0")

    # --- steps ----------------------------------------------------------------------------

    def run(self, parent: State, argv: Sequence[str], *, container_id: str, env: Sequence[str],
            user: str, workdir: str, network: str, out: Output) -> RunResult:
        bundle = os.path.join(self.work_dir, container_id[:12])
        step = RunStep(container_id, list(argv), list(env), user, workdir, network)
        try:
            with self._mounted(parent, os.path.join(bundle, "rootfs")) as (key, root):
                mkdir_all(root, workdir)  # WORKDIR made it, unless the base image moved it
                code = run_step(step, bundle, self.runtime, out)
        finally:
            remove_bundle(bundle)
        if code != 0:
            self._drop(key)
            return RunResult(code, None)
        layer = self._commit(key, parent)
        if layer is None:
            return RunResult(0, None)
        return RunResult(0, layer.layer, layer.diff_id)

    def copy(self, parent: State, plan: CopyPlan, *, workdir: str) -> LayerResult | None:
        with self._mounted(parent) as (key, root):
            copy_into(root, plan, tmpdir=self.work_dir)
        return self._commit(key, parent)

    def mkdir(self, parent: State, path: str) -> LayerResult | None:
        with self._mounted(parent) as (key, root):
            made = mkdir_all(root, path)
        if not made:
            self._drop(key)
            return None
        return self._commit(key, parent)

    @contextlib.contextmanager
    def stage_root(self, state: State) -> Iterator[str]:
        try:
            os.makedirs(self.work_dir, mode=0o700, exist_ok=True)
            where = tempfile.mkdtemp(prefix="from-", dir=self.work_dir)
        except OSError as exc:
            raise os_error("create build mount point in", self.work_dir, exc) from exc
        try:
            top = self._top(state)
            if top is None:
                yield where  # scratch: an empty tree
                return
            view = f"{STEP_PREFIX}view-{secrets.token_hex(16)}"
            mounts = self.snapshotter.view(view, top, labels={"skiff.build": "1"})
            try:
                mount_all(read_only(mounts), where)
                try:
                    yield where
                finally:
                    unmount_all(where, detach=True)
            finally:
                self._drop(view)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(where)


def recover(snapshotter: Snapshotter, work_dir: str) -> list[str]:
    """At daemon start: undo what builds of a daemon that died left (no build runs yet).

    Mount points and bundles under ``work_dir`` are unmounted and removed, step snapshots and
    ``COPY --from`` views (keys ``build-...``, never committed) are removed. Returns the keys.
    """
    if os.path.isdir(work_dir):
        for name in os.listdir(work_dir):
            path = os.path.join(work_dir, name)
            for where in (os.path.join(path, "rootfs"), path):
                with contextlib.suppress(SkiffError):
                    unmount_all(where, detach=True)
        shutil.rmtree(work_dir, ignore_errors=True)
    removed = []
    for info in list(snapshotter.walk()):
        if info.key.startswith(STEP_PREFIX) and info.kind is not Kind.COMMITTED:
            with contextlib.suppress(SkiffError):
                snapshotter.remove(info.key)
                removed.append(info.key)
    return removed
