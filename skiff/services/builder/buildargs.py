"""Build-argument scoping: which value a variable has at each point of a build.

Docker's rules, which the builder follows step by step through this class:
- ``--build-arg`` values are visible only where an ARG of that name is declared;
- global ARGs (before the first FROM) are visible to FROM lines only; a stage sees one only
  after redeclaring it (``ARG NAME`` without a default then takes the global value);
- a declared ARG takes the ``--build-arg`` value, else its default, else it is unset;
- ENV (from the base image or the stage) overrides an ARG of the same name;
- the proxy variables (HTTP_PROXY, ...) are predefined: a ``--build-arg`` for them is visible
  to RUN and to expansion without any ARG, and never counts as unused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .instructions import Arg
from .words import Expander

__all__ = ["PROXY_ARGS", "BuildArgs", "StageScope"]

PROXY_ARGS = frozenset(
    {
        "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
        "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
    }
)  # fmt: skip


class BuildArgs:
    """The ``--build-arg`` values of one build and what the Dockerfile consumed of them."""

    def __init__(self, given: Mapping[str, str | None], escape: str = "\\") -> None:
        # A build-arg given without a value (`--build-arg NAME` with NAME unset in the
        # client's environment) does not override anything.
        self.given = {k: v for k, v in given.items() if v is not None}
        self.escape = escape
        self.consumed: set[str] = set()
        self.meta: dict[str, str | None] = {}

    def declare_meta(self, args: Iterable[Arg]) -> dict[str, str]:
        """Evaluate the global ARGs in order; return the environment FROM lines expand with."""
        for instruction in args:
            for decl in instruction.expand(Expander(self.meta_env(), self.escape)).args:
                self.consumed.add(decl.name)
                self.meta[decl.name] = self.given.get(decl.name, decl.default)
        return self.meta_env()

    def meta_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.given.items() if k in PROXY_ARGS}
        env.update({k: v for k, v in self.meta.items() if v is not None})
        return env

    def stage(self, image_env: Iterable[str] = ()) -> StageScope:
        """A scope for one stage, starting from the base image's ``Env`` (``K=V`` strings)."""
        return StageScope(self, image_env)

    def unused(self) -> list[str]:
        """Build-args never declared; Docker warns ``One or more build-args [...] were not
        consumed``."""
        return sorted(k for k in self.given if k not in self.consumed and k not in PROXY_ARGS)


class StageScope:
    def __init__(self, build_args: BuildArgs, image_env: Iterable[str]) -> None:
        self.build_args = build_args
        self.args: dict[str, str | None] = {}
        self.env: dict[str, str] = {}
        for entry in image_env:
            key, _, value = entry.partition("=")
            self.env[key] = value

    def declare(self, instruction: Arg) -> None:
        """Apply an ARG instruction (its defaults are expanded with the scope so far)."""
        expanded = instruction.expand(self.expander())
        for decl in expanded.args:
            self.build_args.consumed.add(decl.name)
            if decl.name in self.build_args.given:
                value: str | None = self.build_args.given[decl.name]
            elif decl.default is not None:
                value = decl.default
            else:
                value = self.build_args.meta.get(decl.name)
            self.args[decl.name] = value

    def set_env(self, key: str, value: str) -> None:
        self.env[key] = value

    def variables(self) -> dict[str, str]:
        """Name -> value for expansion: ARGs (and given proxy args), ENV winning."""
        out = {k: v for k, v in self.build_args.given.items() if k in PROXY_ARGS}
        out.update({k: v for k, v in self.args.items() if v is not None})
        out.update(self.env)
        return out

    def expander(self) -> Expander:
        return Expander(self.variables(), self.build_args.escape)

    def run_env(self) -> dict[str, str]:
        """Extra environment for RUN: the ARG values that ENV does not already set."""
        out = {k: v for k, v in self.build_args.given.items() if k in PROXY_ARGS}
        out.update({k: v for k, v in self.args.items() if v is not None})
        return {k: v for k, v in out.items() if k not in self.env}
