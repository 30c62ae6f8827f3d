"""The Dockerfile parser (skiff.services.builder.parser/lines/instructions): forms, records,
locations and Docker's error wording."""

from __future__ import annotations

import textwrap

import pytest

from skiff.errors import InvalidArgument, NotFound
from skiff.services.builder import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Copy,
    DockerfileError,
    Entrypoint,
    Env,
    Expander,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    exposed_ports,
    load,
    parse,
    parse_stop_signal,
)
from skiff.services.builder.durations import parse_duration


def dockerfile(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def only(text: str) -> Instruction:
    """The single instruction after a FROM line."""
    df = parse("FROM busybox\n" + text)
    assert len(df.stages) == 1
    (instruction,) = df.stages[0].instructions
    return instruction


def error_of(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse(dockerfile(text))
    return info.value


# --- structure: stages, meta args, lines -----------------------------------------------------


def test_stages_meta_args_and_line_numbers() -> None:
    df = parse(
        dockerfile(
            """
            # a comment
            ARG BASE=busybox
            ARG TAG

            FROM $BASE:${TAG:-latest} AS Build
            RUN echo one
            FROM scratch
            COPY --from=build /x /y
            """
        )
    )
    assert [a.args for a in df.meta_args] == [
        (ArgDecl("BASE", "busybox"),),
        (ArgDecl("TAG", None),),
    ]
    assert [(s.index, s.name) for s in df.stages] == [(0, "build"), (1, "")]
    build, final = df.stages
    assert build.from_.image == "$BASE:${TAG:-latest}"
    assert build.from_.line == 5
    assert build.instructions[0].line == 6
    assert final.from_.is_scratch
    assert [i.keyword for i in df.steps()] == ["ARG", "ARG", "FROM", "RUN", "FROM", "COPY"]
    assert [i.original for i in df.steps()][-1] == "COPY --from=build /x /y"


def test_target_and_stage_refs() -> None:
    df = parse("FROM a AS one\nFROM b AS Two\nFROM one\nCOPY --from=0 / /\n")
    assert df.target_stage().index == 2
    assert df.target_stage("TWO").index == 1
    with pytest.raises(NotFound, match='target stage "nope" could not be found'):
        df.target_stage("nope")
    assert df.stage_ref("one", before=2) is df.stages[0]
    assert df.stage_ref("0", before=2) is df.stages[0]
    assert df.stage_ref("two", before=1) is None  # a later stage is not visible: an image
    assert df.stage_ref("alpine", before=2) is None
    with pytest.raises(InvalidArgument, match="current or future build stage"):
        df.stage_ref("2", before=2)


def test_keywords_are_case_insensitive() -> None:
    df = parse("from busybox as B\nrun echo\nCoPy a b\n")
    assert df.stages[0].name == "b"
    assert isinstance(df.stages[0].instructions[0], Run)
    assert isinstance(df.stages[0].instructions[1], Copy)


def test_continuations_comments_and_blank_lines() -> None:
    df = parse(
        dockerfile(
            """
            FROM busybox
            RUN echo a \\
                # dropped comment
                && echo b \\

                && echo c
            RUN echo \\\\
            RUN x \\{blanks}
              y
            """
        ).format(blanks="   ")
    )
    first, second, third = df.stages[0].instructions
    assert isinstance(first, Run) and isinstance(second, Run) and isinstance(third, Run)
    assert first.command == ("echo a     && echo b     && echo c",)
    assert (first.line, first.end_line) == (2, 6)
    assert second.command == ("echo \\\\",)  # an escaped escape does not continue
    assert third.command == ("x   y",)
    assert third.original == "RUN x   y"


def test_continuation_at_end_of_file() -> None:
    df = parse("FROM busybox\nRUN echo \\")
    (run,) = df.stages[0].instructions
    assert isinstance(run, Run) and run.command == ("echo",)


def test_indented_instructions_and_comments() -> None:
    df = parse("   FROM busybox\n\t# comment\n    RUN  true  \n")
    (run,) = df.stages[0].instructions
    assert isinstance(run, Run) and run.command == ("true",)


# --- directives ---------------------------------------------------------------------------------


def test_directives() -> None:
    df = parse("# syntax=docker/dockerfile:1\n#  Escape = `\nFROM busybox\nRUN a `\n b\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert df.escape == "`"
    (run,) = df.stages[0].instructions
    assert isinstance(run, Run) and run.command == ("a  b",)


@pytest.mark.parametrize(
    "text",
    [
        "# comment\n# escape=`\nFROM a\nRUN x `\n",  # after an ordinary comment
        "\n# escape=`\nFROM a\nRUN x `\n",  # after a blank line
        "# unknown=1\n# escape=`\nFROM a\nRUN x `\n",  # after an unknown directive
        "FROM a\n# escape=`\nRUN x `\n",  # after an instruction
    ],
)
def test_directive_only_at_the_very_top(text: str) -> None:
    df = parse(text)
    assert df.escape == "\\"
    assert "escape" not in df.directives or df.directives["escape"] == "\\"


def test_backslash_is_literal_with_backtick_escape() -> None:
    df = parse("# escape=`\nFROM a\nWORKDIR C:\\Windows\\\n")
    (workdir,) = df.stages[0].instructions
    assert isinstance(workdir, Workdir) and workdir.path == "C:\\Windows\\"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# escape=x\nFROM a\n", 1, "invalid escape token 'x' does not match ` or \\"),
        ("# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive can be used"),
    ],
)
def test_directive_errors(text: str, line: int, message: str) -> None:
    err = error_of(text)
    assert err.line == line
    assert str(err) == f"dockerfile parse error on line {line}: {message}"


# --- heredocs -----------------------------------------------------------------------------------


def test_run_heredoc_is_the_script() -> None:
    run = only("RUN <<EOF\necho hello\necho $HOME\nEOF\n")
    assert isinstance(run, Run)
    (doc,) = run.heredocs
    assert (doc.name, doc.content, doc.expand, doc.chomp) == (
        "EOF",
        "echo hello\necho $HOME\n",
        True,
        False,
    )
    assert (run.line, run.end_line) == (2, 5)
    assert run.script() == "echo hello\necho $HOME\n"


def test_run_heredoc_as_stdin_of_a_command() -> None:
    run = only("RUN python3 <<EOF\nprint(1)\nEOF\n")
    assert isinstance(run, Run)
    assert run.script() == "python3 <<EOF\nprint(1)\nEOF\n"


def test_several_heredocs_on_one_line() -> None:
    run = only("RUN cat <<A <<-'B' > /out\na1\nA\n\tb1\n\tB\n")
    assert isinstance(run, Run)
    first, second = run.heredocs
    assert (first.name, first.content, first.expand) == ("A", "a1\n", True)
    assert (second.name, second.content, second.expand, second.chomp) == (
        "B",
        "\tb1\n",
        False,
        True,
    )
    assert second.body == "b1\n"


@pytest.mark.parametrize(
    ("marker", "name", "expand"),
    [("<<EOF", "EOF", True), ('<<"EOF"', "EOF", False), ("<<'EOF'", "EOF", False)],
)
def test_heredoc_quoting(marker: str, name: str, expand: bool) -> None:
    copy = only(f"COPY {marker} /dst\n$X\n{name}\n")
    assert isinstance(copy, Copy)
    (doc,) = copy.heredocs
    assert (doc.name, doc.expand) == (name, expand)


def test_copy_heredoc_files_and_expansion() -> None:
    copy = only('COPY <<-FILE1 <<"FILE2" /dst/\n\tv=$V\n\tFILE1\nraw $V\nFILE2\n')
    assert isinstance(copy, Copy)
    assert copy.file_sources() == ()
    assert copy.inline_sources() == {"FILE1": "v=$V\n", "FILE2": "raw $V\n"}
    expanded = copy.expand(Expander({"V": "1"}))
    assert expanded.inline_sources() == {"FILE1": "v=1\n", "FILE2": "raw $V\n"}
    assert expanded.dest == "/dst/"


def test_heredoc_not_in_quotes_or_json_or_other_instructions() -> None:
    df = parse('FROM a\nRUN echo "<<EOF"\nRUN ["sh", "<<EOF"]\nLABEL x=<<EOF\n')
    first, second, third = df.stages[0].instructions
    assert isinstance(first, Run) and first.heredocs == ()
    assert isinstance(second, Run) and second.heredocs == () and not second.shell_form
    assert isinstance(third, Label) and third.pairs == (("x", "<<EOF"),)


def test_onbuild_heredoc_kept_in_trigger() -> None:
    onbuild = only("ONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert isinstance(onbuild, Onbuild)
    assert onbuild.trigger == "RUN <<EOF\necho hi\nEOF"
    assert isinstance(onbuild.instruction, Run)
    assert onbuild.instruction.script() == "echo hi\n"


def test_heredoc_errors() -> None:
    err = error_of("FROM a\nRUN <<EOF\necho\n")
    assert (err.line, err.problem) == (2, "unterminated heredoc")
    err = error_of("FROM a\nCOPY <<EOF <<OUT\nx\nEOF\ny\nOUT\n")
    assert err.problem == "COPY cannot accept a heredoc as a destination"


# --- instructions, one by one ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "image", "stage", "platform"),
    [
        ("FROM busybox", "busybox", "", ""),
        ("FROM busybox:1.36 AS builder", "busybox:1.36", "builder", ""),
        ("FROM busybox as Builder-1.x_y", "busybox", "builder-1.x_y", ""),
        ("FROM --platform=linux/amd64 busybox", "busybox", "", "linux/amd64"),
        ("FROM --platform=$BUILDPLATFORM a AS b", "a", "b", "$BUILDPLATFORM"),
        ("FROM scratch", "scratch", "", ""),
    ],
)
def test_from(line: str, image: str, stage: str, platform: str) -> None:
    from_ = parse(line + "\n").stages[0].from_
    assert (from_.image, from_.stage_name, from_.platform) == (image, stage, platform)


def test_from_expands_with_given_env_and_rejects_blank() -> None:
    from_ = parse("FROM ${IMG:-busybox}:$TAG\n").stages[0].from_
    assert from_.expand(Expander({"TAG": "1"})).image == "busybox:1"
    with pytest.raises(DockerfileError, match=r"base name .* should not be blank"):
        parse("FROM $NOTHING\n").stages[0].from_.expand(Expander({}))


@pytest.mark.parametrize(
    ("line", "command", "shell_form"),
    [
        ("RUN echo hi", ("echo hi",), True),
        ('RUN ["echo", "hi"]', ("echo", "hi"), False),
        ('RUN [ "echo" , "a b" ]', ("echo", "a b"), False),
        ("RUN ['echo', 'hi']", ("['echo', 'hi']",), True),  # not JSON: shell form
        ('RUN ["echo", "hi"', ('["echo", "hi"',), True),
        ("RUN [not json]", ("[not json]",), True),
        ('RUN echo "$HOME"', ('echo "$HOME"',), True),  # not expanded by the builder
    ],
)
def test_run_forms(line: str, command: tuple[str, ...], shell_form: bool) -> None:
    run = only(line)
    assert isinstance(run, Run)
    assert (run.command, run.shell_form) == (command, shell_form)


def test_command_argv_with_shell() -> None:
    cmd = only("CMD echo $HOME")
    assert isinstance(cmd, Cmd)
    assert cmd.argv() == ["/bin/sh", "-c", "echo $HOME"]
    assert cmd.argv(("/bin/bash", "-ec")) == ["/bin/bash", "-ec", "echo $HOME"]
    entrypoint = only('ENTRYPOINT ["/bin/app", "--flag"]')
    assert isinstance(entrypoint, Entrypoint)
    assert entrypoint.argv() == ["/bin/app", "--flag"]
    empty = only("CMD []")
    assert isinstance(empty, Cmd) and empty.argv() == [] and not empty.shell_form


def test_run_network_flag() -> None:
    run = only("RUN --network=none true")
    assert isinstance(run, Run) and run.network == "none"


@pytest.mark.parametrize(
    ("line", "pairs"),
    [
        ("ENV A=1", (("A", "1"),)),
        (
            'ENV A=1 B="two words" C=three\\ words',
            (("A", "1"), ("B", '"two words"'), ("C", "three\\ words")),
        ),
        ("ENV A b c  d", (("A", "b c  d"),)),  # legacy form: the rest of the line
        ('ENV A=""', (("A", '""'),)),
        ("ENV A=", (("A", ""),)),
    ],
)
def test_env_forms(line: str, pairs: tuple[tuple[str, str], ...]) -> None:
    env = only(line)
    assert isinstance(env, Env) and env.pairs == pairs


def test_env_and_label_expand() -> None:
    env = only("ENV A=$X B=\"${X}-y\" C='$X' D=a\\ b")
    assert isinstance(env, Env)
    assert env.expand(Expander({"X": "x"})).pairs == (
        ("A", "x"),
        ("B", "x-y"),
        ("C", "$X"),
        ("D", "a b"),
    )
    legacy = only('ENV GREETING "hello world"')
    assert isinstance(legacy, Env)
    assert legacy.expand(Expander({})).pairs == (("GREETING", "hello world"),)
    label = only('LABEL "com.example.vendor"="ACME" version=1.0 multi="a \\\nb"')
    assert isinstance(label, Label)
    assert label.expand(Expander({})).pairs == (
        ("com.example.vendor", "ACME"),
        ("version", "1.0"),
        ("multi", "a b"),
    )


def test_arg_forms() -> None:
    arg = only("ARG A B=2 C= D=$X")
    assert isinstance(arg, Arg)
    assert arg.args == (
        ArgDecl("A", None),
        ArgDecl("B", "2"),
        ArgDecl("C", ""),
        ArgDecl("D", "$X"),
    )
    assert arg.expand(Expander({"X": "x"})).args[3] == ArgDecl("D", "x")


@pytest.mark.parametrize(
    ("specs", "ports"),
    [
        (["80"], ["80/tcp"]),
        (["80/tcp", "53/UDP"], ["80/tcp", "53/udp"]),
        (["8000-8002/udp"], ["8000/udp", "8001/udp", "8002/udp"]),
        (["9/sctp"], ["9/sctp"]),
    ],
)
def test_exposed_ports(specs: list[str], ports: list[str]) -> None:
    assert exposed_ports(specs) == ports


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("http", "invalid containerPort: http"),
        ("80/ftp", "invalid proto: ftp"),
        ("90-80", "invalid range"),
        ("80:80", "invalid containerPort: 80:80"),
    ],
)
def test_exposed_port_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        exposed_ports([spec])


def test_expose_expands_and_splits() -> None:
    expose = only("EXPOSE 80 $PORTS")
    assert isinstance(expose, Expose)
    expanded = expose.expand(Expander({"PORTS": "443/tcp 53/udp"}))
    assert expanded.exposed() == ["80/tcp", "443/tcp", "53/udp"]
    with pytest.raises(DockerfileError, match="line 2: invalid proto: bad"):
        expose.expand(Expander({"PORTS": "1/bad"}))


@pytest.mark.parametrize(
    ("line", "cls", "field", "raw"),
    [
        ("WORKDIR /app", Workdir, "path", "/app"),
        ("WORKDIR rel/dir", Workdir, "path", "rel/dir"),  # relative kept for the builder
        ("WORKDIR /a b", Workdir, "path", "/a b"),
        ("USER app", User, "user", "app"),
        ("USER 1000:1000", User, "user", "1000:1000"),
        ("STOPSIGNAL SIGKILL", StopSignal, "signal", "SIGKILL"),
        ("MAINTAINER Jane <jane@example.com>", Maintainer, "name", "Jane <jane@example.com>"),
    ],
)
def test_single_argument_instructions(line: str, cls: type, field: str, raw: str) -> None:
    instruction = only(line)
    assert isinstance(instruction, cls)
    assert getattr(instruction, field) == raw


def test_workdir_user_stopsignal_expand() -> None:
    ex = Expander({"D": "/srv", "U": "app", "S": "TERM"})
    workdir = only("WORKDIR $D/x")
    user = only("USER ${U}:staff")
    signal = only("STOPSIGNAL SIG$S")
    assert isinstance(workdir, Workdir) and workdir.expand(ex).path == "/srv/x"
    assert isinstance(user, User) and user.expand(ex).user == "app:staff"
    assert isinstance(signal, StopSignal) and signal.expand(ex).signal == "SIGTERM"
    with pytest.raises(DockerfileError, match="invalid signal: SIGNOPE"):
        signal.expand(Expander({"S": "NOPE"}))


@pytest.mark.parametrize(
    ("text", "number"),
    [("SIGTERM", 15), ("term", 15), ("9", 9), ("SIGRTMIN+3", 37), ("RTMAX", 64), ("USR1", 10)],
)
def test_stop_signals(text: str, number: int) -> None:
    assert parse_stop_signal(text) == number


@pytest.mark.parametrize("text", ["0", "65", "SIGFOO", "", "RTMIN+40"])
def test_bad_stop_signals(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid signal"):
        parse_stop_signal(text)


@pytest.mark.parametrize(
    ("line", "paths"),
    [
        ("VOLUME /data", ("/data",)),
        ("VOLUME /a /b", ("/a", "/b")),
        ('VOLUME ["/a", "/b c"]', ("/a", "/b c")),
    ],
)
def test_volume(line: str, paths: tuple[str, ...]) -> None:
    volume = only(line)
    assert isinstance(volume, Volume) and volume.paths == paths


def test_volume_expansion_and_empty() -> None:
    volume = only("VOLUME $V")
    assert isinstance(volume, Volume)
    assert volume.expand(Expander({"V": "/v"})).paths == ("/v",)
    with pytest.raises(DockerfileError, match="VOLUME specified can not be an empty string"):
        volume.expand(Expander({}))


def test_copy_flags_and_sources() -> None:
    copy = only("COPY --from=build --chown=app:app --chmod=0644 --link a b* /dst/")
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest) == (("a", "b*"), "/dst/")
    assert (copy.from_, copy.chown, copy.chmod, copy.link) == ("build", "app:app", "0644", True)
    json_form = only('COPY ["a b", "/c d/"]')
    assert isinstance(json_form, Copy) and json_form.sources == ("a b",)
    assert json_form.dest == "/c d/"
    excluded = only("COPY --exclude=*.md --exclude=tmp . /src")
    assert isinstance(excluded, Copy) and excluded.excludes == ("*.md", "tmp")


def test_copy_expansion() -> None:
    copy = only("COPY --from=$STAGE --chown=$U --chmod=$M $SRC ${DST:-/d}")
    assert isinstance(copy, Copy)
    expanded = copy.expand(Expander({"STAGE": "b", "U": "1", "M": "755", "SRC": "s"}))
    assert (expanded.from_, expanded.chown, expanded.chmod) == ("b", "1", "755")
    assert (expanded.sources, expanded.dest) == (("s",), "/d")
    with pytest.raises(DockerfileError, match="invalid chmod parameter: rwx"):
        copy.expand(Expander({"M": "rwx"}))


def test_add_flags_and_urls() -> None:
    from skiff.services.builder import is_url

    add = only("ADD --checksum=sha256:abc --keep-git-dir=true https://x/y.tar.gz a.tar /d/")
    assert isinstance(add, Add)
    assert add.checksum == "sha256:abc" and add.keep_git_dir
    assert [is_url(s) for s in add.sources] == [True, False]


def test_shell() -> None:
    shell = only('SHELL ["/bin/bash", "-o", "pipefail", "-c"]')
    assert isinstance(shell, Shell) and shell.shell == ("/bin/bash", "-o", "pipefail", "-c")


@pytest.mark.parametrize(
    ("line", "config"),
    [
        ("HEALTHCHECK NONE", {"Test": ["NONE"]}),
        ("HEALTHCHECK none", {"Test": ["NONE"]}),
        ("HEALTHCHECK CMD curl -f http://x/", {"Test": ["CMD-SHELL", "curl -f http://x/"]}),
        ('HEALTHCHECK CMD ["/bin/check", "-v"]', {"Test": ["CMD", "/bin/check", "-v"]}),
        (
            "HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms "
            "--retries=3 CMD true",
            {
                "Test": ["CMD-SHELL", "true"],
                "Interval": 300_000_000_000,
                "Timeout": 3_000_000_000,
                "StartPeriod": 90_000_000_000,
                "StartInterval": 500_000_000,
                "Retries": 3,
            },
        ),
        ("HEALTHCHECK --interval=0s CMD true", {"Test": ["CMD-SHELL", "true"]}),
    ],
)
def test_healthcheck(line: str, config: dict[str, object]) -> None:
    health = only(line)
    assert isinstance(health, Healthcheck) and health.config() == config


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1s", 1_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("1h2m3s", 3_723_000_000_000),
        ("300ms", 300_000_000),
        ("10us", 10_000),
        ("7ns", 7),
        (".5s", 500_000_000),
        ("-2s", -2_000_000_000),
    ],
)
def test_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "s", "10", "1x", "1s2", "one"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument, match="time: "):
        parse_duration(text)


def test_onbuild() -> None:
    onbuild = only("ONBUILD COPY --chown=1 . /app")
    assert isinstance(onbuild, Onbuild)
    assert onbuild.trigger == "COPY --chown=1 . /app"
    assert isinstance(onbuild.instruction, Copy) and onbuild.instruction.chown == "1"


# --- errors: each names the line and the problem in Docker's words ---------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("FROM a\nFOO bar\n", 2, "unknown instruction: FOO"),
        ("FROM a\nfoo bar\n", 2, "unknown instruction: foo"),
        ("FROM\n", 1, "FROM requires either one or three arguments"),
        ("FROM a b\n", 1, "FROM requires either one or three arguments"),
        ("FROM a AS b c\n", 1, "FROM requires either one or three arguments"),
        ("FROM a FOR b\n", 1, "FROM requires either one or three arguments"),
        (
            "FROM a AS 1st\n",
            1,
            'invalid name for build stage: "1st", name can\'t start with a number or contain '
            "symbols",
        ),
        ("FROM a AS x\nFROM b AS X\n", 2, 'duplicate stage name "x"'),
        ("FROM --plat=x a\n", 1, "unknown flag: plat"),
        ("FROM a\nRUN\n", 2, "RUN requires at least one argument"),
        (
            "FROM a\nRUN --mount=type=cache,target=/x true\n",
            2,
            "RUN --mount is not supported by the classic builder",
        ),
        ("FROM a\nRUN --network=bridge true\n", 2, "unsupported network mode: bridge"),
        ("FROM a\nRUN --foo true\n", 2, "unknown flag: foo"),
        (
            "FROM a\nRUN [1, 2]\n",
            2,
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
        ("FROM a\nCMD --x=1 a\n", 2, "unknown flag: x"),
        ("FROM a\nENV\n", 2, "ENV requires at least one argument"),
        ("FROM a\nENV A\n", 2, "ENV must have two arguments"),
        (
            "FROM a\nENV A=1 B\n",
            2,
            'Syntax error - can\'t find = in "B". Must be of the form: name=value',
        ),
        ("FROM a\nENV =1\n", 2, "ENV names can not be blank"),
        ("FROM a\nLABEL\n", 2, "LABEL requires at least one argument"),
        ("FROM a\nARG\n", 2, "ARG requires at least one argument"),
        ("FROM a\nARG =x\n", 2, "ARG names can not be blank"),
        ("FROM a\nEXPOSE\n", 2, "EXPOSE requires at least one argument"),
        ("FROM a\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
        ("FROM a\nUSER\n", 2, "USER requires exactly one argument"),
        ("FROM a\nSTOPSIGNAL\n", 2, "STOPSIGNAL requires exactly one argument"),
        ("FROM a\nMAINTAINER\n", 2, "MAINTAINER requires exactly one argument"),
        ("FROM a\nVOLUME\n", 2, "VOLUME requires at least one argument"),
        ('FROM a\nVOLUME ["/a", ""]\n', 2, "VOLUME specified can not be an empty string"),
        (
            "FROM a\nCOPY onlyone\n",
            2,
            "COPY requires at least two arguments, but only one was provided. Destination "
            "could not be determined",
        ),
        (
            "FROM a\nADD\n",
            2,
            "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("FROM a\nCOPY --chown a b\n", 2, "Missing a value on flag: chown"),
        ("FROM a\nCOPY --from=a --from=b a b\n", 2, "Duplicate flag specified: from"),
        ("FROM a\nCOPY --link=maybe a b\n", 2, "expecting boolean value for flag link, not: maybe"),
        ("FROM a\nADD --from=x a b\n", 2, "unknown flag: from"),
        ("FROM a\nSHELL /bin/sh -c\n", 2, "SHELL requires the arguments to be in JSON form"),
        ("FROM a\nSHELL []\n", 2, "SHELL requires at least one argument"),
        ("FROM a\nSHELL\n", 2, "SHELL requires at least one argument"),
        ("FROM a\nHEALTHCHECK\n", 2, "HEALTHCHECK requires at least one argument"),
        ("FROM a\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
        ("FROM a\nHEALTHCHECK RUN x\n", 2, 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("FROM a\nHEALTHCHECK CMD\n", 2, "Missing command after HEALTHCHECK CMD"),
        (
            "FROM a\nHEALTHCHECK --interval=1us CMD x\n",
            2,
            'Interval "interval" cannot be less than 1ms',
        ),
        ("FROM a\nHEALTHCHECK --timeout=-1s CMD x\n", 2, 'Interval "timeout" cannot be negative'),
        ("FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, 'time: missing unit in duration "5"'),
        ("FROM a\nHEALTHCHECK --retries=0 CMD x\n", 2, "--retries must be at least 1 (not 0)"),
        (
            "FROM a\nHEALTHCHECK --retries=x CMD x\n",
            2,
            'strconv.ParseInt: parsing "x": invalid syntax',
        ),
        ("FROM a\nHEALTHCHECK --period=1s CMD x\n", 2, "unknown flag: period"),
        ("FROM a\nONBUILD\n", 2, "ONBUILD requires at least one argument"),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            2,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("FROM a\nONBUILD FROM b\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD maintainer b\n", 2, "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD BOGUS x\n", 2, "unknown instruction: BOGUS"),
        (
            "FROM a\nONBUILD COPY x\n",
            2,
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("RUN echo\nFROM a\n", 1, "no build stage in current context"),
        ("ARG A\nENV B=1\n", 2, "no build stage in current context"),
        ("FROM a\nRUN echo \\\n  two\nBAD\n", 4, "unknown instruction: BAD"),
    ],
)
def test_errors(text: str, line: int, problem: str) -> None:
    err = error_of(text)
    assert (err.line, err.problem) == (line, problem)
    assert str(err) == f"dockerfile parse error on line {line}: {problem}"
    assert isinstance(err, InvalidArgument)  # the daemon maps it to 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "file with no instructions"),
        ("# only a comment\n\n", "file with no instructions"),
        ("ARG A=1\n", "dockerfile contains no stages to build"),
    ],
)
def test_file_level_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(text)


def test_error_names_a_non_default_file() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM a\nNOPE\n", name="Dockerfile.dev")
    assert str(info.value) == (
        "dockerfile parse error on line 2 of Dockerfile.dev: unknown instruction: NOPE"
    )


def test_load_reads_the_named_file(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    path = tmp_path / "Dockerfile"
    path.write_text("\ufeffFROM busybox\r\nRUN true\r\n", encoding="utf-8")
    df = load(str(path))
    (run,) = df.stages[0].instructions
    assert isinstance(run, Run) and run.command == ("true",)
    with pytest.raises(NotFound, match="no such file"):
        load(str(tmp_path / "missing"))


def test_records_are_frozen() -> None:
    from_ = parse("FROM a\n").stages[0].from_
    assert isinstance(from_, From)
    with pytest.raises(AttributeError):
        from_.image = "b"  # type: ignore[misc]


def test_parse_triggers_of_a_base_image() -> None:
    from skiff.services.builder import parse_triggers

    onbuild = only("ONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert isinstance(onbuild, Onbuild)
    run, copy = parse_triggers([onbuild.trigger, "COPY --chown=1 . /app"])
    assert isinstance(run, Run) and run.script() == "echo hi\n"
    assert isinstance(copy, Copy) and copy.chown == "1"
    with pytest.raises(InvalidArgument, match='ONBUILD trigger "FROM x": FROM isn\'t allowed'):
        parse_triggers(["FROM x"])
    with pytest.raises(InvalidArgument, match='ONBUILD trigger "NOPE": unknown instruction'):
        parse_triggers(["NOPE"])


def test_step_numbering_matches_the_classic_builder() -> None:
    # Recorded from dockerd 20.10 (DOCKER_BUILDKIT=0): global ARGs are steps too, and every
    # stage's FROM counts.
    df = parse('ARG A=1\nFROM scratch AS x\nENV B=1\nFROM x\nLABEL a=b\nCMD ["x"]\nENV X=$A\n')
    steps = df.steps()
    assert [f"Step {n}/{len(steps)} : {s.original}" for n, s in enumerate(steps, 1)] == [
        "Step 1/7 : ARG A=1",
        "Step 2/7 : FROM scratch AS x",
        "Step 3/7 : ENV B=1",
        "Step 4/7 : FROM x",
        "Step 5/7 : LABEL a=b",
        'Step 6/7 : CMD ["x"]',
        "Step 7/7 : ENV X=$A",
    ]


def test_only_newline_ends_a_line() -> None:
    run = only('RUN printf "a\x0cb\u2028c"\n')
    assert isinstance(run, Run)
    assert run.command == ('printf "a\x0cb\u2028c"',)
