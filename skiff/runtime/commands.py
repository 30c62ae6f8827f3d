"""The commands of skiff-runtime, one function each, called by cli.main with parsed flags."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.runtime.process import launcher
from skiff.runtime.state import PAUSED, RUNNING, STOPPED, status

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

    from skiff.runtime.cli import Runtime


def _preserve(opts: dict[str, Any]) -> int:
    raw = opts.get("preserve_fds") or "0"
    try:
        n = int(raw)
    except ValueError:
        raise InvalidArgument(f"--preserve-fds: not a number: {raw!r}") from None
    if n < 0:
        raise InvalidArgument("--preserve-fds: must be >= 0")
    return n


def cmd_spec(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    from skiff.runtime.specgen import default_spec

    path = os.path.join(opts["bundle"] or ".", "config.json")
    if os.path.exists(path):
        raise Conflict(f"{path} already exists; remove it first")
    with open(path, "w") as f:
        json.dump(default_spec(), f, indent="\t")
    return 0


def _create_opts(rt: Runtime, opts: dict[str, Any]) -> launcher.CreateOptions:
    return launcher.CreateOptions(pid_file=opts["pid_file"],
                                  console_socket=opts["console_socket"],
                                  no_pivot=opts["no_pivot"], systemd_cgroup=rt.systemd,
                                  preserve_fds=_preserve(opts))


def cmd_create(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    launcher.create(rt.store, args[0], opts["bundle"] or os.getcwd(), _create_opts(rt, opts))
    return 0


def cmd_start(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    launcher.start(rt.store, args[0], rt.warn)
    return 0


def _needs_local_tty(spec_terminal: bool, opts: dict[str, Any]) -> bool:
    return spec_terminal and not opts.get("console_socket") and not opts.get("detach")


def cmd_run(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    from skiff.runtime import config as cfg
    from skiff.runtime import syscalls as sc

    cid = args[0]
    bundle = opts["bundle"] or os.getcwd()
    copts = _create_opts(rt, opts)
    copts.spec = cfg.load(os.path.abspath(bundle))
    spec_terminal = bool((copts.spec.get("process") or {}).get("terminal"))
    if spec_terminal and opts["detach"] and not opts["console_socket"]:
        raise InvalidArgument("cannot allocate a tty for a detached container without "
                              "--console-socket")
    ours: socket.socket | None = None
    if _needs_local_tty(spec_terminal, opts):
        import socket

        ours, copts.console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if not opts["detach"]:
        # Our container's init becomes our child when stage 1 exits, so we can wait for it.
        sc.set_child_subreaper()
    try:
        st = launcher.create(rt.store, cid, bundle, copts)
    finally:
        if copts.console is not None:
            copts.console.close()
    if not opts["detach"]:
        # Relay signals from now on: one that arrives while we start the container must reach
        # it, not kill us and leave it running unattended.
        launcher.forward_signals(st.pid, skip=(signal.SIGWINCH,) if ours else ())
    try:
        launcher.start(rt.store, cid, rt.warn, st)
    except BaseException:
        launcher.delete(rt.store, cid, True, rt.warn)
        raise
    if opts["detach"]:
        return 0
    code = _wait_foreground(st.pid, ours)
    if not opts["keep"]:
        launcher.delete(rt.store, cid, True, rt.warn)
    return code


def _wait_foreground(pid: int, console: socket.socket | None) -> int:
    if console is None:
        return launcher.wait_exit(pid)
    from skiff.runtime import terminal

    master = terminal.recv_master(console)
    console.close()
    result: list[int] = []

    def done() -> bool:
        if not result:
            try:
                wpid, wstatus = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                result.append(255)
                return True
            if wpid == pid:
                result.append(128 + os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus)
                              else os.WEXITSTATUS(wstatus))
        return bool(result)

    try:
        terminal.relay(master, done)
    finally:
        os.close(master)
    while not done():
        time.sleep(0.01)
    return result[0]


def cmd_state(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    st = rt.store.load(args[0])
    print(json.dumps(st.oci(status(rt.store, st)), indent=2))
    return 0


def parse_signal(text: str) -> int:
    t = text.strip().upper()
    if t.isdigit():
        n = int(t)
        if n <= 0 or n >= 65:
            raise InvalidArgument(f"invalid signal {text!r}")
        return n
    if not t.startswith("SIG"):
        t = "SIG" + t
    if t.startswith("SIGRTMIN+") or t.startswith("SIGRTMAX-"):
        base = signal.SIGRTMIN if t.startswith("SIGRTMIN") else signal.SIGRTMAX
        off = t[9:]
        if off.isdigit():
            return int(base) + int(off) * (1 if "+" in t else -1)
    sig = getattr(signal.Signals, t, None) if t in signal.Signals.__members__ else None
    if sig is None:
        raise InvalidArgument(f"invalid signal {text!r}")
    return int(sig)


def cmd_kill(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    sig = parse_signal(args[1]) if len(args) > 1 else int(signal.SIGTERM)
    launcher.kill(rt.store, args[0], sig, opts["all"])
    return 0


def cmd_delete(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    launcher.delete(rt.store, args[0], opts["force"], rt.warn)
    return 0


def _parse_user(text: str) -> tuple[int, int | None]:
    uid_s, _, gid_s = text.partition(":")
    try:
        return int(uid_s), int(gid_s) if gid_s else None
    except ValueError:
        raise InvalidArgument(f"--user: want UID[:GID] as numbers, got {text!r}") from None


def _exec_process(rt: Runtime, opts: dict[str, Any], args: list[str]) -> dict[str, Any]:
    st = rt.store.load(args[0])
    if opts["process"]:
        try:
            with open(opts["process"]) as f:
                proc: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"--process: {opts['process']} not found") from None
        except ValueError as exc:
            raise InvalidArgument(f"--process {opts['process']}: malformed JSON: {exc}") from exc
        if not isinstance(proc, dict):
            raise InvalidArgument(f"--process {opts['process']}: not a JSON object")
        return proc
    if len(args) < 2:
        raise InvalidArgument("exec: give a command, or a process.json with --process")
    base: dict[str, Any] = dict(st.config.get("process") or {})
    proc = {k: v for k, v in base.items() if k not in ("args", "terminal", "consoleSize")}
    proc["args"] = args[1:]
    proc["terminal"] = bool(opts["tty"])
    env = list(base.get("env") or [])
    for item in opts["env"]:
        key = item.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [item]
    proc["env"] = env
    if opts["cwd"]:
        proc["cwd"] = opts["cwd"]
    user = dict(base.get("user") or {"uid": 0, "gid": 0})
    if opts["user"]:
        uid, gid = _parse_user(opts["user"])
        user["uid"] = uid
        if gid is not None:
            user["gid"] = gid
    if opts["additional_gids"]:
        try:
            user["additionalGids"] = [int(g) for g in opts["additional_gids"]]
        except ValueError:
            raise InvalidArgument("--additional-gids: want numbers") from None
    proc["user"] = user
    if opts["cap"]:
        caps = {k: list(v) for k, v in (base.get("capabilities") or {}).items()}
        for cap in opts["cap"]:
            for s in ("bounding", "effective", "permitted", "ambient"):
                if cap not in caps.setdefault(s, []):
                    caps[s].append(cap)
        proc["capabilities"] = caps
    if opts["no_new_privs"]:
        proc["noNewPrivileges"] = True
    return proc


def cmd_exec(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    from skiff.runtime import syscalls as sc

    proc = _exec_process(rt, opts, args)
    ours: socket.socket | None = None
    console: socket.socket | None = None
    if proc.get("terminal") and not opts["console_socket"]:
        if opts["detach"]:
            raise InvalidArgument("exec -t -d needs --console-socket")
        import socket

        ours, console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if not opts["detach"]:
        sc.set_child_subreaper()
    pid = launcher.exec_process(rt.store, args[0], proc, detach=opts["detach"],
                                pid_file=opts["pid_file"], console_socket=opts["console_socket"],
                                console=console, preserve_fds=_preserve(opts))
    if opts["detach"]:
        return 0
    launcher.forward_signals(pid, skip=(signal.SIGWINCH,) if ours else ())
    return _wait_foreground(pid, ours)


def cmd_ps(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    st = rt.store.load(args[0])
    pids = launcher.manager(st).pids() if status(rt.store, st) != STOPPED else []
    fmt = opts["format"] or "table"
    if fmt == "json":
        print(json.dumps(pids))
        return 0
    if fmt != "table":
        raise InvalidArgument(f"--format: want table or json, got {fmt!r}")
    ps_args = args[1:] or ["-ef"]
    import subprocess

    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise InvalidArgument(f"ps {' '.join(ps_args)}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    try:
        col = header.index("PID")
    except ValueError:
        raise InvalidArgument("ps output has no PID column; include it in the ps options"
                              ) from None
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0


def cmd_list(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    states = []
    for cid in rt.store.ids():
        try:
            st = rt.store.load(cid)
        except NotFound:
            continue
        states.append(st.oci(status(rt.store, st)))
    if opts["quiet"]:
        for s in states:
            print(s["id"])
        return 0
    fmt = opts["format"] or "table"
    if fmt == "json":
        print(json.dumps(states))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("   ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip())
    return 0


def cmd_pause(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    st = rt.store.load(args[0])
    s = status(rt.store, st)
    if s != RUNNING:
        raise Conflict(f"cannot pause container {args[0]}: it is {s}")
    launcher.manager(st).freeze()
    return 0


def cmd_resume(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    st = rt.store.load(args[0])
    s = status(rt.store, st)
    if s != PAUSED:
        raise Conflict(f"cannot resume container {args[0]}: it is {s}, not paused")
    launcher.manager(st).thaw()
    return 0


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                value = float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
            if value <= 0:
                break
            return value
    raise InvalidArgument(f"--interval: invalid duration {text!r} (e.g. 5s, 500ms)")


def cmd_events(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    cid = args[0]
    st = rt.store.load(cid)
    cg = launcher.manager(st)
    if opts["stats"]:
        if status(rt.store, st) == STOPPED:
            raise Conflict(f"container {cid} is stopped")
        print(json.dumps({"type": "stats", "id": cid, "data": cg.stats()}))
        return 0
    interval = _duration(opts["interval"] or "5s")
    ooms = cg.oom_kill_count()
    next_stats = 0.0
    while True:
        stopped = status(rt.store, st) == STOPPED
        # Check for OOM kills once more after the stop: the kill is what stopped it.
        count = cg.oom_kill_count() if cg.exists() else ooms
        if count > ooms:
            ooms = count
            print(json.dumps({"type": "oom", "id": cid}), flush=True)
        if stopped:
            return 0
        if time.monotonic() >= next_stats:
            print(json.dumps({"type": "stats", "id": cid, "data": cg.stats()}), flush=True)
            next_stats = time.monotonic() + interval
        time.sleep(min(interval, 0.2))


def _int(text: str, flag: str) -> int:
    t = text.strip().lower()
    mult = 1
    for suffix, m in (("k", 1024), ("m", 1024**2), ("g", 1024**3)):
        if t.endswith(suffix) or t.endswith(suffix + "b"):
            mult = m
            t = t.rstrip("b")[:-1]
            break
    try:
        return int(t) * mult
    except ValueError:
        raise InvalidArgument(f"{flag}: not a number: {text!r}") from None


def _update_resources(opts: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if opts["resources"]:
        src = opts["resources"]
        try:
            if src == "-":
                raw = sys.stdin.read()
            else:
                with open(src) as f:
                    raw = f.read()
            loaded = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"--resources {src}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InvalidArgument(f"--resources {src}: not a JSON object")
        res = loaded
    mem = res.setdefault("memory", {})
    for flag, key in (("memory", "limit"), ("memory_reservation", "reservation"),
                      ("memory_swap", "swap"), ("kernel_memory", "kernel"),
                      ("kernel_memory_tcp", "kernelTCP")):
        if opts[flag] is not None:
            mem[key] = _int(opts[flag], "--" + flag.replace("_", "-"))
    cpu = res.setdefault("cpu", {})
    for flag, key in (("cpu_shares", "shares"), ("cpu_quota", "quota"), ("cpu_period", "period"),
                      ("cpu_rt_period", "realtimePeriod"), ("cpu_rt_runtime", "realtimeRuntime")):
        if opts[flag] is not None:
            cpu[key] = _int(opts[flag], "--" + flag.replace("_", "-"))
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if opts[flag] is not None:
            cpu[key] = opts[flag]
    if opts["pids_limit"] is not None:
        res["pids"] = {"limit": _int(opts["pids_limit"], "--pids-limit")}
    if opts["blkio_weight"] is not None:
        res.setdefault("blockIO", {})["weight"] = _int(opts["blkio_weight"], "--blkio-weight")
    return {k: v for k, v in res.items() if v not in ({}, None)}


def cmd_update(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    cid = args[0]
    st = rt.store.load(cid)
    if status(rt.store, st) == STOPPED:
        raise Conflict(f"cannot update container {cid}: it is stopped")
    res = _update_resources(opts)
    launcher.manager(st).set(res)
    linux = st.config.setdefault("linux", {})
    current = linux.setdefault("resources", {})
    for key, value in res.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    rt.store.save(st)
    return 0


def cmd_features(rt: Runtime, opts: dict[str, Any], args: list[str]) -> int:
    from skiff.runtime.features import features

    print(json.dumps(features(), indent=2))
    return 0


