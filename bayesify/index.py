"""Index the classes of every file in a run, so that bases resolve across files.

The index is built with :mod:`ast` (a C parser, several times faster than libcst's) because it
only needs class names, bases, import bindings and the lines that assign ``self`` attributes.
libcst parses only the files that the index says will change.

Whether a class converts follows from its bases::

    class Net(nn.Module)          ROOT      base becomes PyroModule
    class MyLinear(nn.Linear)     LAYER     base becomes PyroModule[nn.Linear]
    class Deep(Net)               INHERITS  nothing to change: Net becomes a PyroModule
    class Done(PyroModule)        PYRO      already converted (a re-run)
    class Metric(lib.Metric)      FOREIGN   base becomes pyro_module_class(lib.Metric), when lib.*
                                            is ``external`` (unread) or the base has an unread base
    class Plain(object)           NONE
    @torch.jit.interface
    class Api(nn.Module)          INTERFACE stays as written; subclasses get PyroModule[Api]
"""

from __future__ import annotations

import ast
import enum
import fnmatch
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Optional

from .catalog import NN_LAYER_BASES, NN_LAYERS
from .names import (
    ImportTable,
    dotted_from_ast,
    is_pyro_nn,
    torch_nn_class,
)


def is_torch_nn_module(name: str) -> bool:
    """Whether the torch.nn class ``name`` is a module: the catalog lists every module class
    (public ones, and the private bases of layers such as ``_ConvNd``), so one it lacks is
    something else (``Parameter``, ``Buffer``, ``LazyModuleMixin``), which PyroModule cannot wrap."""
    return name in NN_LAYERS or name in NN_LAYER_BASES


class Conversion(enum.Enum):
    NONE = "not a module"
    ROOT = "nn.Module subclass"
    LAYER = "torch.nn layer subclass"
    EXTERNAL = "subclass of an nn.Module outside the rewritten files"
    #: ``PyroModule[Base]`` may fail for such a base, and only the run time can tell: an
    #: ``external`` class may be no module at all, or bring a metaclass (``abc.ABC``).
    FOREIGN = "subclass of a class bayesify cannot read, or with a base it cannot read"
    INHERITS = "subclass of a converted class"
    PYRO = "already a PyroModule"
    EXCLUDED = "excluded by the spec"
    INTERFACE = "TorchScript interface"

    @property
    def is_pyro(self) -> bool:
        """Whether instances of the class are PyroModules after the rewrite."""
        return self in (
            Conversion.ROOT,
            Conversion.LAYER,
            Conversion.EXTERNAL,
            Conversion.FOREIGN,
            Conversion.INHERITS,
            Conversion.PYRO,
        )


#: The names of the runtime's ``PyroModule[Base]`` for a base known only at run time.
PYRO_MODULE_CLASS = frozenset(
    {"bayesify.runtime.pyro_module_class", "bayesify.runtime.metaclass.pyro_module_class"}
)
#: Bases that are plain classes, never bringing a metaclass of their own.
PLAIN_BASES = frozenset({"object"})

#: The names ``torch.jit.interface`` goes by.
TORCHSCRIPT_INTERFACE = frozenset({"torch.jit.interface", "torch.jit._script.interface"})


@dataclass(frozen=True)
class BaseRef:
    """One base class expression: what it resolves to, whether it is subscripted, and what
    the subscript resolves to (``torch.nn.Linear`` in ``PyroModule[nn.Linear]``)."""

    resolved: Optional[str]
    subscripted: bool = False
    argument: Optional[str] = None

    @property
    def layer(self) -> Optional[str]:
        """The torch.nn layer this base is, or wraps in ``PyroModule[...]``."""
        if self.subscripted and is_pyro_nn(self.resolved, "PyroModule"):
            return torch_nn_class(self.argument)
        return torch_nn_class(self.resolved)


#: What :attr:`ClassRecord.method_reads` holds for a method that calls its own module, ``self(x)``.
CALLS_ITSELF = "__call__"
#: What it holds for a method that calls the class's attributes (its parts) more than once:
#: at two places, or in a loop (``self.first(x)``, ``self.second(h)``; ``for block in
#: self.blocks: h = block(h)``).
RUNS_PARTS = "__parts__"


@dataclass
class ClassRecord:
    """A class as the index sees it. ``order`` is its place in a pre-order walk of the file,
    which is the same in the ast and libcst trees (see
    :class:`~bayesify.rewriters.context.ClassScopedTransformer`), so the two passes agree on
    which class is which."""

    module: str
    qualname: str
    name: str
    order: int
    line: int
    bases: tuple[BaseRef, ...]
    #: Which top-level compound statement of the file holds the class: the engine runs the
    #: rewriters on those statements only.
    top: int
    attr_lines: dict[str, int] = field(default_factory=dict)
    #: The ``self.<attr>`` names each method mentions, by method name.
    method_reads: dict[str, frozenset[str]] = field(default_factory=dict)
    #: The ``self.<attr>`` names ``__init__`` reads (``self.fc.bias = self.bias`` reads ``bias``).
    init_reads: frozenset[str] = frozenset()
    #: What the decorators that bayesify can name resolve to (``torch.jit.interface``; the
    #: callee of ``@f(...)``).
    decorators: tuple[str, ...] = ()
    #: The attributes its methods only ever set to literals (``self._trainer = None``,
    #: ``self.flags = {}``): no module, whatever a spec's glob says.
    plain_attrs: frozenset[str] = frozenset()

    @property
    def is_torchscript_interface(self) -> bool:
        """``@torch.jit.interface``: TorchScript wants such a class to derive from nn.Module
        alone ("does not support inheritance"), so it cannot become a PyroModule."""
        return any(decorator in TORCHSCRIPT_INTERFACE for decorator in self.decorators)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.method_reads)

    def runs_itself(self, method: str) -> bool:
        """Whether ``method`` (not ``forward``) calls the module, ``self(x)`` or ``self.forward(x)``."""
        return method != "forward" and bool(
            self.method_reads.get(method, frozenset()) & {CALLS_ITSELF, "forward"}
        )

    def runs_the_module(self, method: str) -> bool:
        """Whether ``method`` runs the module: itself, its parts more than once (TabNet's
        ``forward_masks``, which runs blocks that share a layer; a flow's ``inverse``, its
        conditioner once a dimension), or through another method of the class that reads
        what the class sets (its layers, its parameters): an autoregressive ``generate()``
        calling ``self(x)`` or ``self.step(x)`` a token at a time. Not
        ``forward``, nor, through another method, one that ``__init__`` runs
        (``self._warm_up()``), which runs the parts as they are built."""
        if self.runs_itself(method):
            return True
        if method == "forward" or method in self.run_by_init:
            return False
        own = self.method_reads
        if RUNS_PARTS in own.get(method, frozenset()):
            return True
        return any(
            other != method
            and not (other.startswith("__") and other.endswith("__"))
            and not own[other].isdisjoint(self.attr_lines)
            for other in own.get(method, frozenset())
            if other in own
        )

    @cached_property
    def run_by_init(self) -> frozenset[str]:
        """The methods ``__init__`` calls, and those they call."""
        reached: set[str] = set()
        waiting = [name for name in self.init_reads if name in self.method_reads]
        while waiting:
            name = waiting.pop()
            if name not in reached:
                reached.add(name)
                waiting.extend(other for other in self.method_reads[name] if other in self.method_reads)
        return frozenset(reached)

    @cached_property  # the class index asks it of every base, again and again
    def key(self) -> str:
        return f"{self.module}.{self.qualname}" if self.module else self.qualname


@dataclass
class FileIndex:
    path: str
    imports: ImportTable
    classes: list[ClassRecord]
    #: Whether the file ties weights by name (transformers' ``_tied_weights_keys``,
    #: ``tie_weights()``): any parameter of its classes may be shared where the code does
    #: not show it, so selected ones are replaced when the model is built, tied or not.
    ties_weights: bool = False

    @property
    def module(self) -> str:
        return self.imports.module


def module_of(path: Path) -> tuple[str, bool]:
    """The dotted module name of ``path``, walking up the folders that hold ``__init__.py``."""
    path = path.resolve()
    is_package = path.name in ("__init__.py", "__init__.pyi")
    parts = [] if is_package else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists() or (folder / "__init__.pyi").exists():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts)), is_package


COMPOUND_STATEMENTS = tuple(
    getattr(ast, name)
    for name in (
        "ClassDef",
        "FunctionDef",
        "AsyncFunctionDef",
        "If",
        "For",
        "AsyncFor",
        "While",
        "Try",
        "TryStar",
        "With",
        "AsyncWith",
        "Match",
    )
    if hasattr(ast, name)
)


class _ClassCollector:
    """Classes in pre-order, the order libcst visits them in (see ``ClassRecord.order``).

    Only statement bodies are walked: classes never stand inside expressions.
    """

    def __init__(self, module: str, imports: ImportTable) -> None:
        self.module = module
        self.imports = imports
        self.classes: list[ClassRecord] = []
        self.scope: list[str] = []
        self.local_classes: dict[str, str] = {}
        self.top = -1

    def visit(self, node: ast.stmt) -> None:
        if isinstance(node, ast.ClassDef):
            self._class(node)
            return
        is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if is_function:
            self.scope.extend((node.name, "<locals>"))
        for block in statement_blocks(node):
            for statement in block:
                self.visit(statement)
        if is_function:
            del self.scope[-2:]

    def _class(self, node: ast.ClassDef) -> None:
        attr_lines, method_reads, init_reads, plain_attrs = _scan_methods(node)
        record = ClassRecord(
            module=self.module,
            qualname=".".join([*self.scope, node.name]),
            name=node.name,
            order=len(self.classes),
            line=node.lineno,
            bases=tuple(self._base(base) for base in node.bases),
            top=self.top,
            attr_lines=attr_lines,
            method_reads=method_reads,
            init_reads=init_reads,
            plain_attrs=plain_attrs,
            decorators=tuple(
                name
                for decorator in node.decorator_list
                for name in [self._resolve(decorator.func if isinstance(decorator, ast.Call) else decorator)]
                if name
            ),
        )
        self.classes.append(record)
        self.local_classes.setdefault(node.name, record.key)
        self.scope.append(node.name)
        for statement in node.body:
            self.visit(statement)
        self.scope.pop()

    def _base(self, node: ast.expr) -> BaseRef:
        if isinstance(node, ast.Subscript):
            return BaseRef(self._resolve(node.value), True, self._resolve(node.slice))
        if isinstance(node, ast.Call) and len(node.args) == 1:  # pyro_module_class(Base), a re-run
            function = self._resolve(node.func)
            if function in PYRO_MODULE_CLASS:
                return BaseRef(function, True, self._resolve(node.args[0]))
        return BaseRef(self._resolve(node))

    def _resolve(self, node: ast.expr) -> Optional[str]:
        dotted = dotted_from_ast(node)
        return self.imports.resolve(dotted) or self._local(dotted)

    def _local(self, dotted: Optional[str]) -> Optional[str]:
        if not dotted:
            return None
        head, _, rest = dotted.partition(".")
        key = self.local_classes.get(head)
        if key is None:
            return None
        return f"{key}.{rest}" if rest else key


def statement_blocks(node: ast.stmt) -> Iterable[list[ast.stmt]]:
    """The statement lists directly inside a compound statement, in source order."""
    for name in ("body", "handlers", "orelse", "finalbody", "cases"):
        block = getattr(node, name, None)
        if not block:
            continue
        if name in ("handlers", "cases"):
            for part in block:
                yield part.body
        else:
            yield block


_REGISTERS = ("register_parameter", "register_buffer", "add_module")


def _scan_methods(
    cls: ast.ClassDef,
) -> tuple[dict[str, int], dict[str, frozenset[str]], frozenset[str], frozenset[str]]:
    """What the rewrite needs to know of each method of ``cls``:

    - the first line of each ``self.<attr> = …`` (or ``register_parameter("attr", …)``), how
      the plan reports a site's line without libcst position metadata;
    - the ``self.<attr>`` names each method mentions (and :data:`CALLS_ITSELF` where it calls
      ``self(…)``, :data:`RUNS_PARTS` where it calls its attributes more than once), which
      decide ``@pyro_method``;
    - those ``__init__`` reads: a parameter read there may be tied to another place;
    - the attributes only ever set to literals (``self._trainer = None``), which no glob of a
      spec can find a module in.
    """
    lines: dict[str, int] = {}
    reads: dict[str, frozenset[str]] = {}
    part_calls: dict[str, list[tuple[str, bool]]] = {}  # by method: (attribute, in a loop) a call
    init_reads: set[str] = set()
    literal_targets: set[int] = set()
    set_otherwise: set[str] = set()
    for method in cls.body:
        if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        positional = [*method.args.posonlyargs, *method.args.args]
        self_name = positional[0].arg if positional else None
        names = set()
        for node in ast.walk(method):
            if (
                isinstance(node, (ast.Assign, ast.AnnAssign))
                and node.value is not None
                and _is_literal(node.value)
            ):
                literal_targets.update(
                    map(id, node.targets if isinstance(node, ast.Assign) else [node.target])
                )
            if isinstance(node, ast.Attribute):
                if isinstance(node.value, ast.Name) and node.value.id == self_name:
                    names.add(node.attr)
                    if isinstance(node.ctx, ast.Store):
                        lines.setdefault(node.attr, node.lineno)
                        if id(node) not in literal_targets:
                            set_otherwise.add(node.attr)
                    elif method.name == "__init__" and isinstance(node.ctx, ast.Load):
                        init_reads.add(node.attr)
            elif isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id == self_name:
                    names.add(CALLS_ITSELF)  # self(x): an autoregressive generate()
                named = _registered_name(node, self_name)
                if named is not None:
                    lines.setdefault(named, node.lineno)
                    set_otherwise.add(named)
        reads[method.name] = reads.get(method.name, frozenset()) | names
        part_calls.setdefault(method.name, []).extend(_calls_of_attributes(method, self_name))
    plain = frozenset(lines) - set_otherwise
    for method, calls in part_calls.items():
        parts = [looped for attribute, looped in calls if attribute in lines and attribute not in plain]
        if len(parts) > 1 or any(parts):
            reads[method] |= {RUNS_PARTS}
    return lines, reads, frozenset(init_reads), plain


def _calls_of_attributes(method: ast.AST, self_name: Optional[str]) -> list[tuple[str, bool]]:
    """The calls of ``self``'s attributes in ``method`` (``self.fc(x)``, ``self.blocks[0](x)``;
    in ``for block in self.blocks:``, ``block(x)``), not of their methods (``self.mask.to(x)``):
    the attribute, and whether the call is in a loop."""
    calls = []

    def visit(node: ast.AST, looped: bool, aliases: dict[str, str]) -> None:
        if isinstance(node, ast.Call):
            called = node.func
            while isinstance(called, ast.Subscript):
                called = called.value
            root = (
                called.attr
                if isinstance(called, ast.Attribute)
                and isinstance(called.value, ast.Name)
                and called.value.id == self_name
                else None
            )
            if root is None and isinstance(node.func, ast.Name):
                root = aliases.get(node.func.id)
            if root is not None:
                calls.append((root, looped))
        loops = [node] if isinstance(node, (ast.For, ast.AsyncFor)) else getattr(node, "generators", [])
        for loop in loops:
            iterated = next(
                filter(None, (_self_attribute(part, self_name) for part in ast.walk(loop.iter))), None
            )
            if iterated is not None:
                targets = (name.id for name in ast.walk(loop.target) if isinstance(name, ast.Name))
                aliases = {**aliases, **dict.fromkeys(targets, iterated)}
        inside = looped or bool(loops) or isinstance(node, ast.While)
        for child in ast.iter_child_nodes(node):
            visit(child, inside, aliases)

    visit(method, False, {})
    return calls


def _self_attribute(node: ast.AST, self_name: Optional[str]) -> Optional[str]:
    """``attr`` where ``node`` is ``self.attr``, or an attribute, item or slice of it."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == self_name
        ):
            return node.attr
        node = node.value
    return None


def _is_literal(node: ast.expr) -> bool:
    """Whether ``node`` is a constant, or a tuple, list, set or dict of them (empty too)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(map(_is_literal, node.elts))
    if isinstance(node, ast.Dict):
        return all(key is not None and _is_literal(key) for key in node.keys) and all(
            map(_is_literal, node.values)
        )
    return False


def _registered_name(call: ast.Call, self_name: Optional[str]) -> Optional[str]:
    """``"fc"`` for ``self.register_parameter("fc", …)`` (``register_buffer``,
    ``add_module``) or ``setattr(self, "fc", …)``."""
    arguments = call.args
    if isinstance(call.func, ast.Name) and call.func.id == "setattr":
        if not (arguments and isinstance(arguments[0], ast.Name) and arguments[0].id == self_name):
            return None
        arguments = arguments[1:]
    elif not (isinstance(call.func, ast.Attribute) and call.func.attr in _REGISTERS):
        return None
    if arguments and isinstance(arguments[0], ast.Constant) and isinstance(arguments[0].value, str):
        return arguments[0].value
    return None


TYING_NAMES = ("_tied_weights_keys", "tie_weights")


def index_source(
    tree: ast.Module, path: str, module: str, is_package: bool, ties_weights: bool = False
) -> FileIndex:
    imports = ImportTable.from_ast(tree, module, is_package)
    collector = _ClassCollector(module, imports)
    for statement in tree.body:
        if isinstance(statement, COMPOUND_STATEMENTS):
            collector.top += 1
            collector.visit(statement)
    return FileIndex(path=path, imports=imports, classes=collector.classes, ties_weights=ties_weights)


#: How many re-exports a name is followed through to its class.
REEXPORT_HOPS = 8


def _wraps(base: BaseRef) -> bool:
    """Whether ``base`` is ``PyroModule[Base]`` or ``pyro_module_class(Base)``."""
    return base.subscripted and (
        is_pyro_nn(base.resolved, "PyroModule") or base.resolved in PYRO_MODULE_CLASS
    )


class ClassIndex:
    """Every class of a run, by dotted name, and how each converts.

    ``context`` files are indexed but not rewritten: a class of the run whose base is a
    module class there (a package's base model, say) gets ``PyroModule[Base]``, as does a
    base whose dotted name matches one of the ``external`` globs (the spec's
    ``modules: external:``), for nn.Module classes whose source is not at hand at all.
    """

    def __init__(
        self,
        files: Iterable[FileIndex],
        exclude: Iterable[str] = (),
        context: Iterable[FileIndex] = (),
        external: Iterable[str] = (),
    ) -> None:
        self.classes: dict[str, ClassRecord] = {}
        #: Each module's import bindings, to follow a name a package re-exports
        #: (``from .base import Flow`` in ``flows/__init__.py``) to the class itself.
        self.imports: dict[str, ImportTable] = {}
        files, context = list(files), list(context)
        for file in files:
            self.imports.setdefault(file.module, file.imports)
            for record in file.classes:
                self.classes.setdefault(record.key, record)
        self.rewritten = frozenset(self.classes)
        for file in context:
            self.imports.setdefault(file.module, file.imports)
            for record in file.classes:
                self.classes.setdefault(record.key, record)
        self.exclude = tuple(exclude)
        self.external = tuple(external)
        # Every file of a run asks these of the same few bases, and the index does not change.
        self._memo: dict[str, Conversion] = {}
        self._kinds: dict[str, tuple[Conversion, ...]] = {}
        self._ancestors: dict[str, list[ClassRecord]] = {}
        self._found: dict[Optional[str], Optional[ClassRecord]] = {}

    def lookup(self, resolved: Optional[str]) -> Optional[ClassRecord]:
        """The class a resolved dotted name stands for, following re-exports: ``pkg.flows.Flow``
        is ``pkg.flows.base.Flow`` when ``pkg/flows/__init__.py`` imports it from ``.base``,
        by name or with ``from .base import *``."""
        if resolved not in self._found:
            self._found[resolved] = self._follow(resolved)
        return self._found[resolved]

    def _follow(self, resolved: Optional[str]) -> Optional[ClassRecord]:
        candidates = [resolved] if resolved else []
        seen: set[str] = set()
        # A name is re-exported through a few modules, never many; a binding such as
        # ``from .x import x`` in ``pkg/__init__.py`` would otherwise grow ``pkg.x.x.x…``.
        for _ in range(REEXPORT_HOPS):
            following = []
            for name in candidates:
                record = self.classes.get(name)
                if record is not None:
                    return record
                seen.add(name)
                following += [n for n in self._reexported(name) if n not in seen]
            if not following:
                break
            candidates = following
        return None

    def _reexported(self, dotted: str) -> list[str]:
        """What ``dotted`` may name after one step through the imports of the longest indexed
        module it starts with (``pkg.flows`` binds ``Flow`` to ``pkg.flows.base.Flow``)."""
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            imports = self.imports.get(".".join(parts[:cut]))
            if imports is None:
                continue
            rest = ".".join(parts[cut:])
            bound = imports.resolve(rest)
            if bound is not None:
                return [bound]
            return [f"{source}.{rest}" for source in imports.star_sources]
        return []

    def conversion(self, record: ClassRecord) -> Conversion:
        key = record.key
        if key not in self._memo:
            self._memo[key] = Conversion.NONE  # a cycle of bases is not a module
            self._memo[key] = self._convert(record)
        return self._memo[key]

    def _convert(self, record: ClassRecord) -> Conversion:
        if any(fnmatch.fnmatchcase(record.name, glob) for glob in self.exclude):
            return Conversion.EXCLUDED
        kinds = self.base_kinds(record)
        if Conversion.EXCLUDED in kinds:
            return Conversion.EXCLUDED
        if record.is_torchscript_interface:
            return Conversion.INTERFACE
        for kind in (
            Conversion.PYRO,
            Conversion.INHERITS,
            Conversion.ROOT,
            Conversion.LAYER,
            Conversion.EXTERNAL,
            Conversion.FOREIGN,
        ):
            if kind in kinds:
                return kind
        return Conversion.NONE

    def base_kinds(self, record: ClassRecord) -> tuple[Conversion, ...]:
        """How each base of ``record`` converts, in the order they are written."""
        kinds = self._kinds.get(record.key)
        if kinds is None:
            kinds = self._kinds[record.key] = tuple(self._base_kind(base) for base in record.bases)
        return kinds

    def _base_kind(self, base: BaseRef) -> Conversion:
        resolved = base.resolved
        if is_pyro_nn(resolved, "PyroModule") or resolved in PYRO_MODULE_CLASS:
            return Conversion.PYRO
        layer = torch_nn_class(resolved)
        if layer == "Module":
            return Conversion.ROOT
        if layer is not None:
            return Conversion.LAYER if is_torch_nn_module(layer) else Conversion.NONE
        if resolved and any(fnmatch.fnmatchcase(resolved, glob) for glob in self.external):
            return Conversion.FOREIGN
        parent = self.lookup(resolved)
        if parent is None:
            return Conversion.NONE
        kind = self.conversion(parent)
        if kind is Conversion.EXCLUDED:
            return kind
        if kind is Conversion.INTERFACE:
            # A plain nn.Module that stays as written: its implementations wrap it.
            return Conversion.EXTERNAL
        if not kind.is_pyro:
            return Conversion.NONE
        if parent.key in self.rewritten or kind is Conversion.PYRO:
            return Conversion.INHERITS
        return Conversion.FOREIGN if self._has_unread_base(parent) else Conversion.EXTERNAL

    def built_by_unread_base(self, record: ClassRecord) -> bool:
        """Whether a base that the run does not rewrite builds modules of ``record`` in its own
        ``__init__`` (a subclass of a library's model, ``rtdl.MLP``, before or after the rewrite
        made its base ``PyroModule[rtdl.MLP]``): what they hold is known only at run time."""
        return any(
            self._base_kind(BaseRef(base.argument) if _wraps(base) else base)
            in (Conversion.EXTERNAL, Conversion.FOREIGN)
            for base in record.bases
        )

    def _has_unread_base(self, record: ClassRecord) -> bool:
        """Whether ``record`` or a class it derives from has a base that bayesify has not read
        and that is no torch.nn class (``abc.ABC``, a mixin of another package), which may bring
        a metaclass that ``PyroModule[record]`` conflicts with."""
        return any(
            base.resolved not in PLAIN_BASES
            and torch_nn_class(base.resolved) is None
            and self.lookup(base.resolved) is None
            for ancestor in self.ancestors(record)
            for base in ancestor.bases
        )

    def unseen_bases(self, record: ClassRecord) -> list[tuple[str, ClassRecord]]:
        """Bases that bayesify cannot see of a class that looks like a module (it has
        ``forward``), when it does not convert: they may be nn.Modules. Each with the class
        that names it, the class itself or one of its indexed ancestors (a model's
        ``XPreTrainedModel`` without a ``forward`` of its own, deriving from a library's
        base)."""
        if "forward" not in record.methods or self.conversion(record) is not Conversion.NONE:
            return []
        return [
            (base.resolved, ancestor)
            for ancestor in self.ancestors(record)
            for base in ancestor.bases
            if base.resolved
            and self.lookup(base.resolved) is None
            # torch's classes outside torch.nn (torch.autograd.Function) are no modules, nor
            # are those of the standard library.
            and base.resolved.partition(".")[0] not in ("torch", "pyro", "builtins", *sys.stdlib_module_names)
        ]

    def ancestors(self, record: ClassRecord) -> list[ClassRecord]:
        """``record`` and the indexed classes it derives from, nearest first."""
        known = self._ancestors.get(record.key)
        if known is not None:
            return known
        seen: dict[str, ClassRecord] = {}
        pending = [record]
        while pending:
            current = pending.pop(0)
            if current.key in seen:
                continue
            seen[current.key] = current
            # PyroModule[Base] and pyro_module_class(Base), as a rewrite wrote them, derive from Base.
            parents = (base.argument if _wraps(base) else base.resolved for base in current.bases)
            pending.extend(parent for parent in map(self.lookup, parents) if parent)
        known = self._ancestors[record.key] = list(seen.values())
        return known
