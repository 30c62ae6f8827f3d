"""Per-process limits from the spec: rlimits and the OOM score."""

from __future__ import annotations

import resource

from skiff.errors import InvalidArgument, os_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_EXTRA = {"RLIMIT_RTTIME": 15}


def rlimit_number(name: str, where: str = "process.rlimits.type") -> int:
    num = getattr(resource, name, None) if name.startswith("RLIMIT_") else None
    if num is None:
        num = _EXTRA.get(name)
    if not isinstance(num, int):
        raise InvalidArgument(f"{where}: unknown rlimit {name!r}")
    return num


def apply_rlimits(rlimits: list[dict[str, Any]]) -> None:
    for rl in rlimits:
        try:
            resource.setrlimit(rlimit_number(rl["type"]), (rl["soft"], rl["hard"]))
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                raise os_error("setrlimit", f"{rl['type']}={rl['soft']}:{rl['hard']}", exc) from exc
            raise InvalidArgument(f"setrlimit {rl['type']}: {exc}") from exc


def set_oom_score_adj(pid: int, value: int) -> None:
    path = f"/proc/{pid}/oom_score_adj"
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as exc:
        raise os_error("write oom_score_adj", path, exc) from exc
