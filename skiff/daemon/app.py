"""The composition root: every store, service and router skiffd uses, built explicitly."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from aiohttp import web

from skiff.core.reference import Reference
from skiff.core.snapshots import Snapshotter
from skiff.daemon.config import DaemonConfig
from skiff.daemon.containers.manager import ContainerManager
from skiff.daemon.containers.record import RUNNING
from skiff.daemon.containers.runner import Paths, Runner
from skiff.daemon.containers.store import ContainerStore
from skiff.daemon.events import EventBus
from skiff.daemon.http import errors_middleware
from skiff.daemon.routers.containers import ContainersRouter
from skiff.daemon.routers.images import ImagesRouter
from skiff.daemon.routers.system import SystemRouter
from skiff.errors import os_error
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.plugins.snapshots.overlay import OverlaySnapshotter, overlay_supported
from skiff.services.images import ImageService
from skiff.services.interchange import Interchange
from skiff.services.unpack import Unpacker


class ImagesFacade:
    """The images router's backend: ImageService for queries, Interchange for load/import."""

    def __init__(self, images: ImageService, interchange: Interchange) -> None:
        self.images = images
        self.interchange = interchange

    def list_images(self, *, dangling: bool | None = None, reference: Sequence[str] = (),
                    label: Sequence[str] = ()) -> list[dict[str, Any]]:
        return self.images.list_images(dangling=dangling, reference=reference, label=label)

    def inspect(self, name: str) -> dict[str, Any]:
        return self.images.inspect(name)

    def load(self, archive: IO[bytes]) -> list[str]:
        # a spooled temp file is a binary file in all but name (typeshed calls it IO[bytes])
        return self.interchange.load(cast(BinaryIO, archive)).messages

    def import_rootfs(self, stream: IO[bytes], names: list[Reference], changes: list[str],
                      message: str) -> str:
        img = self.interchange.import_rootfs(cast(BinaryIO, stream), names=names,
                                             changes=changes, message=message)
        return str(img.id)


class SystemFacade:
    def __init__(self, manager: ContainerManager, images: ImageService) -> None:
        self.manager = manager
        self.images = images

    def container_counts(self) -> tuple[int, int, int]:
        every = self.manager.store.all()
        running = sum(c.status == RUNNING for c in every)
        return len(every), running, len(every) - running

    def image_count(self) -> int:
        return len(self.images.images())


@dataclass
class Engine:
    """What the daemon built, so shutdown can close it in order."""

    metadata: SqliteMetadata
    store: ContainerStore
    snapshotter: Snapshotter
    manager: ContainerManager
    images: ImagesFacade
    system: SystemFacade
    daemon_id: str
    events: EventBus

    def close(self) -> None:
        self.store.close()
        self.metadata.close()
        close = getattr(self.snapshotter, "close", None)
        if close is not None:
            close()


def _dirs(config: DaemonConfig) -> None:
    for path, mode in ((config.data_root, 0o711), (config.exec_root, 0o711),
                       (os.path.join(config.data_root, "tmp"), 0o700),
                       (os.path.join(config.data_root, "containers"), 0o710)):
        try:
            os.makedirs(path, mode=mode, exist_ok=True)
        except OSError as exc:
            raise os_error("create directory", path, exc) from exc


def _daemon_id(config: DaemonConfig) -> str:
    path = os.path.join(config.data_root, "engine-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        ident = str(uuid.uuid4())
        with open(path, "w") as f:
            f.write(ident)
        return ident


def build_engine(config: DaemonConfig) -> Engine:
    _dirs(config)
    root = config.data_root
    content = LocalContentStore(os.path.join(root, "content"))
    metadata = SqliteMetadata(os.path.join(root, "metadata.db"))
    snapshotter: Snapshotter
    if overlay_supported():
        snapshotter = OverlaySnapshotter(os.path.join(root, "snapshots", "overlay"))
        driver = "overlayfs"
    else:
        snapshotter = CopySnapshotter(os.path.join(root, "snapshots", "copy"))
        driver = "copy"
    store = ContainerStore(os.path.join(root, "containers.db"))

    def in_use(image_id: str) -> list[tuple[str, bool]]:
        return [(c.id, c.status == RUNNING) for c in store.all() if c.image_id == image_id]

    images = ImageService(content, metadata, snapshotter, in_use=in_use, graph_driver=driver)
    unpacker = Unpacker(content, snapshotter, TarDiffer())
    runner = Runner(Paths(root, config.exec_root), snapshotter, config.runtime)
    events = EventBus()
    manager = ContainerManager(store, runner, images, snapshotter, unpacker, events)
    interchange = Interchange(images, metadata, tmpdir=os.path.join(root, "tmp"),
                              unpack=unpacker)
    return Engine(metadata, store, snapshotter, manager, ImagesFacade(images, interchange),
                  SystemFacade(manager, images), _daemon_id(config), events)


def build_app(config: DaemonConfig, engine: Engine) -> web.Application:
    """The aiohttp application: middleware, routers, and the restore/shutdown hooks."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=1024 ** 4)
    SystemRouter(engine.system, config, engine.daemon_id).register(app.router)
    ImagesRouter(engine.images, os.path.join(config.data_root, "tmp")).register(app.router)
    ContainersRouter(engine.manager).register(app.router)

    async def restore(_app: web.Application) -> None:
        engine.events.bind(asyncio.get_running_loop())
        await engine.manager.restore()

    async def shutdown(_app: web.Application) -> None:
        # containers keep running under their shims (live restore): only our side stops
        await engine.manager.shutdown()
        engine.events.close()

    app.on_startup.append(restore)
    app.on_shutdown.append(shutdown)
    return app
