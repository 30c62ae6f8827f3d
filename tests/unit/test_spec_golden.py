"""skiff's spec builder against what dockerd 20.10 wrote for runc, case by case.

Each file in tests/golden/spec was recorded by tests/integration/test_spec_golden.py: the
``docker create`` flags, the Config/HostConfig dockerd stored (``docker inspect``), the host
facts the daemon looks up (ids, paths of the rootfs, /etc files, volumes, device numbers, the
image's passwd/group text) and dockerd's config.json. Here the builder runs on the same
input, offline, and must produce the same spec after :func:`normalise`, which only removes
what legitimately differs (see its docstring).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from skiff.services.spec import (
    ALL_CAPS,
    DeviceNode,
    EtcFiles,
    HostDevice,
    ResolvedMount,
    SpecInputs,
    apply_create_defaults,
    build_spec,
    parse_api_mount,
    parse_bind,
    resolve_user,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "spec"
PROFILE = Path(__file__).resolve().parents[2] / "skiff" / "runtime" / "data" / \
    "seccomp-default.json"
# dockerd 20.10's capability library stops at CAP_AUDIT_READ (37); skiff knows 38-40 too.
DOCKERD_20_CAPS = list(ALL_CAPS[:38])


def normalise(spec: dict[str, Any]) -> dict[str, Any]:
    """What may differ between dockerd's spec and ours, and why:

    - ``hooks``: dockerd adds libnetwork's ``libnetwork-setkey`` prestart hook to wire its
      network sandbox; skiff's daemon prepares the namespace before the runtime starts.
    - ``linux.seccomp.syscalls`` (and ``defaultErrnoRet``): dockerd 20.10 embeds an older
      version of the default profile than the shared JSON skiff resolves; the resolution
      itself is checked in test_spec.py. Whether there is a filter, its default action and
      architectures must still match.
    - the order of mounts at the same depth: dockerd takes binds and volumes from a Go map, so
      their order among equals is random; mounts at equal depth cannot be nested, so sorting
      them by destination loses nothing.
    - ``additionalGids`` after the first (the primary gid): dockerd builds GroupAdd from a Go
      map as well.
    """
    out: dict[str, Any] = json.loads(json.dumps(spec))
    out.pop("hooks", None)
    seccomp = out.get("linux", {}).get("seccomp")
    if seccomp is not None:
        seccomp.pop("defaultErrnoRet", None)
        seccomp["syscalls"] = "<rules of the default profile>"
    out["mounts"] = sorted(out.get("mounts", []),
                           key=lambda m: (m["destination"].count("/"), m["destination"]))
    user = out.get("process", {}).get("user")
    if user and user.get("additionalGids"):
        gids = user["additionalGids"]
        user["additionalGids"] = gids[:1] + sorted(gids[1:])
    return out


def _profile() -> dict[str, Any]:
    return dict(json.loads(PROFILE.read_text()))


def inputs_from_record(record: dict[str, Any]) -> SpecInputs:
    facts = record["facts"]
    hc = record["host_config"]
    user = resolve_user(record["config"].get("User") or "", facts["passwd"], facts["group"],
                        hc.get("GroupAdd"))
    return SpecInputs(
        container_id=facts["container_id"],
        rootfs=facts["rootfs"],
        user=user,
        mounts=[ResolvedMount(**m) for m in facts["mounts"]],
        etc_files=EtcFiles(**facts["etc_files"]),
        netns_path=facts.get("netns_path"),
        namespace_paths=facts.get("namespace_paths", {}),
        shm_path=facts.get("shm_path"),
        seccomp_profile=_profile(),
        init_path=facts.get("init_path"),
        device_nodes={p: DeviceNode(**n) for p, n in facts.get("device_nodes", {}).items()},
        host_devices=[HostDevice(d["path"], DeviceNode(**d["node"]))
                      for d in facts.get("host_devices", [])],
        cgroup_parent="/docker",
        all_caps=DOCKERD_20_CAPS,
        apparmor=facts.get("apparmor", False),
    )


def build_from_record(record: dict[str, Any]) -> dict[str, Any]:
    return build_spec(record["config"], record["host_config"], inputs_from_record(record))


def _cases() -> list[Path]:
    return sorted(GOLDEN.glob("*.json"))


def test_golden_cases_are_recorded() -> None:
    # The table in tests/integration/test_spec_golden.py writes ~30 of these.
    assert len(_cases()) >= 25, f"golden specs missing under {GOLDEN}"


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_spec_matches_dockerd(path: Path) -> None:
    record = json.loads(path.read_text())
    ours = normalise(build_from_record(record))
    theirs = record["expected"]
    for key in sorted(set(ours) | set(theirs)):
        assert ours.get(key) == theirs.get(key), f"{path.stem}: spec.{key} differs"


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_bind_parsing_matches_dockerd(path: Path) -> None:
    """Binds strings and Mounts objects parse to the flags dockerd gave each mount; only a
    volume's host path (the volume driver's answer) is taken from dockerd's record."""
    record = json.loads(path.read_text())
    hc = record["host_config"]
    requests = [parse_bind(b) for b in hc.get("Binds") or []]
    requests += [r for m in hc.get("Mounts") or [] if (r := parse_api_mount(m)) is not None]
    docker = {m["destination"]: m for m in record["facts"]["mounts"]}
    ours = {}
    for req in requests:
        host = docker[req.destination]["source"] if req.kind == "volume" else None
        ours[req.destination] = dataclasses.asdict(req.resolved(host))
    assert ours == docker


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_stored_host_config_already_has_our_defaults(path: Path) -> None:
    # dockerd stored its adapted HostConfig: adapting it again must change nothing.
    hc = json.loads(path.read_text())["host_config"]
    assert apply_create_defaults(hc) == hc
