"""User resolution: Docker's rules for -u and --group-add against the image's files."""

from __future__ import annotations

import pytest

from skiff.errors import InvalidArgument
from skiff.services.spec import ResolvedUser, parse_group, parse_passwd, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment, and a broken line follow
broken:x:notanumber:0::/:/bin/false
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
twin:x:1000:7::/:/bin/sh
"""
GROUP = """\
root:x:0:
tty:x:5:app
users:x:100:app,other
app:x:1000:
audio:x:29:
dup:x:29:
"""


def test_parse_passwd_skips_comments_and_malformed_lines() -> None:
    entries = parse_passwd(PASSWD)
    assert [e.name for e in entries] == ["root", "daemon", "app", "twin"]
    assert entries[2].uid == 1000 and entries[2].gid == 1000 and entries[2].home == "/home/app"


def test_parse_group_reads_member_lists() -> None:
    groups = {g.name: g for g in parse_group(GROUP)}
    assert groups["users"].members == ("app", "other")
    assert groups["root"].members == ()
    assert groups["tty"].gid == 5


def test_empty_user_is_root_with_its_gid_first() -> None:
    assert resolve_user("", PASSWD, GROUP) == ResolvedUser(0, 0, (0,))


def test_name_takes_passwd_ids_and_member_groups() -> None:
    # app is listed in tty and users: those become supplementary groups.
    assert resolve_user("app", PASSWD, GROUP) == ResolvedUser(1000, 1000, (1000, 5, 100))


def test_numeric_uid_matches_first_entry() -> None:
    assert resolve_user("1000", PASSWD, GROUP) == ResolvedUser(1000, 1000, (1000, 5, 100))


def test_unknown_numeric_uid_runs_as_given_with_gid_0() -> None:
    assert resolve_user("4242", PASSWD, GROUP) == ResolvedUser(4242, 0, (0,))


def test_explicit_group_replaces_gid_and_drops_member_groups() -> None:
    assert resolve_user("app:tty", PASSWD, GROUP) == ResolvedUser(1000, 5, (5,))
    assert resolve_user("1000:77", PASSWD, GROUP) == ResolvedUser(1000, 77, (77,))


def test_group_add_by_name_and_number_after_the_rest() -> None:
    user = resolve_user("app:tty", PASSWD, GROUP, ["users", "42", "audio", "29"])
    assert user == ResolvedUser(1000, 5, (5, 100, 42, 29))


def test_missing_files_still_allow_numeric_ids() -> None:
    assert resolve_user("12:34", None, None) == ResolvedUser(12, 34, (34,))
    assert resolve_user("", None, None) == ResolvedUser(0, 0, (0,))


@pytest.mark.parametrize("spec, message", [
    ("nobody", "unable to find user nobody: no matching entries in passwd file"),
    ("app:nogroup", "unable to find group nogroup: no matching entries in group file"),
    ("-1", "uids and gids must be in range 0-2147483647"),
    ("0:4294967296", "uids and gids must be in range 0-2147483647"),
])
def test_bad_user_specs(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_user(spec, PASSWD, GROUP)


def test_group_add_unknown_name() -> None:
    with pytest.raises(InvalidArgument, match="Unable to find group wheel"):
        resolve_user("", PASSWD, GROUP, ["wheel"])
