"""``docker top``: the host's ``ps`` with the client's arguments, kept to the container's pids.

The pids are those in the container's cgroup (every hierarchy's ``cgroup.procs`` below its
path), so exec'd processes count too. ``ps`` runs on the host, so its pids are host pids, as
Docker shows them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Collection
from typing import Any

from skiff.errors import InvalidArgument, SystemFailure

_PS_TIMEOUT = 30


def parse_ps(output: str, pids: Collection[int]) -> dict[str, Any]:
    """``ps`` output -> ``{"Titles", "Processes"}`` keeping the rows of ``pids``.

    The last column (the command) may contain spaces, so each row is split into at most as
    many fields as there are titles.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise InvalidArgument("ps gave no output")
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidArgument("Couldn't find PID field in ps output")
    at = titles.index("PID")
    rows: list[list[str]] = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        try:
            pid = int(fields[at])
        except (IndexError, ValueError) as exc:
            raise InvalidArgument(f"Unexpected pid {fields[at] if at < len(fields) else ''!r} "
                                  "in ps output") from exc
        if pid in pids:
            rows.append(fields)
    return {"Titles": titles, "Processes": rows}


def run_ps(ps_args: str) -> str:
    """``ps ps_args``; a refused argument is the client's error, with ps's own message."""
    args = ps_args.split()
    try:
        res = subprocess.run(["ps", *args], capture_output=True, text=True, check=False,
                             timeout=_PS_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemFailure(f"run ps {ps_args}: {exc}") from exc
    if res.returncode != 0:
        message = " ".join(res.stderr.split()) or f"exit status {res.returncode}"
        raise InvalidArgument(f"Error running ps with ps_args {ps_args!r}: {message}")
    return res.stdout


def top(pids: Collection[int], ps_args: str = "") -> dict[str, Any]:
    return parse_ps(run_ps(ps_args or "-ef"), set(pids))
