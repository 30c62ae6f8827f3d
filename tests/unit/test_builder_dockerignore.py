""".dockerignore matching (skiff.services.builder.dockerignore) with moby's patternmatcher rules,
and the context walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skiff.errors import InvalidArgument, SystemFailure
from skiff.services.builder.dockerignore import Matcher, load, load_file, walk


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        # plain names match the path or any parent directory
        ("foo", "foo", True),
        ("foo", "foo/bar/baz", True),
        ("foo", "a/foo", False),  # patterns are anchored at the context root
        ("foo", "foobar", False),
        ("/foo", "foo", True),  # a leading slash is dropped
        ("./foo", "foo", True),
        ("foo/", "foo/x", True),  # cleaned: a trailing slash means nothing special
        ("foo/../bar", "bar", True),
        # * and ? never cross a slash
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),
        ("*/*.md", "docs/README.md", True),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("a?c", "a/c", False),
        # ** spans directories
        ("**/*.md", "README.md", True),
        ("**/*.md", "a/b/c.md", True),
        ("**/foo", "foo", True),
        ("**/foo", "x/y/foo", True),
        ("**/foo", "x/afoo", False),
        ("foo/**", "foo/a/b", True),
        ("foo/**", "foobar", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/yb", False),
        ("**", "anything/at/all", True),
        # character classes and escapes
        ("[abc].txt", "b.txt", True),
        ("[abc].txt", "d.txt", False),
        ("[^abc].txt", "d.txt", True),
        ("[a-c]x", "bx", True),
        ("[[]x", "[x", True),  # members are literal: no nested sets
        ("[]a]x", "]x", True),  # a leading `]` is a member
        ("[a-]x", "-x", True),  # a trailing `-` is a member
        ("[!a]x", "!x", True),  # Go negates with `^` only; `!` is a member
        ("[!a]x", "bx", False),
        ("[a&&b]x", "&x", True),
        ("\\*.txt", "*.txt", True),
        ("\\*.txt", "a.txt", False),
        # characters special to regexps but not to patterns are literal
        ("a.b", "a.b", True),
        ("a.b", "axb", False),
        ("a+(b)|{c}$", "a+(b)|{c}$", True),
        # last match wins
        ("*.md\n!README.md", "README.md", False),
        ("*.md\n!README.md", "CHANGES.md", True),
        ("*.md\n!README.md\nREADME*", "README.md", True),
        ("docs\n!docs/keep", "docs/keep", False),
        ("docs\n!docs/keep", "docs/keep/inner", False),
        ("docs\n!docs/keep", "docs/other", True),
        ("!foo", "foo", False),  # an exception with nothing excluded
        # comments and blanks
        ("# foo\nbar", "# foo", False),
        ("#foo", "#foo", False),
        (" #foo", "#foo", True),  # only a `#` in the first column starts a comment
        ("  foo  \n\n", "foo", True),
        ("! foo\n*", "foo", True),
        ("*\n! foo", "foo", False),
        # the root is never excluded
        ("*", ".", False),
        ("**", "", False),
    ],
)
def test_matching(patterns: str, path: str, excluded: bool) -> None:
    assert load(patterns).excluded(path) is excluded


def test_is_dir_does_not_change_the_answer() -> None:
    matcher = load("build")
    assert matcher.excluded("build", is_dir=True)
    assert matcher.excluded("build", is_dir=False)


@pytest.mark.parametrize("pattern", ["[", "a[b", "foo\\", "!", "[--"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidArgument):
        load(pattern)


def test_must_walk_only_for_exceptions_below() -> None:
    matcher = load("docs\n!docs/keep/file\nbuild\n")
    assert matcher.must_walk("docs")
    assert matcher.must_walk("docs/keep")
    assert not matcher.must_walk("build")
    assert not load("docs").must_walk("docs")


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_walk_with_exceptions_under_an_excluded_dir(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        [
            "Dockerfile",
            ".dockerignore",
            "src/main.py",
            "src/test_main.py",
            "docs/a.md",
            "docs/keep/b.md",
            "node_modules/x/index.js",
        ],
    )
    (tmp_path / ".dockerignore").write_text(
        "# ignore these\nnode_modules\ndocs\n!docs/keep\n**/test_*.py\n.dockerignore\nDockerfile\n"
    )
    os.symlink("src/main.py", tmp_path / "link")
    got = list(walk(str(tmp_path), keep=["Dockerfile", ".dockerignore"]))
    assert got == [
        ".dockerignore",
        "Dockerfile",
        # "docs" itself is excluded: walked for its exception but not sent
        "docs/keep",
        "docs/keep/b.md",
        "link",  # a symlink is sent as a link, never followed
        "src",
        "src/main.py",
    ]
    # Without keep, the excluded build files stay out too.
    assert "Dockerfile" not in list(walk(str(tmp_path)))


def test_walk_without_dockerignore_sends_everything(tmp_path: Path) -> None:
    _tree(tmp_path, ["a", "b/c"])
    assert list(walk(str(tmp_path))) == ["a", "b", "b/c"]
    assert load_file(str(tmp_path)).patterns == ()


def test_walk_with_explicit_matcher(tmp_path: Path) -> None:
    _tree(tmp_path, ["a.log", "b.txt", "sub/c.log"])
    assert list(walk(str(tmp_path), Matcher(load("*.log").patterns))) == [
        "b.txt",
        "sub",
        "sub/c.log",
    ]


def test_walk_reports_missing_context(tmp_path: Path) -> None:
    with pytest.raises(SystemFailure) as info:
        list(walk(str(tmp_path / "absent"), Matcher(())))
    assert "list build context directory" in str(info.value)
    assert str(tmp_path / "absent") in str(info.value)
