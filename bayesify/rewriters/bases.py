"""Base classes: ``nn.Module`` subclasses become ``PyroModule`` subclasses.

Before::

    class Regressor(nn.Module): ...
    class MaskedLinear(torch.nn.Linear): ...
    class Deep(Regressor): ...

After::

    class Regressor(PyroModule): ...
    class MaskedLinear(PyroModule[torch.nn.Linear]): ...
    class Deep(Regressor): ...            # inherits: nothing to change

The base is recognised by what it resolves to, however ``torch.nn`` was imported; a built-in
layer keeps the spelling the user wrote inside ``PyroModule[...]``.
"""

from __future__ import annotations

import libcst as cst

from ..index import ClassRecord, Conversion
from ..names import ImportTable, dotted_from_cst, torch_nn_class
from .context import ClassScopedTransformer

PYRO_MODULE = "PyroModule"


class BaseClassRewriter(ClassScopedTransformer):
    def __init__(
        self,
        classes: dict[int, ClassRecord],
        first_order: int,
        conversions: dict[int, Conversion],
        imports: ImportTable,
    ) -> None:
        super().__init__(classes, first_order)
        self.conversions = conversions
        self.imports = imports
        self.needed: set[str] = set()

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        record = self.current_class
        conversion = self.conversions.get(record.order) if record else None
        if conversion not in (Conversion.ROOT, Conversion.LAYER):
            return updated_node
        bases = [self._convert(arg) for arg in updated_node.bases]
        self.needed.add(PYRO_MODULE)
        return updated_node.with_changes(bases=bases)

    def _convert(self, arg: cst.Arg) -> cst.Arg:
        layer = torch_nn_class(self.imports.resolve(dotted_from_cst(arg.value)))
        if arg.keyword is not None or layer is None:
            return arg
        if layer == "Module":
            return arg.with_changes(value=cst.Name(PYRO_MODULE))
        return arg.with_changes(
            value=cst.Subscript(
                value=cst.Name(PYRO_MODULE),
                slice=[cst.SubscriptElement(slice=cst.Index(value=arg.value))],
            )
        )
