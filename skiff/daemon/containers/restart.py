"""Restart policies (``--restart``) and the back-off between restarts, as dockerd applies them.

Pure decisions, no I/O: the manager asks :func:`should_restart` after every exit and sleeps
for what :class:`Backoff` says before starting the container again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skiff.errors import InvalidArgument

NO, ALWAYS, UNLESS_STOPPED, ON_FAILURE = "no", "always", "unless-stopped", "on-failure"
POLICIES = (NO, ALWAYS, UNLESS_STOPPED, ON_FAILURE)

# dockerd's numbers: the first wait is 100 ms, each next one doubles, a minute at most; a run
# of 10 s or more counts as healthy and starts the sequence over.
INITIAL_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


@dataclass(frozen=True)
class RestartPolicy:
    name: str = NO
    max_retries: int = 0  # on-failure only; 0 means no limit

    @classmethod
    def parse(cls, value: object) -> RestartPolicy:
        """HostConfig.RestartPolicy ({"Name", "MaximumRetryCount"}), checked as dockerd does."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InvalidArgument("invalid restart policy: RestartPolicy must be an object")
        name = value.get("Name") or NO
        if not isinstance(name, str) or name not in POLICIES:
            raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one of "
                                  "'no', 'always', 'on-failure', or 'unless-stopped'")
        count = value.get("MaximumRetryCount") or 0
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidArgument("invalid restart policy: MaximumRetryCount must be an integer")
        if count < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count can't be "
                                  "negative")
        if count and name != ON_FAILURE:
            raise InvalidArgument(f"invalid restart policy: maximum retry count can only be "
                                  f"used with 'on-failure' (not '{name}')")
        return cls(name, count)

    @property
    def restarts(self) -> bool:
        """Any policy other than ``no``."""
        return self.name != NO

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "MaximumRetryCount": self.max_retries}


def check_host_config(hc: Mapping[str, Any]) -> RestartPolicy:
    """The policy of a create/update request; AutoRemove and a restart policy exclude each
    other (dockerd's wording)."""
    policy = RestartPolicy.parse(hc.get("RestartPolicy"))
    if policy.restarts and hc.get("AutoRemove"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    return policy


def should_restart(policy: RestartPolicy, *, exit_code: int, restart_count: int,
                   manually_stopped: bool) -> bool:
    """After an exit: start again? An explicit stop or kill always wins."""
    if manually_stopped:
        return False
    if policy.name in (ALWAYS, UNLESS_STOPPED):
        return True
    if policy.name == ON_FAILURE:
        return exit_code != 0 and (policy.max_retries == 0
                                   or restart_count < policy.max_retries)
    return False


def restore_on_boot(policy: RestartPolicy, *, manually_stopped: bool) -> bool:
    """When the daemon comes up: start a container that is not running? dockerd's rule:
    ``always`` even after a ``docker stop`` (that is what tells it from unless-stopped)."""
    return policy.name == ALWAYS or (policy.name == UNLESS_STOPPED and not manually_stopped)


class Backoff:
    """The wait before the next restart of one container."""

    def __init__(self, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY,
                 reset_after: float = RESET_AFTER) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self.delay = 0.0

    def next(self, ran_for: float) -> float:
        """The delay before restarting a container whose last run lasted ``ran_for`` s."""
        if ran_for >= self.reset_after:
            self.delay = 0.0
        self.delay = self.initial if self.delay == 0 else min(self.delay * 2, self.maximum)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0
