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


def compile_package() -> None:
    """Write skiff's bytecode now. With PYTHONDONTWRITEBYTECODE set (as in some shells) a
    module edited since its .pyc was written is compiled again by every process that imports
    it: a CLI process would be timed compiling, which no installed copy does."""
    import compileall

    import skiff

    compileall.compile_dir(os.path.dirname(skiff.__file__), quiet=1)
