"""Build-arg scoping (skiff.services.builder.buildargs): Docker's precedence rules."""

from __future__ import annotations

from skiff.services.builder import Arg, BuildArgs, Env, Expander, parse


def _walk(text: str, given: dict[str, str | None]) -> tuple[BuildArgs, list[dict[str, str]]]:
    """Evaluate a Dockerfile's ARG/ENV the way the builder does; return each stage's
    variables at its end."""
    df = parse(text)
    args = BuildArgs(given, df.escape)
    meta = args.declare_meta(df.meta_args)
    result: list[dict[str, str]] = []
    for stage in df.stages:
        stage.from_.expand(Expander(meta))
        scope = args.stage()
        for instruction in stage.instructions:
            if isinstance(instruction, Arg):
                scope.declare(instruction)
            elif isinstance(instruction, Env):
                for key, value in instruction.expand(scope.expander()).pairs:
                    scope.set_env(key, value)
        result.append(scope.variables())
    return args, result


def test_global_args_are_visible_to_from_only() -> None:
    df = parse("ARG TAG=1.0\nFROM busybox:$TAG\nRUN echo\n")
    args = BuildArgs({})
    meta = args.declare_meta(df.meta_args)
    assert meta == {"TAG": "1.0"}
    _, (stage,) = _walk("ARG TAG=1.0\nFROM busybox:$TAG\nRUN echo\n", {})
    assert "TAG" not in stage


def test_redeclared_global_takes_its_value() -> None:
    _, (stage,) = _walk("ARG TAG=1.0\nFROM busybox\nARG TAG\n", {})
    assert stage["TAG"] == "1.0"
    _, (stage,) = _walk("ARG TAG=1.0\nFROM busybox\nARG TAG\n", {"TAG": "2.0"})
    assert stage["TAG"] == "2.0"
    _, (stage,) = _walk("ARG TAG=1.0\nFROM busybox\nARG TAG=3.0\n", {})
    assert stage["TAG"] == "3.0"  # the stage's own default beats the global one


def test_build_arg_beats_default_and_undeclared_is_unused() -> None:
    args, (stage,) = _walk("FROM a\nARG A=default\nARG B\n", {"A": "given", "C": "x"})
    assert stage["A"] == "given"
    assert "B" not in stage  # declared without a default and not given: unset
    assert args.unused() == ["C"]


def test_env_overrides_arg_and_sees_it() -> None:
    _, (stage,) = _walk("FROM a\nARG V=arg\nENV W=${V}-w\nENV V=env\n", {})
    assert stage["V"] == "env"
    assert stage["W"] == "arg-w"


def test_arg_defaults_expand_with_earlier_values() -> None:
    _, (stage,) = _walk("FROM a\nARG A=1\nARG B=${A}2\nENV C=$B\n", {})
    assert stage["B"] == "12" and stage["C"] == "12"
    args = BuildArgs({})
    meta = args.declare_meta(parse("ARG A=x\nARG B=$A/y\nFROM a\n").meta_args)
    assert meta == {"A": "x", "B": "x/y"}


def test_args_do_not_leak_between_stages() -> None:
    _, (first, second) = _walk("FROM a\nARG A=1\nENV E=1\nFROM b\n", {})
    assert first["A"] == "1" and first["E"] == "1"
    assert second == {}


def test_proxy_args_are_predefined() -> None:
    args, (stage,) = _walk("FROM a\n", {"HTTP_PROXY": "http://127.0.0.1:3128", "no_proxy": "x"})
    assert stage == {"HTTP_PROXY": "http://127.0.0.1:3128", "no_proxy": "x"}
    assert args.unused() == []


def test_run_env_leaves_out_what_env_sets() -> None:
    df = parse("FROM a\nARG A=1\nARG B=2\nENV B=env\n")
    args = BuildArgs({"HTTPS_PROXY": "p"})
    scope = args.stage(["PATH=/bin", "B=image"])
    for instruction in df.stages[0].instructions:
        if isinstance(instruction, Arg):
            scope.declare(instruction)
    assert scope.run_env() == {"HTTPS_PROXY": "p", "A": "1"}
    assert scope.variables()["PATH"] == "/bin"
    assert scope.variables()["B"] == "image"  # the image's ENV wins over the ARG


def test_build_arg_without_value_is_ignored() -> None:
    args, (stage,) = _walk("FROM a\nARG A=default\n", {"A": None})
    assert stage["A"] == "default"
    assert args.unused() == []
