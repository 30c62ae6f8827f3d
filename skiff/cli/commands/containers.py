"""ps, logs and the verbs on existing containers (stop, kill, rm, wait, ...)."""

from __future__ import annotations

import json
import sys
import time

from skiff.cli.client import APIError, filters_json, path_arg
from skiff.cli.exits import ExitStatus, UsageError
from skiff.cli.formatting import ellipsis, human_size, render, short_id, since, tabulate
from skiff.cli.parsing import parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from skiff.cli.main import Cli

PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
              "Status": "STATUS", "Size": "SIZE", "Names": "NAMES", "Labels": "LABELS",
              "Mounts": "MOUNTS", "Networks": "NETWORKS", "State": "STATE",
              "LocalVolumes": "LOCAL VOLUMES"}
PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def format_ports(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in ports or []:
        proto = p.get("Type", "tcp")
        if p.get("PublicPort"):
            ip = p.get("IP") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"{host}:{p['PublicPort']}->{p['PrivatePort']}/{proto}")
        else:
            out.append(f"{p.get('PrivatePort')}/{proto}")
    return ", ".join(out)


def go_time(unix: float) -> str:
    """Go's time.Time String() in UTC: ``2026-11-27 22:50:39 +0000 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(unix))


def ps_row(c: dict[str, Any], trunc: bool, now: float) -> dict[str, Any]:
    command = c.get("Command", "")
    names = [n.lstrip("/") for n in c.get("Names") or []]
    if trunc:
        command = ellipsis(command, 20)
        names = [n for n in names if "/" not in n][:1] or names[:1]
    size = ""
    if "SizeRw" in c or "SizeRootFs" in c:
        size = (f"{human_size(c.get('SizeRw') or 0)} "
                f"(virtual {human_size(c.get('SizeRootFs') or 0)})")
    labels = c.get("Labels") or {}
    networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
    image = c.get("Image", "")
    if trunc and image.startswith("sha256:"):
        image = short_id(image)
    return {
        "ID": short_id(c["Id"], trunc), "Image": image, "Command": json.dumps(command,
                                                                              ensure_ascii=False),
        "CreatedAt": go_time(c.get("Created", 0)), "RunningFor": since(c.get("Created", 0), now),
        "Ports": format_ports(c.get("Ports") or []), "Status": c.get("Status", ""),
        "State": c.get("State", ""), "Size": size, "Names": ",".join(names),
        "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
        "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []),
        "Networks": ",".join(networks), "LocalVolumes": str(sum(
            1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
    }


def cmd_ps(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff ps", "List containers")
    p.flag("-a", "--all")
    p.flag("-q", "--quiet")
    p.add_argument("-n", "--last", type=int, default=-1)
    p.flag("-l", "--latest")
    p.flag("--no-trunc")
    p.flag("-s", "--size")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    args = p.parse(argv)
    limit = 1 if args.latest else args.last
    query = {"all": args.all or limit > 0 or None, "limit": limit if limit > 0 else None,
             "size": args.size or None, "filters": filters_json(args.filter)}
    found = cli.client.get("/containers/json", query)
    if args.quiet:
        sys.stdout.write("".join(short_id(c["Id"], not args.no_trunc) + "\n" for c in found))
        return 0
    fmt = args.format or PS_TABLE + ("\t{{.Size}}" if args.size else "")
    if fmt == "table":
        fmt = PS_TABLE
    now = time.time()
    render((ps_row(c, not args.no_trunc, now) for c in found), fmt, PS_HEADERS)
    return 0


def each(cli: Cli, names: list[str], action: Callable[[str], Any], echo: bool = True) -> int:
    """Run ``action`` on every name; errors are reported and the exit status is 1."""
    failed = False
    for name in names:
        try:
            result = action(name)
            if echo:
                print(result if isinstance(result, str) else name)
        except APIError as exc:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
            failed = True
    if failed:
        raise ExitStatus(1)
    return 0


def _post(cli: Cli, path: str, query: dict[str, Any] | None = None) -> None:
    cli.client.call("POST", path, query, ok_statuses=(304,)).close()


def cmd_stop(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff stop", "Stop one or more running containers")
    p.add_argument("-t", "--time", "--timeout", type=int, dest="time")
    p.add_argument("-s", "--signal")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)
    return each(cli, args.containers, lambda n: _post(
        cli, f"/containers/{path_arg(n)}/stop", {"t": args.time, "signal": args.signal}))


def cmd_restart(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff restart", "Restart one or more containers")
    p.add_argument("-t", "--time", "--timeout", type=int, dest="time")
    p.add_argument("-s", "--signal")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)
    return each(cli, args.containers, lambda n: _post(
        cli, f"/containers/{path_arg(n)}/restart", {"t": args.time, "signal": args.signal}))


def cmd_kill(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff kill", "Kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)
    return each(cli, args.containers, lambda n: _post(
        cli, f"/containers/{path_arg(n)}/kill", {"signal": args.signal}))


def _simple(verb: str, description: str) -> Callable[[Cli, list[str]], int]:
    def run(cli: Cli, argv: list[str]) -> int:
        p = parser(f"skiff {verb}", description)
        p.add_argument("containers", nargs="+")
        args = p.parse(argv)
        return each(cli, args.containers,
                    lambda n: _post(cli, f"/containers/{path_arg(n)}/{verb}"))
    return run


cmd_pause = _simple("pause", "Pause all processes within one or more containers")
cmd_unpause = _simple("unpause", "Unpause all processes within one or more containers")


def cmd_rm(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff rm", "Remove one or more containers")
    p.flag("-f", "--force")
    p.flag("-v", "--volumes")
    p.flag("-l", "--link")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)

    def remove(name: str) -> None:
        cli.client.call("DELETE", f"/containers/{path_arg(name)}",
                        {"force": args.force or None, "v": args.volumes or None,
                         "link": args.link or None}).close()
    return each(cli, args.containers, remove)


def cmd_wait(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff wait", "Block until containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)

    def wait(name: str) -> str:
        result = cli.client.post(f"/containers/{path_arg(name)}/wait")
        return str(result.get("StatusCode"))
    return each(cli, args.containers, wait)


def cmd_rename(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff rename", "Rename a container")
    p.add_argument("container")
    p.add_argument("new_name")
    args = p.parse(argv)
    _post(cli, f"/containers/{path_arg(args.container)}/rename", {"name": args.new_name})
    return 0


def _since_arg(text: str | None, now: float) -> str | None:
    """--since/--until: a unix time, an RFC 3339 time, or a duration back from now."""
    if not text:
        return None
    try:
        float(text)
        return text
    except ValueError:
        pass
    from skiff.cli.parsing import duration_ns

    if text[:1].isdigit() and not ("-" in text[1:] or "T" in text):
        return f"{now - duration_ns(text) / 1e9:.9f}"
    from datetime import datetime

    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return f"{stamp.timestamp():.9f}"


def cmd_logs(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff logs", "Fetch the logs of a container")
    p.flag("-f", "--follow")
    p.flag("-t", "--timestamps")
    p.flag("--details")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("container")
    args = p.parse(argv)
    now = time.time()
    resp = cli.client.call("GET", f"/containers/{path_arg(args.container)}/logs", {
        "stdout": True, "stderr": True, "follow": args.follow or None,
        "timestamps": args.timestamps or None, "tail": args.tail,
        "since": _since_arg(args.since, now), "until": _since_arg(args.until, now)})
    from skiff.cli.streams import MULTIPLEXED, Demuxer, writer

    out, err = writer(sys.stdout.buffer), writer(sys.stderr.buffer)
    demux = Demuxer(out, err) if resp.header("content-type") == MULTIPLEXED else None
    try:
        for chunk in resp.chunks():
            if demux is not None:
                demux.feed(chunk)
            else:
                out(chunk)
    finally:
        resp.close()
    return 0


def cmd_top(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff top", "Display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs="*")
    args = p.parse(argv)
    top = cli.client.get(f"/containers/{path_arg(args.container)}/top",
                         {"ps_args": " ".join(args.ps_args) or None})
    rows = [top.get("Titles") or []] + [list(r) for r in top.get("Processes") or []]
    sys.stdout.write(tabulate(rows, min_width=20))  # docker top's tabwriter is wider
    return 0


def cmd_port(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff port", "List port mappings for the container")
    p.add_argument("container")
    p.add_argument("port", nargs="?")
    args = p.parse(argv)
    info = cli.client.get(f"/containers/{path_arg(args.container)}/json")
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in sorted(ports.items()):
        if args.port and key not in (args.port, f"{args.port}/tcp"):
            continue
        for b in bindings or []:
            print(f"{key} -> {b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}")
    return 0


def cmd_diff(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff diff", "Inspect changes to files or directories on a container's "
               "filesystem")
    p.add_argument("container")
    args = p.parse(argv)
    changes = cli.client.get(f"/containers/{path_arg(args.container)}/changes") or []
    for change in changes:
        print(f"{'CAD'[int(change.get('Kind', 0))]} {change.get('Path')}")
    return 0


def copy_body(resp: Any, output: str | None, what: str) -> int:
    """Write a streamed body to ``-o FILE`` or to stdout (not to a terminal)."""
    if not output and sys.stdout.isatty():
        resp.close()
        raise UsageError(f"Cowardly refusing to save {what} to a terminal. Use the -o flag "
                         "or redirect")
    try:
        target = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    except OSError as exc:
        resp.close()
        raise UsageError(f"failed to open {output}: {exc.strerror}") from exc
    try:
        for chunk in resp.chunks():
            target.write(chunk)
    finally:
        resp.close()
        if output:
            target.close()
        else:
            target.flush()
    return 0


def cmd_export(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff export", "Export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output")
    p.add_argument("container")
    args = p.parse(argv)
    resp = cli.client.call("GET", f"/containers/{path_arg(args.container)}/export")
    return copy_body(resp, args.output, "output")


def cmd_update(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.parsing import nano_cpus, ram_bytes
    from skiff.cli.runflags import parse_restart

    p = parser("skiff update", "Update configuration of one or more containers")
    p.add_argument("-m", "--memory")
    p.add_argument("--memory-swap")
    p.add_argument("--memory-reservation")
    p.add_argument("--cpus")
    p.add_argument("-c", "--cpu-shares", type=int)
    p.add_argument("--cpuset-cpus")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--restart")
    p.add_argument("containers", nargs="+")
    args = p.parse(argv)
    body: dict[str, Any] = {}
    if args.memory:
        body["Memory"] = ram_bytes(args.memory)
    if args.memory_swap:
        body["MemorySwap"] = -1 if args.memory_swap == "-1" else ram_bytes(args.memory_swap)
    if args.memory_reservation:
        body["MemoryReservation"] = ram_bytes(args.memory_reservation)
    if args.cpus:
        body["NanoCpus"] = nano_cpus(args.cpus)
    if args.cpu_shares is not None:
        body["CpuShares"] = args.cpu_shares
    if args.cpuset_cpus is not None:
        body["CpusetCpus"] = args.cpuset_cpus
    if args.pids_limit is not None:
        body["PidsLimit"] = args.pids_limit
    if args.restart:
        body["RestartPolicy"] = parse_restart(args.restart)
    return each(cli, args.containers, lambda n: cli.client.post(
        f"/containers/{path_arg(n)}/update", None, body))


STATS_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
               "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")
STATS_HEADERS = {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}


def _binary_size(n: float) -> str:
    """go-units BytesSize: ``1.5MiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def stats_row(name: str, s: dict[str, Any]) -> dict[str, Any]:
    """The docker CLI's stats arithmetic on one ``/stats`` sample."""
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage", 0)
                 - (pre.get("cpu_usage") or {}).get("total_usage", 0))
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get(
        "percpu_usage") or []) or 1
    cpu_pct = cpu_delta / sys_delta * ncpu * 100 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage", 0) - ((mem.get("stats") or {}).get("inactive_file", 0))
    limit = mem.get("limit", 0)
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    blk = (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    rd = sum(e.get("value", 0) for e in blk if str(e.get("op", "")).lower() == "read")
    wr = sum(e.get("value", 0) for e in blk if str(e.get("op", "")).lower() == "write")
    return {"ID": short_id(s.get("id", name)), "Container": name,
            "Name": str(s.get("name", name)).lstrip("/"), "CPUPerc": f"{cpu_pct:.2f}%",
            "MemUsage": f"{_binary_size(usage)} / {_binary_size(limit)}",
            "MemPerc": f"{usage / limit * 100 if limit else 0:.2f}%",
            "NetIO": f"{human_size(rx)} / {human_size(tx)}",
            "BlockIO": f"{human_size(rd)} / {human_size(wr)}",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


def cmd_stats(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.stats import stats

    return stats(cli, argv)
