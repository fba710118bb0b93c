"""Held layers and containers: what a converted class holds becomes Pyro too, and priors on
their parameters are set once the model is built.

Before, with ``Model.fc.weight: Normal(0, 1)`` and ``Model.layers.*.bias: positive``::

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)
            self.layers = nn.ModuleList([])
            for _ in range(2):
                self.layers.append(Block())

After::

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)
            self.layers = nn.ModuleList([])
            for _ in range(2):
                self.layers.append(Block())
            set_prior(self, "Model.fc.weight", "Normal", 0, 1)
            set_constraint(self, "Model.layers.*.bias", constraints.positive)
            pyro_module(self)

A class that may hold modules (it assigns or attaches anything that is not a literal or a
parameter) ends its ``__init__`` with :func:`bayesify.runtime.pyro_module`, which makes
every module it holds a PyroModule at run time, however it was built: a torch.nn layer, a
container filled by ``append``, a conditional expression, a module passed in, another
library's. So every parameter that is not random is a Pyro param named by its module path
(``fc.bias``, ``layers.0.weight``), and no held module becomes a second Pyro root.

The ``set_prior``/``set_constraint`` lines before it note the spec entries that may select
parameters below an attribute (or, for ``class MaskedLinear(nn.Linear)``, parameters the class
inherits from the layer), in spec order; layer-type entries (``nn.Linear.weight``) and ``**``
entries are noted by every class that may hold modules, since a layer can come from anywhere.
``pyro_module`` applies them all once the outermost model is built. The block is regenerated
from the spec on every run.
"""

from __future__ import annotations

import builtins
import sys
from fnmatch import fnmatchcase
from typing import Optional

import libcst as cst

from .. import catalog, codegen
from ..index import ClassRecord, Conversion
from ..names import dotted_from_cst, is_pyro_nn, is_torch_nn, torch_nn_class
from ..plan import layers_on_path, may_be_numbered_parameter
from ..selectors import ANY, ANY_DEPTH, TYPE, Selector
from ..sites import SiteKind
from ..spec import Entry, Prior
from .compose import DEFINITIONS
from .parameters import same_code
from .registry import STATEMENTS, Example, RewriteContext, Rule, register

WRAP, SET_PRIOR, SET_CONSTRAINT = "pyro_module", "set_prior", "set_constraint"
#: Stands for one element of a value that is unpacked (``a, b = make()``): a module, maybe.
_UNKNOWN_MODULE = cst.Name("_")
RUNTIME = "bayesify.runtime."
#: Methods of ``self`` that attach nothing that could be a module.
_NOT_ATTACHING = frozenset({"register_buffer", "register_parameter"})


@register
class HeldModuleRewriter(Rule):
    pass_ = STATEMENTS
    enters = DEFINITIONS | {cst.SimpleStatementLine, cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Expr}
    generated_names = {
        WRAP: "bayesify.runtime",
        SET_PRIOR: "bayesify.runtime",
        SET_CONSTRAINT: "bayesify.runtime",
        "constraints": "torch.distributions",
    }

    def __init__(self, context: RewriteContext, first_order: int) -> None:
        super().__init__(context, first_order)
        #: Attributes each class may hold a module in: the torch.nn layer, when known.
        self._held: dict[int, dict[str, Optional[str]]] = {}
        #: Classes whose methods assign or attach something that may be a module.
        self._attaches: set[int] = set()
        #: Attributes each class assigns a bare name to: maybe a module passed in.
        self._passed: dict[int, set[str]] = {}
        #: The torch.nn layers inside the containers each class holds, by attribute, each with
        #: its index in the container, or ``*`` where a loop or a comprehension built it, and
        #: the parameters it is built without.
        self._elements: dict[int, dict[str, list[tuple[str, str, frozenset[str]]]]] = {}
        #: The torch.nn layers put into local lists (``layers.append(nn.Linear(…))`` in a
        #: loop) of a class's methods, by class and name, until a container takes them.
        self._local_layers: dict[tuple[int, str], list[str]] = {}
        #: Containers each class holds whose every element the source names as a torch.nn
        #: layer (``nn.Sequential(nn.Linear(…), nn.ReLU())``): their parameters are all listed.
        self._complete: dict[int, set[str]] = {}
        #: What local names of each class's methods were last set to (``fc = nn.Linear(…)``
        #: before ``self.heads.append(fc)`` or ``self.fc = fc``), by class and name.
        self._locals: dict[tuple[int, str], cst.BaseExpression] = {}
        #: Parameters a held layer is built without in every assignment that builds it
        #: (``nn.Linear(…, bias=False)``), by class and attribute.
        self._without: dict[tuple[int, str], frozenset[str]] = {}

    def _converting_method(self) -> Optional[tuple[ClassRecord, str]]:
        scope = self.method_scope()
        if scope is None or not self.context.conversions.get(scope[0].order, Conversion.NONE).is_pyro:
            return None
        return scope

    # -- what may a class hold? (nothing here changes the statements) ------------------

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        for target in updated_node.targets:
            self._note_unpacked(target.target, updated_node.value)
        return updated_node

    def _note_unpacked(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        """``self.pool, self.fc = make_head(…)``: each element may be a module; its layer is
        known only when the value is a tuple written out element by element, or a conditional
        choosing between two such tuples."""
        if not isinstance(target, (cst.Tuple, cst.List)):
            self._note(target, value)
            return
        if isinstance(value, cst.IfExp) and all(
            isinstance(branch, (cst.Tuple, cst.List)) and len(branch.elements) == len(target.elements)
            for branch in (value.body, value.orelse)
        ):
            for element, body, orelse in zip(target.elements, value.body.elements, value.orelse.elements):
                self._note_unpacked(element.value, value.with_changes(body=body.value, orelse=orelse.value))
            return
        values = value.elements if isinstance(value, (cst.Tuple, cst.List)) else ()
        for position, element in enumerate(target.elements):
            paired = values[position].value if len(values) == len(target.elements) else value
            if len(values) != len(target.elements) and self._may_be_module(value):
                paired = _UNKNOWN_MODULE
            self._note_unpacked(element.value, paired)

    def leave_AnnAssign(self, original_node: cst.AnnAssign, updated_node: cst.AnnAssign) -> cst.AnnAssign:
        if updated_node.value is not None:
            self._note(updated_node.target, updated_node.value)
        return updated_node

    def leave_Expr(self, original_node: cst.Expr, updated_node: cst.Expr) -> cst.Expr:
        """``self.layers.append(…)``, ``self.add_module(…)``, ``setattr(self, …)``."""
        scope = self._converting_method()
        call = updated_node.value
        if scope is None or not isinstance(call, cst.Call):
            return updated_node
        record, self_name = scope
        dotted = dotted_from_cst(call.func) or ""
        self._note_appended(record, self_name, dotted, call)
        named = _named_attachment(call, dotted, self_name)
        if named is not None:
            self._hold(record, *named)
        on_self = dotted.startswith(self_name + ".") and dotted.rpartition(".")[2] not in _NOT_ATTACHING
        sets_on_self = dotted == "setattr" and bool(call.args) and _is_name(call.args[0].value, self_name)
        if (on_self or sets_on_self) and not self._is_generated_call(call, self_name):
            self._attaches.add(record.order)
        return updated_node

    def _note(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        scope = self._converting_method()
        if scope is None:
            return
        record, self_name = scope
        if isinstance(target, cst.Name):
            self._locals[record.order, target.value] = value
        if isinstance(target, cst.Subscript) and _is_self_attribute(target.value, self_name):
            self._attaches.add(record.order)  # self.heads["a"] = ...
        if not _is_self_attribute(target, self_name):
            return
        self._hold(record, target.attr.value, value)

    def _hold(self, record: ClassRecord, attr: str, value: cst.BaseExpression) -> None:
        """``self.<attr> = value``, ``self.add_module("<attr>", value)`` or ``setattr(self,
        "<attr>", value)`` in a method of ``record``."""
        value = self._local_value(record, _unchained(value))
        if isinstance(value, cst.Name):
            # self.shared = shared: configuration, or a module passed in; an entry that names
            # the attribute exactly (Block.shared.weight) says which.
            self._passed.setdefault(record.order, set()).add(attr)
        if not self._may_be_module(value):
            return
        self._attaches.add(record.order)
        self._held.setdefault(record.order, {})[attr] = self._layer(value)
        _keep_common(self._without, (record.order, attr), _switched_off(value))
        elements = self._container_layers(record, value)
        if elements:
            self._elements.setdefault(record.order, {})[attr] = elements
        if self._fully_known(value):
            self._complete.setdefault(record.order, set()).add(attr)

    # -- layers built in loops, comprehensions and containers (what `plan` and `init` list) --

    def _note_appended(self, record: ClassRecord, self_name: str, dotted: str, call: cst.Call) -> None:
        """``layers.append(nn.Linear(…))`` on a local list, or ``self.layers.append(…)`` on a
        container the class holds: the layer's index is not known, only that it is there."""
        owner, _, method = dotted.rpartition(".")
        if method not in ("append", "extend", "add_module") or not owner or not call.args:
            return
        self._complete.get(record.order, set()).discard(owner.partition(".")[2])  # self.layers.append(…)
        value = self._local_value(record, call.args[-1].value)
        layers = self._layer_list(record, value) if method == "extend" else [self._layer(value)]
        layers = [layer for layer in layers if layer]
        if not layers:
            return
        if "." not in owner and owner != self_name:
            self._local_layers.setdefault((record.order, owner), []).extend(layers)
        elif owner.count(".") == 1 and owner.startswith(self_name + "."):
            attr = owner.partition(".")[2]
            self._elements.setdefault(record.order, {}).setdefault(attr, []).extend(
                ("*", layer, frozenset()) for layer in layers
            )

    def _local_value(self, record: ClassRecord, value: cst.BaseExpression) -> cst.BaseExpression:
        """What a local name was set to earlier in the class's methods, else ``value``."""
        if isinstance(value, cst.Name):
            return self._locals.get((record.order, value.value), value)
        return value

    def leave_AugAssign(self, original_node: cst.AugAssign, updated_node: cst.AugAssign) -> cst.AugAssign:
        """``layers += [nn.Linear(…), nn.ReLU()]`` on a local list."""
        scope = self._converting_method()
        if scope is not None and isinstance(updated_node.target, cst.Name):
            layers = [layer for layer in self._layer_list(scope[0], updated_node.value) if layer]
            self._local_layers.setdefault((scope[0].order, updated_node.target.value), []).extend(layers)
        return updated_node

    def _container_layers(
        self, record: ClassRecord, value: cst.BaseExpression
    ) -> list[tuple[str, str, frozenset[str]]]:
        """The torch.nn layers a container value holds, each with its index in it (``*`` when
        a loop or a comprehension decides it) and the parameters it is built without:
        ``nn.Sequential(nn.Linear(…), nn.ReLU())``, ``nn.ModuleList([nn.Linear(…) for _ in
        range(n)])``, ``nn.Sequential(*layers)``, ``nn.ModuleDict(dict(head=nn.Linear(…)))``."""
        if isinstance(value, cst.IfExp):
            return [
                *self._container_layers(record, value.body),
                *self._container_layers(record, value.orelse),
            ]
        if not isinstance(value, cst.Call):
            return []
        container = torch_nn_class(self.context.imports.resolve(dotted_from_cst(value.func)))
        if container not in ("Sequential", "ModuleList", "ModuleDict"):
            return []
        items: list[tuple[str, str]] = []
        known_index = True
        for position, argument in enumerate(value.args):
            if argument.keyword is not None:
                continue
            if argument.star or container != "Sequential":
                known_index = known_index and container != "Sequential"
                items += self._indexed_layers(record, argument.value)
            else:
                layer = self._layer(argument.value)
                if layer:
                    items.append(
                        (str(position) if known_index else "*", layer, _switched_off(argument.value))
                    )
        return items

    def _fully_known(self, value: cst.BaseExpression) -> bool:
        """Whether a container value holds torch.nn layers only, each written out in it."""
        if not isinstance(value, cst.Call):
            return False
        container = torch_nn_class(self.context.imports.resolve(dotted_from_cst(value.func)))
        if container == "Sequential":
            return bool(value.args) and all(
                argument.keyword is None and not argument.star and self._layer(argument.value)
                for argument in value.args
            )
        if container not in ("ModuleList", "ModuleDict") or len(value.args) != 1 or value.args[0].star:
            return False
        literal = value.args[0].value
        if isinstance(literal, (cst.List, cst.Tuple)):
            values = [
                element.value if isinstance(element, cst.Element) else None for element in literal.elements
            ]
        else:
            items = self._mapping_items(literal)
            if items is None:
                return False
            values = [value for _, value in items]
        return bool(values) and all(value is not None and self._layer(value) for value in values)

    def _mapping_items(
        self, value: cst.BaseExpression
    ) -> Optional[list[tuple[Optional[str], Optional[cst.BaseExpression]]]]:
        """The keys and values of a dict written out, ``{"head": …}`` or ``dict(head=…)``; a key
        not written as a string, or a value unpacked into it (``**more``), is None."""
        if isinstance(value, cst.Dict):
            return [
                (
                    element.key.evaluated_value if isinstance(element.key, cst.SimpleString) else None,
                    element.value,
                )
                if isinstance(element, cst.DictElement)
                else (None, None)
                for element in value.elements
            ]
        if (
            isinstance(value, cst.Call)
            and dotted_from_cst(value.func) == "dict"
            and self.context.imports.resolve("dict") is None
        ):
            return [
                (argument.keyword.value, argument.value) if argument.keyword else (None, None)
                for argument in value.args
            ]
        return None

    def _indexed_layers(
        self, record: ClassRecord, value: cst.BaseExpression
    ) -> list[tuple[str, str, frozenset[str]]]:
        """The layers of a list, dict or comprehension of them, by index or key where written."""
        if isinstance(value, (cst.List, cst.Tuple)):
            starred = any(isinstance(element, cst.StarredElement) for element in value.elements)
            return [
                ("*" if starred else str(position), layer, _switched_off(element.value))
                for position, element in enumerate(value.elements)
                if isinstance(element, cst.Element)
                for layer in [self._layer(element.value)]
                if layer
            ]
        items = self._mapping_items(value)
        if items is not None:
            return [
                (key, layer, _switched_off(element))
                for key, element in items
                if key is not None
                for layer in [self._layer(element)]
                if layer
            ]
        return [("*", layer, frozenset()) for layer in self._layer_list(record, value) if layer]

    def _layer_list(self, record: ClassRecord, value: cst.BaseExpression) -> list[Optional[str]]:
        """The layers an iterable expression yields, in no known order: a list or tuple of
        them, a comprehension building one, or a local list filled earlier."""
        if isinstance(value, (cst.List, cst.Tuple, cst.Set)):
            return [self._layer(element.value) for element in value.elements]
        if isinstance(value, (cst.ListComp, cst.GeneratorExp)):
            return [self._layer(value.elt)]
        if isinstance(value, cst.DictComp):  # nn.ModuleDict({name: nn.Linear(…) for name in names})
            return [self._layer(value.value)]
        if isinstance(value, cst.Name):
            return list(self._local_layers.get((record.order, value.value), ()))
        return []

    def _may_be_module(self, value: cst.BaseExpression) -> bool:
        """Whether an assigned value may be (or hold) a module: a call of anything but a
        builtin, the standard library, a tensor factory or a parameter, or a conditional,
        ``or`` or collection holding one. Names and arithmetic (``self.dim = dim``,
        ``dim ** -0.5``) are taken for configuration, not modules."""
        if isinstance(value, cst.IfExp):
            return self._may_be_module(value.body) or self._may_be_module(value.orelse)
        if isinstance(value, cst.BooleanOperation):
            return self._may_be_module(value.left) or self._may_be_module(value.right)
        if isinstance(value, (cst.Tuple, cst.List, cst.Set)):
            return any(self._may_be_module(element.value) for element in value.elements)
        if isinstance(value, cst.Dict):
            return any(
                self._may_be_module(element.value)
                for element in value.elements
                if isinstance(element, cst.DictElement)
            )
        if value is _UNKNOWN_MODULE:
            return True
        if not isinstance(value, cst.Call):
            return False
        written = dotted_from_cst(value.func) or ""
        resolved = self.context.imports.resolve(written)
        if resolved is None:
            return not hasattr(builtins, written)
        if is_torch_nn(resolved, "Parameter") or any(
            is_pyro_nn(resolved, n) for n in ("PyroParam", "PyroSample")
        ):
            return False
        top = resolved.partition(".")[0]
        if top == "torch":
            return resolved.startswith("torch.nn.")  # torch.zeros(...) is a tensor
        return top not in sys.stdlib_module_names

    def _layer(self, value: cst.BaseExpression) -> Optional[str]:
        """The torch.nn layer a value builds, when its parameters are known by name: for a
        conditional (``nn.Linear(…) if project else nn.Identity()``), the one layer with
        parameters it may build."""
        value = _unchained(value)
        if isinstance(value, cst.IfExp):
            layers = {self._layer(value.body), self._layer(value.orelse)} - {None}
            with_parameters = {layer for layer in layers if catalog.NN_LAYERS[layer]}
            return with_parameters.pop() if len(with_parameters) == 1 else None
        if not isinstance(value, cst.Call):
            return None
        layer = torch_nn_class(self.context.imports.resolve(dotted_from_cst(value.func)))
        return layer if layer in catalog.NN_LAYERS and layer not in catalog.NN_CONTAINERS else None

    # -- the block at the end of __init__ ---------------------------------------------

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        """``__init__`` ends with the generated block, written once every method of the class
        is read: a helper that ``__init__`` calls (``self._build_head()``) may be defined
        after it. A layer subclass without ``__init__`` (``class MaskedLinear(nn.Linear)``
        with only a ``forward``) gets one that passes everything on, to hold the block."""
        record = self.current_class
        if (
            record is None
            or not self.context.conversions.get(record.order, Conversion.NONE).is_pyro
            or not isinstance(updated_node.body, cst.IndentedBlock)
        ):
            return updated_node
        body = list(updated_node.body.body)
        inits = [
            position
            for position, statement in enumerate(body)
            if isinstance(statement, cst.FunctionDef) and statement.name.value == "__init__"
        ]
        if inits:  # the last definition is the one Python keeps
            init = body[inits[-1]]
            positional = [*init.params.posonly_params, *init.params.params]
            if not positional:
                return updated_node
            body[inits[-1]] = self._with_block(record, positional[0].name.value, init)
        elif self._inherited_layer_parameters(record) or self._subclasses_a_read_library_module(record):
            stub = cst.parse_statement(
                "def __init__(self, *args, **kwargs):\n    super().__init__(*args, **kwargs)\n"
            )
            init = self._with_block(record, "self", stub)
            if init is stub:
                return updated_node  # nothing to set: leave the class as it is
            at = 1 if body and _is_docstring(body[0]) else 0
            body.insert(at, init.with_changes(leading_lines=[cst.EmptyLine(indent=False)] if at else []))
        else:
            return updated_node
        return updated_node.with_changes(body=updated_node.body.with_changes(body=body))

    def _with_block(self, record: ClassRecord, self_name: str, init: cst.FunctionDef) -> cst.FunctionDef:
        """``init`` ending with the block that notes the entries for ``record`` and converts
        what it holds (``init`` itself when that block is already there, as generated)."""
        if not isinstance(init.body, cst.IndentedBlock):
            return init
        wanted = [self._statement(self_name, entry) for entry in self._entries(record)]
        # The modules the class holds, and those a composite layer's own __init__ made
        # (MultiheadAttention's out_proj), are plain until converted; the noted entries
        # apply when the outermost model gets there.
        if (
            wanted
            or record.order in self._attaches
            or self._inherited_layer(record) in catalog.NN_COMPOSITE_LAYERS
        ):
            self.context.needed.add(WRAP)
            wanted.append(codegen.statement(codegen.call(WRAP, codegen.name(self_name))))
        body = list(init.body.body)
        generated = [position for position, s in enumerate(body) if self._is_generated(s, self_name)]
        if not wanted and not generated:
            return init
        kept = [s for position, s in enumerate(body) if position not in generated]
        end = len(kept) - 1 if kept and _is_return(kept[-1]) else len(kept)
        new_body = kept[:end] + wanted + kept[end:]
        if generated == list(range(end, end + len(wanted))) and all(
            same_code(body[position], new) for position, new in zip(generated, wanted)
        ):
            return init  # the block is where it belongs and says the same
        return init.with_changes(body=init.body.with_changes(body=new_body))

    def _entries(self, record: ClassRecord) -> list[Entry]:
        """Spec entries for parameters this class holds or inherits from a torch.nn layer,
        in spec order (at run time, the first entry to select a parameter wins)."""
        # Parameters the catalog names (a held layer's, a base layer's) are planned one by
        # one, selected or not, so that `plan` and `init` list them and the first entry wins.
        known = self._known_paths(record)
        selected = set()
        for path, layers in known:
            kind = SiteKind.INHERITED if layers[0][0] == 0 else SiteKind.HELD
            entry = self.context.planner.select(self.context.path, record, path, kind, None, layers)
            if entry is not None:
                selected.add(entry.line)
                if isinstance(entry.action, Prior):
                    self.context.add_random(record, path[0])
        may_hold = record.order in self._attaches or record.order in self.context.built_by_unread_base
        chosen = []
        below: dict[tuple[str, ...], list[Entry]] = {}
        for entry in self.context.planner.spec.entries:
            selector = entry.selector
            if entry.line in self.context.at_build.get(record.order, ()):
                chosen.append(entry)
                continue
            if selector.kind == TYPE:
                # A layer of this type may come from anywhere the class holds a module.
                if may_hold or entry.line in selected:
                    chosen.append(entry)
                continue
            if not selector.matches_class(record.module, record.name):
                continue
            hits = self._paths(record, selector, [path for path, _ in known])
            if not hits and entry.line not in selected and self._unread_base_builds(record, selector):
                hits = [selector.path]  # Net.output.weight, Net deriving from rtdl.MLP
            for hit in hits:
                below.setdefault(hit, []).append(entry)
            if hits or entry.line in selected or (selector.kind == ANY and may_hold):
                chosen.append(entry)
        for hit, entries in below.items():
            # A container's or another library's parameters: decided at run time.
            self.context.planner.record(self.context.path, record, hit, SiteKind.HELD, entries)
            if isinstance(entries[0].action, Prior):
                self.context.add_random(record, hit[0])
        if record.order in self.context.built_by_unread_base:
            # What the base builds is known only at run time: a row for what each entry that
            # selects at any place may select there (``Tuned.**.weight``).
            inside_base: dict[tuple[str, ...], list[Entry]] = {}
            for entry in chosen:
                if entry.selector.kind in (TYPE, ANY):
                    inside_base.setdefault((ANY_DEPTH, *entry.selector.path), []).append(entry)
            for path, entries in inside_base.items():
                self.context.planner.record(self.context.path, record, path, SiteKind.HELD, entries)
        return chosen

    def _known_paths(self, record: ClassRecord) -> list[tuple[tuple[str, ...], tuple[tuple[int, str], ...]]]:
        """Every parameter path of ``record`` the catalog names, with the torch.nn layers on
        it: those of the layers it holds (at depth 1), and those it inherits from a torch.nn
        layer it derives from (at depth 0), each with the layers a composite one holds."""
        paths = [
            ((attr, *name.split(".")), layers_on_path(layer, 1, name))
            for attr, layer in self._held.get(record.order, {}).items()
            if layer is not None
            for name in catalog.NN_LAYERS[layer]
            if name not in self._without[record.order, attr]
        ]
        for attr, elements in self._elements.get(record.order, {}).items():
            built: dict[tuple[str, str], frozenset[str]] = {}
            for index, layer, without in elements:
                _keep_common(built, (index, layer), without)
            paths += [
                ((attr, index, *name.split(".")), layers_on_path(layer, 2, name))
                for (index, layer), without in built.items()
                for name in catalog.NN_LAYERS[layer]
                if name not in without
            ]
        inherited = self._inherited_layer(record)
        paths += [
            (tuple(name.split(".")), layers_on_path(inherited, 0, name))
            for name in self._inherited_layer_parameters(record)
            if name.split(".")[0] not in record.attr_lines
        ]
        return paths

    def _paths(
        self, record: ClassRecord, selector: Selector, known: list[tuple[str, ...]]
    ) -> list[tuple[str, ...]]:
        """Parameter paths below a module of ``record`` that ``selector`` selects and the source
        cannot list: those of a container or another library's module, whose parameters only
        the built model knows; its attribute stands for them (``layers.*.weight``)."""
        pattern = selector.path
        paths = []
        complete = self._complete.get(record.order, set())
        for attr, layer in self._held.get(record.order, {}).items():
            if layer is not None and len(pattern) > 1 and fnmatchcase(attr, pattern[0]):
                if may_be_numbered_parameter(layer, pattern[1:]):
                    paths.append((attr, *pattern[1:]))  # an nn.LSTM's weight_ih_l1
                continue
            if layer is not None or attr in complete:
                continue
            if pattern[0] == ANY_DEPTH and selector.kind != ANY:
                paths.append((attr, *pattern))
            elif len(pattern) > 1 and fnmatchcase(attr, pattern[0]):
                paths.append((attr, *pattern[1:]))
        if len(pattern) > 1 and pattern[0] in self._passed.get(record.order, ()):
            paths.append(pattern)
        if len(pattern) > 1:
            # What a base class holds (GlobalNet.output_block, built by RegUNet.__init__) is
            # known only in the built model.
            for attr in self.context.inherited_attrs.get(record.order, ()):
                if pattern[0] == ANY_DEPTH:
                    paths.append((attr, *pattern))
                elif fnmatchcase(attr, pattern[0]):
                    paths.append((attr, *pattern[1:]))
        return [path for path in dict.fromkeys(paths) if path not in known]

    def _inherited_layer(self, record: ClassRecord) -> Optional[str]:
        """The torch.nn layer the class derives from (``nn.Linear``, or ``PyroModule[nn.Linear]``
        once rewritten), whose parameters it inherits."""
        layers = [base.layer for base in record.bases]
        return next((layer for layer in layers if layer in catalog.NN_LAYERS and layer != "Module"), None)

    def _unread_base_builds(self, record: ClassRecord, selector: Selector) -> bool:
        """Whether the attribute a class entry starts at may be one that a base bayesify cannot
        read builds (an ``external`` glob's): the class's own attributes are known, and where an
        ancestor was read (``context``), so are the ones it builds."""
        first = selector.path[0]
        return (
            record.order in self.context.built_by_unread_base
            and not self.context.inherited_attrs.get(record.order)
            and first != ANY_DEPTH
            and not any(fnmatchcase(attr, first) for attr in record.attr_lines)
        )

    def _subclasses_a_read_library_module(self, record: ClassRecord) -> bool:
        """Whether a ``--context`` module that the run reads but does not rewrite builds
        modules of ``record``: a subclass without ``__init__`` gets one, for the block. (An
        ``external`` glob's class may be no module at all, a library's callback: its
        subclasses are left as written.)"""
        return (
            record.order in self.context.built_by_unread_base
            and Conversion.EXTERNAL in self.context.base_kinds.get(record.order, ())
        )

    def _inherited_layer_parameters(self, record: ClassRecord) -> tuple[str, ...]:
        return catalog.NN_LAYERS.get(self._inherited_layer(record) or "", ())

    def _statement(self, self_name: str, entry: Entry) -> cst.SimpleStatementLine:
        module, selector = codegen.name(self_name), entry.selector.text
        if isinstance(entry.action, Prior):
            self.context.needed.add(SET_PRIOR)
            args, kwargs = entry.action.arguments()
            call = codegen.call(SET_PRIOR, module, selector, entry.action.family, *args, **kwargs)
        else:
            self.context.needed.update((SET_CONSTRAINT, "constraints"))
            call = codegen.call(SET_CONSTRAINT, module, selector, entry.action.node())
        return codegen.statement(call)

    def _is_generated(self, statement: cst.BaseStatement, self_name: str) -> bool:
        if not (isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1):
            return False
        expression = statement.body[0]
        return (
            isinstance(expression, cst.Expr)
            and isinstance(expression.value, cst.Call)
            and self._is_generated_call(expression.value, self_name)
        )

    def _is_generated_call(self, call: cst.Call, self_name: str) -> bool:
        resolved = self.context.imports.resolve(dotted_from_cst(call.func))
        generated = (RUNTIME + SET_PRIOR, RUNTIME + SET_CONSTRAINT, RUNTIME + WRAP)
        return resolved in generated and bool(call.args) and _is_name(call.args[0].value, self_name)


#: Module methods that return the module itself: ``nn.Sequential(*layers).to(device)`` holds
#: what ``nn.Sequential(*layers)`` does (stable-baselines3's MlpExtractor).
_RETURNS_THE_MODULE = frozenset(
    {"to", "cuda", "cpu", "double", "float", "half", "bfloat16", "train", "eval", "requires_grad_"}
)


def _unchained(value: cst.BaseExpression) -> cst.BaseExpression:
    """The module a value builds before a chain of calls that return it: ``nn.Linear(2, 2)``
    for ``nn.Linear(2, 2).to(device).eval()``."""
    while (
        isinstance(value, cst.Call)
        and isinstance(value.func, cst.Attribute)
        and value.func.attr.value in _RETURNS_THE_MODULE
        and isinstance(value.func.value, cst.Call)
    ):
        value = value.func.value
    return value


def _is_name(node: cst.BaseExpression, name: str) -> bool:
    return isinstance(node, cst.Name) and node.value == name


def _named_attachment(
    call: cst.Call, dotted: str, self_name: str
) -> Optional[tuple[str, cst.BaseExpression]]:
    """``(attr, value)`` for ``self.add_module("attr", value)`` or ``setattr(self, "attr",
    value)``: an attribute as plain as ``self.attr = value`` (``nn.Sequential`` subclasses
    name their layers so)."""
    if dotted == f"{self_name}.add_module":
        arguments = call.args
    elif dotted == "setattr" and call.args and _is_name(call.args[0].value, self_name):
        arguments = call.args[1:]
    else:
        return None
    if len(arguments) != 2 or any(argument.keyword or argument.star for argument in arguments):
        return None
    name = arguments[0].value
    if not isinstance(name, cst.SimpleString) or not isinstance(name.evaluated_value, str):
        return None
    return name.evaluated_value, arguments[1].value


#: Keyword arguments of torch.nn layers that, set to ``False``, build them without parameters.
_OFF_SWITCHES = {
    "bias": frozenset({"bias"}),
    "affine": frozenset({"weight", "bias"}),
    "elementwise_affine": frozenset({"weight", "bias"}),
}


def _keep_common(without: dict, key: object, more: frozenset[str]) -> None:
    """Records that a layer is built without ``more`` once more: it lacks only what every
    build of it lacks (``nn.Linear(…, bias=False) if tied else nn.Linear(…)`` has a bias)."""
    without[key] = without[key] & more if key in without else more


def _switched_off(value: cst.BaseExpression) -> frozenset[str]:
    """The parameters a layer call turns off by a literal (``bias=False``)."""
    if not isinstance(value, cst.Call):
        return frozenset()
    off = frozenset()
    for argument in value.args:
        keyword = argument.keyword.value if argument.keyword else None
        if (
            keyword in _OFF_SWITCHES
            and isinstance(argument.value, cst.Name)
            and argument.value.value == "False"
        ):
            off |= _OFF_SWITCHES[keyword]
    return off


def _is_self_attribute(node: cst.BaseExpression, self_name: str) -> bool:
    return isinstance(node, cst.Attribute) and _is_name(node.value, self_name)


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _is_return(statement: cst.BaseStatement) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and isinstance(statement.body[0], cst.Return)


#: What the rule does, run by tests/test_rules.py.
HeldModuleRewriter.examples = (
    # valid: a held layer, and a prior below it
    Example(
        before="""\
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2)
""",
        after="""\
import torch
from torch import nn
from pyro.nn import PyroModule
from bayesify.runtime import pyro_module, set_prior


class Model(PyroModule):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2)
        set_prior(self, "Model.fc.weight", "Normal", 0, 1)
        pyro_module(self)
""",
        spec="priors:\n  Model.fc.weight: Normal(0, 1)\n",
    ),
)
# no-op: the block is regenerated, and says the same
HeldModuleRewriter.examples += (HeldModuleRewriter.examples[0].again(),)
