"""The system routers' backend: counts for ``/info``, ``/system/df``, the event bus.

It reads the container store, the image service and the snapshotter; nothing here changes
state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from skiff.core.snapshots import Snapshotter
from skiff.daemon.containers.manager import ContainerManager
from skiff.daemon.containers.record import PAUSED, RUNNING, Container
from skiff.daemon.events import EventBus
from skiff.errors import SkiffError
from skiff.services.images import ImageService


class SystemFacade:
    def __init__(self, manager: ContainerManager, images: ImageService,
                 snapshotter: Snapshotter, events: EventBus, driver: str) -> None:
        self.manager = manager
        self.images = images
        self.snapshotter = snapshotter
        self.events = events
        self.driver = driver  # the storage driver's name as /info shows it
        # /system/df's Volumes (with UsageData); app.py plugs the volume side in
        self.volume_usage: Callable[[], list[dict[str, Any]]] = list

    def container_counts(self) -> tuple[int, int, int, int]:
        """(all, running, paused, stopped): a paused container is not counted as running."""
        every = self.manager.store.all()
        paused = sum(c.state == PAUSED for c in every)
        running = sum(c.status == RUNNING for c in every) - paused
        return len(every), running, paused, len(every) - running - paused

    def image_count(self) -> int:
        return len(self.images.images())

    def disk_usage(self) -> dict[str, Any]:
        """``GET /system/df``: images (shared layers counted once), containers' writable
        layers, volumes with their usage, and the build cache (none yet)."""
        usage = self.images.disk_usage()
        sizes = {entry["Id"]: int(entry["Size"]) for entry in usage["Images"]}
        return {"LayersSize": usage["LayersSize"], "Images": usage["Images"],
                "Containers": list(self._containers(self.manager.store.all(), sizes)),
                "Volumes": self.volume_usage(), "BuildCache": []}

    def _containers(self, every: Iterable[Container], image_sizes: dict[str, int]
                    ) -> Iterable[dict[str, Any]]:
        for c in every:
            size_rw = 0
            if c.snapshot_key:
                # a container being created or removed may have no snapshot right now
                with contextlib.suppress(SkiffError, OSError):
                    size_rw = self.snapshotter.usage(c.snapshot_key)[0]
            yield {**c.summary(), "SizeRw": size_rw,
                   "SizeRootFs": size_rw + image_sizes.get(c.image_id, 0)}

    @property
    def event_listeners(self) -> int:
        return self.events.listeners
