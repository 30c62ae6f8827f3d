"""Dockerfile text -> :class:`Dockerfile` (global ARGs, stages, typed instructions).

Pure: the only I/O is :func:`load`, which reads the file its caller names. Every error is a
:class:`~skiff.services.builder.lines.DockerfileError` naming the line and the problem in
Docker's words (``dockerfile parse error on line 3: unknown instruction: FOO``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from skiff.errors import InvalidArgument, NotFound, os_error

from .durations import parse_duration
from .flags import FlagKind, Flags, parse_flags
from .instructions import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Copy,
    Entrypoint,
    Env,
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
)
from .lines import DockerfileError, RawLine, extract_flags, heredoc_marker, json_array, read_lines
from .words import split_raw

__all__ = ["Dockerfile", "Stage", "load", "parse", "parse_instruction", "parse_triggers"]


def _quote(text: str) -> str:
    """Go's %q (Docker's messages quote names with double quotes)."""
    return json.dumps(text, ensure_ascii=False)


_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_MIN_HEALTH_DURATION_NS = 1_000_000  # Docker refuses intervals below 1ms (except 0 = default)

_FLAGS: Mapping[str, Mapping[str, FlagKind]] = {
    "from": {"platform": FlagKind.STRING},
    "run": {"mount": FlagKind.LIST, "network": FlagKind.STRING, "security": FlagKind.STRING},
    "copy": {
        "from": FlagKind.STRING,
        "chown": FlagKind.STRING,
        "chmod": FlagKind.STRING,
        "link": FlagKind.BOOL,
        "parents": FlagKind.BOOL,
        "exclude": FlagKind.LIST,
    },
    "add": {
        "chown": FlagKind.STRING,
        "chmod": FlagKind.STRING,
        "link": FlagKind.BOOL,
        "checksum": FlagKind.STRING,
        "keep-git-dir": FlagKind.BOOL,
        "exclude": FlagKind.LIST,
    },
    "healthcheck": {
        "interval": FlagKind.STRING,
        "timeout": FlagKind.STRING,
        "start-period": FlagKind.STRING,
        "start-interval": FlagKind.STRING,
        "retries": FlagKind.STRING,
    },
}


@dataclass(frozen=True)
class Stage:
    index: int
    name: str  # lower-case, "" when the stage has no AS name
    from_: From
    instructions: tuple[Instruction, ...]

    def steps(self) -> tuple[Instruction, ...]:
        return (self.from_, *self.instructions)


@dataclass(frozen=True)
class Dockerfile:
    name: str
    directives: Mapping[str, str]
    escape: str
    meta_args: tuple[Arg, ...]  # the ARGs before the first FROM
    stages: tuple[Stage, ...]

    def target_stage(self, target: str | None = None) -> Stage:
        """The stage ``--target`` names (case-insensitive); the last stage when None/empty."""
        if not target:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name and stage.name == target.lower():
                return stage
        raise NotFound(f"target stage {_quote(target)} could not be found")

    def stage_ref(self, ref: str, before: int) -> Stage | None:
        """The stage a ``FROM x`` / ``COPY --from=x`` in stage ``before`` refers to, if any.

        A name matches any earlier named stage; a number only an earlier index. None means the
        reference is an image (Docker's rule: stages shadow images of the same name).
        """
        lowered = ref.lower()
        for stage in self.stages[:before]:
            if stage.name and stage.name == lowered:
                return stage
        if ref.isdigit():
            index = int(ref)
            if index >= before:
                raise InvalidArgument(
                    f"invalid from flag value {ref}: refers to current or future build stage"
                )
            return self.stages[index]
        return None

    def steps(self) -> tuple[Instruction, ...]:
        """Every instruction in build order, global ARGs first (Docker's ``Step N/M``)."""
        out: list[Instruction] = list(self.meta_args)
        for stage in self.stages:
            out.extend(stage.steps())
        return tuple(out)


def load(path: str) -> Dockerfile:
    """Read and parse the Dockerfile at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError as exc:
        raise NotFound(f"read Dockerfile {path}: no such file") from exc
    except OSError as exc:
        raise os_error("read Dockerfile", path, exc) from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"read Dockerfile {path}: not UTF-8 text") from exc
    return parse(text, name=path.rsplit("/", 1)[-1])


def parse(text: str, *, name: str = "Dockerfile") -> Dockerfile:
    directives, lines = read_lines(text, name)
    escape = directives["escape"]
    if not lines:
        raise InvalidArgument(f"{name}: file with no instructions")
    meta: list[Arg] = []
    stages: list[Stage] = []
    current: tuple[From, list[Instruction]] | None = None
    names: set[str] = set()

    def close() -> None:
        if current is not None:
            from_, body = current
            stages.append(Stage(len(stages), from_.stage_name, from_, tuple(body)))

    for raw in lines:
        instruction = _located(raw, name, escape)
        if isinstance(instruction, From):
            close()
            if instruction.stage_name:
                if instruction.stage_name in names:
                    raise DockerfileError(
                        raw.line, f"duplicate stage name {_quote(instruction.stage_name)}", name
                    )
                names.add(instruction.stage_name)
            current = (instruction, [])
        elif current is None:
            if not isinstance(instruction, Arg):
                raise DockerfileError(raw.line, "no build stage in current context", name)
            meta.append(instruction)
        else:
            current[1].append(instruction)
    close()
    if not stages:
        raise InvalidArgument(f"{name}: dockerfile contains no stages to build")
    return Dockerfile(name, directives, escape, tuple(meta), tuple(stages))


def parse_triggers(triggers: list[str] | tuple[str, ...], escape: str = "\\") -> list[Instruction]:
    """The ONBUILD triggers of a base image (its config's ``OnBuild``) as records, in order.

    The builder runs them right after FROM. Line numbers count within each trigger; errors
    name the trigger, since the user's Dockerfile never contained that text.
    """
    out: list[Instruction] = []
    for trigger in triggers:
        try:
            _, lines = read_lines(trigger, "ONBUILD trigger")
            for raw in lines:
                keyword = raw.keyword.lower()
                if keyword == "onbuild":
                    raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
                if keyword in ("from", "maintainer"):
                    raise InvalidArgument(f"{keyword.upper()} isn't allowed as an ONBUILD trigger")
                out.append(parse_instruction(raw, escape))
        except InvalidArgument as exc:
            problem = exc.problem if isinstance(exc, DockerfileError) else exc.message
            raise InvalidArgument(f"ONBUILD trigger {_quote(trigger)}: {problem}") from exc
    return out


def _located(raw: RawLine, name: str, escape: str) -> Instruction:
    try:
        return parse_instruction(raw, escape)
    except DockerfileError:
        raise
    except InvalidArgument as exc:
        raise DockerfileError(raw.line, exc.message, name) from exc


def parse_instruction(raw: RawLine, escape: str = "\\") -> Instruction:
    """One logical line -> its typed record; InvalidArgument (unlocated) when malformed."""
    keyword = raw.keyword.lower()
    handler = _HANDLERS.get(keyword)
    if handler is None:
        raise InvalidArgument(f"unknown instruction: {raw.keyword}")
    flags = parse_flags(raw.flags, _FLAGS.get(keyword, {}))
    return handler(raw, flags, escape)


# --- argument forms ------------------------------------------------------------------------


def _json_or_words(rest: str) -> list[str]:
    parsed = json_array(rest)
    return parsed if parsed is not None else rest.split()


def _command(raw: RawLine) -> tuple[tuple[str, ...], bool]:
    parsed = json_array(raw.rest)
    if parsed is not None:
        return tuple(parsed), False
    return ((raw.rest,), True) if raw.rest else ((), False)


def _pairs(raw: RawLine, escape: str) -> tuple[tuple[str, str], ...]:
    """``k=v k2=v2`` (quotes kept for the expander) or the legacy ``k value with spaces``."""
    what = raw.keyword.upper()
    words = split_raw(raw.rest, escape)
    if not words:
        raise InvalidArgument(f"{what} requires at least one argument")
    if "=" not in words[0]:
        parts = raw.rest.split(None, 1)
        if len(parts) < 2:
            raise InvalidArgument(f"{what} must have two arguments")
        return ((parts[0], parts[1]),)
    pairs: list[tuple[str, str]] = []
    for word in words:
        if "=" not in word:
            raise InvalidArgument(
                f"Syntax error - can't find = in {_quote(word)}. Must be of the form: name=value"
            )
        key, _, value = word.partition("=")
        if not key:
            raise InvalidArgument(f"{what} names can not be blank")
        pairs.append((key, value))
    return tuple(pairs)


def _exactly_one(raw: RawLine) -> str:
    if not raw.rest:
        raise InvalidArgument(f"{raw.keyword.upper()} requires exactly one argument")
    return raw.rest


def _at_least_one(raw: RawLine, values: list[str]) -> list[str]:
    if not values:
        raise InvalidArgument(f"{raw.keyword.upper()} requires at least one argument")
    return values


# --- one handler per instruction ------------------------------------------------------------


def _from(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    args = raw.rest.split()
    stage = ""
    if len(args) == 3 and args[1].lower() == "as":
        stage = args[2].lower()
        if not _STAGE_NAME.match(stage):
            raise InvalidArgument(
                f"invalid name for build stage: {_quote(args[2])}, name can't start with a number "
                "or contain symbols"
            )
    elif len(args) != 1:
        raise InvalidArgument("FROM requires either one or three arguments")
    return From(raw.line, raw.end_line, raw.original, args[0], stage, flags.get("platform"))


def _run(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    if flags.lists.get("mount"):
        raise InvalidArgument("RUN --mount is not supported by the classic builder")
    security = flags.get("security")
    if security and security != "sandbox":
        raise InvalidArgument(f"RUN --security={security} is not supported by the classic builder")
    network = flags.get("network")
    if network not in ("", "default", "none", "host"):
        raise InvalidArgument(f"unsupported network mode: {network}")
    command, shell_form = _command(raw)
    if not command and not raw.heredocs:
        raise InvalidArgument("RUN requires at least one argument")
    return Run(raw.line, raw.end_line, raw.original, command, shell_form, raw.heredocs, network)


def _cmd(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    command, shell_form = _command(raw)
    return Cmd(raw.line, raw.end_line, raw.original, command, shell_form)


def _entrypoint(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    command, shell_form = _command(raw)
    return Entrypoint(raw.line, raw.end_line, raw.original, command, shell_form)


def _env(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    return Env(raw.line, raw.end_line, raw.original, _pairs(raw, escape))


def _label(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    return Label(raw.line, raw.end_line, raw.original, _pairs(raw, escape))


def _arg(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    words = _at_least_one(raw, split_raw(raw.rest, escape))
    decls: list[ArgDecl] = []
    for word in words:
        name, eq, value = word.partition("=")
        if not name:
            raise InvalidArgument("ARG names can not be blank")
        decls.append(ArgDecl(name, value if eq else None))
    return Arg(raw.line, raw.end_line, raw.original, tuple(decls))


def _expose(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    ports = _at_least_one(raw, raw.rest.split())
    return Expose(raw.line, raw.end_line, raw.original, tuple(ports))


def _workdir(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    return Workdir(raw.line, raw.end_line, raw.original, _exactly_one(raw))


def _user(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    return User(raw.line, raw.end_line, raw.original, _exactly_one(raw))


def _stopsignal(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    return StopSignal(raw.line, raw.end_line, raw.original, _exactly_one(raw))


def _maintainer(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    return Maintainer(raw.line, raw.end_line, raw.original, _exactly_one(raw))


def _volume(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    paths = _at_least_one(raw, _json_or_words(raw.rest))
    if any(not p.strip() for p in paths):
        raise InvalidArgument("VOLUME specified can not be an empty string")
    return Volume(raw.line, raw.end_line, raw.original, tuple(paths))


def _transfer_args(raw: RawLine) -> tuple[tuple[str, ...], str]:
    what = raw.keyword.upper()
    args = _json_or_words(raw.rest)
    if len(args) < 2:
        raise InvalidArgument(
            f"{what} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    if raw.heredocs and heredoc_marker(args[-1]) is not None:
        raise InvalidArgument(f"{what} cannot accept a heredoc as a destination")
    return tuple(args[:-1]), args[-1]


def _copy(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    sources, dest = _transfer_args(raw)
    return Copy(
        raw.line,
        raw.end_line,
        raw.original,
        sources,
        dest,
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.bools.get("link", False),
        excludes=flags.lists.get("exclude", ()),
        heredocs=raw.heredocs,
        from_=flags.get("from"),
        parents=flags.bools.get("parents", False),
    )


def _add(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    sources, dest = _transfer_args(raw)
    return Add(
        raw.line,
        raw.end_line,
        raw.original,
        sources,
        dest,
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.bools.get("link", False),
        excludes=flags.lists.get("exclude", ()),
        heredocs=raw.heredocs,
        checksum=flags.get("checksum"),
        keep_git_dir=flags.bools.get("keep-git-dir", False),
    )


def _shell(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    parsed = json_array(raw.rest)
    if parsed is None:
        if not raw.rest:
            raise InvalidArgument("SHELL requires at least one argument")
        raise InvalidArgument("SHELL requires the arguments to be in JSON form")
    if not parsed:
        raise InvalidArgument("SHELL requires at least one argument")
    return Shell(raw.line, raw.end_line, raw.original, tuple(parsed))


def _health_duration(flags: Flags, name: str) -> int:
    text = flags.get(name)
    if not text:
        return 0
    value = parse_duration(text)
    if value == 0:
        return 0
    if value < 0:
        raise InvalidArgument(f'Interval "{name}" cannot be negative')
    if value < _MIN_HEALTH_DURATION_NS:
        raise InvalidArgument(f'Interval "{name}" cannot be less than 1ms')
    return value


def _healthcheck(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    parts = raw.rest.split(None, 1)
    if not parts:
        raise InvalidArgument("HEALTHCHECK requires at least one argument")
    kind = parts[0].upper()
    rest = parts[1].strip() if len(parts) > 1 else ""
    if kind == "NONE":
        if rest:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(raw.line, raw.end_line, raw.original, ("NONE",))
    if kind != "CMD":
        raise InvalidArgument(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    parsed = json_array(rest)
    if parsed is not None:
        test: tuple[str, ...] = ("CMD", *parsed)
    elif rest:
        test = ("CMD-SHELL", rest)
    else:
        raise InvalidArgument("Missing command after HEALTHCHECK CMD")
    retries_text = flags.get("retries")
    retries = 0
    if retries_text:
        try:
            retries = int(retries_text)
        except ValueError as exc:
            raise InvalidArgument(
                f'strconv.ParseInt: parsing "{retries_text}": invalid syntax'
            ) from exc
        if retries < 1:
            raise InvalidArgument(f"--retries must be at least 1 (not {retries})")
    return Healthcheck(
        raw.line,
        raw.end_line,
        raw.original,
        test,
        interval=_health_duration(flags, "interval"),
        timeout=_health_duration(flags, "timeout"),
        start_period=_health_duration(flags, "start-period"),
        start_interval=_health_duration(flags, "start-interval"),
        retries=retries,
    )


def _onbuild(raw: RawLine, flags: Flags, escape: str) -> Instruction:
    trigger = raw.rest
    if not trigger:
        raise InvalidArgument("ONBUILD requires at least one argument")
    parts = trigger.split(None, 1)
    keyword = parts[0].lower()
    if keyword == "onbuild":
        raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if keyword in ("from", "maintainer"):
        raise InvalidArgument(f"{keyword.upper()} isn't allowed as an ONBUILD trigger")
    # The trigger text is what the image records; parse it now so a bad trigger fails here.
    inner_flags, inner_rest = extract_flags(parts[1] if len(parts) > 1 else "")
    inner = RawLine(
        parts[0], inner_flags, inner_rest.strip(), trigger, raw.line, raw.end_line, raw.heredocs
    )
    # Docker records the trigger with its heredoc bodies so the later build can re-parse it.
    for doc in raw.heredocs:
        trigger += f"\n{doc.content}{doc.name}"
    return Onbuild(raw.line, raw.end_line, raw.original, trigger, parse_instruction(inner, escape))


_HANDLERS: Mapping[str, Callable[[RawLine, Flags, str], Instruction]] = {
    "from": _from,
    "run": _run,
    "cmd": _cmd,
    "entrypoint": _entrypoint,
    "env": _env,
    "label": _label,
    "arg": _arg,
    "expose": _expose,
    "workdir": _workdir,
    "user": _user,
    "stopsignal": _stopsignal,
    "maintainer": _maintainer,
    "volume": _volume,
    "copy": _copy,
    "add": _add,
    "shell": _shell,
    "healthcheck": _healthcheck,
    "onbuild": _onbuild,
}
