"""Make a busybox root filesystem and OCI bundle from the host's static busybox.

No image can come from a registry on our test machines, so tests, the demo and the benchmarks
build their containers from Debian's ``busybox-static``: one static binary plus a symlink per
applet, and the few files in /etc that tools expect.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\napp:x:1000:\nnogroup:x:65534:\n"


def find_busybox() -> str:
    for cand in BUSYBOX_CANDIDATES:
        if os.path.exists(cand) and _is_static(cand):
            return cand
    raise FileNotFoundError(
        "no static busybox found (install Debian's busybox-static: apt-get install busybox-static)"
    )


def _is_static(path: str) -> bool:
    # A static ELF has no PT_INTERP: look for the interpreter path in the first bytes.
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"ld-linux" not in head


def make_rootfs(dest: str | os.PathLike[str]) -> Path:
    """Populate ``dest`` with busybox and its applets; returns the path."""
    root = Path(dest)
    bb = find_busybox()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
              "home/app", "var/tmp", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(bb, root / "bin" / "busybox")
    applets = subprocess.run([bb, "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for rel in applets:
        link = root / rel
        if rel == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "etc" / "hostname").write_text("busybox\n")
    return root


def make_bundle(bundle: str | os.PathLike[str], args: list[str] | None = None,
                terminal: bool = False, **overrides: Any) -> Path:
    """An OCI bundle (``config.json`` + ``rootfs/``) running ``args`` in busybox.

    ``overrides`` are merged into the top level of the spec (``hostname=...``) so tests can set
    what they check; deeper changes are made by editing the returned config.
    """
    from skiff.runtime.specgen import default_spec

    path = Path(bundle)
    path.mkdir(parents=True, exist_ok=True)
    make_rootfs(path / "rootfs")
    spec = default_spec(args or ["sh"], terminal=terminal)
    spec.update(overrides)
    (path / "config.json").write_text(json.dumps(spec, indent=2))
    return path


def load_config(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((Path(bundle) / "config.json").read_text())
    return result


def save_config(bundle: str | os.PathLike[str], spec: dict[str, Any]) -> None:
    (Path(bundle) / "config.json").write_text(json.dumps(spec, indent=2))
