"""Container state on disk (``<root>/<id>/state.json``) and the status state machine.

Status is derived, never stored: a container whose init is gone is ``stopped`` whatever the
file says, so a runtime that crashed half-way can never report a stale ``running``.

    creating -> created (init waits on exec.fifo) -> running (fifo consumed) -> stopped
                                          running <-> paused (cgroup frozen)
"""

from __future__ import annotations

import json
import os
import time

from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError, SystemFailure
from skiff.runtime.records import as_dict, field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/skiff-runtime"
EXEC_FIFO = "exec.fifo"

CREATING, CREATED, RUNNING, STOPPED, PAUSED = "creating", "created", "running", "stopped", "paused"


@record
class State:
    id: str
    pid: int
    start_time: int
    bundle: str
    rootfs: str
    created: str
    config: dict[str, Any]
    cgroup_path: str
    cgroup_mode: str
    owner: str = "root"
    annotations: dict[str, str] = field(default_factory=dict)
    namespace_paths: dict[str, str] = field(default_factory=dict)
    systemd_cgroup: bool = False

    def oci(self, status: str) -> dict[str, Any]:
        """The state as runc prints it (a superset of the OCI state schema)."""
        out: dict[str, Any] = {
            "ociVersion": self.config.get("ociVersion", "1.2.0"),
            "id": self.id,
            "pid": self.pid if status not in (STOPPED,) else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def now_rfc3339() -> str:
    t = time.time_ns()
    secs, nanos = divmod(t, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


class Store:
    def __init__(self, root: str) -> None:
        self.root = root

    def dir(self, cid: str) -> str:
        return os.path.join(self.root, cid)

    def fifo(self, cid: str) -> str:
        return os.path.join(self.root, cid, EXEC_FIFO)

    def reserve(self, cid: str) -> str:
        """Create the container's directory; Conflict if the id is taken."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        d = self.dir(cid)
        try:
            os.mkdir(d, 0o711)
        except FileExistsError:
            raise Conflict(f"container {cid} already exists") from None
        except OSError as exc:
            raise SystemFailure(f"create state directory {d}: {exc.strerror}") from exc
        return d

    def save(self, st: State) -> None:
        path = os.path.join(self.dir(st.id), "state.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(as_dict(st), f)
        os.replace(tmp, path)

    def load(self, cid: str) -> State:
        if not cid or "/" in cid or cid in (".", ".."):
            raise InvalidArgument(f"invalid container id {cid!r}")
        path = os.path.join(self.dir(cid), "state.json")
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"container {cid} does not exist") from None
        except (OSError, ValueError) as exc:
            raise SystemFailure(f"read state of container {cid} ({path}): {exc}") from exc
        return State(**data)

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.exists(os.path.join(self.root, n, "state.json"))]

    def remove(self, cid: str) -> None:
        # The directory holds only files we wrote (state.json, exec.fifo, temp files): no
        # shutil.rmtree (and its ~3 ms of imports) needed.
        d = self.dir(cid)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(d, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass


def init_alive(st: State) -> bool:
    ps = proc_stat(st.pid)
    return ps is not None and ps[0] not in ("Z", "X") and ps[1] == st.start_time


def status(store: Store, st: State) -> str:
    if not init_alive(st):
        return STOPPED
    if os.path.exists(store.fifo(st.id)):
        return CREATED
    from skiff.runtime.cgroups import new_manager

    try:
        if new_manager(st.cgroup_path, mode=st.cgroup_mode).frozen():
            return PAUSED
    except (SkiffError, OSError):  # a vanished cgroup is not frozen; the pid check decides
        pass
    return RUNNING
