"""Docker's user resolution: "name", "uid", "uid:gid", "name:group" against the image's files.

The daemon reads the image's /etc/passwd and /etc/group (either may be missing) and hands the
text here; nothing in this module touches a file. The rules are those of moby/sys/user's
GetExecUser plus moby's getUser: the primary gid always heads additionalGids, then the groups
that list the user as a member (only when no group was named), then HostConfig.GroupAdd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skiff.errors import InvalidArgument

from .inputs import ResolvedUser

_MAX_ID = 2**31 - 1
_NUMERIC = re.compile(r"[+-]?\d+\Z")


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = ""
    shell: str = ""


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


def _lines(text: str) -> list[list[str]]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line.split(":"))
    return out


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd(5) file; lines without numeric ids are skipped, as libc does."""
    entries = []
    for f in _lines(text):
        if len(f) < 4 or not f[2].isdigit() or not f[3].isdigit():
            continue
        f += [""] * (7 - len(f))
        entries.append(PasswdEntry(f[0], int(f[2]), int(f[3]), f[5], f[6]))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group(5) file; lines without a numeric gid are skipped."""
    entries = []
    for f in _lines(text):
        if len(f) < 3 or not f[2].isdigit():
            continue
        members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
        entries.append(GroupEntry(f[0], int(f[2]), members))
    return entries


def _numeric(value: str) -> int | None:
    return int(value) if _NUMERIC.match(value) else None


def _in_range(value: int) -> int:
    if value < 0 or value > _MAX_ID:
        raise InvalidArgument(f"uids and gids must be in range 0-{_MAX_ID}")
    return value


def resolve_user(spec: str, passwd: str | None, group: str | None,
                 group_add: list[str] | None = None) -> ResolvedUser:
    """Config.User (+ HostConfig.GroupAdd) -> ids, given the image's passwd/group text or None.

    Unknown names are errors; unknown numeric ids are fine (Docker runs them as given).
    """
    user_arg, _, group_arg = spec.partition(":")
    users = parse_passwd(passwd or "")
    groups = parse_group(group or "")
    uid_num = _numeric(user_arg)
    uid, gid = 0, 0
    matched: PasswdEntry | None = None
    for entry in users:
        if (entry.uid == 0 if user_arg == "" else
                entry.uid == uid_num if uid_num is not None else entry.name == user_arg):
            matched = entry
            break
    if matched is not None:
        uid, gid = matched.uid, matched.gid
    elif user_arg:
        if uid_num is None:
            raise InvalidArgument(f"unable to find user {user_arg}: "
                                  "no matching entries in passwd file")
        uid = _in_range(uid_num)

    supplementary: list[int] = []
    if group_arg:
        gid_num = _numeric(group_arg)
        found = next((g for g in groups if (g.gid == gid_num if gid_num is not None
                                            else g.name == group_arg)), None)
        if found is not None:
            gid = found.gid
        elif gid_num is None:
            raise InvalidArgument(f"unable to find group {group_arg}: "
                                  "no matching entries in group file")
        else:
            gid = _in_range(gid_num)
    elif matched is not None:
        # Membership lists only count when no group was named (moby's "implicit form").
        supplementary = [g.gid for g in groups if matched.name in g.members]

    extra = additional_groups(group_add or [], groups)
    gids = [gid]
    for g in supplementary + extra:
        gids.append(g)
    return ResolvedUser(uid, gid, tuple(gids))


def additional_groups(names: list[str], groups: list[GroupEntry]) -> list[int]:
    """GroupAdd: names or numbers; a name must exist in the image's group file."""
    out: list[int] = []
    for name in names:
        found = next((g for g in groups if g.name == name or str(g.gid) == name), None)
        if found is not None:
            gid = found.gid
        else:
            num = _numeric(name)
            if num is None:
                raise InvalidArgument(f"Unable to find group {name}: "
                                      "no matching entries in group file")
            gid = _in_range(num)
        # Docker keeps the set in a map, so a group named twice counts once.
        if gid not in out:
            out.append(gid)
    return out
