"""How skiffd builds its build service out of the engine's own objects (for app.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

from skiff.core.progress import Message
from skiff.core.reference import Reference
from skiff.core.snapshots import Snapshotter
from skiff.daemon.builder.cache import SqliteBuildCache
from skiff.daemon.builder.runstep import RuntimeCommand
from skiff.daemon.builder.service import BuildService
from skiff.daemon.builder.workspace import recover
from skiff.daemon.containers.runner import Runner
from skiff.daemon.images_backend import ImagesFacade


def build_service(data_root: str, exec_root: str, images: ImagesFacade,
                  snapshotter: Snapshotter, runner: Runner) -> BuildService:
    """RUN steps use the daemon's default runtime, with its own state root and arguments."""
    name = runner.default
    spec = runner.runtimes[name]
    runtime = RuntimeCommand(spec.path, tuple(spec.args), runner.paths.runtime_state(name))
    if images.unpack is None:
        raise ValueError("the build service needs the images facade's unpacker")

    def pull(ref: Reference, progress: Callable[[Message], None]) -> None:
        images.pull(ref, progress=progress)

    work_dir = os.path.join(exec_root, "build")
    recover(snapshotter, work_dir)  # a daemon that died mid-build left these
    service = images.images
    cache = SqliteBuildCache(os.path.join(data_root, "builder"), service.content,
                             service.metadata)
    return BuildService(images=service, snapshotter=snapshotter, unpack=images.unpack,
                        runtime=runtime, work_dir=work_dir,
                        tmp_dir=os.path.join(data_root, "tmp"), cache=cache, pull=pull)
