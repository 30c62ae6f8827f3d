"""Variable substitution and word splitting (skiff.services.builder.words), Docker's rules."""

from __future__ import annotations

import pytest

from skiff.errors import InvalidArgument
from skiff.services.builder.words import Expander, split_raw, split_words

ENV = {"A": "apple", "EMPTY": "", "SP": "a b  c", "X": "x"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("plain", "plain"),
        ("$A", "apple"),
        ("${A}", "apple"),
        ("${A}pie", "applepie"),
        ("$Apie", ""),  # the name runs to the first non-name character
        ("$UNSET", ""),
        ("a$", "a$"),
        ("$ a", "$ a"),
        ("$/x", "$/x"),
        # with a colon an empty value counts as unset
        ("${A:-d}", "apple"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET:-d}", "d"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNSET:+alt}", ""),
        # without a colon only unset counts
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        # the word after the modifier is itself expanded
        ("${UNSET:-$A}", "apple"),
        ("${UNSET:-${X}y}", "xy"),
        ("${UNSET:-a b}", "a b"),
        # quotes
        ("'$A'", "$A"),
        ('"$A"', "apple"),
        ('"${A}"', "apple"),
        ("'a b'", "a b"),
        ('"a \\" b"', 'a " b'),
        ('"a \\$A"', "a $A"),
        ('"a \\n"', "a \\n"),  # other escapes inside double quotes stay
        ("'a \\n'", "a \\n"),
        # escapes outside quotes
        ("\\$A", "$A"),
        ("a\\ b", "a b"),
        ("a\\\\b", "a\\b"),
        ("trailing\\", "trailing"),
        ("$1", ""),
        ("$@", ""),
    ],
)
def test_expand(word: str, expected: str) -> None:
    assert Expander(ENV).expand(word) == expected


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("'open", "matching single-quote"),
        ('"open', "matching double-quote"),
        ("${A", "missing '}'"),
        ("${", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:-x}", "bad substitution"),
        ("${A:-x", "missing '}'"),
        ("${A%x}", "unsupported modifier (%) in substitution"),
        ("${UNSET:?need it}", "UNSET: need it"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ],
)
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        Expander(ENV).expand(word)


def test_question_modifier_passes_through_set_values() -> None:
    assert Expander(ENV).expand("${A:?x}") == "apple"
    assert Expander(ENV).expand("${EMPTY?x}") == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b", ["a", "b"]),
        ("  a   b  ", ["a", "b"]),
        ("$SP", ["a", "b", "c"]),  # expansion results split
        ('"$SP"', ["a b  c"]),  # quoted ones do not
        ("x$SP", ["xa", "b", "c"]),
        ("'a b' c", ["a b", "c"]),
        ('""', []),  # Docker drops a word that ends up empty
        ("a\\ b c", ["a b", "c"]),
        ("${UNSET:-1 2}", ["1", "2"]),
    ],
)
def test_expand_words(text: str, expected: list[str]) -> None:
    assert Expander(ENV).expand_words(text) == expected


def test_backtick_escape() -> None:
    ex = Expander(ENV, escape="`")
    assert ex.expand("`$A") == "$A"
    assert ex.expand("C:\\path") == "C:\\path"  # backslash is an ordinary character then
    assert ex.expand('"a `" b"') == 'a " b'


def test_expand_heredoc_keeps_quotes_and_escapes() -> None:
    ex = Expander(ENV)
    assert ex.expand_heredoc("echo '$A' \"$A\" \\$A\n") == "echo 'apple' \"apple\" \\$A\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b", ["a", "b"]),
        ("'a b' c", ["a b", "c"]),
        ('"a $B" c', ["a $B", "c"]),  # no expansion
        ("$A ${B:-x}", ["$A", "${B:-x}"]),
        ("a\\ b", ["a b"]),
    ],
)
def test_split_words(text: str, expected: list[str]) -> None:
    assert split_words(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=b c=d", ["a=b", "c=d"]),
        ('a="b c" d=e', ['a="b c"', "d=e"]),
        ("a='b c'", ["a='b c'"]),
        ('a=""', ['a=""']),
        ("a=b\\ c", ["a=b\\ c"]),
        ('a="b \\" c"', ['a="b \\" c"']),
        ("a=b\\", ["a=b"]),  # trailing escape dropped
        ("   ", []),
    ],
)
def test_split_raw_keeps_quotes(text: str, expected: list[str]) -> None:
    assert split_raw(text) == expected
