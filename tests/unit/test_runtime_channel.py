"""The setup channel reports the child's own error when the child exits early."""

from __future__ import annotations

import pytest

from skiff.errors import SystemFailure
from skiff.runtime.process.channel import Channel, ChildError


def test_send_to_a_child_that_failed_reports_its_error() -> None:
    parent, child = Channel.pair()
    child.send("error", message='exec: "x": executable file not found in $PATH')
    child.close()
    with pytest.raises(ChildError, match="executable file not found"):
        parent.send("seccomp", program="00")
    parent.close()


def test_recv_after_the_child_closed_with_our_message_unread() -> None:
    parent, child = Channel.pair()
    parent.send("seccomp", program="00")  # the child never reads this ...
    child.send("error", message="setup failed: boom")
    child.close()  # ... and closes with it queued: the kernel reports ECONNRESET once
    with pytest.raises(ChildError, match="boom"):
        parent.recv("ready")
    parent.close()


def test_a_child_gone_without_a_word_is_a_system_failure() -> None:
    parent, child = Channel.pair()
    child.close()
    with pytest.raises(SystemFailure):
        parent.send("seccomp", program="00")
    parent.close()
