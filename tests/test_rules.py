"""Every rule's examples, and every lint's, run as a user's file runs: valid ones are
rewritten to what they show, invalid ones reported with the codes they show, no-op ones
left byte for byte as they are."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from bayesify import lints
from bayesify.rewriters import imports, registry
from bayesify.runner import run
from bayesify.spec import parse_spec

CASES = [
    pytest.param(example, owner != "lints", id=f"{owner}-{number}-{example.kind}")
    for owner, examples in [
        *((rule.__name__, rule.examples) for rule in registry.RULES),
        ("imports", imports.EXAMPLES),
        ("lints", lints.EXAMPLES),
    ]
    for number, example in enumerate(examples)
]


def test_every_rule_has_examples_of_what_it_does():
    for rule in registry.RULES:
        assert any(example.kind == "valid" for example in rule.examples), rule.__name__


@pytest.mark.parametrize("example, checks_output", CASES)
def test_example(example: registry.Example, checks_output: bool, tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text(example.before)
    result = run([source], parse_spec("version: 1\n" + example.spec, "priors.yaml"), jobs=1)
    file = result.results[0]
    reported = [d.code for d in [*([file.error] if file.error else []), *result.warnings, *result.lints]]
    assert reported == list(example.diagnostics)
    if checks_output:
        assert (file.rewritten.decode() if file.changed else None) == example.after


def test_a_hook_the_walk_would_never_reach_is_refused():
    class Calls(registry.Rule):
        enters = frozenset({cst.FunctionDef})

        def leave_Call(self, original_node, updated_node):
            return updated_node

    with pytest.raises(TypeError, match="leave_Call would never run"):
        registry.register(Calls)
    assert Calls not in registry.RULES
