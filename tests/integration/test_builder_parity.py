"""The Dockerfile parser against the real peer: Debian's dockerd 20.10, classic builder.

Each Dockerfile is built FROM scratch with config-only instructions (no RUN, so no base image
and no network are needed) and the image config dockerd produced is compared with what skiff's
parser, expander and build-arg scoping give (a small evaluator below applies the records the way
a classic builder does). Malformed Dockerfiles must fail in both with the same problem on the
same line. The known wording differences of 20.10 ("dockerfile parse error line N", "Unknown
flag") are normalised; newer Docker's wording is what skiff prints.
"""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from skiff.devtools.images import Dockerd, DockerdUnavailable, ToolMissing, private_dockerd
from skiff.services.builder import (
    Arg,
    BuildArgs,
    Cmd,
    DockerfileError,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    parse,
)

# The classic builder gives a scratch image this PATH (ENV PATH=... then replaces it in place).
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEYS = ("User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "Volumes", "WorkingDir",
        "Entrypoint", "OnBuild", "Labels", "StopSignal", "Shell")  # fmt: skip


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    try:
        with private_dockerd() as d:
            d.env["DOCKER_BUILDKIT"] = "0"  # the classic builder, whose steps skiff mirrors
            yield d
    except (ToolMissing, DockerdUnavailable) as exc:
        pytest.skip(str(exc))


def evaluate(text: str, build_args: dict[str, str | None], target: str | None) -> dict[str, Any]:
    """The image config of a scratch-based target stage, from skiff's records."""
    df = parse(text)
    args = BuildArgs(build_args, df.escape)
    args.declare_meta(df.meta_args)
    stage = df.target_stage(target)
    scope = args.stage([DEFAULT_PATH])
    config: dict[str, Any] = {"Env": [DEFAULT_PATH], "Author": ""}
    cmd_set = False
    shell = ["/bin/sh", "-c"]
    for instruction in stage.instructions:
        ex = scope.expander()
        if isinstance(instruction, Arg):
            scope.declare(instruction)
        elif isinstance(instruction, Env):
            for key, value in instruction.expand(ex).pairs:
                scope.set_env(key, value)
                env = [e for e in config["Env"] if e.partition("=")[0] != key]
                index = next(
                    (i for i, e in enumerate(config["Env"]) if e.partition("=")[0] == key), None
                )
                if index is None:
                    env.append(f"{key}={value}")
                else:
                    env.insert(index, f"{key}={value}")
                config["Env"] = env
        elif isinstance(instruction, Label):
            config.setdefault("Labels", {}).update(dict(instruction.expand(ex).pairs))
        elif isinstance(instruction, Expose):
            ports = config.setdefault("ExposedPorts", {})
            ports.update({p: {} for p in instruction.expand(ex).exposed()})
        elif isinstance(instruction, Volume):
            config.setdefault("Volumes", {}).update({p: {} for p in instruction.expand(ex).paths})
        elif isinstance(instruction, Workdir):
            path = instruction.expand(ex).path
            config["WorkingDir"] = posixpath.join("/", config.get("WorkingDir", "/"), path)
        elif isinstance(instruction, User):
            config["User"] = instruction.expand(ex).user
        elif isinstance(instruction, StopSignal):
            config["StopSignal"] = instruction.expand(ex).signal
        elif isinstance(instruction, Healthcheck):
            config["Healthcheck"] = instruction.config()
        elif isinstance(instruction, Shell):
            shell = list(instruction.shell)
            config["Shell"] = shell
        elif isinstance(instruction, Cmd):
            config["Cmd"] = instruction.argv(tuple(shell))
            cmd_set = True
        elif isinstance(instruction, Entrypoint):
            config["Entrypoint"] = instruction.argv(tuple(shell))
            if not cmd_set:
                config.pop("Cmd", None)
        elif isinstance(instruction, Onbuild):
            config.setdefault("OnBuild", []).append(instruction.trigger)
        elif isinstance(instruction, Maintainer):
            config["Author"] = instruction.name
        else:
            raise AssertionError(f"case uses an instruction the evaluator lacks: {instruction}")
    return config


CONFIG_CASES: list[tuple[str, str, dict[str, str | None], str | None]] = [
    (
        "everything",
        """\
ARG G=glob
FROM scratch
ARG G
ARG A=1 B
ENV E1=$A E2="${B:-bdef} x" E3='$A' E4=a\\ b
ENV E5 ${G}  legacy "q"
ENV PATH=/bin
LABEL l1=$E1 "l 2"="v 2" l3=${NOPE:+alt} l4=${E1:+alt}
EXPOSE 80 53/udp 8000-8001/tcp
VOLUME ["/v1", "/v 2"]
VOLUME /v3 $E1
WORKDIR /w
WORKDIR rel/$E1
USER ${E1}:staff
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=1m30s --timeout=3s --retries=2 CMD curl -f http://x/ || exit 1
SHELL ["/bin/bash", "-c"]
CMD echo $HOME
ENTRYPOINT ["/e", "x"]
ONBUILD RUN echo hi
MAINTAINER me
""",
        {"B": "given"},
        None,
    ),
    (
        "env-sees-only-earlier-instructions",
        "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n",
        {},
        None,
    ),
    (
        "target-first-stage",
        "ARG V=1\nFROM scratch AS one\nARG V\nLABEL stage=one v=$V\n"
        "FROM scratch AS two\nLABEL stage=two v=${V:-unset}\n",
        {},
        "one",
    ),
    (
        "last-stage-by-default",
        "ARG V=1\nFROM scratch AS one\nARG V\nLABEL stage=one v=$V\n"
        "FROM scratch AS two\nLABEL stage=two v=${V:-unset}\n",
        {"V": "cli"},
        None,
    ),
    (
        "escape-directive-continuations-comments",
        "# escape=`\nFROM scratch\nENV A=x `\n    # a comment inside\n\n    B=y\n"
        'LABEL "k"="a`"b" path=C:\\dir\nWORKDIR /a`\n/b\n',
        {},
        None,
    ),
    (
        "shell-forms-and-resets",
        'FROM scratch\nCMD ["x"]\nENTRYPOINT /bin/app --flag\nHEALTHCHECK NONE\n'
        'STOPSIGNAL 9\nUSER nobody\nEXPOSE ${P:-8080}/udp\nlabel Multi="a \\\n  b"\n',
        {},
        None,
    ),
]


def _docker_build(
    d: Dockerd, text: str, build_args: dict[str, str | None], target: str | None, tag: str
) -> None:
    flags = [f"--build-arg={k}={v}" for k, v in build_args.items()]
    if target:
        flags.append(f"--target={target}")
    with tempfile.TemporaryDirectory() as context:
        d.docker("build", "-q", "-t", tag, *flags, "-f", "-", context, stdin=text.encode())


@pytest.mark.parametrize(
    ("name", "text", "build_args", "target"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES]
)
def test_image_config_matches_dockerd(
    dockerd: Dockerd,
    name: str,
    text: str,
    build_args: dict[str, str | None],
    target: str | None,
) -> None:
    tag = f"skiff-parity/{name}:1"
    _docker_build(dockerd, text, build_args, target, tag)
    try:
        (image,) = json.loads(dockerd.docker("image", "inspect", tag))
    finally:
        dockerd.docker("rmi", tag)
    theirs = {k: v for k, v in image["Config"].items() if k in KEYS and v not in (None, {}, "")}
    theirs["Author"] = image.get("Author", "")
    ours = {k: v for k, v in evaluate(text, build_args, target).items() if v not in ({}, "")}
    ours.setdefault("Author", "")
    assert ours == theirs


_PREFIX = re.compile(
    r"^(?:dockerfile parse error (?:on )?line (?P<line>\d+): |failed to parse [^:]+: )?"
)

ERROR_CASES = [
    "FROM scratch\nFOO bar\n",
    "FROM scratch AS\n",
    "FROM scratch AS 1x\n",
    "FROM scratch\nENV A\n",
    "FROM scratch\nENV A=1 B\n",
    "FROM scratch\nCOPY x\n",
    "FROM scratch\nHEALTHCHECK --retries=0 CMD x\n",
    "FROM scratch\nHEALTHCHECK NONE x\n",
    "FROM scratch\nHEALTHCHECK FOO x\n",
    "FROM scratch\nCOPY --chmodd=1 a b\n",
    "FROM scratch\nWORKDIR\n",
    "FROM scratch\nCMD [1]\n",
    "FROM scratch\nSHELL /bin/sh -c\n",
    "FROM scratch\nONBUILD ONBUILD RUN x\n",
    "FROM scratch\nONBUILD FROM x\n",
    'FROM scratch\nVOLUME [""]\n',
    "ENV A=1\nFROM scratch\n",
    "# escape=x\nFROM scratch\n",
    "# escape=`\n# escape=`\nFROM scratch\n",
    "FROM scratch\nRUN echo a \\\n  && echo b\nBAD x\n",
]


@pytest.mark.parametrize("text", ERROR_CASES)
def test_errors_match_dockerd(dockerd: Dockerd, text: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    ours = info.value
    with pytest.raises(RuntimeError) as failed:
        _docker_build(dockerd, text, {}, None, "skiff-parity/error:1")
    stderr = str(failed.value)
    message = stderr.split("Error response from daemon: ", 1)[1].strip()
    match = _PREFIX.match(message)
    assert match is not None
    problem = message[match.end() :]
    assert problem.lower() == ours.problem.lower()
    if match.group("line"):
        assert int(match.group("line")) == ours.line


# --- expansion-time errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "FROM scratch\nEXPOSE http\n",
        "FROM scratch\nEXPOSE 80/ftp\n",
        "FROM scratch\nENV A=${}\n",
        "FROM scratch\nENV A=${B:=x}\n",
        "FROM scratch\nLABEL a='open\n",
    ],
)
def test_expansion_errors_match_dockerd(dockerd: Dockerd, text: str) -> None:
    with pytest.raises(DockerfileError) as info:
        evaluate(text, {}, None)
    with pytest.raises(RuntimeError) as failed:
        _docker_build(dockerd, text, {}, None, "skiff-parity/error:1")
    message = str(failed.value).strip()
    # Docker words these as "failed to process \"...\": <problem>" or bare; the problem is ours.
    assert message.lower().endswith(info.value.problem.lower()), (message, info.value.problem)


# --- .dockerignore: what the classic builder's COPY . sees ------------------------------------

IGNORE = """\
# a comment
*.log
!keep.log
build/
!build/dist/app.bin
**/cache
docs/**/*.md
!docs/README.md
/secret
./tmp
 spaced
Dockerfile
.dockerignore
"""
TREE = [
    "a.log", "keep.log", "sub/b.log", "build/x.o", "build/dist/app.bin", "build/dist/other",
    "x/cache/c1", "cache/c2", "x/y/cache/z", "docs/README.md", "docs/a/b.md", "docs/c.txt",
    "secret", "tmp/t", "src/main.c", "sp ace.txt", "spaced", " spaced",
]  # fmt: skip


def test_dockerignore_matches_dockerd(dockerd: Dockerd) -> None:
    import os
    import tarfile
    from io import BytesIO

    from skiff.services.builder import walk_context

    with tempfile.TemporaryDirectory() as context:
        for rel in TREE:
            path = os.path.join(context, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                handle.write(rel)
        os.makedirs(os.path.join(context, "empty"))
        os.symlink("src/main.c", os.path.join(context, "link"))
        with open(os.path.join(context, ".dockerignore"), "w") as handle:
            handle.write(IGNORE)
        with open(os.path.join(context, "Dockerfile"), "w") as handle:
            handle.write("FROM scratch\nCOPY . /ctx/\n")
        ours = list(walk_context(context))
        ours_dirs = {p for p in ours if os.path.isdir(os.path.join(context, p))}
        tag = "skiff-parity/ignore:1"
        dockerd.docker("build", "-q", "-t", tag, context)
    cid = dockerd.docker("create", tag, "/none").decode().strip()
    try:
        exported = dockerd.docker("export", cid)
    finally:
        dockerd.docker("rm", cid)
        dockerd.docker("rmi", tag)
    with tarfile.open(fileobj=BytesIO(exported)) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers() if m.name.startswith("ctx/")}
    theirs_files = sorted(n[4:] for n, m in members.items() if not m.isdir())
    theirs_dirs = {n[4:] for n, m in members.items() if m.isdir()}
    assert sorted(p for p in ours if p not in ours_dirs) == theirs_files
    # Directories: every one we send exists there; any extra is a parent COPY had to create
    # for a re-included file (docker sends no entry for an excluded directory either).
    assert ours_dirs <= theirs_dirs
    for extra in theirs_dirs - ours_dirs:
        assert any(f.startswith(extra + "/") for f in theirs_files), extra
    assert {"empty", "x/y", "docs/a"} <= ours_dirs
    assert "build" not in ours_dirs and "build/dist/app.bin" in theirs_files
