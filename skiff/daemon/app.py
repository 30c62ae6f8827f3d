"""The composition root: every store, service and router skiffd uses, built explicitly."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

from aiohttp import web

from skiff.core.snapshots import Snapshotter
from skiff.daemon.builder.wiring import build_service
from skiff.daemon.config import DaemonConfig
from skiff.daemon.containers.execs import Execs
from skiff.daemon.containers.manager import ContainerManager
from skiff.daemon.containers.record import RUNNING
from skiff.daemon.containers.runner import Paths, Runner
from skiff.daemon.containers.stats import Metrics
from skiff.daemon.containers.store import ContainerStore
from skiff.daemon.events import EventBus
from skiff.daemon.http import errors_middleware
from skiff.daemon.images_backend import ImagesFacade, registry_config
from skiff.daemon.networks.manager import Containers, NetworkManager
from skiff.daemon.networks.options import from_config as network_options
from skiff.daemon.registry_allow import RegistryAllowList
from skiff.daemon.routers.archive import ArchiveRouter
from skiff.daemon.routers.build import BuildRouter
from skiff.daemon.routers.containers import ContainersRouter
from skiff.daemon.routers.events import EventsRouter
from skiff.daemon.routers.exec import ExecRouter
from skiff.daemon.routers.images import ImagesRouter
from skiff.daemon.routers.networks import NetworksRouter
from skiff.daemon.routers.stats import StatsRouter
from skiff.daemon.routers.system import SystemRouter
from skiff.daemon.routers.volumes import VolumesRouter
from skiff.daemon.system_backend import SystemFacade
from skiff.daemon.volumes.containers import ContainerMounts, build_container_mounts
from skiff.errors import os_error
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.plugins.snapshots.overlay import OverlaySnapshotter, overlay_supported
from skiff.services.images import ImageService
from skiff.services.interchange import Interchange
from skiff.services.unpack import Unpacker


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
    networks: NetworkManager | None = None
    mounts: ContainerMounts | None = None  # volumes (and the container side of them)

    def close(self) -> None:
        self.images.close()
        if self.networks is not None:
            self.networks.close()
        if self.mounts is not None:
            self.mounts.close()
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
    runner = Runner(Paths(root, config.exec_root), snapshotter, config.runtime_table(),
                    config.default_runtime_name)
    events = EventBus()
    mounts = build_container_mounts(os.path.join(root, "volumes"), store, events)
    manager = ContainerManager(store, runner, images, snapshotter, unpacker, events)
    manager.mounts = mounts
    runner.volumes = mounts
    interchange = Interchange(images, metadata, tmpdir=os.path.join(root, "tmp"),
                              unpack=unpacker)
    images_backend = ImagesFacade(
        images, interchange, events, unpack=unpacker,
        registry=registry_config(config.insecure_registries, config.registry_mirrors),
        allow=RegistryAllowList(config.registry_allow))
    networks = NetworkManager(network_options(config), Containers(store.find, store.all),
                              events.publish_threadsafe)
    runner.network = networks
    return Engine(metadata, store, snapshotter, manager, images_backend,
                  SystemFacade(manager, images, snapshotter, events, driver),
                  _daemon_id(config), events, networks, mounts)


def build_app(config: DaemonConfig, engine: Engine) -> web.Application:
    """The aiohttp application: middleware, routers, and the restore/shutdown hooks."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=1024 ** 4)
    SystemRouter(engine.system, config, engine.daemon_id).register(app.router)
    EventsRouter(engine.events).register(app.router)
    ImagesRouter(engine.images, os.path.join(config.data_root, "tmp")).register(app.router)
    builder = build_service(config.data_root, config.exec_root, engine.images,
                            engine.snapshotter, engine.manager.runner)
    BuildRouter(builder, os.path.join(config.data_root, "tmp")).register(app.router)
    ContainersRouter(engine.manager, engine.networks).register(app.router)
    ArchiveRouter(engine.manager).register(app.router)
    execs = Execs(engine.manager)
    engine.manager.exec_lookup = execs.ids_for
    ExecRouter(execs).register(app.router)
    StatsRouter(Metrics(engine.manager)).register(app.router)
    if engine.mounts is not None:
        VolumesRouter(engine.mounts.volumes, engine.events,
                      os.path.join(config.data_root, "tmp")).register(app.router)
        engine.system.volume_usage = engine.mounts.disk_usage
    if engine.networks is not None:
        NetworksRouter(engine.networks).register(app.router)

    async def restore(_app: web.Application) -> None:
        engine.events.bind(asyncio.get_running_loop())
        if engine.networks is not None:  # before containers: their sandboxes are restored
            await asyncio.to_thread(engine.networks.start)
        await engine.manager.restore()

    async def shutdown(_app: web.Application) -> None:
        if not config.live_restore:  # --live-restore=false: a clean stop takes them along
            running = [c.id for c in engine.manager.store.all()
                       if engine.manager.is_running(c.id)]
            # all at once: each may take its whole stop timeout
            await asyncio.gather(*(engine.manager.stop(cid) for cid in running),
                                 return_exceptions=True)
        # else containers keep running under their shims (live restore): only our side stops
        await engine.manager.shutdown()
        await asyncio.to_thread(engine.manager.runner.remove_cgroup_parent)
        if engine.networks is not None:
            await asyncio.to_thread(engine.networks.shutdown)
        engine.events.close()
        builder.close()

    app.on_startup.append(restore)
    app.on_shutdown.append(shutdown)
    return app
