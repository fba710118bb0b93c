"""Run several rewriters in one walk of a tree, skipping what none of them reads.

Each rewriter stays a small transformer of its own; :class:`Walk` hands every node to each
of them in turn (``leave`` results chained), so the tree is walked and rebuilt once instead
of once per rewriter. Subtrees of the ``skip`` types (expressions, by default: the rewriters
look at statements and definitions, and read the expressions they need directly) are
neither walked nor rebuilt, which is most of a file.
"""

from __future__ import annotations

from typing import Union

import libcst as cst

SKIPPED = (cst.BaseExpression, cst.Parameters, cst.Decorator, cst.Arg)


class Walk(cst.CSTTransformer):
    def __init__(self, *rewriters: cst.CSTTransformer, skip: tuple[type, ...] = SKIPPED) -> None:
        super().__init__()
        self.rewriters = rewriters
        self.skip = skip

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, self.skip):
            return False
        for rewriter in self.rewriters:
            rewriter.on_visit(node)
        return True

    def on_leave(
        self, original_node: cst.CSTNode, updated_node: cst.CSTNode
    ) -> Union[cst.CSTNode, cst.RemovalSentinel, cst.FlattenSentinel]:
        if isinstance(original_node, self.skip):
            return updated_node
        for rewriter in self.rewriters:
            updated_node = rewriter.on_leave(original_node, updated_node)
        return updated_node
