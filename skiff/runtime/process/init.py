"""The child side of the staged setup: stage 1 (namespaces) and stage 2 (the container's process).

    runtime (parent) --clone--> stage2 directly, in its new namespaces, for a `create` with no
                               user namespace and no pid namespace to join (the usual case):
                               it joins the other namespaces itself. Otherwise:
    runtime (parent) --fork--> stage1: wait "go", setns into the namespaces to join, unshare
                               the new ones, let the parent write the id maps of a new user
                               namespace, fork stage 2 (into the v2 cgroup where it can, see
                               cgroups.join), report its pid, exit.
    stage1 --fork--> stage2:   joins its v1 cgroups itself, then waits for "cgroup" (the parent
                               has finished placing it). pid 1 of a new pid namespace. For
                               `create`: set up the rootfs, pivot_root, report "ready", block on
                               the exec fifo until `start`, then drop privileges and execve. For
                               `exec`: it already sits in the container's namespaces; prepare
                               the process and execve.

Both stages end in os._exit: an exception must never unwind into the parent's code, which this
forked copy of the interpreter still holds on its stack.
"""

from __future__ import annotations

import errno
import os
import sys

from skiff.errors import InvalidArgument, SkiffError, os_error
from skiff.runtime import namespaces, rootfs
from skiff.runtime import syscalls as sc
from skiff.runtime.process.channel import Channel
from skiff.runtime.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, NoReturn

    from skiff.runtime.cgroups.join import CgroupJoin
    from skiff.runtime.seccomp import Filter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
O_PATH = getattr(os, "O_PATH", 0o10000000)


@record
class Launch:
    """Everything the child stages need, decided by the parent before fork."""

    spec: dict[str, Any]
    process: dict[str, Any]
    bundle: str
    rootfs: str
    ns_flags: int
    ns_join: list[tuple[str, str]]
    cgroup_mode: str
    cgroup_path: str
    is_exec: bool = False
    fifo_fd: int | None = None  # O_PATH fd of exec.fifo, opened by the parent
    console: socket.socket | None = None
    no_pivot: bool = False
    preserve_fds: int = 0
    userns: bool = False
    hook_state: dict[str, Any] | None = None
    cgroupns: bool = False  # create only: unshare the cgroup namespace once in the cgroup
    seccomp_filter: Filter | None = None  # compiled by the parent, sent before "ready"
    in_cgroup: bool = False
    cgroup_join: CgroupJoin | None = None  # None: the parent moves stage 2 (the slow way)
    direct: bool = False  # made by the parent in its new namespaces: stage 2 joins the rest


def preload(launch: Launch) -> None:
    """Import, in the parent, every module the child stages will need.

    After pivot_root (or setns into the container's mount namespace) the host's filesystem,
    and with it skiff's source, is out of reach: a lazy import there would fail.
    """
    from skiff.runtime import capabilities  # noqa: F401

    linux = launch.spec.get("linux") or {}
    if linux.get("seccomp"):
        from skiff.runtime import seccomp  # noqa: F401
    if launch.spec.get("hooks"):
        from skiff.runtime import hooks  # noqa: F401
    if launch.process.get("terminal"):
        from skiff.runtime import terminal  # noqa: F401
    if launch.process.get("rlimits"):
        from skiff.runtime.process import limits  # noqa: F401
    if os.environ.get("SKIFF_RUNTIME_DEBUG"):
        import traceback  # noqa: F401


def stage1(launch: Launch, ch: Channel) -> NoReturn:
    code = 1
    try:
        ch.recv("go")
        namespaces.join(launch.ns_join)
        if launch.ns_flags:
            try:
                sc.unshare(launch.ns_flags)
            except OSError as exc:
                raise os_error("unshare namespaces", hex(launch.ns_flags), exc) from exc
        if launch.ns_flags & sc.CLONE_NEWUSER:
            ch.send("userns")
            ch.recv("mapped")
        if launch.userns:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        pid, born_in = _fork_stage2(launch)
        if pid == 0:
            stage2(launch, ch)
        ch.send("pid", pid=pid, born_in_cgroup=born_in)
        code = 0
    except BaseException as exc:
        _report(ch, exc)
    finally:
        os._exit(code)


def _fork_stage2(launch: Launch) -> tuple[int, bool]:
    """Fork stage 2, born in the v2 cgroup if clone3 allows; (pid, whether it was)."""
    join = launch.cgroup_join
    # In a user namespace our credentials may not write the cgroup: that clone would fail
    # after taking the new pid namespace's pid 1, which leaves the namespace unusable.
    if join is not None and join.clone_fd is not None and not launch.userns:
        try:
            return sc.clone_process(0, join.clone_fd), True
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.E2BIG):
                # refused after the fork began: a new pid namespace would take no process now
                raise os_error("fork the container's process into cgroup", join.clone_dir or "",
                               exc) from exc
            # an old kernel: the parent moves it
    return os.fork(), False


def stage2(launch: Launch, ch: Channel) -> NoReturn:
    code = 1
    try:
        try:
            if launch.cgroup_join is not None:  # first: everything below counts against it
                launch.cgroup_join.enter_self()
            if launch.direct:  # no stage 1 joined them for us
                namespaces.join(launch.ns_join)
            os.setsid()
            if launch.is_exec:
                path, env = _prepare_exec(launch, ch)
            else:
                path, env = _prepare_init(launch, ch)
            if (launch.spec.get("linux") or {}).get("seccomp"):
                from skiff.runtime.seccomp import Filter

                msg = ch.recv("seccomp")
                launch.seccomp_filter = Filter(bytes.fromhex(msg["program"]), msg["flags"])
            ch.send("ready")
            ch.close()
        except BaseException as exc:
            _report(ch, exc)
            os._exit(1)
        try:
            _before_start(launch)
            if launch.fifo_fd is not None:
                _wait_for_start(launch)
            _finalize_and_exec(launch, path, env)
        except BaseException as exc:
            # Past "ready" nobody listens on the channel: the container's stderr is the place.
            code = 127 if isinstance(exc, FileNotFoundError) else 1
            _print_error(exc)
    finally:
        os._exit(code)


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SkiffError) else f"{type(exc).__name__}: {exc}"


def _print_error(exc: BaseException) -> None:
    try:
        if os.environ.get("SKIFF_RUNTIME_DEBUG"):
            import traceback

            traceback.print_exception(exc)
        os.write(2, f"skiff-runtime: {_message(exc)}\n".encode())
    except BaseException:
        pass


def _report(ch: Channel, exc: BaseException) -> None:
    try:
        ch.send("error", message=_message(exc))
    except BaseException:
        _print_error(exc)
        return
    if os.environ.get("SKIFF_RUNTIME_DEBUG"):
        _print_error(exc)


def _prepare_init(launch: Launch, ch: Channel) -> tuple[str, list[str]]:
    spec = launch.spec
    linux: dict[str, Any] = spec.get("linux") or {}
    mounts: list[dict[str, Any]] = spec.get("mounts") or []

    rootfs.make_private_root(linux.get("rootfsPropagation"))
    rootfs.bind_root(launch.rootfs)
    rfs = rootfs.Rootfs(launch.rootfs, userns=launch.userns)
    try:
        rootfs.mount_all(rfs, mounts, launch.bundle, launch.cgroup_mode, launch.cgroup_path,
                         launch.cgroupns, before_cgroup=lambda: _enter_cgroup(launch, ch))
        _enter_cgroup(launch, ch)
        if spec.get("hooks"):
            ch.send("hooks")
            launch.hook_state = ch.recv("hooks-done")["state"]
            from skiff.runtime import hooks

            hooks.run(spec, "createContainer", launch.hook_state)
        if rootfs.dev_is_mounted(mounts):
            rootfs.setup_dev(rfs, linux.get("devices") or [])
        elif linux.get("devices"):
            rootfs.setup_dev(rfs, linux["devices"])
        cwd = launch.process.get("cwd") or "/"
        os.close(rfs.ensure(cwd))
    finally:
        rfs.close()

    rootfs.pivot(launch.rootfs, launch.no_pivot)

    if linux.get("sysctl"):
        rootfs.write_sysctls(linux["sysctl"])
    if spec.get("hostname") is not None and launch.ns_flags & sc.CLONE_NEWUTS:
        try:
            sc.sethostname(spec["hostname"])
        except OSError as exc:
            raise os_error("sethostname", spec["hostname"], exc) from exc
    if spec.get("domainname") is not None and launch.ns_flags & sc.CLONE_NEWUTS:
        try:
            sc.setdomainname(spec["domainname"])
        except OSError as exc:
            raise os_error("setdomainname", spec["domainname"], exc) from exc
    if launch.process.get("terminal"):
        _setup_console(launch, console_dev=True)
    rootfs.mask_paths(linux.get("maskedPaths") or [])
    rootfs.readonly_paths(linux.get("readonlyPaths") or [])
    if (spec.get("root") or {}).get("readonly"):
        rootfs.readonly_root()
    rootfs.root_propagation(linux.get("rootfsPropagation"))
    return _prepare_process(launch)


def _enter_cgroup(launch: Launch, ch: Channel) -> None:
    """Wait until the parent has moved us into the cgroup; then make the cgroup namespace."""
    if launch.in_cgroup:
        return
    ch.recv("cgroup")
    launch.in_cgroup = True
    if launch.cgroupns:
        try:
            sc.unshare(sc.CLONE_NEWCGROUP)
        except OSError as exc:
            raise os_error("unshare cgroup namespace", "", exc) from exc


def _prepare_exec(launch: Launch, ch: Channel) -> tuple[str, list[str]]:
    ch.recv("cgroup")  # nothing of the process may run before it is in the cgroup
    if launch.process.get("terminal"):
        _setup_console(launch, console_dev=False)
    return _prepare_process(launch)


def _setup_console(launch: Launch, console_dev: bool) -> None:
    from skiff.runtime import terminal

    if launch.console is None:
        raise InvalidArgument("process.terminal: a terminal needs a console socket")
    master, slave, path = terminal.open_pty()
    if console_dev and os.path.isdir("/dev"):
        try:
            if not os.path.exists("/dev/console"):
                os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            sc.mount(path, "/dev/console", "bind", sc.MS_BIND, None)
        except OSError as exc:
            raise os_error("bind pty onto", "/dev/console", exc) from exc
    terminal.send_master(launch.console, master)
    os.close(master)
    launch.console.close()
    launch.console = None
    terminal.make_controlling(slave)
    os.close(slave)


def _prepare_process(launch: Launch) -> tuple[str, list[str]]:
    proc = launch.process
    env = list(proc.get("env") or [])
    if not any(e.startswith("HOME=") for e in env):
        # as runc: programs expect HOME; take the user's from the container's passwd
        env.append("HOME=" + _home_of(int((proc.get("user") or {}).get("uid", 0))))
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise os_error("chdir to cwd", cwd, exc) from exc
    if proc.get("rlimits"):
        from skiff.runtime.process.limits import apply_rlimits

        apply_rlimits(proc["rlimits"])
    pers = (launch.spec.get("linux") or {}).get("personality")
    if pers:
        sc.personality(0x0008 if pers.get("domain") == "LINUX32" else 0)
    return lookup(proc["args"][0], env), env


def _home_of(uid: int) -> str:
    """The home directory of ``uid`` in the container's /etc/passwd (we are inside), or /."""
    try:
        with open("/etc/passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
                    return fields[5]
    except OSError:
        pass
    return "/"


def lookup(name: str, env: list[str]) -> str:
    """Find the executable as execvp would, with the container's PATH.

    The message matches runc's, which Docker turns into exit status 127.
    """
    if "/" in name:
        if not os.path.exists(name):
            raise InvalidArgument(f'exec: "{name}": stat {name}: no such file or directory')
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise InvalidArgument(f'exec: "{name}": permission denied')
        return name
    path = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            path = item[5:]
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise InvalidArgument(f'exec: "{name}": executable file not found in $PATH')


def _wait_for_start(launch: Launch) -> None:
    fifo_fd = launch.fifo_fd
    assert fifo_fd is not None
    # Opening the write side blocks until `skiff-runtime start` opens the read side.
    wfd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(wfd, b"0")
    os.close(wfd)
    os.close(fifo_fd)
    state = launch.hook_state
    if state is not None and launch.spec.get("hooks", {}).get("startContainer"):
        from skiff.runtime import hooks

        state["status"] = "running"
        hooks.run(launch.spec, "startContainer", state)


def _before_start(launch: Launch) -> None:
    """What needs no start, done before waiting for it, as runc does (off the start's path):
    the seccomp filter when it must be loaded with CAP_SYS_ADMIN (no no_new_privs; it then
    also covers setuid/capset later, which every profile allows), and the bounding set. The
    user and the other capability sets change after the wait: the exec fifo is reopened
    through /proc/self, which a process whose uid changed may not read."""
    from skiff.runtime import capabilities

    proc = launch.process
    if launch.seccomp_filter is not None and not proc.get("noNewPrivileges"):
        from skiff.runtime import seccomp

        seccomp.load(launch.seccomp_filter)
    capabilities.drop_bounding(proc.get("capabilities"))


def _finalize_and_exec(launch: Launch, path: str, env: list[str]) -> NoReturn:
    from skiff.runtime import capabilities

    proc = launch.process
    caps = proc.get("capabilities")
    nnp = bool(proc.get("noNewPrivileges"))
    filt = launch.seccomp_filter  # without no_new_privs, _before_start loaded it
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(list(user.get("additionalGids") or []))
    except PermissionError:
        if not launch.userns:
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    capabilities.apply(caps)
    if nnp:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if "umask" in user:
        os.umask(user["umask"])
    for fd in range(3, 3 + launch.preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    if filt is not None and nnp:
        from skiff.runtime import seccomp

        seccomp.load(filt)
    sys.stdout.flush()
    os.execve(path, proc["args"], dict(e.partition("=")[::2] for e in env))
