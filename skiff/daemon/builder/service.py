"""One ``POST /build`` below HTTP: unpack the context, read the Dockerfile, build, clean up.

The context tar (plain or compressed) is unpacked into a private directory under the data
root's tmp by ``docker cp``'s confined extractor, then the context's .dockerignore is applied
(clients normally apply it themselves; the daemon does it again so that every client builds
with the same files). The Dockerfile is read before that, so an ignored Dockerfile still
builds, as in Docker. The directory goes when the build ends, whatever happened.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, BinaryIO, cast

from skiff.core.reference import Reference
from skiff.core.snapshots import Snapshotter
from skiff.daemon.builder.cache import SqliteBuildCache
from skiff.daemon.builder.fetch import fetch
from skiff.daemon.builder.runstep import RuntimeCommand
from skiff.daemon.builder.workspace import DaemonWorkspace, Pull
from skiff.daemon.containers.archive import ContainerFS
from skiff.errors import InvalidArgument, NotFound, os_error
from skiff.services.builder import load_dockerignore
from skiff.services.builder.build import Build, BuildRequest, Output
from skiff.services.builder.cache import BuildCache, NoCache
from skiff.services.builder.context import BuildContext, load_ignore, prune_excluded
from skiff.services.images import ImageService
from skiff.services.unpack import Unpacker


@dataclass(frozen=True)
class BuildParams:
    """The query of ``POST /build`` as the service needs it."""

    dockerfile: str = "Dockerfile"
    tags: tuple[Reference, ...] = ()
    build_args: Mapping[str, str | None] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = ""
    remove: bool = True


class BuildService:
    def __init__(self, *, images: ImageService, snapshotter: Snapshotter, unpack: Unpacker,
                 runtime: RuntimeCommand, work_dir: str, tmp_dir: str,
                 cache: SqliteBuildCache, pull: Pull | None = None) -> None:
        self.images = images
        self.snapshotter = snapshotter
        self.unpack = unpack
        self.runtime = runtime
        self.work_dir = work_dir
        self.tmp_dir = tmp_dir
        self.cache = cache
        self.pull = pull

    def close(self) -> None:
        self.cache.close()

    def build(self, params: BuildParams, context_tar: IO[bytes], out: Output) -> str:
        """Build from the context tar; the image ID. Blocks (run it in a thread)."""
        try:
            os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
            ctxdir = tempfile.mkdtemp(prefix="build-context-", dir=self.tmp_dir)
        except OSError as exc:
            raise os_error("create build context directory in", self.tmp_dir, exc) from exc
        workspace = DaemonWorkspace(images=self.images, snapshotter=self.snapshotter,
                                    unpack=self.unpack, runtime=self.runtime,
                                    work_dir=self.work_dir, pull=self.pull)
        try:
            _unpack_context(ctxdir, cast(BinaryIO, context_tar))
            context = BuildContext(ctxdir)
            name = params.dockerfile or "Dockerfile"
            try:
                text = context.read_text(name, "Dockerfile")
            except NotFound as exc:  # the request names a file its own body lacks: a 400
                raise InvalidArgument(exc.message) from exc
            matcher = load_dockerignore(load_ignore(context))
            prune_excluded(ctxdir, matcher)
            cache: BuildCache = NoCache(self.cache) if params.no_cache else self.cache
            request = BuildRequest(text, posixpath.basename(name), params.tags,
                                   params.build_args, params.target, params.pull,
                                   params.labels, params.network, params.remove)
            return Build(workspace, cache, context, out, fetch=fetch).run(request)
        finally:
            workspace.close()
            shutil.rmtree(ctxdir, ignore_errors=True)

    def prune(self) -> dict[str, object]:
        return self.cache.prune()


def _unpack_context(ctxdir: str, context_tar: BinaryIO) -> None:
    head = context_tar.read(1)
    if not head:
        return  # an empty body: a build that needs no context (FROM + metadata only)
    context_tar.seek(0)
    fs = ContainerFS(ctxdir, "build context")
    try:
        fs.extract("/", context_tar, no_overwrite_dir_non_dir=False, owner=None)
    except InvalidArgument as exc:
        raise InvalidArgument(f"build context: {exc.message}") from exc
    except NotFound as exc:
        raise InvalidArgument(f"build context: {exc.message}") from exc
    finally:
        fs.close()

