"""The Dockerfile front end of the builder: parsing, variable expansion, build-arg scoping and
.dockerignore matching. Pure code; the builder that runs the steps lives elsewhere."""

from __future__ import annotations

from .buildargs import PROXY_ARGS, BuildArgs, StageScope
from .dockerignore import Matcher
from .dockerignore import load as load_dockerignore
from .dockerignore import walk as walk_context
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
    exposed_ports,
    is_url,
    parse_stop_signal,
)
from .lines import DockerfileError, Heredoc
from .parser import Dockerfile, Stage, load, parse, parse_triggers
from .words import Expander, split_raw, split_words

__all__ = [
    "PROXY_ARGS",
    "Add",
    "Arg",
    "ArgDecl",
    "BuildArgs",
    "Cmd",
    "Copy",
    "Dockerfile",
    "DockerfileError",
    "Entrypoint",
    "Env",
    "Expander",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "Instruction",
    "Label",
    "Maintainer",
    "Matcher",
    "Onbuild",
    "Run",
    "Shell",
    "Stage",
    "StageScope",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "exposed_ports",
    "is_url",
    "load",
    "load_dockerignore",
    "parse",
    "parse_stop_signal",
    "parse_triggers",
    "split_raw",
    "split_words",
    "walk_context",
]
