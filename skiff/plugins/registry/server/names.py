"""What a repository name, a tag and a digest may look like (the distribution spec's grammar).

Names are checked against the grammar before they touch the filesystem: a component can only
be lowercase alphanumerics joined by ``.``, ``_``, ``__`` or dashes, so ``..``, empty
components, absolute paths and our own ``_``-prefixed bookkeeping directories can never be
named by a client.
"""

from __future__ import annotations

import re

from skiff.core.content import Digest
from skiff.errors import InvalidArgument

from .errors import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME = 255


def check_name(name: str) -> str:
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise RegistryError("NAME_INVALID", {"name": name[:300]})
    return name


def parse_digest(text: str, code: str = "DIGEST_INVALID") -> Digest:
    try:
        return Digest.parse(text)
    except InvalidArgument as exc:
        raise RegistryError(code, {"digest": text[:200], "reason": str(exc)}) from exc


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_reference(reference: str) -> str:
    """A manifest reference: a tag or a digest; refuse anything else before it names a file."""
    if is_digest(reference):
        parse_digest(reference)
    elif not TAG_RE.match(reference):
        raise RegistryError("MANIFEST_INVALID", {"reference": reference[:200],
                                                 "reason": "not a valid tag"},
                            message="invalid tag")
    return reference
