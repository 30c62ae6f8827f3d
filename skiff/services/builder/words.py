"""Shell-like word processing for Dockerfile arguments: quoting, escapes and ``$VAR`` expansion.

This mirrors the small shell dialect Docker's builder understands (not a real shell): single
quotes are literal, double quotes allow ``$`` expansion and escape only ``"``, ``$`` and the
escape character, and outside quotes the escape character (``\\`` or the backtick chosen by
the ``# escape=`` directive) takes the next character literally. Expansion forms: ``$NAME``,
``${NAME}``, ``${NAME:-word}``, ``${NAME-word}``, ``${NAME:+word}``, ``${NAME+word}``,
``${NAME:?msg}`` and ``${NAME?msg}``; an unset variable expands to the empty string.

Two views of the same text exist because Docker uses both:

- :meth:`Expander.expand` gives ONE string with quotes removed (ENV values, WORKDIR, USER, ...);
- :meth:`Expander.expand_words` splits on unquoted whitespace, after expansion, so that
  ``EXPOSE $PORTS`` with ``PORTS="80 443"`` gives two words.

:func:`split_raw` is the parser's tokenizer for ``name=value`` lists (ENV, LABEL, ARG): it splits
on unquoted whitespace but keeps quotes and escapes in each word, because those are removed only
later, at expansion time, when the variables are known.
"""

from __future__ import annotations

from collections.abc import Mapping

from skiff.errors import InvalidArgument

__all__ = ["Expander", "split_raw", "split_words"]

# Parameters a POSIX shell treats specially after `$`; Docker reads them as one-character names
# (so `$@` is looked up as "@" and is normally unset, i.e. empty).
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class _Words:
    """Accumulates words; whitespace produced by expansion splits, quoted text never does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self._current: list[str] = []

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            self._finish()
        else:
            self._current.append(ch)

    def add_raw(self, text: str) -> None:
        self._current.append(text)

    def add_expanded(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def _finish(self) -> None:
        # Like Docker, a word that ends up empty (e.g. a bare "") is dropped.
        word = "".join(self._current)
        if word:
            self.words.append(word)
        self._current = []

    def result(self) -> list[str]:
        self._finish()
        return self.words


class _Lexer:
    """One pass over one string; ``raw`` keeps quotes and escapes (used for heredoc bodies)."""

    def __init__(
        self, text: str, env: Mapping[str, str], escape: str, raw: bool, expand: bool = True
    ) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw = raw
        self.expand = expand

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def process(self, stop: str = "") -> tuple[str, list[str]]:
        """Read up to ``stop`` (consumed) or the end; return (joined word, split words)."""
        result: list[str] = []
        words = _Words()
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "'" and not self.raw:
                text = self._single_quoted()
                result.append(text)
                words.add_raw(text)
            elif ch == '"' and not self.raw:
                text = self._double_quoted()
                result.append(text)
                words.add_raw(text)
            elif ch == "$" and self.expand:
                text = self._dollar()
                result.append(text)
                words.add_expanded(text)
            else:
                self.next()
                if ch == self.escape:
                    if self.raw:
                        result.append(ch)
                        words.add_raw(ch)
                    ch = self.next()
                    if not ch:  # a trailing escape character is dropped
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise InvalidArgument("syntax error: missing '}'")
        return "".join(result), words.result()

    def _single_quoted(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if not ch:
                raise InvalidArgument(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double_quoted(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise InvalidArgument(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$" and self.expand:
                out.append(self._dollar())
                continue
            self.next()
            if ch == self.escape:
                following = self.peek()
                if not following:
                    continue
                # Inside double quotes only these can be escaped; any other escape stays.
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def _name(self) -> str:
        first = self.peek()
        if first.isdigit():
            start = self.pos
            while self.peek().isdigit():
                self.next()
            return self.text[start : self.pos]
        if first and first in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start : self.pos]

    def _dollar(self) -> str:
        self.next()  # the `$`
        if self.peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.next()  # the `{`
        first = self.peek()
        if not first:
            raise InvalidArgument("syntax error: missing '}'")
        if first in "{}:":
            raise InvalidArgument("syntax error: bad substitution")
        name = self._name()
        op = self.next()
        if op == "}":
            return self.env.get(name, "")
        if not op:
            raise InvalidArgument("syntax error: missing '}'")
        colon = op == ":"
        if colon:
            op = self.next()
        if op not in ("-", "+", "?"):
            raise InvalidArgument(f"unsupported modifier ({op}) in substitution")
        word, _ = self.process(stop="}")
        is_set = name in self.env
        value = self.env.get(name, "")
        # With a colon, an empty value counts as unset (POSIX `${x:-d}` vs `${x-d}`).
        present = bool(value) if colon else is_set
        if op == "-":
            return value if present else word
        if op == "+":
            return word if present else ""
        if not present:
            default = "is not allowed to be empty" if colon else "is not allowed to be unset"
            raise InvalidArgument(f"{name}: {word or default}")
        return value


class Expander:
    """Expands Docker-style variable references against a fixed environment."""

    def __init__(self, env: Mapping[str, str], escape: str = "\\") -> None:
        self.env = env
        self.escape = escape

    def expand(self, word: str) -> str:
        """One string: variables expanded, quotes and escapes removed, no splitting."""
        return _Lexer(word, self.env, self.escape, raw=False).process()[0]

    def expand_words(self, text: str) -> list[str]:
        """Expand, then split on unquoted whitespace (expanded values split too)."""
        return _Lexer(text, self.env, self.escape, raw=False).process()[1]

    def expand_heredoc(self, text: str) -> str:
        """Expand ``$`` references only; quotes and escapes stay as written (heredoc bodies)."""
        return _Lexer(text, self.env, self.escape, raw=True).process()[0]


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace and remove quotes and escapes; ``$`` is left untouched."""
    return _Lexer(text, {}, escape, raw=False, expand=False).process()[1]


def split_raw(text: str, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace keeping quotes and escapes inside the words.

    Quoted strings may be empty (``a=""`` is the word ``a=""``); an escape character at the
    very end of the text is dropped.
    """
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                # Inside double quotes the escape character protects the next one (even `"`).
                if i + 1 == n:
                    break
                word.append(ch)
                i += 1
                ch = text[i]
            word.append(ch)
            i += 1
            continue
        if ch.isspace():
            if in_word:
                words.append("".join(word))
                word = []
                in_word = False
            i += 1
            continue
        in_word = True
        if ch in ("'", '"'):
            quote = ch
        elif ch == escape:
            if i + 1 == n:
                break
            word.append(ch)
            i += 1
            ch = text[i]
        word.append(ch)
        i += 1
    if in_word:
        words.append("".join(word))
    return words
