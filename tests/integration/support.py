"""Helpers for real-container tests: a runtime driver, config edits, leak checks."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELPERS = Path(__file__).parent / "helpers"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Credentials of the htpasswd-protected docker-registry (the auth_registry fixture).
USER, PASSWORD = "skiffer", "s3cret-pw"


@dataclass
class Result:
    code: int
    out: str
    err: str


class RuntimeDriver:
    """Runs ``skiff-runtime`` (or runc, for comparison) with a private --root."""

    def __init__(self, argv0: list[str], root: Path) -> None:
        self.argv0 = argv0
        self.root = root

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> Result:
        # Files, not pipes: a created or detached container inherits the runtime's stdio, and
        # a pipe held open by it would make us wait for the container to exit.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([*self.argv0, "--root", str(self.root), *args], stdout=out,
                                  stderr=err, text=True, timeout=timeout, input=input,
                                  check=False)
            out.seek(0)
            err.seek(0)
            res = Result(proc.returncode, out.read(), err.read())
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {res.err}")
        return res

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([*self.argv0, "--root", str(self.root), *args], text=True, **kw)

    def state(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("state", cid).out)
        return result

    def wait_status(self, cid: str, want: str, timeout: float = 10) -> dict[str, Any]:
        """Poll ``state`` until the container has status ``want`` (it may not exist yet)."""
        deadline = time.monotonic() + timeout
        while True:
            res = self("state", cid, check=False)
            st: dict[str, Any] = json.loads(res.out) if res.code == 0 else {}
            if st.get("status") == want or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert st.get("status") == want, (st, res.err)
        return st


def new_id(prefix: str = "t") -> str:
    return f"skiff-test-{prefix}-{uuid.uuid4().hex[:8]}"


def cgroup_dirs(name: str) -> list[str]:
    """Every cgroup directory (any hierarchy) whose name contains ``name``."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        for dirpath, dirnames, _ in os.walk(hierarchy):
            for d in dirnames:
                if name in d:
                    found.append(os.path.join(dirpath, d))
            if dirpath.count("/") > 7:
                dirnames[:] = []
    return found


def mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


def edit_config(bundle: Path, **changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    for key, value in changes.items():
        cfg[key] = value
    (bundle / "config.json").write_text(json.dumps(cfg))
    return cfg


def write_config(bundle: Path, cfg: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(cfg))


def read_config(bundle: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    return result


def write_hook(path: Path, body: str) -> Path:
    """An executable /bin/sh hook script at ``path``."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path
