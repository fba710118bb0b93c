"""No spec text reaches generated code except as checked identifiers, string literals and
finite numbers: a spec in a pull request must never run code where the model is built."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import libcst as cst
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesify import codegen
from bayesify.runner import run_source
from bayesify.spec import SpecError, parse_spec

MODEL = textwrap.dedent(
    """\
    import torch.nn as nn


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)
    """
)
#: The attack reported in the security issue: a selector whose module part closes the
#: generated string literal and calls os.system when the model is built.
ATTACK = '[m"+str(__import__("os").system("touch PWNED")).strip("0")+"]:Model.fc.weight'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text())
def test_any_text_is_written_as_one_string_literal_that_reads_back_the_same(text: str) -> None:
    call = codegen.code(codegen.call("set_prior", codegen.name("self"), text))
    parsed = ast.parse(call, mode="eval").body
    assert isinstance(parsed, ast.Call) and len(parsed.args) == 2
    assert isinstance(parsed.args[1], ast.Constant) and parsed.args[1].value == text
    assert call.isascii()


@pytest.mark.parametrize("value", ["os.system", "a b", "1x", "lambda", "x)", ""])
def test_a_name_that_is_no_identifier_is_refused(value: str) -> None:
    with pytest.raises(codegen.UnsafeValue):
        codegen.name(value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), object(), b"x"])
def test_a_value_that_is_no_finite_literal_is_refused(value: object) -> None:
    with pytest.raises(codegen.UnsafeValue):
        codegen.literal(value)  # type: ignore[arg-type]


def test_negative_numbers_and_negative_zero_read_back_exactly() -> None:
    for value in (-1, -0.0, -1.5e-300, 3, 2.5):
        written = codegen.code(codegen.literal(value))
        read = ast.literal_eval(written)
        assert read == value and str(read) == str(value)


def test_the_reported_attack_is_refused_with_its_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(f"version: 1\npriors:\n  '{ATTACK}': Normal(0, 1)\n", "priors.yaml")
    assert caught.value.line == 3
    assert "is not of the form" in caught.value.message


def test_the_reported_attack_runs_nothing_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(MODEL)
    spec = tmp_path / "priors.yaml"
    spec.write_text(f"version: 1\npriors:\n  '{ATTACK}': Normal(0, 1)\n")
    run = subprocess.run(
        [sys.executable, "-m", "bayesify", "rewrite", "m.py", "--priors", "priors.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    assert "priors.yaml:3" in run.stderr
    assert (tmp_path / "m.py").read_text() == MODEL
    subprocess.run([sys.executable, "-c", "import m; m.Model()"], cwd=tmp_path, check=True)
    assert not (tmp_path / "PWNED").exists()


SELECTOR_TEXT = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)


def _generated_calls(source: bytes) -> list[ast.Call]:
    tree = ast.parse(source)
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in {"set_prior", "set_constraint"}
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(module=SELECTOR_TEXT, attribute=st.sampled_from(["fc", "f*", "[f]c", "?c"]))
def test_whatever_selector_a_spec_holds_the_generated_call_is_only_literals(
    module: str, attribute: str
) -> None:
    """A selector is refused, or written as one string literal that reads back as itself."""
    selector = f"{module}:Model.{attribute}.weight"
    try:
        spec = parse_spec(
            "version: 1\npriors:\n  " + codegen.code(codegen.literal(selector)) + ": Normal(0, 1)\n",
            "priors.yaml",
        )
    except SpecError:
        return
    result = run_source(MODEL.encode(), spec, path="m.py")
    for file_result in result.results:
        if file_result.rewritten is None:
            continue
        for call in _generated_calls(file_result.rewritten):
            module_arg, selector_arg, *rest = call.args
            assert ast.unparse(module_arg) == "self"
            assert isinstance(selector_arg, ast.Constant) and selector_arg.value == selector
            for node in [*rest, *(k.value for k in call.keywords)]:
                assert all(isinstance(n, (ast.Constant, ast.UnaryOp, ast.USub)) for n in ast.walk(node))


def test_generated_statements_are_nodes_not_text() -> None:
    statement = codegen.statement(codegen.call("pyro_module", codegen.name("self")))
    assert isinstance(statement, cst.SimpleStatementLine)
    assert cst.Module([statement]).code == "pyro_module(self)\n"
