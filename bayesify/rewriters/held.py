"""Held layers and containers: what a converted class holds becomes Pyro too, and priors on
their parameters are set once the model is built.

Before, with ``Model.fc.weight: Normal(0, 1)`` and ``Model.layers.*.bias: positive``::

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)
            self.layers = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
            self.proj = LinearNoBias(2, 2)        # partial(nn.Linear, bias=False)

After::

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](5, 2)
            self.layers = pyro_module(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
            self.proj = pyro_module(LinearNoBias(2, 2))
            set_prior(self, "Model.fc.weight", "Normal", 0, 1)
            set_constraint(self, "Model.layers.*.bias", constraints.positive)

A torch.nn layer held directly gets ``PyroModule[Layer]``, the tutorial's idiom. A container,
or a module of another library (a class-like name from outside the run, torch and the
standard library), gets :func:`bayesify.runtime.pyro_module`, which converts it and all it
holds at run time, however it was built. Either way its parameters stay learnable Pyro
parameters named by their module path (``fc.bias``, ``layers.0.weight``).

The ``set_prior``/``set_constraint`` block ends ``__init__``; it is regenerated from the spec
on every run. A subclass of a built-in layer (``class MaskedLinear(nn.Linear)``) gets the same
block for the parameters it inherits (``MaskedLinear.weight``).
"""

from __future__ import annotations

import builtins
import sys
from fnmatch import fnmatchcase
from typing import Optional

import libcst as cst

from .. import catalog
from ..index import ClassRecord, Conversion
from ..names import ImportTable, dotted_from_cst, torch_nn_class
from ..plan import Planner
from ..sites import SiteKind
from ..spec import Entry, Prior
from .context import ClassScopedTransformer
from .imports import SOURCES
from .parameters import same_code

PYRO_MODULE, WRAP, SET_PRIOR, SET_CONSTRAINT = "PyroModule", "pyro_module", "set_prior", "set_constraint"
RUNTIME = "bayesify.runtime."
_NOT_MODULES = frozenset({"torch", "pyro", "numpy", "builtins", *sys.stdlib_module_names})


class HeldModuleRewriter(ClassScopedTransformer):
    def __init__(
        self,
        classes: dict[int, ClassRecord],
        first_order: int,
        conversions: dict[int, Conversion],
        imports: ImportTable,
        planner: Planner,
        path: str,
        run_classes: frozenset[str],
    ) -> None:
        super().__init__(classes, first_order)
        self.conversions = conversions
        self.imports = imports
        self.planner = planner
        self.path = path
        self.run_classes = run_classes
        self.needed: set[str] = set()
        self.random: dict[int, set[str]] = {}
        #: Attributes each class assigns a module to: the torch.nn layer name, or None.
        self._held: dict[int, dict[str, Optional[str]]] = {}

    def _converting_method(self) -> Optional[tuple[ClassRecord, str]]:
        scope = self.method_scope()
        if scope is None or not self.conversions.get(scope[0].order, Conversion.NONE).is_pyro:
            return None
        return scope

    # -- self.x = <module>: make what is held a PyroModule -------------------------------

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        scope = self._converting_method()
        if scope is None or len(updated_node.targets) != 1:
            return updated_node
        record, self_name = scope
        target = updated_node.targets[0].target
        if not (isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == self_name):
            return updated_node
        attr = target.attr.value
        value, layer, is_module = self._convert_value(updated_node.value, record, attr)
        if is_module:
            self._held.setdefault(record.order, {})[attr] = layer
        return updated_node if value is updated_node.value else updated_node.with_changes(value=value)

    def _convert_value(self, value: cst.BaseExpression, record: ClassRecord, attr: str):
        """``(new value, torch.nn layer name or None, whether the value is a module)``."""
        selected_below = bool(self.planner.spec.select_below(record.module, record.name, attr))
        if isinstance(value, cst.Call):
            func = value.func
            resolved = self.imports.resolve(dotted_from_cst(func))
            layer = torch_nn_class(resolved)
            if isinstance(func, cst.Subscript) or resolved == RUNTIME + WRAP:
                return value, _subscripted_layer(func, self.imports), True
            if layer == "Module":
                self.needed.add(PYRO_MODULE)
                return value.with_changes(func=cst.Name(PYRO_MODULE)), None, True
            if layer in catalog.NN_CONTAINERS or layer in catalog.NN_COMPOSITE_LAYERS:
                return self._wrap(value), layer, True
            if layer in catalog.NN_LAYERS:
                self.needed.add(PYRO_MODULE)
                subscript = cst.Subscript(
                    value=cst.Name(PYRO_MODULE), slice=[cst.SubscriptElement(slice=cst.Index(value=func))]
                )
                return value.with_changes(func=subscript), layer, True
            if layer is not None or (resolved or "") in self.run_classes or self._local_class(func):
                return value, None, False
            if _class_like(func) and _from_elsewhere(resolved, dotted_from_cst(func)):
                return self._wrap(value), None, True
        if selected_below and not isinstance(value, (cst.BaseNumber, cst.BaseString)):
            return self._wrap(value), None, True
        return value, None, False

    def _local_class(self, func: cst.BaseExpression) -> bool:
        return isinstance(func, cst.Name) and any(r.name == func.value for r in self.classes.values())

    def _wrap(self, value: cst.BaseExpression) -> cst.Call:
        self.needed.add(WRAP)
        return cst.Call(func=cst.Name(WRAP), args=[cst.Arg(value=value)])

    # -- the set_prior / set_constraint block at the end of __init__ ----------------------

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        """A layer subclass without ``__init__`` (``class MaskedLinear(nn.Linear)`` with only a
        ``forward``) gets one that passes everything on, to hold the generated block."""
        record = self.current_class
        if (
            record is None
            or "__init__" in record.methods
            or not self.conversions.get(record.order, Conversion.NONE).is_pyro
            or not self._inherited_layer_parameters(record)
            or not isinstance(updated_node.body, cst.IndentedBlock)
        ):
            return updated_node
        stub = cst.parse_statement("def __init__(self, *args, **kwargs):\n    super().__init__(*args, **kwargs)\n")
        self._frames.append(type(self._frames[-1])(self_name="self", is_method=True))
        try:
            init = self.leave_FunctionDef(stub, stub)
        finally:
            self._frames.pop()
        if init is stub:
            return updated_node  # nothing to set: leave the class as it is
        body = list(updated_node.body.body)
        at = 1 if body and _is_docstring(body[0]) else 0
        body.insert(at, init.with_changes(leading_lines=[cst.EmptyLine(indent=False)] if at else []))
        return updated_node.with_changes(body=updated_node.body.with_changes(body=body))

    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.FunctionDef:
        scope = self._converting_method()
        if scope is None or updated_node.name.value != "__init__":
            return updated_node
        record, self_name = scope
        if not isinstance(updated_node.body, cst.IndentedBlock):
            return updated_node
        wanted = [self._statement(self_name, entry) for entry in self._entries(record)]
        if self._inherited_layer(record) in catalog.NN_COMPOSITE_LAYERS:
            # The modules the layer's own __init__ made (out_proj) are plain until converted.
            self.needed.add(WRAP)
            wanted.insert(0, cst.parse_statement(f"{WRAP}({self_name})\n"))
        body = list(updated_node.body.body)
        generated = [position for position, s in enumerate(body) if self._is_generated(s, self_name)]
        if not wanted and not generated:
            return updated_node
        kept = [s for position, s in enumerate(body) if position not in generated]
        end = len(kept) - 1 if kept and _is_return(kept[-1]) else len(kept)
        new_body = kept[:end] + wanted + kept[end:]
        if generated == list(range(end, end + len(wanted))) and all(
            same_code(body[position], new) for position, new in zip(generated, wanted)
        ):
            return updated_node  # the block is where it belongs and says the same
        return updated_node.with_changes(body=updated_node.body.with_changes(body=new_body))

    def _entries(self, record: ClassRecord) -> list[Entry]:
        """Spec entries for parameters this class holds or inherits from a torch.nn layer,
        in spec order (at run time, the first entry to select a parameter wins)."""
        held = self._held.get(record.order, {})
        # Parameters the catalog names (a held layer's, a base layer's) are planned one by
        # one, selected or not, so that `plan` and `init` list them and the first entry wins.
        known = self._known_paths(record)
        for path in known:
            kind = SiteKind.HELD if path[0] in held else SiteKind.INHERITED
            entry = self.planner.select(self.path, record, path, kind, None)
            if entry is not None and isinstance(entry.action, Prior):
                self.random.setdefault(record.order, set()).add(path[0])
        chosen = []
        for entry in self.planner.spec.entries:
            if entry.selector.matches_class(record.module, record.name):
                hits = self._paths(record, entry.selector.segments[1:])
                for hit in hits:
                    if hit in known:
                        continue
                    # A container's or another library's parameters: decided at run time.
                    self.planner.record(self.path, record, hit, SiteKind.HELD, entry)
                    if isinstance(entry.action, Prior):
                        self.random.setdefault(record.order, set()).add(hit[0])
                if hits:
                    chosen.append(entry)
        return chosen

    def _known_paths(self, record: ClassRecord) -> list[tuple[str, ...]]:
        """Every parameter path of ``record`` the catalog names: those of the torch.nn layers
        it holds, and those it inherits from a torch.nn layer it derives from."""
        paths = [
            (attr, *name.split("."))
            for attr, layer in self._held.get(record.order, {}).items()
            if layer in catalog.NN_LAYERS and layer not in catalog.NN_CONTAINERS
            for name in catalog.NN_LAYERS[layer]
        ]
        paths += [
            path
            for path in (tuple(name.split(".")) for name in self._inherited_layer_parameters(record))
            if path[0] not in record.attr_lines
        ]
        return paths

    def _paths(self, record: ClassRecord, pattern: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Parameter paths of ``record`` that ``pattern`` selects, as far as the source tells:
        a held torch.nn layer's parameters are known; a container's or another library's
        module's are not, so its attribute stands for them and the runtime checks the rest."""
        paths: list[tuple[str, ...]] = []
        for attr, layer in self._held.get(record.order, {}).items():
            if len(pattern) < 2 or not fnmatchcase(attr, pattern[0]):
                continue
            if layer in catalog.NN_LAYERS and layer not in catalog.NN_CONTAINERS:
                known = [(attr, *name.split(".")) for name in catalog.NN_LAYERS[layer]]
                paths += [path for path in known if _matches(path, pattern)]
            else:
                paths.append((attr, *pattern[1:]))
        for name in self._inherited_layer_parameters(record):
            path = tuple(name.split("."))
            if path[0] not in record.attr_lines and _matches(path, pattern):
                paths.append(path)
        return paths

    def _inherited_layer(self, record: ClassRecord) -> Optional[str]:
        """The torch.nn layer the class derives from (``nn.Linear``, or ``PyroModule[nn.Linear]``
        once rewritten), whose parameters it inherits."""
        layers = [base.layer for base in record.bases]
        return next((layer for layer in layers if layer in catalog.NN_LAYERS and layer != "Module"), None)

    def _inherited_layer_parameters(self, record: ClassRecord) -> tuple[str, ...]:
        return catalog.NN_LAYERS.get(self._inherited_layer(record) or "", ())

    def _statement(self, self_name: str, entry: Entry) -> cst.SimpleStatementLine:
        selector = f'"{entry.selector.text}"'
        if isinstance(entry.action, Prior):
            self.needed.add(SET_PRIOR)
            args = [self_name, selector, f'"{entry.action.family}"', *entry.action.render_args()]
            return cst.parse_statement(f"{SET_PRIOR}({', '.join(args)})\n")
        self.needed.update((SET_CONSTRAINT, "constraints"))
        return cst.parse_statement(f"{SET_CONSTRAINT}({self_name}, {selector}, {entry.action.render()})\n")

    def _is_generated(self, statement: cst.BaseStatement, self_name: str) -> bool:
        if not (isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1):
            return False
        expression = statement.body[0]
        if not (isinstance(expression, cst.Expr) and isinstance(expression.value, cst.Call)):
            return False
        call = expression.value
        resolved = self.imports.resolve(dotted_from_cst(call.func))
        generated = (RUNTIME + SET_PRIOR, RUNTIME + SET_CONSTRAINT, RUNTIME + WRAP)
        return resolved in generated and bool(call.args) and (
            isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == self_name
        )


def _matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(map(fnmatchcase, path, pattern))


def _subscripted_layer(func: cst.BaseExpression, imports: ImportTable) -> Optional[str]:
    if isinstance(func, cst.Subscript) and len(func.slice) == 1 and isinstance(func.slice[0].slice, cst.Index):
        return torch_nn_class(imports.resolve(dotted_from_cst(func.slice[0].slice.value)))
    return None


def _class_like(func: cst.BaseExpression) -> bool:
    dotted = dotted_from_cst(func) or ""
    return any(part[:1].isupper() for part in dotted.split("."))


def _from_elsewhere(resolved: Optional[str], written: Optional[str]) -> bool:
    """Not torch, pyro, the standard library, a builtin or a name the rewrite adds: another
    library, or a name bound in this file (``LinearNoBias = partial(nn.Linear, bias=False)``)."""
    if resolved is not None:
        return resolved.partition(".")[0] not in _NOT_MODULES
    return written not in SOURCES and not hasattr(builtins, written or "")


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _is_return(statement: cst.BaseStatement) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and isinstance(statement.body[0], cst.Return)
