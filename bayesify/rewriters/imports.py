"""Imports: add only the names the rewrite uses, next to the imports already there.

Before::

    import torch
    from torch import nn

    class Linear(nn.Module): ...

After (a prior and a constraint were generated)::

    import torch
    from torch import nn
    from pyro.nn import PyroModule, PyroParam, PyroSample
    from torch.distributions import constraints
    from bayesify.runtime import Prior

    class Linear(PyroModule): ...

A name the file already imports from the right place is not imported again; a ``from
pyro.nn import …`` line already there gets the missing names. A name the file already uses for
something else is an error, never a silent shadowing.
"""

from __future__ import annotations

import libcst as cst

from .. import codegen
from ..names import ImportTable
from .example import Example

#: Where each generated name comes from: filled by the rules as they register (their
#: ``generated_names``).
SOURCES: dict[str, str] = {}
#: The order new import lines are written in; a module not listed comes last.
MODULE_ORDER = ("pyro.nn", "torch.distributions", "bayesify.runtime")
#: Other spellings of the same objects, which count as already imported.
ALIASES = {"pyro.nn": ("pyro.nn", "pyro.nn.module")}


class NameClashError(Exception):
    pass


def missing_imports(needed: set[str], imports: ImportTable, local_names: set[str]) -> dict[str, list[str]]:
    """The names to import, by source module; raises :class:`NameClashError` on a clash."""
    missing: dict[str, list[str]] = {}
    for name in sorted(needed):
        source = SOURCES[name]
        bound = imports.bound.get(name)
        if bound in {f"{module}.{name}" for module in ALIASES.get(source, (source,))}:
            continue
        if bound is not None or name in local_names:
            raise NameClashError(
                f"the rewrite needs the name {name!r} (from {source}), but this file already "
                f"uses it{' for ' + bound if bound else ''}; rename that one first"
            )
        missing.setdefault(source, []).append(name)
    return missing


def add_imports(module: cst.Module, missing: dict[str, list[str]]) -> cst.Module:
    if not missing:
        return module
    body = list(module.body)
    remaining = dict(missing)
    for position, statement in enumerate(body):
        extended = _extend_existing(statement, remaining)
        if extended is not statement:
            body[position] = extended
    new_lines = [
        cst.SimpleStatementLine(
            [
                cst.ImportFrom(
                    module=codegen.dotted(source), names=[cst.ImportAlias(codegen.name(n)) for n in names]
                )
            ]
        )
        for source, names in sorted(remaining.items(), key=lambda item: _module_rank(item[0]))
    ]
    anchor = _insertion_point(body)
    if anchor == 0 and body and new_lines:
        # Keep the file's leading comments and blank lines (shebang, licence) on top.
        first = body[0]
        body[0] = first.with_changes(leading_lines=())
        new_lines[0] = new_lines[0].with_changes(leading_lines=first.leading_lines)
    body[anchor:anchor] = new_lines
    return module.with_changes(body=body)


def _module_rank(module: str) -> tuple[int, str]:
    return (MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER), module)


def _extend_existing(statement: cst.CSTNode, remaining: dict[str, list[str]]) -> cst.CSTNode:
    """Add missing names to an existing, unparenthesised ``from <source> import …`` line."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return statement
    node = statement.body[0]
    if (
        not isinstance(node, cst.ImportFrom)
        or node.relative
        or isinstance(node.names, cst.ImportStar)
        or node.lpar is not None
        or node.module is None
    ):
        return statement
    source = cst.Module([]).code_for_node(node.module)
    names = remaining.pop(source, None)
    if not names:
        return statement
    aliases = list(node.names)
    aliases[-1] = aliases[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    aliases += [
        cst.ImportAlias(
            name=cst.Name(name),
            comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            if i < len(names) - 1
            else cst.MaybeSentinel.DEFAULT,
        )
        for i, name in enumerate(names)
    ]
    return statement.with_changes(body=[node.with_changes(names=aliases)])


def _is_import(statement: cst.CSTNode) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(small, (cst.Import, cst.ImportFrom)) for small in statement.body
    )


def _is_docstring(statement: cst.CSTNode) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _insertion_point(body: list[cst.CSTNode]) -> int:
    """After the last import before the first class or function (the names must be bound
    before any class uses them); else after the docstring; else at the top."""
    first_definition = next(
        (i for i, s in enumerate(body) if isinstance(s, (cst.ClassDef, cst.FunctionDef))), len(body)
    )
    imports = [i for i, statement in enumerate(body[:first_definition]) if _is_import(statement)]
    if imports:
        return imports[-1] + 1
    return 1 if body and _is_docstring(body[0]) else 0


#: What the imports step does, run by tests/test_rules.py (the other rules' examples show
#: the imports they add).
EXAMPLES = (
    # invalid: the file uses a name the rewrite needs
    Example(
        before="""\
import torch
from torch import nn


from scipy.stats import Prior


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
""",
        spec="priors:\n  Linear.weight: Normal(0, 1)\n",
        diagnostics=("BAY003", "BAY205"),
    ),
)
