"""The container's I/O below the lifecycle: rootfs mounts, the bundle, and its shim.

The daemon (not the shim or the runtime) mounts the snapshot at ``<bundle>/rootfs``: the
spec then names a plain directory, so any runc-compatible runtime can run it. The shim is
started when the container is *created* (the runtime's ``create``: the process exists but
has not exec'd), so ``docker run``'s attach-before-start finds a shim to attach to and no
output is lost. Everything here blocks; the manager calls it from worker threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiff.core.reference import is_full_id
from skiff.core.snapshots import Snapshotter
from skiff.daemon.config import DEFAULT_RUNTIME, RuntimeSpec
from skiff.daemon.containers.record import Container
from skiff.daemon.hostfacts import default_seccomp_profile, kernel_version
from skiff.daemon.networks.seam import Sandbox, SandboxProvider
from skiff.daemon.zygote import Zygote
from skiff.daemon.zygote import enabled as zygote_enabled
from skiff.errors import InvalidArgument, SystemFailure, Unavailable, os_error
from skiff.plugins.snapshots.mount import is_mountpoint, mount_all, unmount_all
from skiff.runtime.cgroups import remove_if_empty
from skiff.services.spec import ResolvedMount, SpecInputs, build_spec, resolve_user
from skiff.shim import exitfile
from skiff.shim.client import ShimClient

if TYPE_CHECKING:
    from skiff.daemon.volumes.containers import ContainerMounts

log = logging.getLogger("skiffd.runner")

def _remove_empty_cgroup(path: str, root: str = "/sys/fs/cgroup", wait: float = 1.0) -> None:
    """rmdir ``path`` in every hierarchy once it is empty; a cgroup whose last task is still
    being reaped is busy for a moment, so that is waited out (briefly), a live one never."""
    deadline = time.monotonic() + wait
    while True:
        remove_if_empty(path, root)
        try:
            left = [d for h in os.listdir(root) if os.path.isdir(d := os.path.join(root, h) + path)]
        except OSError:
            return
        if not left or time.monotonic() > deadline:
            return
        procs = _read_text(os.path.join(left[0], "cgroup.procs"))
        if procs is None or procs.strip():
            return  # live processes (or unreadable): not ours to wait for
        time.sleep(0.02)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@dataclass(frozen=True)
class Paths:
    """Where one daemon keeps things; short shim dirs keep socket paths under 108 bytes."""

    data_root: str
    exec_root: str

    def bundle(self, cid: str) -> str:
        return os.path.join(self.exec_root, "bundles", cid)

    def rootfs(self, cid: str) -> str:
        return os.path.join(self.bundle(cid), "rootfs")

    def shim(self, cid: str) -> str:
        return os.path.join(self.exec_root, "shims", cid[:12])

    @property
    def runtime_root(self) -> str:
        return os.path.join(self.exec_root, "runtime")

    def runtime_state(self, runtime: str) -> str:
        """Each runtime's own ``--root``: runc and skiff-runtime must never share state."""
        return os.path.join(self.runtime_root, runtime.strip("/").replace("/", "_"))

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.data_root, "containers", cid)

    def log(self, cid: str) -> str:
        return os.path.join(self.container_dir(cid), f"{cid}-json.log")


class Runner:
    """``runtimes`` maps names (HostConfig.Runtime) to binaries; ``default`` names the one for
    containers that name none. A bare path is accepted for ``runtimes`` too (one runtime)."""

    def __init__(self, paths: Paths, snapshotter: Snapshotter,
                 runtimes: Mapping[str, RuntimeSpec] | str,
                 default: str = DEFAULT_RUNTIME) -> None:
        self.paths = paths
        self.snapshotter = snapshotter
        if isinstance(runtimes, str):
            runtimes = {default: RuntimeSpec(runtimes)}
        self.runtimes = dict(runtimes)
        self.default = default
        # binds and volumes, attached for each run and detached at teardown (app.py sets it)
        self.volumes: ContainerMounts | None = None
        # the network part (app.py sets it); None: the runtime makes a fresh netns and the
        # image's /etc files are used
        self.network: SandboxProvider | None = None
        if default not in self.runtimes:
            raise InvalidArgument(f"default runtime {default!r}: no such runtime")
        # shims are forked from a zygote (one interpreter start per daemon, not per container)
        self.zygote = Zygote(os.path.join(paths.exec_root, "zygote.sock")) \
            if zygote_enabled() else None

    def check_runtime(self, name: str) -> None:
        """HostConfig.Runtime at create: empty (the default) or a configured name."""
        if name and name not in self.runtimes:
            raise InvalidArgument(f"unknown or invalid runtime name: {name}")

    def runtime_name(self, c: Container) -> str:
        """The configured name of ``c``'s runtime (aliases folded: one state dir each)."""
        name = c.host_config.get("Runtime") or self.default
        if not isinstance(name, str):
            raise InvalidArgument(f"unknown or invalid runtime name: {name}")
        self.check_runtime(name)
        own = self.runtimes.get(DEFAULT_RUNTIME)
        return DEFAULT_RUNTIME if name != DEFAULT_RUNTIME and self.runtimes[name] == own \
            else name

    def runtime_spec(self, c: Container) -> RuntimeSpec:
        return self.runtimes[self.runtime_name(c)]

    def runtime_for(self, c: Container) -> str:
        """The OCI runtime binary that runs ``c`` (HostConfig.Runtime, else the default)."""
        return self.runtime_spec(c).path

    def runtime_root_for(self, c: Container) -> str:
        return self.paths.runtime_state(self.runtime_name(c))

    def shim(self, cid: str, timeout: float | None = 30.0) -> ShimClient:
        return ShimClient(self.paths.shim(cid), timeout=timeout)

    # --- bring up ----------------------------------------------------------------------

    def materialise(self, c: Container) -> None:
        """Mount the rootfs, write the bundle, start the shim (runtime ``create``).

        On failure everything this call made is taken down again.
        """
        self.prepare_bundle(c)
        try:
            self.start_shim(c)
        except BaseException:
            self.teardown(c)
            raise

    def prepare_bundle(self, c: Container) -> None:
        """The daemon's side of a create: rootfs mounted, volumes and network set up, the
        spec written. On failure everything this call made is taken down again."""
        bundle, rootfs = self.paths.bundle(c.id), self.paths.rootfs(c.id)
        try:
            os.makedirs(rootfs, exist_ok=True)
            os.makedirs(self.paths.container_dir(c.id), exist_ok=True)
            os.makedirs(os.path.dirname(self.paths.shim(c.id)), exist_ok=True)
        except OSError as exc:
            raise os_error("create bundle", bundle, exc) from exc
        try:
            if not is_mountpoint(rootfs):
                mount_all(self.snapshotter.mounts(c.snapshot_key), rootfs)
            mounts = self.volumes.attach(c, rootfs) if self.volumes is not None else []
            # before the runtime's create: the netns must exist when the spec names it
            sandbox = self.network.setup(c) if self.network is not None else Sandbox()
            spec = self._spec(c, rootfs, mounts, sandbox)
            with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as f:
                f.write(json.dumps(spec))  # one write; json.dump writes piece by piece
        except BaseException:
            self.teardown(c)
            raise

    def start_shim(self, c: Container) -> None:
        """The runtime's side of a create, on a prepared bundle: the shim, which runs the
        runtime's ``create``. On failure the bundle stays as it was."""
        self._start_shim(c, self.paths.bundle(c.id))

    def _spec(self, c: Container, rootfs: str, mounts: Sequence[ResolvedMount] = (),
              sandbox: Sandbox | None = None) -> dict[str, Any]:
        sandbox = sandbox or Sandbox()
        user = resolve_user(str(c.config.get("User") or ""),
                            _read_text(os.path.join(rootfs, "etc", "passwd")),
                            _read_text(os.path.join(rootfs, "etc", "group")),
                            c.host_config.get("GroupAdd"))
        inputs = SpecInputs(container_id=c.id, rootfs="rootfs", user=user, mounts=mounts,
                            netns_path=sandbox.netns_path,
                            namespace_paths=dict(sandbox.namespace_paths),
                            etc_files=sandbox.etc_files,
                            seccomp_profile=default_seccomp_profile(), arch=os.uname().machine,
                            kernel=kernel_version(), ncpu=os.cpu_count())
        return build_spec(c.config, c.host_config, inputs)

    def _start_shim(self, c: Container, bundle: str) -> None:
        spec = self.runtime_spec(c)
        argv = [sys.executable, "-m", "skiff.shim", "start", "--id", c.id, "--bundle", bundle,
                "--state-dir", self.paths.shim(c.id), "--runtime", spec.path,
                "--runtime-root", self.runtime_root_for(c), "--log-path", self.paths.log(c.id)]
        # runtimeArgs go before the runtime's subcommand; the shim must know --runtime-arg
        argv += [f"--runtime-arg={arg}" for arg in spec.args]
        if c.config.get("OpenStdin"):
            argv.append("--stdin")
        code, message = self._run_shim_start(argv)
        if code != 0:
            message = message or f"start shim for container {c.id}: failed"
            # the runtime's own wording for a bad request stays a client error
            if "executable file not found" in message or "no such file" in message.lower():
                raise InvalidArgument(message)
            raise SystemFailure(message)

    def _run_shim_start(self, argv: list[str]) -> tuple[int, str]:
        """``argv`` (``python -m skiff.shim start ...``) through the zygote, else run as is."""
        if self.zygote is not None:
            try:
                return self.zygote.start_shim(argv[4:])
            except Unavailable as exc:  # nothing was started: the slow way is safe
                log.warning("%s; starting the shim without it", exc)
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SystemFailure(f"start shim for container {argv[5]}: {exc}") from exc
        return res.returncode, res.stderr.strip()

    # --- take down ---------------------------------------------------------------------

    def delete_shim(self, c: Container, force: bool = False) -> None:
        """Runtime ``delete`` through the shim (which then exits); quiet if it is gone."""
        state_dir = self.paths.shim(c.id)
        if os.path.exists(state_dir):
            try:
                self.shim(c.id).delete(force=force)
            except (Unavailable, SystemFailure, OSError):
                # the shim is gone (killed): clean up behind it ourselves
                self._runtime_delete(c)
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            self._runtime_delete(c)
        # The runtime removes the container's cgroup; should that have lost a race with a
        # dying task (EBUSY) the empty cgroup is removed here. The shared parent stays while
        # the daemon runs (see remove_cgroup_parent).
        parent = c.host_config.get("CgroupParent") or SpecInputs.cgroup_parent
        if isinstance(parent, str) and parent.startswith("/") and not parent.endswith(".slice"):
            _remove_empty_cgroup(f"{parent.rstrip('/')}/{c.id}")

    @staticmethod
    def remove_cgroup_parent() -> None:
        """The containers' shared parent cgroup, if none is left in it: when the daemon
        stops, not with every container (made and removed around each one, it cost ~20
        cgroup mkdirs and rmdirs of every `run --rm` on cgroup v1). Docker keeps its own."""
        remove_if_empty(SpecInputs.cgroup_parent)  # quiet where busy (a container left)

    def _runtime_delete(self, c: Container) -> None:
        try:
            spec, root = self.runtime_spec(c), self.runtime_root_for(c)
        except InvalidArgument:
            return  # its runtime is no longer configured: nothing we could run
        if not os.path.lexists(os.path.join(root, c.id)):
            # runc-compatible runtimes keep a container's state in <root>/<id>: without it
            # there is nothing to delete (the usual case: the shim already did), and a
            # runtime process would cost ~20 ms of every `run --rm` for nothing
            return
        subprocess.run([spec.path, *spec.args, "--root", root, "delete", "--force", c.id],
                       capture_output=True, check=False, timeout=60)

    def teardown(self, c: Container) -> None:
        """Unmount the rootfs, remove the bundle, release the network (the snapshot stays)."""
        self.take_down_bundle(c)
        self.release_network(c)

    def take_down_bundle(self, c: Container) -> None:
        """Detach the volumes, unmount the rootfs and remove the bundle."""
        rootfs = self.paths.rootfs(c.id)
        if self.volumes is not None:
            self.volumes.detach(c)
        with contextlib.suppress(FileNotFoundError):
            if is_mountpoint(rootfs):
                unmount_all(rootfs, detach=True)
        shutil.rmtree(self.paths.bundle(c.id), ignore_errors=True)

    def release_network(self, c: Container) -> None:
        if self.network is not None:  # endpoints, ports, DNS, the netns file
            self.network.release(c)

    def exit_record(self, cid: str) -> dict[str, Any] | None:
        """The shim's exit.json, for a container that exited while the daemon was away."""
        return exitfile.read(self.paths.shim(cid))

    def remove_files(self, cid: str) -> None:
        """The container's directory (logs, etc files) and network records."""
        if self.network is not None:
            self.network.forget(cid)
        shutil.rmtree(self.paths.container_dir(cid), ignore_errors=True)

    def recorded_ids(self) -> list[str]:
        """The containers that have a directory here (a record or not)."""
        try:
            names = os.listdir(os.path.join(self.paths.data_root, "containers"))
        except FileNotFoundError:
            return []
        return [n for n in names if is_full_id(n)]
