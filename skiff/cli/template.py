"""A small Go text/template: what ``--format`` needs in practice.

Supported: text and ``{{ }}`` actions (``{{-``/``-}}`` trim spaces), fields ``.A.B`` and ``.``,
string/number literals, pipelines ``a | b``, the functions Docker's CLI adds or people use
(``json``, ``upper``, ``lower``, ``title``, ``join``, ``split``, ``index``, ``len``,
``printf``, ``println``, ``truncate``, ``pad``, ``eq``, ``ne``, ``not``, ``and``, ``or``) and
``if``/``else``/``range``/``with``/``end``. Values print as Go's ``%v`` would: a missing map
key is ``<no value>``, ``None`` is ``<nil>``, lists ``[a b]``, dicts ``map[k:v]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skiff.errors import InvalidArgument


class TemplateError(InvalidArgument):
    """The template does not parse or cannot be applied to the value."""


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()


def go_str(value: Any) -> str:
    """Go's ``%v`` for decoded JSON values."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, Mapping):
        inner = " ".join(f"{k}:{go_str(v)}" for k, v in sorted(value.items()))
        return f"map[{inner}]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def go_json(value: Any) -> str:
    if value is MISSING:
        value = None
    return json.dumps(value, separators=(",", ":"), sort_keys=isinstance(value, Mapping))


def _truth(value: Any) -> bool:
    return value is not MISSING and bool(value)


def _printf(fmt: str, *args: Any) -> str:
    parts = iter(args)

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        spec, verb = m.group(1), m.group(2)
        arg = next(parts, MISSING)
        text = go_json(arg) if verb == "q" and isinstance(arg, str) else go_str(arg)
        if verb in "dv" and spec:
            return f"{text:>{spec.lstrip('-')}}" if not spec.startswith("-") else \
                f"{text:<{spec.lstrip('-')}}"
        if spec:
            return f"{text:<{spec[1:]}}" if spec.startswith("-") else f"{text:>{spec}}"
        return text

    return re.sub(r"%%|%(-?\d*)([svdqt])", sub, fmt)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, (list, tuple)):
            value = value[int(key)]
        else:
            raise TemplateError(f"index of {go_str(value)}: not a map or list")
    return value


FUNCS: dict[str, Callable[..., Any]] = {
    "json": go_json,
    "upper": lambda s: go_str(s).upper(),
    "lower": lambda s: go_str(s).lower(),
    "title": lambda s: go_str(s).title(),
    "join": lambda items, sep: sep.join(go_str(i) for i in (items or [])),
    "split": lambda s, sep: go_str(s).split(sep),
    "index": _index,
    "len": lambda v: len(v) if v is not MISSING and v is not None else 0,
    "printf": _printf,
    "print": lambda *a: "".join(go_str(v) for v in a),
    "println": lambda *a: " ".join(go_str(v) for v in a) + "\n",
    "truncate": lambda s, n: go_str(s)[: int(n)],
    "pad": lambda s, left, right: " " * int(left) + go_str(s) + " " * int(right),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "and": lambda *a: next((v for v in a if not _truth(v)), a[-1]),
    "or": lambda *a: next((v for v in a if _truth(v)), a[-1]),
}

# --- parsing -------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*"|`[^`]*`)|(\|)|(\()|(\))|([^\s|()]+))')


@dataclass
class _Node:
    kind: str  # text | action | if | range | with
    text: str = ""
    pipe: list[list[Any]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _tokens(src: str) -> list[Any]:
    """Arguments of a command: ('field', [names]), ('lit', value), ('fn', name), nested pipes."""
    pos = 0
    out: list[Any] = []
    stack: list[list[Any]] = []
    current: list[Any] = out
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        string, bar, lpar, rpar, word = m.groups()
        if string is not None:
            current.append(("lit", json.loads(string) if string[0] == '"' else string[1:-1]))
        elif bar:
            current.append(("|",))
        elif lpar:
            stack.append(current)
            sub: list[Any] = []
            current.append(("sub", sub))
            current = sub
        elif rpar:
            if not stack:
                raise TemplateError(f"unexpected ) in {src!r}")
            current = stack.pop()
        elif word is not None:
            current.append(_word(word))
    if stack:
        raise TemplateError(f"unclosed ( in {src!r}")
    return out


def _word(word: str) -> Any:
    if word == ".":
        return ("field", [])
    if word.startswith("."):
        return ("field", word[1:].split("."))
    if re.fullmatch(r"-?\d+", word):
        return ("lit", int(word))
    if re.fullmatch(r"-?\d+\.\d*", word):
        return ("lit", float(word))
    if word in ("true", "false"):
        return ("lit", word == "true")
    if word == "nil":
        return ("lit", None)
    if word in FUNCS:
        return ("fn", word)
    raise TemplateError(f'function "{word}" not defined')


def _pipeline(tokens: list[Any]) -> list[list[Any]]:
    cmds: list[list[Any]] = [[]]
    for tok in tokens:
        if tok[0] == "|":
            cmds.append([])
        else:
            cmds[-1].append(tok)
    if any(not c for c in cmds):
        raise TemplateError("missing command in pipeline")
    return cmds


def parse(src: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []
    current = root
    pos = 0
    pending_trim = False
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        if pending_trim:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            current.append(_Node("text", text))
        pending_trim = bool(m.group(3))
        pos = m.end()
        body = m.group(2).strip()
        if body.startswith("/*"):
            continue
        keyword, _, rest = body.partition(" ")
        if keyword in ("if", "range", "with"):
            node = _Node(keyword, pipe=_pipeline(_tokens(rest)))
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif keyword == "else":
            if not stack:
                raise TemplateError("unexpected {{else}}")
            current = stack[-1][0].orelse
        elif keyword == "end":
            if not stack:
                raise TemplateError("unexpected {{end}}")
            current = stack.pop()[1]
        else:
            current.append(_Node("action", pipe=_pipeline(_tokens(body))))
    tail = src[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if tail:
        current.append(_Node("text", tail))
    if stack:
        raise TemplateError(f"unexpected EOF: {{{{{stack[-1][0].kind}}}}} without {{{{end}}}}")
    return root


# --- evaluation ----------------------------------------------------------------------------


def _field(dot: Any, names: Sequence[str]) -> Any:
    value = dot
    for name in names:
        if isinstance(value, Mapping):
            value = value.get(name, MISSING)
        elif value is MISSING or value is None:
            return MISSING
        else:
            attr = getattr(value, name, MISSING)
            value = attr() if callable(attr) else attr
            if value is MISSING:
                raise TemplateError(f"can't evaluate field {name} in {type(dot).__name__}")
    return value


def _arg(tok: Any, dot: Any) -> Any:
    kind = tok[0]
    if kind == "field":
        return _field(dot, tok[1])
    if kind == "lit":
        return tok[1]
    if kind == "sub":
        return _run_pipe(_pipeline(tok[1]), dot)
    if kind == "fn":
        return FUNCS[tok[1]]()
    raise TemplateError(f"bad token {tok!r}")


def _run_pipe(pipe: list[list[Any]], dot: Any) -> Any:
    value: Any = MISSING
    for i, cmd in enumerate(pipe):
        head = cmd[0]
        if head[0] == "fn":
            args = [_arg(t, dot) for t in cmd[1:]]
            if i > 0:
                args.append(value)
            try:
                value = FUNCS[head[1]](*args)
            except TypeError as exc:
                raise TemplateError(f"wrong number of args for {head[1]}") from exc
        else:
            if len(cmd) > 1 or i > 0:
                raise TemplateError(f"can't give argument to non-function {head!r}")
            value = _arg(head, dot)
    return value


def _render(nodes: list[_Node], dot: Any, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            out.append(go_str(_run_pipe(node.pipe, dot)))
        else:
            value = _run_pipe(node.pipe, dot)
            if node.kind == "if":
                _render(node.body if _truth(value) else node.orelse, dot, out)
            elif node.kind == "with":
                if _truth(value):
                    _render(node.body, value, out)
                else:
                    _render(node.orelse, dot, out)
            else:  # range
                items = list(value.values() if isinstance(value, Mapping) else
                             (value if _truth(value) else []))
                if not items:
                    _render(node.orelse, dot, out)
                for item in items:
                    _render(node.body, item, out)


class Template:
    def __init__(self, src: str) -> None:
        self.src = src
        self.nodes = parse(src)

    def render(self, dot: Any) -> str:
        out: list[str] = []
        _render(self.nodes, dot, out)
        return "".join(out)


def render(src: str, dot: Any) -> str:
    return Template(src).render(dot)
