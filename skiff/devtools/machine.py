"""One line describing the machine, printed by every bench/ script next to its numbers."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cpus, {mem:.0f} GiB RAM, kernel {platform.release()}, "
            f"Python {platform.python_version()}")
