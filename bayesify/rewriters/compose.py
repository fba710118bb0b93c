"""Run several rules in one walk of a tree, entering only what they read.

Each rule stays a small transformer of its own; :class:`Walk` hands every node to each of
them in turn (``leave`` results chained), so the tree is walked and rebuilt once instead of
once per rule. The rules look at definitions and statements, and read the expressions they
need directly, so the walk enters only the node types in ``enter``, the union of what the
rules of a pass declare (:func:`.registry.entered`: definitions, blocks, statement lines and
the statements that assign or call): expressions, whitespace and the rest, most of a file,
are neither walked nor rebuilt.
"""

from __future__ import annotations

from typing import Union

import libcst as cst

#: Definitions and the statement structure that can hold them.
DEFINITIONS = frozenset(
    getattr(cst, name)
    for name in (
        "ClassDef",
        "FunctionDef",
        "IndentedBlock",
        "SimpleStatementSuite",
        "If",
        "Else",
        "For",
        "While",
        "Try",
        "TryStar",
        "ExceptHandler",
        "ExceptStarHandler",
        "Finally",
        "With",
        "Match",
        "MatchCase",
    )
    if hasattr(cst, name)
)


class Walk(cst.CSTTransformer):
    def __init__(self, *rewriters: cst.CSTTransformer, enter: frozenset[type]) -> None:
        super().__init__()
        self.rewriters = rewriters
        self.enter = enter

    def on_visit(self, node: cst.CSTNode) -> bool:
        # By exact type, not isinstance: libcst's node classes are abstract, and an ABC
        # check on every node of a file costs more than the rewrite.
        if type(node) not in self.enter:
            return False
        for rewriter in self.rewriters:
            rewriter.on_visit(node)
        return True

    def on_leave(
        self, original_node: cst.CSTNode, updated_node: cst.CSTNode
    ) -> Union[cst.CSTNode, cst.RemovalSentinel, cst.FlattenSentinel]:
        if type(original_node) not in self.enter:
            return updated_node
        for rewriter in self.rewriters:
            updated_node = rewriter.on_leave(original_node, updated_node)
        return updated_node
