"""OCI hooks: each gets the container state as JSON on stdin, with its own args/env/timeout."""

from __future__ import annotations

import json
import subprocess

from skiff.errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run(spec: dict[str, Any], point: str, state: dict[str, Any]) -> None:
    """Run every hook of ``point``; the first failure raises SystemFailure naming the hook."""
    payload = json.dumps(state).encode()
    for i, hook in enumerate((spec.get("hooks") or {}).get(point) or []):
        args = hook.get("args") or [hook["path"]]
        timeout = hook.get("timeout")
        where = f"{point} hook [{i}] {hook['path']}"
        try:
            proc = subprocess.run(args, executable=hook["path"], input=payload,
                                  env=_env(hook.get("env")), capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SystemFailure(f"{where}: timed out after {timeout}s") from None
        except OSError as exc:
            raise SystemFailure(f"{where}: {exc.strerror}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(
                errors="replace").strip()
            raise SystemFailure(f"{where}: exit status {proc.returncode}"
                                + (f": {err}" if err else ""))


def run_best_effort(spec: dict[str, Any], point: str, state: dict[str, Any]) -> str | None:
    """poststart/poststop: a failing hook is reported (returned), not fatal (as the spec says)."""
    try:
        run(spec, point, state)
    except SystemFailure as exc:
        return str(exc)
    return None


def _env(env: list[str] | None) -> dict[str, str] | None:
    # No env in the hook means the runtime's own environment, as runc does (Go's exec with a
    # nil Env): dockerd's libnetwork-setkey hook relies on it.
    if env is None:
        return None
    out: dict[str, str] = {}
    for item in env or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out
