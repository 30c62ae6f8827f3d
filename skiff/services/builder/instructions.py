"""Typed records for Dockerfile instructions.

Each record keeps what was written (arguments not yet expanded, because the values of ARG and
ENV are known only while building) plus its location: ``line``/``end_line`` (1-based physical
lines, heredoc bodies included) and ``original``, the logical line with continuations joined,
which is what Docker's classic builder prints as ``Step N/M : ...`` and uses for its cache key.

Records of instructions Docker expands (ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME
WORKDIR, and ARG defaults) have ``expand(expander)`` returning a copy with variables replaced
and values validated; errors then name the instruction's line. RUN, CMD, ENTRYPOINT, SHELL and
HEALTHCHECK are not expanded by the builder (the shell does it at run time), and ONBUILD keeps
its trigger text verbatim for the image that later uses it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from skiff.errors import InvalidArgument

from .lines import DockerfileError, Heredoc, heredoc_marker
from .words import Expander

__all__ = [
    "EXPANDED_KEYWORDS",
    "Add",
    "Arg",
    "ArgDecl",
    "Cmd",
    "Copy",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Instruction",
    "Label",
    "Maintainer",
    "Onbuild",
    "Run",
    "Shell",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "exposed_ports",
    "is_url",
    "parse_stop_signal",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Instruction:
    KEYWORD: ClassVar[str] = ""
    line: int
    end_line: int
    original: str

    @property
    def keyword(self) -> str:
        return self.KEYWORD

    def _located(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``; an InvalidArgument from it becomes a DockerfileError at this line."""
        try:
            return fn()
        except DockerfileError:
            raise
        except InvalidArgument as exc:
            raise DockerfileError(self.line, exc.message) from exc


# --- commands (not expanded by the builder) -----------------------------------------------


@dataclass(frozen=True)
class _Command(Instruction):
    """RUN/CMD/ENTRYPOINT: JSON (exec) form is an argv; shell form is one string."""

    command: tuple[str, ...]
    shell_form: bool

    def argv(self, shell: tuple[str, ...] = ("/bin/sh", "-c")) -> list[str]:
        """The process arguments: shell form runs ``shell + [command]``."""
        if self.shell_form:
            return [*shell, *self.command]
        return list(self.command)


@dataclass(frozen=True)
class Run(_Command):
    KEYWORD: ClassVar[str] = "RUN"
    heredocs: tuple[Heredoc, ...] = ()
    network: str = ""  # "", "default", "none" or "host"

    def script(self) -> str:
        """The shell-form text to run, heredoc bodies included.

        ``RUN <<EOF`` alone runs the body itself as the script; otherwise the command line is
        given to the shell followed by the bodies and delimiters, as the shell expects them.
        """
        text = self.command[0] if self.command else ""
        if not self.heredocs:
            return text
        if len(self.heredocs) == 1 and re.fullmatch(r"\d*<<-?\S+", text.strip()):
            return self.heredocs[0].body
        bodies = "".join(f"{doc.content}{doc.name}\n" for doc in self.heredocs)
        return f"{text}\n{bodies}"


@dataclass(frozen=True)
class Cmd(_Command):
    KEYWORD: ClassVar[str] = "CMD"


@dataclass(frozen=True)
class Entrypoint(_Command):
    KEYWORD: ClassVar[str] = "ENTRYPOINT"


@dataclass(frozen=True)
class Shell(Instruction):
    KEYWORD: ClassVar[str] = "SHELL"
    shell: tuple[str, ...]


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """``test`` is ("NONE",), ("CMD-SHELL", text) or ("CMD", argv...); durations in ns."""

    KEYWORD: ClassVar[str] = "HEALTHCHECK"
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def config(self) -> dict[str, Any]:
        """Docker's image-config ``Healthcheck`` object (zero values left out, as Docker does)."""
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class Onbuild(Instruction):
    """``trigger`` is stored in the image config verbatim; ``instruction`` is it, parsed."""

    KEYWORD: ClassVar[str] = "ONBUILD"
    trigger: str
    instruction: Instruction


@dataclass(frozen=True)
class Maintainer(Instruction):
    KEYWORD: ClassVar[str] = "MAINTAINER"
    name: str


# --- instructions expanded with the build's variables -------------------------------------


@dataclass(frozen=True)
class From(Instruction):
    """``FROM [--platform=P] image [AS name]``; ``image`` may name an earlier stage."""

    KEYWORD: ClassVar[str] = "FROM"
    image: str
    stage_name: str = ""
    platform: str = ""

    @property
    def is_scratch(self) -> bool:
        return self.image.lower() == "scratch"

    def expand(self, ex: Expander) -> From:
        """Expand with the global (pre-FROM) ARGs only, as Docker does."""

        def run() -> From:
            image = ex.expand(self.image)
            if not image:
                raise InvalidArgument(f"base name ({self.image}) should not be blank")
            return replace(self, image=image, platform=ex.expand(self.platform))

        return self._located(run)


def _expand_pairs(
    ex: Expander, pairs: tuple[tuple[str, str], ...], what: str
) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        name = ex.expand(key)
        if not name:
            raise InvalidArgument(f"{what} names can not be blank")
        out.append((name, ex.expand(value)))
    return tuple(out)


@dataclass(frozen=True)
class Env(Instruction):
    """``pairs`` as written (quotes kept) until expanded; later pairs see earlier ones only
    through the builder (Docker expands the whole instruction with the env before it)."""

    KEYWORD: ClassVar[str] = "ENV"
    pairs: tuple[tuple[str, str], ...]

    def expand(self, ex: Expander) -> Env:
        return self._located(lambda: replace(self, pairs=_expand_pairs(ex, self.pairs, "ENV")))


@dataclass(frozen=True)
class Label(Instruction):
    KEYWORD: ClassVar[str] = "LABEL"
    pairs: tuple[tuple[str, str], ...]

    def expand(self, ex: Expander) -> Label:
        return self._located(lambda: replace(self, pairs=_expand_pairs(ex, self.pairs, "LABEL")))


@dataclass(frozen=True)
class ArgDecl:
    name: str
    default: str | None  # None: declared without a default


@dataclass(frozen=True)
class Arg(Instruction):
    KEYWORD: ClassVar[str] = "ARG"
    args: tuple[ArgDecl, ...]

    def expand(self, ex: Expander) -> Arg:
        """Expand the defaults (names are taken literally)."""
        return self._located(
            lambda: replace(
                self,
                args=tuple(
                    ArgDecl(a.name, None if a.default is None else ex.expand(a.default))
                    for a in self.args
                ),
            )
        )


_PORT_SPEC = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


def exposed_ports(specs: list[str] | tuple[str, ...]) -> list[str]:
    """Validate EXPOSE specs and return Docker's ``ExposedPorts`` keys (ranges expanded)."""
    out: list[str] = []
    for spec in specs:
        match = _PORT_SPEC.match(spec)
        if not match:
            if re.match(r"^[\d-]+/", spec) or "/" not in spec:
                raise InvalidArgument(f"invalid containerPort: {spec.split('/')[0]}")
            raise InvalidArgument(f"invalid port specification: {spec}")
        first, last, proto = match.group(1), match.group(2), (match.group(3) or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"invalid proto: {proto}")
        start = int(first)
        end = int(last) if last else start
        if end < start or end > 65535:
            raise InvalidArgument(f"invalid range specified for container port: {spec}")
        out.extend(f"{port}/{proto}" for port in range(start, end + 1))
    return out


@dataclass(frozen=True)
class Expose(Instruction):
    KEYWORD: ClassVar[str] = "EXPOSE"
    ports: tuple[str, ...]

    def expand(self, ex: Expander) -> Expose:
        def run() -> Expose:
            words = tuple(w for port in self.ports for w in ex.expand_words(port))
            exposed_ports(words)  # validate now, at the instruction's line
            return replace(self, ports=words)

        return self._located(run)

    def exposed(self) -> list[str]:
        return self._located(lambda: exposed_ports(self.ports))


@dataclass(frozen=True)
class Workdir(Instruction):
    """Kept as written: a relative path is resolved by the builder against the current one."""

    KEYWORD: ClassVar[str] = "WORKDIR"
    path: str

    def expand(self, ex: Expander) -> Workdir:
        return self._located(lambda: replace(self, path=ex.expand(self.path)))


@dataclass(frozen=True)
class User(Instruction):
    """``user[:group]``, names or ids."""

    KEYWORD: ClassVar[str] = "USER"
    user: str

    def expand(self, ex: Expander) -> User:
        return self._located(lambda: replace(self, user=ex.expand(self.user)))


@dataclass(frozen=True)
class Volume(Instruction):
    KEYWORD: ClassVar[str] = "VOLUME"
    paths: tuple[str, ...]

    def expand(self, ex: Expander) -> Volume:
        def run() -> Volume:
            paths = tuple(ex.expand(p).strip() for p in self.paths)
            if any(not p for p in paths):
                raise InvalidArgument("VOLUME specified can not be an empty string")
            return replace(self, paths=paths)

        return self._located(run)


_SIGNALS = {
    "ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8, "HUP": 1,
    "ILL": 4, "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13, "POLL": 29, "PROF": 27,
    "PWR": 30, "QUIT": 3, "SEGV": 11, "STKFLT": 16, "STOP": 19, "SYS": 31, "TERM": 15,
    "TRAP": 5, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12,
    "VTALRM": 26, "WINCH": 28, "XCPU": 24, "XFSZ": 25,
}  # fmt: skip


def parse_stop_signal(text: str) -> int:
    """Signal number of ``SIGTERM``/``TERM``/``15``/``SIGRTMIN+3``; InvalidArgument otherwise."""
    if text.isdigit():
        number = int(text)
        if 0 < number <= 64:
            return number
        raise InvalidArgument(f"invalid signal: {text}")
    name = text.upper().removeprefix("SIG")
    if name in _SIGNALS:
        return _SIGNALS[name]
    match = re.fullmatch(r"RTMIN(?:\+(\d+))?|RTMAX(?:-(\d+))?", name)
    if match:
        number = (
            34 + int(match.group(1) or 0)
            if name.startswith("RTMIN")
            else 64 - int(match.group(2) or 0)
        )
        if 34 <= number <= 64:
            return number
    raise InvalidArgument(f"invalid signal: {text}")


@dataclass(frozen=True)
class StopSignal(Instruction):
    KEYWORD: ClassVar[str] = "STOPSIGNAL"
    signal: str

    def expand(self, ex: Expander) -> StopSignal:
        def run() -> StopSignal:
            value = ex.expand(self.signal)
            parse_stop_signal(value)
            return replace(self, signal=value)

        return self._located(run)


def is_url(source: str) -> bool:
    """ADD fetches http(s) sources; everything else is a path in the context."""
    return source.startswith(("http://", "https://"))


_CHMOD = re.compile(r"^[0-7]{1,4}$")


@dataclass(frozen=True)
class _Transfer(Instruction):
    """Common part of COPY and ADD. ``heredocs`` are inline sources: a source word
    ``<<NAME`` stands for the body of the heredoc NAME (see :meth:`inline_sources`)."""

    sources: tuple[str, ...]
    dest: str
    chown: str = ""
    chmod: str = ""
    link: bool = False
    excludes: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()

    def inline_sources(self) -> dict[str, str]:
        """File name -> content of the heredoc sources (``COPY <<EOF /dst`` writes /dst/EOF
        when /dst is a directory, else /dst)."""
        return {doc.name: doc.body for doc in self.heredocs}

    def file_sources(self) -> tuple[str, ...]:
        """The sources that are paths or URLs (heredoc markers left out)."""
        if not self.heredocs:
            return self.sources
        return tuple(s for s in self.sources if heredoc_marker(s) is None)

    def _expand_common(self, ex: Expander) -> dict[str, Any]:
        chmod = ex.expand(self.chmod)
        if chmod and not _CHMOD.match(chmod):
            raise InvalidArgument(f"invalid chmod parameter: {chmod}")
        heredocs = tuple(
            replace(doc, content=ex.expand_heredoc(doc.content), expand=False)
            if doc.expand
            else doc
            for doc in self.heredocs
        )
        return {
            "sources": tuple(
                s if self.heredocs and heredoc_marker(s) else ex.expand(s) for s in self.sources
            ),
            "dest": ex.expand(self.dest),
            "chown": ex.expand(self.chown),
            "chmod": chmod,
            "excludes": tuple(ex.expand(e) for e in self.excludes),
            "heredocs": heredocs,
        }


@dataclass(frozen=True)
class Copy(_Transfer):
    KEYWORD: ClassVar[str] = "COPY"
    from_: str = ""  # --from: a stage name, a stage index or an image reference
    parents: bool = False

    def expand(self, ex: Expander) -> Copy:
        return self._located(
            lambda: replace(self, from_=ex.expand(self.from_), **self._expand_common(ex))
        )


@dataclass(frozen=True)
class Add(_Transfer):
    KEYWORD: ClassVar[str] = "ADD"
    checksum: str = ""
    keep_git_dir: bool = False

    def expand(self, ex: Expander) -> Add:
        return self._located(
            lambda: replace(self, checksum=ex.expand(self.checksum), **self._expand_common(ex))
        )


# The instructions whose arguments Docker expands with ARG/ENV values (ONBUILD triggers are
# expanded when they run, as the instruction they hold).
EXPANDED_KEYWORDS = frozenset(
    {"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
     "WORKDIR"}
)  # fmt: skip
