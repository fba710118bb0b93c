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
from ..names import ImportTable
from ..plan import Planner
from ..shapes import code, static_shape
from ..sites import ParameterSite, SiteKind, recognize
from ..spec import Constraint, Prior
from .context import ClassScopedTransformer

PYRO_SAMPLE, PYRO_PARAM, PRIOR, CONSTRAINTS = "PyroSample", "PyroParam", "Prior", "constraints"


class ParameterRewriter(ClassScopedTransformer):
    def __init__(
        self,
        classes: dict[int, ClassRecord],
        first_order: int,
        converting: set[int],
        imports: ImportTable,
        planner: Planner,
        path: str,
    ) -> None:
        super().__init__(classes, first_order)
        self.converting = converting
        self.imports = imports
        self.planner = planner
        self.path = path
        self.needed: set[str] = set()
        #: Attributes made random, by class order: the pyro_method rewriter reads them.
        self.random: dict[int, set[str]] = {}

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.SimpleStatementLine:
        scope = self.method_scope()
        if scope is None or scope[0].order not in self.converting:
            return updated_node
        record, self_name = scope
        body = [self._rewrite(record, self_name, statement) for statement in updated_node.body]
        if all(new is old for new, old in zip(body, updated_node.body)):
            return updated_node
        return updated_node.with_changes(body=body)

    def _rewrite(
        self, record: ClassRecord, self_name: str, statement: cst.BaseSmallStatement
    ) -> cst.BaseSmallStatement:
        site = recognize(statement, self_name, self.imports)
        if site is None:
            return statement
        shape = site.generated_shape if site.kind is SiteKind.GENERATED else self._shape(site.init)
        entry = self.planner.select(self.path, record, (site.attr,), site.kind, shape)
        line = record.attr_lines.get(site.attr)
        if entry is None:
            if site.kind is SiteKind.GENERATED:
                self.random.setdefault(record.order, set()).add(site.attr)
                self.planner.warn(
                    self.path,
                    line,
                    f"{record.name}.{site.attr} has a generated prior that no entry of the spec "
                    "selects any more; it is left as it is (regenerate from the deterministic "
                    "source to drop it)",
                )
            return statement
        if isinstance(entry.action, Prior):
            self.random.setdefault(record.order, set()).add(site.attr)
            value = self._sample(self_name, entry.action, shape)
        elif site.init is None:
            self.planner.warn(
                self.path,
                line,
                f"{record.name}.{site.attr} is a generated prior and has no initial value to "
                f"constrain; {entry.describe(self.planner.spec.path)} is not applied",
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
        return static_shape(init, self.imports) or f"({code(init)}).shape"

    def _sample(self, self_name: str, prior: Prior, shape: Optional[str]) -> cst.Call:
        self.needed.update((PYRO_SAMPLE, PRIOR))
        args, kwargs = prior.arguments()
        if shape is not None:
            kwargs["shape"] = cst.parse_expression(shape)  # the user's own code, not the spec's
        prior_call = codegen.call(PRIOR, codegen.name(self_name), prior.family, *args, **kwargs)
        return codegen.call(PYRO_SAMPLE, prior_call)

    def _constrained(self, init: cst.BaseExpression, constraint: Constraint) -> cst.Call:
        self.needed.update((PYRO_PARAM, CONSTRAINTS))
        return codegen.call(PYRO_PARAM, init, constraint=constraint.node())


def same_code(old: cst.CSTNode, new: cst.CSTNode) -> bool:
    """Equal up to formatting and comments, so a generated line that black re-wrapped, or
    that a user commented, stays as it is."""
    return ast.dump(ast.parse(code(old).strip())) == ast.dump(ast.parse(code(new).strip()))
