"""``@pyro_method`` on methods that read a random attribute.

A ``PyroSample`` attribute is sampled once per call of the outermost ``PyroModule``; outside
such a call it cannot be named or traced. A method other than ``forward`` that reads a random
attribute, and that callers use directly (``model.predict(x)``), needs ``@pyro_method`` to
get the same treatment.

Before (``weight`` made random)::

    def predict(self, x):
        return x @ self.weight

After::

    @pyro_method
    def predict(self, x):
        return x @ self.weight

``forward``, dunder methods, properties, static and class methods are left alone, as are
methods that already carry ``@pyro_method``.
"""

from __future__ import annotations

import libcst as cst

from ..index import ClassRecord
from ..names import ImportTable, dotted_from_cst, is_pyro_nn
from .context import ClassScopedTransformer

PYRO_METHOD = "pyro_method"
_LEAVE_ALONE = {"property", "staticmethod", "classmethod", "cached_property", "setter"}


class PyroMethodRewriter(ClassScopedTransformer):
    """Reads of ``self.<attr>`` come from the index (:attr:`ClassRecord.method_reads`), so
    this rewriter never looks inside method bodies."""

    def __init__(
        self,
        classes: dict[int, ClassRecord],
        first_order: int,
        random_attrs: dict[int, set[str]],
        imports: ImportTable,
    ) -> None:
        super().__init__(classes, first_order)
        self.random_attrs = random_attrs
        self.imports = imports
        self.needed: set[str] = set()

    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.FunctionDef:
        scope = self.method_scope()
        if scope is None:
            return updated_node
        record = scope[0]
        reads = record.method_reads.get(updated_node.name.value, frozenset())
        if not reads & self.random_attrs.get(record.order, set()) or not self._wants_decorator(updated_node):
            return updated_node
        self.needed.add(PYRO_METHOD)
        decorator = cst.Decorator(decorator=cst.Name(PYRO_METHOD))
        return updated_node.with_changes(decorators=[decorator, *updated_node.decorators])
    def _wants_decorator(self, node: cst.FunctionDef) -> bool:
        name = node.name.value
        if name == "forward" or (name.startswith("__") and name.endswith("__")):
            return False
        for decorator in node.decorators:
            expression = decorator.decorator
            if isinstance(expression, cst.Call):
                expression = expression.func
            dotted = dotted_from_cst(expression) or ""
            if dotted.rpartition(".")[2] in _LEAVE_ALONE or is_pyro_nn(
                self.imports.resolve(dotted), PYRO_METHOD
            ):
                return False
        return True
