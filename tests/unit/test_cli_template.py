"""The --format template engine: Go text/template behaviour the docker CLI's users rely on."""

from __future__ import annotations

import pytest

from skiff.cli.template import TemplateError, render

DOC = {"Name": "/web", "State": {"Status": "running", "ExitCode": 0.0, "Pid": 42},
       "Config": {"Labels": {"b": "2", "a": "1"}, "Env": ["A=1", "B=2"], "Cmd": None},
       "Ports": [], "Ok": True}


@pytest.mark.parametrize(("src", "want"), [
    ("{{.Name}}", "/web"),
    ("{{.State.Status}}/{{.State.Pid}}", "running/42"),
    ("{{.State.ExitCode}}", "0"),  # JSON numbers print like Go's float64 %v
    ("{{.Missing}}", "<no value>"),
    ("{{.State.Missing.Deeper}}", "<no value>"),
    ("{{.Config.Cmd}}", "<nil>"),
    ("{{.Ok}}", "true"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{json .Config.Labels}}", '{"a":"1","b":"2"}'),
    ("{{.Config.Labels | json}}", '{"a":"1","b":"2"}'),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{index .Config.Labels \"b\"}}", "2"),
    ("{{join .Config.Env \",\"}}", "A=1,B=2"),
    ("{{range .Config.Env}}<{{.}}>{{end}}", "<A=1><B=2>"),
    ("{{range .Ports}}x{{else}}none{{end}}", "none"),
    ("{{if .Ok}}yes{{else}}no{{end}}", "yes"),
    ("{{if .Missing}}yes{{else}}no{{end}}", "no"),
    ("{{with .State}}{{.Status}}{{end}}", "running"),
    ("{{upper .State.Status}} {{lower \"AB\"}} {{title \"ab\"}}", "RUNNING ab Ab"),
    ("{{printf \"%-8s|%d\" .State.Status .State.Pid}}", "running |42"),
    ("{{len .Config.Env}}", "2"),
    ("{{if eq .State.Status \"running\"}}up{{end}}", "up"),
    ("a {{- \" b \" -}} c", "a b c"),
    ("{{.Name}}\n", "/web\n"),
])
def test_render(src: str, want: str) -> None:
    assert render(src, DOC) == want


@pytest.mark.parametrize("src", ["{{if .Ok}}open", "{{end}}", "{{nosuchfunc .Name}}",
                                 "{{.Name .State}}", "{{(json .Name}}"])
def test_bad_templates_are_refused_with_a_message(src: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(src, DOC)
    assert info.value.message


def test_fields_of_python_objects_and_methods() -> None:
    class Row:
        Names = "web"

        def Size(self) -> str:
            return "1kB"

    assert render("{{.Names}} {{.Size}}", Row()) == "web 1kB"
    with pytest.raises(TemplateError):
        render("{{.Nope}}", Row())
