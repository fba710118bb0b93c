"""Parameters to priors: a selected ``nn.Parameter`` becomes a ``PyroSample`` (or a
constrained ``PyroParam``).

Before, with ``Linear.weight: Normal(0, 1)`` and ``Linear.bias: positive``::

    self.weight = nn.Parameter(torch.randn(in_size, out_size))
    self.bias = nn.Parameter(torch.rand(out_size))

After::

    self.weight = PyroSample(Prior(self, "Normal", 0, 1, shape=(in_size, out_size)))
    self.bias = PyroParam(torch.rand(out_size), constraint=constraints.positive)

The prior's shape is copied from the initializer, which is dropped, so no random numbers are
drawn for a weight that is now random. Where the initializer does not show the shape, it is
kept as ``shape=(<initializer>).shape``. A generated prior is recognised on later runs and
regenerated from the current spec; when nothing changed, not a byte moves.
"""

from __future__ import annotations

import ast
from typing import Optional

import libcst as cst

from .. import codegen
from ..index import ClassRecord
from ..shapes import code, static_shape
from ..sites import SiteKind, recognize
from ..spec import Constraint, Prior
from .compose import DEFINITIONS
from .registry import STATEMENTS, Example, Rule, register

PYRO_SAMPLE, PYRO_PARAM, PRIOR, CONSTRAINTS = "PyroSample", "PyroParam", "Prior", "constraints"


@register
class ParameterRewriter(Rule):
    """Attributes it makes random go to the context's ``random``, which the pyro_method rule reads."""

    pass_ = STATEMENTS
    enters = DEFINITIONS | {cst.SimpleStatementLine}
    generated_names = {
        PYRO_PARAM: "pyro.nn",
        PYRO_SAMPLE: "pyro.nn",
        CONSTRAINTS: "torch.distributions",
        PRIOR: "bayesify.runtime",
    }

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.SimpleStatementLine:
        scope = self.method_scope()
        if scope is None or scope[0].order not in self.context.converting:
            return updated_node
        record, self_name = scope
        body = [self._rewrite(record, self_name, statement) for statement in updated_node.body]
        if all(new is old for new, old in zip(body, updated_node.body)):
            return updated_node
        return updated_node.with_changes(body=body)

    def _rewrite(
        self, record: ClassRecord, self_name: str, statement: cst.BaseSmallStatement
    ) -> cst.BaseSmallStatement:
        site = recognize(statement, self_name, self.context.imports)
        if site is None:
            return statement
        shape = site.generated_shape if site.kind is SiteKind.GENERATED else self._shape(site.init)
        entry = self.context.planner.select(self.context.path, record, (site.attr,), site.kind, shape)
        line = record.attr_lines.get(site.attr)
        if entry is None:
            if site.kind is SiteKind.GENERATED:
                self.context.add_random(record, site.attr)
                self.context.planner.warn(
                    "BAY202",
                    self.context.path,
                    line,
                    f"{record.name}.{site.attr} has a generated prior that no entry of the spec "
                    "selects any more; it is left as it is (regenerate from the deterministic "
                    "source to drop it)",
                )
            return statement
        if site.kind in (SiteKind.PARAMETER, SiteKind.REGISTERED) and (
            self.context.ties_weights or site.attr in record.init_reads
        ):
            self.context.at_build.setdefault(record.order, set()).add(entry.line)
            if isinstance(entry.action, Prior):
                self.context.add_random(record, site.attr)
            return statement
        if isinstance(entry.action, Prior):
            self.context.add_random(record, site.attr)
            value = self._sample(self_name, entry.action, shape)
        elif site.init is None:
            self.context.planner.warn(
                "BAY203",
                self.context.path,
                line,
                f"{record.name}.{site.attr} is a generated prior and has no initial value to "
                f"constrain; {entry.describe(self.context.planner.spec.path)} is not applied",
            )
            return statement
        else:
            value = self._constrained(site.init, entry.action)
        if same_code(site.call, value):
            return statement
        if site.kind is SiteKind.REGISTERED:
            target = cst.Attribute(value=cst.Name(self_name), attr=cst.Name(site.attr))
            return cst.Assign(targets=[cst.AssignTarget(target=target)], value=value)
        return statement.deep_replace(site.call, value)

    def _shape(self, init: cst.BaseExpression) -> str:
        return static_shape(init, self.context.imports) or f"({code(init)}).shape"

    def _sample(self, self_name: str, prior: Prior, shape: Optional[str]) -> cst.Call:
        self.context.needed.update((PYRO_SAMPLE, PRIOR))
        args, kwargs = prior.arguments()
        if shape is not None:
            kwargs["shape"] = cst.parse_expression(shape)  # the user's own code, not the spec's
        prior_call = codegen.call(PRIOR, codegen.name(self_name), prior.family, *args, **kwargs)
        return codegen.call(PYRO_SAMPLE, prior_call)

    def _constrained(self, init: cst.BaseExpression, constraint: Constraint) -> cst.Call:
        self.context.needed.update((PYRO_PARAM, CONSTRAINTS))
        return codegen.call(PYRO_PARAM, init, constraint=constraint.node())


def same_code(old: cst.CSTNode, new: cst.CSTNode) -> bool:
    """Equal up to formatting and comments, so a generated line that black re-wrapped, or
    that a user commented, stays as it is."""
    return ast.dump(ast.parse(code(old).strip())) == ast.dump(ast.parse(code(new).strip()))


#: A file rewritten earlier: its prior is a generated one.
_GENERATED = """\
from pyro.nn import PyroModule, PyroSample

from bayesify.runtime import Prior


class Linear(PyroModule):
    def __init__(self):
        super().__init__()
        self.weight = PyroSample(Prior(self, "Normal", 0, 1, shape=(2,)))
"""

#: What the rule does, run by tests/test_rules.py.
ParameterRewriter.examples = (
    # valid: a prior and a constraint
    Example(
        before="""\
import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, 2))
        self.bias = nn.Parameter(torch.rand(2))
""",
        after="""\
import torch
from torch import nn
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch.distributions import constraints
from bayesify.runtime import Prior


class Linear(PyroModule):
    def __init__(self, n):
        super().__init__()
        self.weight = PyroSample(Prior(self, "Normal", 0, 1, shape=(n, 2)))
        self.bias = PyroParam(torch.rand(2), constraint=constraints.positive)
""",
        spec="priors:\n  Linear.weight: Normal(0, 1)\nconstraints:\n  Linear.bias: positive\n",
    ),
    # invalid: a generated prior that no entry selects any more
    Example(
        before=_GENERATED,
        diagnostics=("BAY202",),
    ),
    # no-op: already rewritten from the same spec
    Example(
        before=_GENERATED,
        spec="priors:\n  Linear.weight: Normal(0, 1)\n",
    ),
)
