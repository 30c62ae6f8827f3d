"""Compiled seccomp filters kept under the runtime's --root, keyed by the profile.

Every container a daemon starts carries the same profile (Docker's default for a given
capability set), and compiling it costs ~5 ms of each `create`. The key is a digest of the
spec's ``linux.seccomp`` object (canonical JSON), the host architecture and this compiler's
version, so any change to the profile or to the compiler is a miss. Entries are written to a
temp file and renamed (a concurrent reader sees all or nothing); a damaged entry is a miss.
The directory is hidden (``.seccomp``): state listings only count directories with a
state.json.
"""

from __future__ import annotations

import hashlib
import json
import os

from skiff.runtime.seccomp_compile import Filter, compile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# bump when the compiler's output for a given profile changes
COMPILER_VERSION = "1"
_DIR = ".seccomp"


def _key(seccomp: dict[str, Any]) -> str:
    text = json.dumps(seccomp, sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(f"{COMPILER_VERSION}:{os.uname().machine}:".encode())
    h.update(text.encode())
    return h.hexdigest()


def load_or_compile(root: str, seccomp: dict[str, Any]) -> Filter:
    path = os.path.join(root, _DIR, _key(seccomp))
    try:
        with open(path, "rb") as f:
            blob = f.read()
        if len(blob) > 4 and (len(blob) - 4) % 8 == 0:  # flags + whole instructions
            return Filter(blob[4:], int.from_bytes(blob[:4], "little"))
    except OSError:
        pass
    filt = compile(seccomp)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(filt.flags.to_bytes(4, "little") + filt.program)
        os.rename(tmp, path)
    except OSError:
        pass  # a cache that cannot be written is only slower
    return filt
