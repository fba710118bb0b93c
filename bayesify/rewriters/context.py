"""Where a node stands: which class, which method, and that method's ``self``.

Every class-level rewriter derives from :class:`ClassScopedTransformer`. Classes are
identified by their place in a pre-order walk of the file, which the :mod:`ast` index and the
libcst tree share, so a rewriter can look up the index's record of the class it is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import libcst as cst

from ..index import ClassRecord


@dataclass
class _Frame:
    record: Optional[ClassRecord] = None  # set for a class frame
    self_name: Optional[str] = None  # set for a method frame
    is_method: bool = False


class ClassScopedTransformer(cst.CSTTransformer):
    """Tracks the enclosing class and method; subclasses use :meth:`method_scope`.

    Frames are pushed in :meth:`on_visit` and popped in :meth:`on_leave` after the subclass's
    own ``leave_*`` hook has run, so a ``leave_ClassDef`` still sees its own class.
    """

    def __init__(self, classes: dict[int, ClassRecord], first_order: int) -> None:
        super().__init__()
        self.classes = classes
        self._next_order = first_order
        self._frames: list[_Frame] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.ClassDef):
            self._frames.append(_Frame(record=self.classes.get(self._next_order)))
            self._next_order += 1
        elif isinstance(node, cst.FunctionDef):
            params = [*node.params.posonly_params, *node.params.params]
            in_class = bool(self._frames) and self._frames[-1].record is not None
            self._frames.append(
                _Frame(self_name=params[0].name.value if params else None, is_method=in_class)
            )
        return super().on_visit(node)

    def on_leave(
        self, original_node: cst.CSTNode, updated_node: cst.CSTNode
    ) -> Union[cst.CSTNode, cst.RemovalSentinel, cst.FlattenSentinel]:
        result = super().on_leave(original_node, updated_node)
        if isinstance(original_node, (cst.ClassDef, cst.FunctionDef)):
            self._frames.pop()
        return result

    @property
    def current_class(self) -> Optional[ClassRecord]:
        """The class whose ``leave_ClassDef`` (or body) is running."""
        return self._frames[-1].record if self._frames else None

    def method_scope(self) -> Optional[tuple[ClassRecord, str]]:
        """``(class, self name)`` when inside a method of a class (directly, not a closure)."""
        if len(self._frames) < 2:
            return None
        method, owner = self._frames[-1], self._frames[-2]
        if not method.is_method or method.self_name is None or owner.record is None:
            return None
        return owner.record, method.self_name
