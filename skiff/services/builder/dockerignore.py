""".dockerignore: Docker's pattern rules (moby's patternmatcher) and the context walk.

Rules kept from Docker:
- lines starting with ``#`` are comments (only in the first column), blank lines are skipped,
  surrounding blanks trimmed; ``!`` marks an exception; each pattern is cleaned like Go's
  ``filepath.Clean`` and a leading ``/`` dropped, so ``/a``, ``./a`` and ``a/`` all mean ``a``;
- a pattern is Go's ``filepath.Match`` (``*``, ``?``, ``[...]``, ``\\`` escapes) plus ``**``
  for any number of directories; it matches a path or any of its parent directories;
- the last matching pattern wins, so ``!`` re-includes what an earlier line excluded;
- an excluded directory is still walked when some exception pattern lies below it (``dir``
  + ``!dir/keep``), but the directory entry itself is then not sent.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from skiff.errors import InvalidArgument, os_error

__all__ = ["Matcher", "Pattern", "load", "load_file", "walk"]


def _quote(text: str) -> str:
    """Go's %q (Docker's messages quote names with double quotes)."""
    return json.dumps(text, ensure_ascii=False)


class _Kind(Enum):
    EXACT = 1
    PREFIX = 2  # "dir/**"
    SUFFIX = 3  # "**/name"
    REGEXP = 4


_REGEX_ONLY_SPECIALS = ".+()|{}$"


def _clean(path: str) -> str:
    """Go's filepath.Clean for slash paths (posixpath.normpath keeps a leading '//')."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the `!`
    exclusion: bool
    kind: _Kind
    regexp: re.Pattern[str] | None

    @classmethod
    def compile(cls, line: str) -> Pattern:
        text = _clean(line.strip())
        exclusion = text.startswith("!")
        if exclusion:
            text = text[1:]
            if not text:
                raise InvalidArgument('illegal exclusion pattern: "!"')
        try:
            kind, source = _translate(text)
            regexp = re.compile(source) if kind is _Kind.REGEXP else None
            # Go validates every pattern with filepath.Match; a bad one fails the build.
            re.compile(_translate_plain(text))
        except re.error as exc:
            raise InvalidArgument(f"syntax error in pattern: {_quote(line)}") from exc
        return cls(text, exclusion, kind, regexp)

    def match(self, path: str) -> bool:
        if self.kind is _Kind.EXACT:
            return path == self.text
        if self.kind is _Kind.PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind is _Kind.SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regexp is not None
        return self.regexp.match(path) is not None


def _translate(pattern: str) -> tuple[_Kind, str]:
    """Pattern -> (match kind, regular expression), the way moby classifies patterns."""
    out = ["^"]
    kind = _Kind.EXACT
    i = 0
    n = len(pattern)
    index = 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" behaves as "**"
                if i >= n:
                    # Trailing "**" matches everything below, as in .gitignore.
                    if kind is _Kind.EXACT:
                        kind = _Kind.PREFIX
                    else:
                        out.append(".*")
                        kind = _Kind.REGEXP
                else:
                    out.append("(.*/)?")
                    kind = _Kind.REGEXP
                if index == 0:
                    kind = _Kind.SUFFIX
            else:
                out.append("[^/]*")
                kind = _Kind.REGEXP
        elif ch == "?":
            out.append("[^/]")
            kind = _Kind.REGEXP
        elif ch in _REGEX_ONLY_SPECIALS:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
                kind = _Kind.REGEXP
            else:
                out.append("\\\\")
        elif ch == "[":
            end = _class_end(pattern, i)
            if end < 0:
                raise re.error("unclosed character class")  # Go: ErrBadPattern
            out.append(_translate_class(pattern[i:end]))
            i = end + 1
            kind = _Kind.REGEXP
        elif ch == "]":
            out.append("\\]")
            kind = _Kind.REGEXP
        else:
            out.append(ch)
        index += 1
    if kind is _Kind.REGEXP:
        out.append("$")
    return kind, "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing a class whose body starts at ``start``; -1 when unclosed.

    As in Go's regexp, a `]` right after `[` or `[^` is a literal member.
    """
    i = start
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i
        i += 1
    return -1


def _translate_class(body: str) -> str:
    # Members are escaped one by one so that Python's set syntax extensions (`[[`, `&&`, `~~`,
    # `||`) never apply; `-` stays a range operator and a leading `^` negates, as in Go.
    out = ["["]
    i = 0
    if body.startswith("^"):
        out.append("^")
        i = 1
    members = 0  # members since the last range, so `a-b-c` and `--` stay unambiguous
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(re.escape(body[i + 1]))
            members += 1
            i += 2
            continue
        if ch == "-" and members > 0 and i + 1 < len(body) and body[i + 1] != "-":
            out.append("-")  # a range operator
            members = -1
        else:
            out.append(re.escape(ch))
            members += 1
        i += 1
    out.append("]")
    return "".join(out)


def _translate_plain(pattern: str) -> str:
    # The regular expression moby would build if the pattern needed one; used only to reject
    # malformed patterns (an unclosed "[", a trailing "\\") whatever their kind.
    if pattern.endswith("\\") and not pattern.endswith("\\\\"):
        raise re.error("trailing backslash")
    body = _translate(pattern)[1]
    return body if body.endswith("$") else body + "$"


class Matcher:
    """An ordered list of patterns; the last one that matches decides."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = tuple(patterns)
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """Whether ``relpath`` (slash-separated, relative to the context) is left out.

        ``is_dir`` does not change the answer (Docker's patterns have no directory-only form:
        ``dir/`` is cleaned to ``dir``); use :meth:`must_walk` to know whether an excluded
        directory still has to be descended into.
        """
        path = _clean(relpath).lstrip("/") or "."
        if path == ".":
            return False  # Docker never excludes the context root itself
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            # An include only matters while nothing matched; an exception only after a match.
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit:
                for i in range(len(parents)):
                    if pattern.match("/".join(parents[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def must_walk(self, reldir: str) -> bool:
        """Whether an excluded directory may contain re-included paths (``!dir/x``)."""
        prefix = _clean(reldir).lstrip("/") + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def load(text: str) -> Matcher:
    """Parse the text of a .dockerignore file."""
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns: list[Pattern] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        body = line[1:].strip() if exclusion else line
        if body:
            body = _clean(body)
            if len(body) > 1 and body.startswith("/"):
                body = body[1:]
        patterns.append(Pattern.compile(("!" if exclusion else "") + body))
    return Matcher(patterns)


def load_file(context_dir: str) -> Matcher:
    """The matcher of ``context_dir/.dockerignore``; an empty one when there is none."""
    path = os.path.join(context_dir, ".dockerignore")
    try:
        with open(path, encoding="utf-8") as handle:
            return load(handle.read())
    except FileNotFoundError:
        return Matcher(())
    except OSError as exc:
        raise os_error("read", path, exc) from exc


def walk(
    context_dir: str, matcher: Matcher | None = None, *, keep: Iterable[str] = ()
) -> Iterator[str]:
    """Yield the relative paths (directories, files, symlinks) of the context to send.

    Sorted depth-first like Docker's walk; symlinks are not followed. ``keep`` names paths
    sent even when a pattern excludes them (the CLI always sends the Dockerfile and the
    .dockerignore so the builder can read them). Without ``matcher`` the context's own
    .dockerignore is used.
    """
    active = matcher if matcher is not None else load_file(context_dir)
    kept = {_clean(k).lstrip("/") for k in keep}
    yield from _walk(context_dir, "", active, kept)


def _walk(root: str, rel: str, matcher: Matcher, kept: set[str]) -> Iterator[str]:
    directory = os.path.join(root, rel) if rel else root
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise os_error("list build context directory", directory, exc) from exc
    for name in names:
        path = f"{rel}/{name}" if rel else name
        full = os.path.join(root, path)
        try:
            is_dir = stat.S_ISDIR(os.lstat(full).st_mode)
        except OSError as exc:
            raise os_error("stat build context entry", full, exc) from exc
        if path not in kept and matcher.excluded(path, is_dir):
            if is_dir and matcher.has_exclusions and matcher.must_walk(path):
                yield from _walk(root, path, matcher, kept)
            continue
        yield path
        if is_dir:
            yield from _walk(root, path, matcher, kept)
