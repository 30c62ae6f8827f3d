"""RUN: one OCI runtime ``run`` on a mounted build root, output streamed as it comes.

No shim: the step's process is the runtime's foreground child, so its stdout and stderr are
one pipe the builder reads, and the runtime deletes the container (its state and cgroup) when
the process exits. The spec is the one ``docker run`` would get (same seccomp profile,
capabilities, masked paths), built by the same function, with the step's command, environment,
user and working directory.

Network: every RUN gets a fresh network namespace of its own holding only loopback (the
runtime creates it), unless the Dockerfile or the build asks for ``host``. skiffd has no
bridge for builds, and no network beyond the host would be reachable anyway.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from skiff.daemon.hostfacts import default_seccomp_profile, kernel_version
from skiff.errors import SystemFailure, os_error
from skiff.services.spec import SpecInputs, build_spec, resolve_user


@dataclass(frozen=True)
class RuntimeCommand:
    """The OCI runtime binary, the arguments before its subcommand, and its state root."""

    path: str
    args: tuple[str, ...]
    root: str


@dataclass(frozen=True)
class RunStep:
    container_id: str
    argv: Sequence[str]
    env: Sequence[str]
    user: str
    workdir: str
    network: str  # "host" or anything else (a private namespace)


def _read(rootfs: str, path: str) -> str | None:
    from skiff.daemon.containers.archive import ContainerFS

    fs = ContainerFS(rootfs, "build")
    try:
        return fs.read_text(path)
    finally:
        fs.close()


def step_spec(step: RunStep, rootfs: str) -> dict[str, Any]:
    """The runtime spec of one RUN (``rootfs`` is the mounted root, for the user lookup)."""
    user = resolve_user(step.user, _read(rootfs, "/etc/passwd"), _read(rootfs, "/etc/group"))
    config = {"Cmd": list(step.argv), "Env": list(step.env), "WorkingDir": step.workdir,
              "User": step.user, "Hostname": step.container_id[:12]}
    host_config = {"NetworkMode": "host" if step.network == "host" else "none"}
    inputs = SpecInputs(container_id=step.container_id, rootfs="rootfs", user=user,
                        seccomp_profile=default_seccomp_profile(), arch=os.uname().machine,
                        kernel=kernel_version(), ncpu=os.cpu_count())
    return build_spec(config, host_config, inputs)


def run_step(step: RunStep, bundle: str, runtime: RuntimeCommand,
             out: Callable[[str], None]) -> int:
    """Run ``step`` in ``bundle`` (whose ``rootfs`` is mounted); its exit code.

    Output is passed to ``out`` as it arrives (decoded as UTF-8, invalid bytes replaced).
    """
    spec = step_spec(step, os.path.join(bundle, "rootfs"))
    try:
        with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f)
        os.makedirs(runtime.root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise os_error("write build bundle", bundle, exc) from exc
    argv = [runtime.path, *runtime.args, "--root", runtime.root, "run", "--bundle", bundle,
            step.container_id]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise SystemFailure(f"start OCI runtime {runtime.path} for build step "
                            f"{step.container_id[:12]}: {exc}") from exc
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = decoder.decode(chunk)
            if text:
                out(text)
        tail = decoder.decode(b"", final=True)
        if tail:
            out(tail)
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        subprocess.run([runtime.path, *runtime.args, "--root", runtime.root, "delete",
                        "--force", step.container_id], capture_output=True, check=False,
                       timeout=60)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def remove_bundle(bundle: str) -> None:
    shutil.rmtree(bundle, ignore_errors=True)
