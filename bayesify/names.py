"""Resolve the names a file uses to the dotted names they stand for.

``nn.Module``, ``torch.nn.Module`` and ``M`` after ``from torch.nn import Module as M`` all
resolve to ``torch.nn.Module``: bayesify matches what a name *means*, never how it is spelled.

Resolution reads the import statements at a module's top level (including those inside
top-level ``if``/``try`` blocks, where optional imports live). It is deliberately not a full
scope analysis: a name re-bound inside a function body is not followed. That keeps the index
pass a fraction of a parse, and module-level imports are how model code names torch.
"""

from __future__ import annotations

import ast
from typing import Iterable, Optional

import libcst as cst


class ImportTable:
    """The names bound by one module's top-level imports, and the classes it defines.

    >>> table = ImportTable("pkg.models", is_package=False)
    >>> table.bind("nn", "torch.nn")
    >>> table.resolve("nn.Module")
    'torch.nn.Module'
    """

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.bound: dict[str, str] = {}
        #: Modules whose names ``from <module> import *`` binds here, in import order.
        self.star_sources: list[str] = []

    def bind(self, local: str, target: str) -> None:
        self.bound[local] = target

    def absolute(self, module: Optional[str], level: int) -> str:
        """The absolute module that ``from <level dots><module> import`` refers to."""
        if level == 0:
            return module or ""
        base = self.package.split(".") if self.package else []
        if level > 1:
            base = base[: len(base) - (level - 1)]
        return ".".join([*base, module] if module else base)

    def resolve(self, dotted: Optional[str]) -> Optional[str]:
        """Map a dotted name as written to the dotted name it means, or None when unknown."""
        if not dotted:
            return None
        head, _, rest = dotted.partition(".")
        target = self.bound.get(head)
        if target is None:
            return None
        return f"{target}.{rest}" if rest else target

    def add_ast_import(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.bind(alias.asname, alias.name)
                else:
                    head = alias.name.partition(".")[0]
                    self.bind(head, head)
        elif isinstance(node, ast.ImportFrom):
            source = self.absolute(node.module, node.level)
            for alias in node.names:
                if alias.name == "*":
                    self.star_sources.append(source)
                else:
                    self.bind(alias.asname or alias.name, f"{source}.{alias.name}")

    @classmethod
    def from_ast(cls, tree: ast.Module, module: str, is_package: bool) -> "ImportTable":
        table = cls(module, is_package)
        for node in _top_level_statements(tree.body):
            table.add_ast_import(node)
        return table


def _top_level_statements(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Module-level statements, looking into ``if``/``try``/``with`` blocks but not defs."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)) or type(node).__name__ == "TryStar":
            for field in ("body", "orelse", "finalbody"):
                yield from _top_level_statements(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level_statements(handler.body)


def dotted_from_ast(node: ast.expr) -> Optional[str]:
    """``torch.nn.Module`` for the expression ``torch.nn.Module``; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def dotted_from_cst(node: cst.BaseExpression) -> Optional[str]:
    """The libcst twin of :func:`dotted_from_ast`."""
    parts = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


TORCH_NN = "torch.nn"
TORCH_NN_MODULES = "torch.nn.modules."
PYRO_NN = ("pyro.nn", "pyro.nn.module")


def torch_nn_class(resolved: Optional[str]) -> Optional[str]:
    """``Linear`` for ``torch.nn.Linear`` or ``torch.nn.modules.linear.Linear``, else None."""
    if not resolved:
        return None
    module, _, name = resolved.rpartition(".")
    if module == TORCH_NN or module.startswith(TORCH_NN_MODULES):
        return name
    return None


def is_torch_nn(resolved: Optional[str], name: str) -> bool:
    return torch_nn_class(resolved) == name or resolved == f"torch.nn.parameter.{name}"


def is_pyro_nn(resolved: Optional[str], name: str) -> bool:
    if not resolved:
        return False
    module, _, last = resolved.rpartition(".")
    return last == name and module in PYRO_NN
