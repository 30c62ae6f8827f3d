"""The parent side of the staged setup: create, start, exec, and the wait loop of run/exec.

The parent owns everything that must be undone if setup fails (state dir, cgroup, the child
processes): it undoes it all before re-raising, so a failed `create` leaves nothing behind.
"""

from __future__ import annotations

import os
import select
import signal

from skiff.errors import Conflict, InvalidArgument, SystemFailure, os_error
from skiff.runtime import config as cfg
from skiff.runtime import namespaces
from skiff.runtime import syscalls as sc
from skiff.runtime.cgroups import (
    cgroup_path_for,
    detect_mode,
    new_manager,
    parse_resources,
)
from skiff.runtime.process.channel import Channel
from skiff.runtime.process.init import O_PATH, Launch, preload, stage1, stage2
from skiff.runtime.records import record
from skiff.runtime.state import (
    CREATED,
    CREATING,
    PAUSED,
    RUNNING,
    STOPPED,
    State,
    Store,
    init_alive,
    now_rfc3339,
    proc_stat,
    status,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

    from skiff.runtime.cgroups import CgroupManager
    from skiff.runtime.cgroups.join import CgroupJoin


@record
class CreateOptions:
    pid_file: str | None = None
    console_socket: str | None = None
    console: socket.socket | None = None  # an already connected console (run without one)
    no_pivot: bool = False
    systemd_cgroup: bool = False
    preserve_fds: int = 0
    spec: dict[str, Any] | None = None  # already loaded and validated by the caller


def _write_pid_file(path: str | None, pid: int) -> None:
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error("write pid file", path, exc) from exc


def _write_id_maps(pid: int, linux: dict[str, Any]) -> None:
    for kind in ("uid", "gid"):
        maps = linux.get(f"{kind}Mappings") or []
        text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
        path = f"/proc/{pid}/{kind}_map"
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise os_error(f"write {kind} map", path, exc) from exc


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _spawn(launch: Launch, cg: CgroupManager, linux: dict[str, Any],
           oom_score_adj: int | None) -> tuple[int, Channel]:
    """Fork stage 1, walk it through namespace setup, see stage 2 into the cgroup.

    Stage 2 is made in the cgroup, or moves itself in (cgroups.join): moving it from here
    by cgroup.procs would wait for an RCU grace period (6-16 ms here) at every start. That
    slow way remains the fallback, done while stage 2 already sets up its root filesystem;
    it waits for our "cgroup" message before anything that needs the cgroup.

    Returns (host pid of the container process, channel to it). On error the children are gone.
    """
    preload(launch)
    try:
        launch.cgroup_join = cg.open_join()
    except OSError:
        launch.cgroup_join = None  # a cgroupfs without `tasks`, say: cgroup.procs it is
    if _can_clone_directly(launch):
        spawned = _clone_stage2(launch, cg, oom_score_adj)
        if spawned is not None:
            return spawned
    parent_ch, child_ch = Channel.pair()
    try:
        pid1 = os.fork()
        if pid1 == 0:
            parent_ch.close()
            stage1(launch, child_ch)
    finally:
        if launch.cgroup_join is not None:
            launch.cgroup_join.close()  # the children have theirs
    child_ch.close()
    init_pid = 0
    try:
        if oom_score_adj is not None:
            from skiff.runtime.process.limits import set_oom_score_adj

            set_oom_score_adj(pid1, oom_score_adj)
        parent_ch.send("go")
        if launch.ns_flags & sc.CLONE_NEWUSER:
            parent_ch.recv("userns")
            _write_id_maps(pid1, linux)
            parent_ch.send("mapped")
        msg = parent_ch.recv("pid")
        init_pid = int(msg["pid"])
        os.waitpid(pid1, 0)
        _place(cg, launch.cgroup_join, init_pid, bool(msg.get("born_in_cgroup")))
        parent_ch.send("cgroup")
        return init_pid, parent_ch
    except BaseException:
        if init_pid:
            _kill_and_reap(init_pid)
        _kill_and_reap(pid1)
        parent_ch.close()
        raise


def _can_clone_directly(launch: Launch) -> bool:
    """Whether stage 2 can be made by one clone3 in its new namespaces, with no stage 1.

    A user namespace needs its id maps written between unshare and fork, and a pid namespace
    is only entered by children of whoever joins it: those keep stage 1 (as do exec and the
    time namespace, whose clone flag and unshare semantics differ).
    """
    return (not launch.is_exec and not launch.userns
            and not launch.ns_flags & (sc.CLONE_NEWUSER | sc.CLONE_NEWTIME)
            and all(t != "pid" for t, _ in launch.ns_join))


def _clone_stage2(launch: Launch, cg: CgroupManager, oom_score_adj: int | None
                  ) -> tuple[int, Channel] | None:
    """Make stage 2 with clone3 (new namespaces, in the v2 cgroup); None if clone3 refuses."""
    join = launch.cgroup_join
    launch.direct = True
    parent_ch, child_ch = Channel.pair()
    try:
        pid = sc.clone_process(launch.ns_flags, join.clone_fd if join is not None else None)
    except OSError:
        launch.direct = False
        parent_ch.close()
        child_ch.close()
        return None  # an old kernel or a seccomp'd clone3: stage 1 does it the long way
    if pid == 0:
        parent_ch.close()
        stage2(launch, child_ch)
    if join is not None:
        join.close()  # the child has its own
    child_ch.close()
    try:
        if oom_score_adj is not None:
            from skiff.runtime.process.limits import set_oom_score_adj

            set_oom_score_adj(pid, oom_score_adj)
        _place(cg, join, pid, born_in_cgroup=True)
        parent_ch.send("cgroup")
        return pid, parent_ch
    except BaseException:
        _kill_and_reap(pid)
        parent_ch.close()
        raise


def _place(cg: CgroupManager, join: CgroupJoin | None, pid: int, born_in_cgroup: bool
           ) -> None:
    """The slow way, for what stage 2 could not do itself: with no join handles, every
    hierarchy; else the v2 one, unless clone3 made it there."""
    if join is None:
        cg.apply(pid)
    elif join.clone_dir is not None and not born_in_cgroup:
        from skiff.runtime.cgroups import fs

        fs.write(join.clone_dir, "cgroup.procs", str(pid))


def create(store: Store, cid: str, bundle: str, opts: CreateOptions) -> State:
    cfg.validate_id(cid)
    bundle = os.path.abspath(bundle)
    spec = opts.spec if opts.spec is not None else cfg.load(bundle)
    proc = spec.get("process")
    if not proc:
        raise InvalidArgument("process: missing (nothing to run)")
    linux: dict[str, Any] = spec.get("linux") or {}
    terminal = bool(proc.get("terminal"))
    if terminal and opts.console is None and not opts.console_socket:
        raise InvalidArgument("process.terminal: true needs --console-socket (or run in the "
                              "foreground with `run`)")
    if not terminal and opts.console_socket:
        raise InvalidArgument("--console-socket given but process.terminal is false")
    cgroup_path = cgroup_path_for(linux.get("cgroupsPath"), cid, opts.systemd_cgroup)
    rootfs = cfg.rootfs_path(spec, bundle)
    ns_flags, ns_join = namespaces.split(linux.get("namespaces") or [])
    userns = bool(ns_flags & sc.CLONE_NEWUSER) or any(t == "user" for t, _ in ns_join)
    resources = effective_resources(linux)
    parse_resources(resources)  # a bad value is refused before anything exists

    store.reserve(cid)
    cg: CgroupManager | None = None
    console = opts.console
    init_pid = 0
    fifo_fd = -1
    try:
        fifo = store.fifo(cid)
        old = os.umask(0)
        try:
            os.mkfifo(fifo, 0o622)
        finally:
            os.umask(old)
        # The init gets the fifo as an fd: in a user namespace it may not be able to reach our
        # state directory by path, and after pivot_root the path is gone anyway.
        fifo_fd = os.open(fifo, O_PATH | os.O_CLOEXEC)
        mode = detect_mode()
        cg = new_manager(cgroup_path, mode=mode)
        for attempt in range(3):
            try:
                cg.create()
                break
            except SystemFailure:
                # A concurrent delete may have removed the shared parent under us; once more.
                if attempt == 2:
                    raise
        cg.set(resources)
        if terminal and console is None:
            from skiff.runtime.terminal import connect_console_socket

            assert opts.console_socket is not None
            console = connect_console_socket(opts.console_socket)
        # The init unshares its cgroup namespace itself, once it is in the cgroup.
        launch = Launch(spec=spec, process=proc, bundle=bundle, rootfs=rootfs,
                        ns_flags=ns_flags & ~sc.CLONE_NEWCGROUP, ns_join=ns_join,
                        cgroupns=bool(ns_flags & sc.CLONE_NEWCGROUP), cgroup_mode=mode,
                        cgroup_path=cgroup_path, fifo_fd=fifo_fd, console=console,
                        no_pivot=opts.no_pivot, preserve_fds=opts.preserve_fds, userns=userns)
        init_pid, ch = _spawn(launch, cg, linux, proc.get("oomScoreAdj"))
        try:
            ps = proc_stat(init_pid)
            st = State(id=cid, pid=init_pid, start_time=ps[1] if ps else 0, bundle=bundle,
                       rootfs=rootfs, created=now_rfc3339(), config=spec,
                       cgroup_path=cgroup_path, cgroup_mode=mode,
                       annotations=spec.get("annotations") or {},
                       namespace_paths=_namespace_paths(init_pid, linux),
                       systemd_cgroup=opts.systemd_cgroup)
            # The order of messages to the init is fixed: hooks-done (if it has hooks), then
            # the seccomp filter (if any); then it reports ready.
            if spec.get("hooks"):
                from skiff.runtime import hooks

                ch.recv("hooks")
                hook_state = st.oci(CREATING)
                hooks.run(spec, "prestart", hook_state)
                hooks.run(spec, "createRuntime", hook_state)
                ch.send("hooks-done", state=st.oci(CREATED))
            _send_seccomp(ch, linux, store.root)
            ch.recv("ready")
        finally:
            ch.close()
        store.save(st)
        _write_pid_file(opts.pid_file, init_pid)
        return st
    except BaseException:
        if init_pid:
            _kill_and_reap(init_pid)
        if cg is not None:
            _destroy_cgroup(cg)
        store.remove(cid)
        raise
    finally:
        if fifo_fd >= 0:
            os.close(fifo_fd)
        if console is not None and console is not opts.console:
            console.close()


# Devices every container may use whatever its spec says, as runc grants them: mknod of any
# node (access is what the rules govern), the standard nodes, ptys, and tun.
DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
      for ma, mi in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 200))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]


def effective_resources(linux: dict[str, Any]) -> dict[str, Any]:
    """The spec's resources plus the default device rules and the spec's own devices."""
    res = dict(linux.get("resources") or {})
    rules = list(res.get("devices") or [{"allow": False, "access": "rwm"}])
    rules += DEFAULT_DEVICE_RULES
    for d in linux.get("devices") or []:
        if d["type"] == "p":  # a fifo is no device: the devices cgroup has no rule for it
            continue
        rules.append({"allow": True, "type": d["type"] if d["type"] != "u" else "c",
                      "major": d.get("major"), "minor": d.get("minor"), "access": "rwm"})
    res["devices"] = [{k: v for k, v in r.items() if v is not None} for r in rules]
    return res


def _send_seccomp(ch: Channel, linux: dict[str, Any], root: str) -> None:
    """Compile the seccomp filter here (or take it from the cache under ``root``), while the
    child sets up, and hand it over as bytes."""
    if not linux.get("seccomp"):
        return
    from skiff.runtime.seccomp_cache import load_or_compile

    filt = load_or_compile(root, linux["seccomp"])
    ch.send("seccomp", program=filt.program.hex(), flags=filt.flags)


def _namespace_paths(pid: int, linux: dict[str, Any]) -> dict[str, str]:
    return {ns["type"]: f"/proc/{pid}/ns/{namespaces.PROC_NAME[ns['type']]}"
            for ns in linux.get("namespaces") or []}


def _destroy_cgroup(cg: CgroupManager) -> None:
    try:
        if cg.exists():
            if cg.pids():
                cg.kill_all(signal.SIGKILL)
            cg.destroy()
    except (OSError, SystemFailure):
        return
    # The parent (``/skiff`` by default) stays, as runc leaves it: made and removed around
    # every container, it cost ~20 cgroup mkdirs and rmdirs per `run --rm` on cgroup v1.
    # Whoever owns it removes it (skiffd, when it stops: see the daemon's shutdown).


def manager(st: State) -> CgroupManager:
    return new_manager(st.cgroup_path, mode=st.cgroup_mode)


def start(store: Store, cid: str, warn: Callable[[str], None], st: State | None = None) -> State:
    st = st if st is not None else store.load(cid)
    s = status(store, st)
    if s != CREATED:
        raise Conflict(f"cannot start container {cid}: it is {s} (only a created container can "
                       "be started)")
    fifo = store.fifo(cid)
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Conflict(f"cannot start container {cid}: it was started already") from None
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                data = os.read(fd, 1)
                if data:
                    break
            if not init_alive(st):
                raise SystemFailure(f"start container {cid}: its init process exited before "
                                    "starting")
    finally:
        os.close(fd)
    try:
        os.unlink(fifo)
    except FileNotFoundError:
        pass
    if (st.config.get("hooks") or {}).get("poststart"):
        from skiff.runtime import hooks

        err = hooks.run_best_effort(st.config, "poststart", st.oci(RUNNING))
        if err:
            warn(err)
    return st


def kill(store: Store, cid: str, sig: int, all_procs: bool) -> None:
    st = store.load(cid)
    s = status(store, st)
    if s == STOPPED:
        raise Conflict(f"cannot kill container {cid}: it is not running")
    cg = manager(st)
    if all_procs:
        cg.kill_all(sig)
    else:
        try:
            os.kill(st.pid, sig)
        except ProcessLookupError:
            raise Conflict(f"cannot kill container {cid}: it is not running") from None
    if s == PAUSED and sig == signal.SIGKILL:
        cg.thaw()  # frozen tasks act on SIGKILL only once thawed


def delete(store: Store, cid: str, force: bool, warn: Callable[[str], None]) -> None:
    import time

    from skiff.errors import NotFound

    try:
        st = store.load(cid)
    except NotFound:
        if force:
            return
        raise
    s = status(store, st)
    if s in (RUNNING, PAUSED) and not force:
        raise Conflict(f"cannot delete container {cid} that is not stopped: {s}")
    cg = manager(st)
    if s != STOPPED:
        try:
            cg.kill_all(signal.SIGKILL)
            if s == PAUSED:
                cg.thaw()
        except SystemFailure:
            os.kill(st.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while init_alive(st) and time.monotonic() < deadline:
            time.sleep(0.005)
    _destroy_cgroup(cg)
    if cg.exists():
        raise SystemFailure(f"delete container {cid}: cgroup {st.cgroup_path} still has "
                            "processes")
    if (st.config.get("hooks") or {}).get("poststop"):
        from skiff.runtime import hooks

        err = hooks.run_best_effort(st.config, "poststop", st.oci(STOPPED))
        if err:
            warn(err)
    store.remove(cid)


def exec_process(store: Store, cid: str, proc: dict[str, Any], *, detach: bool,
                 pid_file: str | None, console_socket: str | None,
                 console: socket.socket | None, preserve_fds: int) -> int:
    """Start ``proc`` inside container ``cid``. Returns its host pid."""
    st = store.load(cid)
    s = status(store, st)
    if s not in (RUNNING, CREATED):
        raise Conflict(f"cannot exec in container {cid}: it is {s}")
    cfg.validate_process(proc, "process")
    linux: dict[str, Any] = st.config.get("linux") or {}
    types = [ns["type"] for ns in linux.get("namespaces") or []]
    terminal = bool(proc.get("terminal"))
    if terminal and console is None:
        if not console_socket:
            raise InvalidArgument("exec -t needs --console-socket when detached")
        from skiff.runtime.terminal import connect_console_socket

        console = connect_console_socket(console_socket)
    spec = dict(st.config)
    launch = Launch(spec=spec, process=proc, bundle=st.bundle, rootfs=st.rootfs, ns_flags=0,
                    ns_join=namespaces.of_process(st.pid, types), cgroup_mode=st.cgroup_mode,
                    cgroup_path=st.cgroup_path, is_exec=True, console=console,
                    preserve_fds=preserve_fds, userns="user" in types)
    cg = manager(st)
    pid, ch = _spawn(launch, cg, linux, proc.get("oomScoreAdj"))
    try:
        _send_seccomp(ch, linux, store.root)
        ch.recv("ready")
    except BaseException:
        _kill_and_reap(pid)
        raise
    finally:
        ch.close()
        if console is not None:
            console.close()
    _write_pid_file(pid_file, pid)
    return pid


def forward_signals(pid: int, skip: tuple[int, ...] = ()) -> None:
    """Relay every catchable signal we get to ``pid`` (the container's process)."""
    def relay(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, *skip):
            continue
        try:
            signal.signal(sig, relay)
        except (OSError, ValueError):
            pass


def wait_exit(pid: int) -> int:
    """Reap children until ``pid`` exits; its status as a shell would report it."""
    while True:
        try:
            wpid, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if wpid == pid:
            if os.WIFSIGNALED(wstatus):
                return 128 + os.WTERMSIG(wstatus)
            return os.WEXITSTATUS(wstatus)
