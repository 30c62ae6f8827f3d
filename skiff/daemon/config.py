"""skiffd's settings: dockerd's flags for the options this daemon implements."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"


def _default_runtime() -> str:
    # skiff-runtime from the same venv as this interpreter, so a venv install just works
    here = os.path.join(os.path.dirname(sys.executable), "skiff-runtime")
    return here if os.access(here, os.X_OK) else "skiff-runtime"


@dataclass(frozen=True)
class DaemonConfig:
    host: str = "unix:///run/skiff/skiff.sock"
    data_root: str = "/var/lib/skiff"
    exec_root: str = "/run/skiff"
    pidfile: str | None = None
    log_level: str = "info"
    default_runtime: str = ""

    @property
    def runtime(self) -> str:
        return self.default_runtime or _default_runtime()

    @property
    def socket_path(self) -> str:
        if not self.host.startswith("unix://"):
            raise ValueError(f"-H {self.host}: only unix:// sockets are supported")
        return self.host[len("unix://"):]
