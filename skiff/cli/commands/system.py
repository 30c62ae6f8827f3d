"""events, info, version, system df."""

from __future__ import annotations

import platform
import sys
import time

from skiff import __version__
from skiff.cli.client import API_VERSION, APIError, NoDaemon, filters_json
from skiff.cli.formatting import human_size, render, tabulate
from skiff.cli.parsing import parser
from skiff.cli.template import Template

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from typing import Any

    from skiff.cli.main import Cli


def event_line(ev: dict[str, Any]) -> str:
    """The docker CLI's plain event line:
    ``2026-11-27T22:50:39.123456789Z container start ID (image=busybox, name=x)``."""
    nanos = int(ev.get("timeNano") or int(ev.get("time", 0)) * 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(nanos // 1_000_000_000))
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    text = f"{stamp}.{nanos % 1_000_000_000:09d}Z {ev.get('Type', '')} {ev.get('Action', '')} "
    text += str(actor.get("ID", ""))
    if attrs:
        text += " (" + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) + ")"
    return text


def cmd_events(cli: Cli, argv: list[str]) -> int:
    from skiff.cli.commands.containers import _since_arg
    from skiff.cli.formatting import unescape

    p = parser("skiff events", "Get real time events from the server")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    args = p.parse(argv)
    now = time.time()
    tmpl = Template(unescape(args.format)) if args.format and args.format != "json" else None
    query = {"since": _since_arg(args.since, now), "until": _since_arg(args.until, now),
             "filters": filters_json(args.filter)}
    import json

    for ev in cli.client.stream_json("GET", "/events", query):
        if args.format == "json":
            line = json.dumps(ev, separators=(",", ":"))
        else:
            line = tmpl.render(ev) if tmpl else event_line(ev)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def _info_text(info: dict[str, Any]) -> str:
    def kv(key: str, value: Any, indent: int = 1) -> str:
        return " " * indent + f"{key}: {value}\n"

    out = "Server:\n"
    out += kv("Containers", info.get("Containers", 0))
    for key in ("Running", "Paused", "Stopped"):
        out += kv(key, info.get(f"Containers{key}", 0), 2)
    out += kv("Images", info.get("Images", 0))
    out += kv("Server Version", info.get("ServerVersion", ""))
    out += kv("Storage Driver", info.get("Driver", ""))
    out += kv("Logging Driver", info.get("LoggingDriver", ""))
    out += kv("Cgroup Driver", info.get("CgroupDriver", ""))
    out += kv("Cgroup Version", info.get("CgroupVersion", ""))
    runtimes = info.get("Runtimes") or {}
    out += kv("Runtimes", " ".join(sorted(runtimes)))
    out += kv("Default Runtime", info.get("DefaultRuntime", ""))
    out += kv("Security Options", " ".join(info.get("SecurityOptions") or []))
    out += kv("Kernel Version", info.get("KernelVersion", ""))
    out += kv("Operating System", info.get("OperatingSystem", ""))
    out += kv("OSType", info.get("OSType", ""))
    out += kv("Architecture", info.get("Architecture", ""))
    out += kv("CPUs", info.get("NCPU", 0))
    out += kv("Total Memory", human_binary(info.get("MemTotal", 0)))
    out += kv("Name", info.get("Name", ""))
    out += kv("ID", info.get("ID", ""))
    out += kv("Docker Root Dir", info.get("DockerRootDir", ""))
    out += kv("Debug Mode", str(bool(info.get("Debug"))).lower())
    out += kv("Experimental", str(bool(info.get("ExperimentalBuild"))).lower())
    out += kv("Live Restore Enabled", str(bool(info.get("LiveRestoreEnabled"))).lower())
    for warning in info.get("Warnings") or []:
        out += f"{warning}\n"
    return out


def human_binary(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def cmd_info(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff info", "Display system-wide information")
    p.add_argument("-f", "--format", default="")
    args = p.parse(argv)
    info = cli.client.get("/info")
    if args.format:
        from skiff.cli.formatting import unescape

        print(Template(unescape(args.format)).render(info))
        return 0
    sys.stdout.write(f"Client:\n Version:    {__version__}\n Context:    default\n\n")
    sys.stdout.write(_info_text(info))
    return 0


def cmd_version(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff version", "Show the skiff version information")
    p.add_argument("-f", "--format", default="")
    args = p.parse(argv)
    client_info = {"Version": __version__, "ApiVersion": API_VERSION,
                   "DefaultAPIVersion": API_VERSION, "GoVersion": "",
                   "PythonVersion": platform.python_version(), "Os": sys.platform,
                   "Arch": platform.machine(), "Context": "default"}
    server: Any = None
    failure: Exception | None = None
    try:
        server = cli.client.get("/version")
    except (APIError, NoDaemon) as exc:
        failure = exc
    if args.format:
        from skiff.cli.formatting import unescape

        print(Template(unescape(args.format)).render({"Client": client_info,
                                                      "Server": server}))
    else:
        out = "Client:\n"
        out += f" Version:           {__version__}\n API version:       {API_VERSION}\n"
        out += f" Python version:    {client_info['PythonVersion']}\n"
        out += f" OS/Arch:           linux/{client_info['Arch']}\n"
        if server:
            out += "\nServer:\n"
            for comp in server.get("Components") or [{"Name": "Engine", **server}]:
                out += f" {comp.get('Name')}:\n  Version:          {comp.get('Version')}\n"
                details = comp.get("Details") or {}
                for key in ("ApiVersion", "MinAPIVersion", "GitCommit", "Os", "Arch",
                            "KernelVersion"):
                    value = details.get(key, server.get(key) if comp.get("Name") == "Engine"
                                        else None)
                    if value:
                        out += f"  {key + ':':<18}{value}\n"
        sys.stdout.write(out)
    if failure is not None:
        raise failure
    return 0


def cmd_system_df(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff system df", "Show skiff disk usage")
    p.flag("-v", "--verbose")
    p.add_argument("--format", default="")
    args = p.parse(argv)
    df = cli.client.get("/system/df")
    images = df.get("Images") or []
    containers = df.get("Containers") or []
    volumes = df.get("Volumes") or []
    cache = df.get("BuildCache") or []

    def size(n: float) -> str:
        return human_size(n, 4)  # df prints go-units HumanSize (4 digits), not 3

    def reclaim(part: float, whole: float) -> str:
        return f"{size(part)} ({int(part * 100 // whole)}%)" if whole > 0 else size(part)

    # The docker CLI's arithmetic: images in use by a container count against the layers.
    img_total = df.get("LayersSize") or 0
    used = [i for i in images if (i.get("Containers") or 0) > 0]
    img_used = sum(max(i.get("Size", 0) - max(i.get("SharedSize", 0), 0), 0) for i in used)
    ctr_size = sum(c.get("SizeRw", 0) or 0 for c in containers)
    ctr_idle = sum(c.get("SizeRw", 0) or 0 for c in containers if c.get("State") != "running")
    vol_size = sum(max((v.get("UsageData") or {}).get("Size", 0), 0) for v in volumes)
    vol_idle = sum(max((v.get("UsageData") or {}).get("Size", 0), 0) for v in volumes
                   if (v.get("UsageData") or {}).get("RefCount", 0) <= 0)
    cache_size = sum(b.get("Size", 0) for b in cache)
    rows = [
        {"Type": "Images", "TotalCount": str(len(images)), "Active": str(len(used)),
         "Size": size(img_total), "Reclaimable": reclaim(img_total - img_used, img_total)},
        {"Type": "Containers", "TotalCount": str(len(containers)),
         "Active": str(sum(1 for c in containers if c.get("State") == "running")),
         "Size": size(ctr_size), "Reclaimable": reclaim(ctr_idle, ctr_size)},
        {"Type": "Local Volumes", "TotalCount": str(len(volumes)),
         "Active": str(sum(1 for v in volumes
                           if (v.get("UsageData") or {}).get("RefCount", 0) > 0)),
         "Size": size(vol_size), "Reclaimable": reclaim(vol_idle, vol_size)},
        {"Type": "Build Cache", "TotalCount": str(len(cache)),
         "Active": str(sum(1 for b in cache if b.get("InUse"))),
         "Size": size(cache_size),
         "Reclaimable": size(sum(b.get("Size", 0) for b in cache if not b.get("InUse")))},
    ]
    fmt = args.format or ("table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t"
                          "{{.Reclaimable}}")
    render(rows, fmt, {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE",
                       "Size": "SIZE", "Reclaimable": "RECLAIMABLE"})
    return 0


__all__ = ["cmd_events", "cmd_info", "cmd_system_df", "cmd_version", "tabulate"]
