"""``skiff-runtime features``: what this runtime implements, in the OCI features schema."""

from __future__ import annotations

from skiff.runtime.config import HOOK_POINTS, NAMESPACE_TYPES
from skiff.runtime.mounts import ALL_OPTIONS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

def features() -> dict[str, Any]:
    from skiff.runtime import capabilities
    from skiff.runtime.seccomp_spec import ACTIONS, FLAGS, OPERATORS

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": list(HOOK_POINTS),
        "mountOptions": sorted(ALL_OPTIONS),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": sorted(capabilities.CAPABILITIES, key=lambda c: capabilities.CAPABILITIES[c]),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": True,
                # NOTIFY needs a listener we do not implement (compile refuses it).
                "actions": [a for a in ACTIONS if a != "SCMP_ACT_NOTIFY"],
                "operators": list(OPERATORS),
                # The architectures our compiler has syscall tables for.
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "knownFlags": list(FLAGS),
                # WAIT_KILLABLE_RECV only means something with a NOTIFY listener.
                "supportedFlags": [f for f in FLAGS
                                   if f != "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runc.version": "skiff-runtime 0.1.0"},
    }
