"""The line level of a Dockerfile: directives, comments, continuations and heredoc bodies.

Turns the text into logical lines (:class:`RawLine`), each one instruction with its keyword,
its leading ``--flags`` (still unparsed strings), the rest of the line, the heredoc bodies that
follow it, and the first/last physical line numbers. What the arguments mean is the business
of :mod:`skiff.services.builder.parser`.

Docker's rules, kept here on purpose:
- parser directives (``# name=value``) count only in the leading block of comment lines; the
  first other line (even a blank one or an unknown comment) ends that block;
- a line ending in the escape character (trailing blanks allowed) continues on the next;
  comment lines and blank lines inside a continuation are dropped;
- heredocs (``<<EOF``, ``<<-EOF``, quoted names) are read after the logical line, for RUN, COPY
  and ADD only, one body per marker in the order the markers appear.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from skiff.errors import InvalidArgument

from .words import split_words

__all__ = [
    "DockerfileError",
    "Heredoc",
    "RawLine",
    "extract_flags",
    "heredoc_marker",
    "json_array",
    "read_lines",
]

_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")


class DockerfileError(InvalidArgument):
    """A Dockerfile problem, located: ``dockerfile parse error on line N: ...``."""

    def __init__(self, line: int, problem: str, name: str = "Dockerfile") -> None:
        where = f"line {line}" if name == "Dockerfile" else f"line {line} of {name}"
        super().__init__(f"dockerfile parse error on {where}: {problem}")
        self.line = line
        self.problem = problem
        self.name = name


@dataclass(frozen=True)
class Heredoc:
    """One here-document: ``name`` is its delimiter, ``content`` its lines as written (each
    ending in a newline); ``expand`` is False when the delimiter was quoted (no variable
    expansion); ``chomp`` is True for ``<<-``, whose :attr:`body` loses its leading tabs."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False

    @property
    def body(self) -> str:
        """The content as the file or script it stands for (tabs stripped for ``<<-``)."""
        if not self.chomp:
            return self.content
        return re.sub(r"(?m)^\t+", "", self.content)


@dataclass(frozen=True)
class RawLine:
    keyword: str  # as written; compare with .lower()
    flags: tuple[str, ...]  # e.g. ("--from=build",), quotes removed
    rest: str  # the arguments, stripped
    original: str  # the logical line as written (continuations joined)
    line: int
    end_line: int
    heredocs: tuple[Heredoc, ...] = ()


def _strip_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Return (line without its continuation mark, True if the logical line ends here).

    Like Docker, an escape character that is itself escaped (``echo \\\\``) does not
    continue the line; a line holding only the escape character does.
    """
    stripped = line.rstrip(" \t")
    if not stripped.endswith(escape):
        return line, True
    body = stripped[: -len(escape)]
    if body and body.endswith(escape):
        return line, True
    return body, False


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


class _Directives:
    def __init__(self, name: str) -> None:
        self.values: dict[str, str] = {}
        self.done = False
        self.name = name

    def feed(self, line: str, number: int) -> bool:
        """Consume a possible directive line; True when it was one."""
        if self.done:
            return False
        match = _DIRECTIVE.match(line)
        if not match:
            self.done = True
            return False
        key, value = match.group(1).lower(), match.group(2)
        if key not in _KNOWN_DIRECTIVES:
            # An unknown `# x=y` is an ordinary comment, and it ends the directive block.
            self.done = True
            return False
        if key in self.values:
            raise DockerfileError(number, f"only one {key} parser directive can be used", self.name)
        if key == "escape" and value not in ("\\", "`"):
            raise DockerfileError(
                number, f"invalid escape token '{value}' does not match ` or \\", self.name
            )
        self.values[key] = value
        return True


def _split_command(line: str) -> tuple[str, tuple[str, ...], str]:
    parts = line.strip().split(None, 1)
    keyword = parts[0]
    if len(parts) == 1:
        return keyword, (), ""
    flags, rest = extract_flags(parts[1])
    return keyword, flags, rest.strip()


def extract_flags(text: str) -> tuple[tuple[str, ...], str]:
    """Take the leading ``--name[=value]`` words off ``text``; ``--`` alone ends them.

    Quotes in a flag value are removed (``--chown="a b"``). Returns (flags, remaining text).
    """
    flags: list[str] = []
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if not text.startswith("--", pos):
            break
        word: list[str] = []
        quote = ""
        while pos < n and (quote or not text[pos].isspace()):
            ch = text[pos]
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    word.append(ch)
            elif ch in ("'", '"'):
                quote = ch
            else:
                word.append(ch)
            pos += 1
        flag = "".join(word)
        if flag == "--":
            break
        flags.append(flag)
    return tuple(flags), text[pos:]


def json_array(rest: str) -> list[str] | None:
    """Docker's exec-form test: ``rest`` is a JSON array of strings (else it is shell form).

    A JSON array holding anything but strings is an error, not shell form.
    """
    text = rest.lstrip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise InvalidArgument(
            "when using JSON array syntax, arrays must be comprised of strings only"
        )
    return value


def heredoc_marker(word: str, escape: str = "\\") -> tuple[str, bool, bool] | None:
    """(name, expand, chomp) when ``word`` is a heredoc marker such as ``<<EOF``,
    ``<<-"EOF"`` or ``3<<EOF``; None otherwise. Any quoting of the name turns expansion off."""
    match = _HEREDOC_WORD.match(word)
    if not match or not match.group(3):
        return None
    spec = match.group(3)
    names = split_words(spec, escape)
    if len(names) != 1:
        return None
    quoted = any(q in spec for q in "'\"")
    return names[0], not quoted, match.group(2) == "-"


def _heredoc_markers(rest: str, escape: str) -> list[tuple[str, bool, bool]]:
    """The heredoc markers of an instruction's arguments, in order."""
    found = (heredoc_marker(word, escape) for word in _words_keeping_quotes(rest))
    return [marker for marker in found if marker is not None]


def _words_keeping_quotes(rest: str) -> list[str]:
    # A quote-aware split that keeps the quotes, so `<<"EOF"` can be told from `<<EOF` and a
    # marker inside a quoted string (`echo "<<EOF"`) is no heredoc.
    words: list[str] = []
    word: list[str] = []
    quote = ""
    for ch in rest + " ":
        if quote:
            word.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch.isspace():
            if word:
                words.append("".join(word))
                word = []
            continue
        if ch in ("'", '"'):
            quote = ch
        word.append(ch)
    return words


def _may_hold_heredocs(keyword: str, rest: str) -> bool:
    lowered = keyword.lower()
    if lowered == "onbuild":
        parts = rest.split(None, 1)
        if not parts:
            return False
        lowered = parts[0].lower()
        rest = parts[1] if len(parts) > 1 else ""
        rest = extract_flags(rest)[1]
    if lowered not in _HEREDOC_KEYWORDS:
        return False
    try:
        return json_array(rest) is None
    except InvalidArgument:
        return False


def read_lines(text: str, name: str = "Dockerfile") -> tuple[dict[str, str], list[RawLine]]:
    """Split ``text`` into directives and logical instruction lines."""
    if text.startswith("\ufeff"):
        text = text[1:]
    # Only "\n" ends a line (str.splitlines would also split on form feeds and U+2028).
    physical = [line.removesuffix("\r") for line in text.split("\n")]
    if physical and physical[-1] == "":
        physical.pop()
    directives = _Directives(name)
    escape = "\\"
    out: list[RawLine] = []
    i = 0
    total = len(physical)
    while i < total:
        raw = physical[i]
        number = i + 1
        i += 1
        if directives.feed(raw.strip(), number):
            escape = directives.values.get("escape", "\\")
            continue
        if _is_comment(raw):
            continue
        line, finished = _strip_continuation(raw.lstrip(), escape)
        if finished and not line.strip():
            continue
        pieces = [line]
        while not finished and i < total:
            nxt = physical[i]
            i += 1
            if _is_comment(nxt) or not nxt.strip():
                continue  # Docker drops these inside a continuation
            piece, finished = _strip_continuation(nxt, escape)
            pieces.append(piece)
        logical = "".join(pieces)
        end = i
        if not logical.strip():
            continue
        keyword, flags, rest = _split_command(logical)
        heredocs: list[Heredoc] = []
        if _may_hold_heredocs(keyword, rest):
            for doc_name, expand, chomp in _heredoc_markers(rest, escape):
                body: list[str] = []
                while True:
                    if i >= total:
                        raise DockerfileError(number, "unterminated heredoc", name)
                    candidate = physical[i]
                    i += 1
                    if (candidate.lstrip("\t") if chomp else candidate) == doc_name:
                        break
                    body.append(candidate + "\n")
                heredocs.append(Heredoc(doc_name, "".join(body), expand, chomp))
            end = i
        out.append(
            RawLine(
                keyword=keyword,
                flags=flags,
                rest=rest,
                original=logical.strip(),
                line=number,
                end_line=end,
                heredocs=tuple(heredocs),
            )
        )
    values = dict(directives.values)
    values.setdefault("escape", "\\")
    return values, out
