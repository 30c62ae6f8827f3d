"""Image references, parsed and normalised exactly as Docker does.

``busybox`` -> ``docker.io/library/busybox:latest``; ``host:5000/a/b:tag`` keeps its registry;
``name@sha256:...`` pins a digest. The grammar is the one of Docker's distribution reference
package (components lowercase, separators ``.``, ``_``, ``__`` or runs of ``-``; a tag of at most
128 word characters; a name of at most 255 characters), and the error messages follow its
wording so that users see the same complaints they know from docker.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skiff.core.content import Digest
from skiff.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)$")
_ANCHORED_ID_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: registry domain, repository path, optional tag and digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The fully qualified repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The repository path the registry API uses (``library/busybox``)."""
        return self.path

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def familiar_name(self) -> str:
        """The short name docker prints: ``busybox``, ``user/app``, ``host:5000/a``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX):]:
            path = path[len(OFFICIAL_REPO_PREFIX):]
        return path

    def familiar(self) -> str:
        """The short form with tag and digest: ``busybox:latest``."""
        out = self.familiar_name()
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        if not re.fullmatch(_TAG, tag):
            raise InvalidArgument(f"invalid tag format {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def name_only(self) -> Reference:
        return Reference(self.domain, self.path)

    @property
    def is_name_only(self) -> bool:
        return self.tag is None and self.digest is None


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry only if it looks like a host.

    It does when it contains ``.`` or ``:``, is ``localhost``, or has uppercase letters (which a
    repository path may not); otherwise the name lives on Docker Hub.
    """
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _parse_digest(text: str) -> Digest:
    algo, _, hexpart = text.partition(":")
    if algo not in ("sha256", "sha512"):
        raise InvalidArgument(f"invalid reference format: unsupported digest algorithm {algo!r}")
    want = 64 if algo == "sha256" else 128
    if len(hexpart) != want:
        raise InvalidArgument(f"invalid reference format: invalid checksum digest length in {text!r}")
    if hexpart.lower() != hexpart:
        raise InvalidArgument(f"invalid reference format: invalid checksum digest format {text!r}")
    return Digest.parse(text)


def _parse_strict(text: str, original: str) -> tuple[str, str | None, Digest | None]:
    """Match the whole reference grammar; return (name, tag, digest) or raise Docker's error."""
    m = _REFERENCE_RE.match(text)
    if m is None:
        if _REFERENCE_RE.match(text.lower()) is not None:
            raise InvalidArgument(f"invalid reference format: repository name ({original}) must be lowercase")
        raise InvalidArgument(f"invalid reference format: {original!r}")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"invalid reference format: repository name must not be more than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    return name, tag, _parse_digest(digest) if digest else None


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse a user-supplied reference with Docker's normalisation.

    A reference with neither tag nor digest gets ``:latest`` unless ``default_tag`` is false.
    Raises InvalidArgument with the reason on anything Docker would refuse.
    """
    if text == "":
        raise InvalidArgument("invalid reference format: repository name must have at least one component")
    if _ANCHORED_ID_RE.match(text):
        raise InvalidArgument(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    # Split off tag/digest first, so the domain rule only ever sees the name part.
    name_part, at, digest_part = text.partition("@")
    tag_part: str | None = None
    slash = name_part.rfind("/")
    colon = name_part.rfind(":")
    if colon > slash:
        name_part, tag_part = name_part[:colon], name_part[colon + 1:]
    domain, remainder = _split_domain(name_part)
    if remainder.lower() != remainder:
        raise InvalidArgument(
            f"invalid reference format: repository name ({remainder}) must be lowercase"
        )
    full = f"{domain}/{remainder}"
    if tag_part is not None:
        full += f":{tag_part}"
    if at:
        full += f"@{digest_part}"
    name, tag, digest = _parse_strict(full, text)
    nm = _NAME_RE.match(name)
    if nm is None:  # pragma: no cover - _REFERENCE_RE already matched the same grammar
        raise InvalidArgument(f"invalid reference format: {text!r}")
    ref = Reference(nm.group(1) or DEFAULT_DOMAIN, nm.group(2), tag, digest)
    if default_tag and ref.is_name_only:
        ref = Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def parse_repository(text: str) -> Reference:
    """A repository name without tag or digest (``docker tag``'s target repo, ``docker push``)."""
    ref = parse_reference(text, default_tag=False)
    if not ref.is_name_only:
        raise InvalidArgument(f"invalid repository name {text!r}: tag or digest not allowed here")
    return ref


def is_full_id(text: str) -> bool:
    """True for a bare 64-hex image ID (which is never a repository name)."""
    return _ANCHORED_ID_RE.match(text) is not None
