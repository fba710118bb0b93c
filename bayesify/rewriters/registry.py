"""The rules of a rewrite: each registers itself here with what it needs of the walk.

A rule is a :class:`Rule` (a libcst transformer that knows which class and method it is in)
decorated with :func:`register`. It declares

- ``pass_``: :data:`STATEMENTS` (the first walk, on every top-level statement that holds a
  converting class) or :data:`DECORATORS` (the second, once every random attribute of the
  file is known, on the statements whose classes have one);
- ``enters``: the node types the walk must enter for its hooks to fire, the path down to
  them included; a ``visit_``/``leave_`` hook for a type it does not declare is refused at
  registration, rather than silently never called;
- ``generated_names``: the names its output uses, by the module they come from (the
  imports rule adds those a file lacks);
- ``examples``: :class:`Example`\\ s of what it does, which the tests run.

Every rule of a file's rewrite shares one :class:`RewriteContext`: what the run decided for
the file (classes, conversions, imports, the planner) and what the rules found (``random``
attributes, ``needed`` names). :func:`bayesify.engine.rewrite_source` runs the passes in
order over the registered rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import libcst as cst

from ..index import ClassRecord, Conversion
from ..names import ImportTable
from ..plan import Planner
from .context import ClassScopedTransformer
from .example import Example
from .imports import SOURCES

__all__ = ["Example", "Rule", "RewriteContext", "register", "rules", "entered"]

STATEMENTS, DECORATORS = "statements", "decorators"
PASSES = (STATEMENTS, DECORATORS)


@dataclass
class RewriteContext:
    """What the rules of one file's rewrite share."""

    path: str
    classes: dict[int, ClassRecord]
    conversions: dict[int, Conversion]
    #: How each base of each class converts (ROOT, LAYER, EXTERNAL, ...), by class order.
    base_kinds: dict[int, tuple[Conversion, ...]]
    imports: ImportTable
    planner: Planner
    #: Attributes that are random, by class order: inherited ones to start with; the
    #: statement rules add those they make random, the decorator rules read them.
    random: dict[int, set[str]] = field(default_factory=dict)
    #: Names the rewritten file uses and must import (keys of :data:`~.imports.SOURCES`).
    needed: set[str] = field(default_factory=set)
    #: Whether the file ties weights by name (see ``FileIndex.ties_weights``).
    ties_weights: bool = False
    #: Lines of the entries that select a class's own parameter which stays as it is until
    #: the model is built, by class order: one ``__init__`` reads again (it may tie it
    #: elsewhere: ``self.fc.bias = self.bias``), or any in a file that ties weights by name.
    #: The parameter rule fills it, the held-module rule notes the entries.
    at_build: dict[int, set[int]] = field(default_factory=dict)
    #: The attributes each class inherits from the classes it derives from (see ``FileJob``).
    inherited_attrs: dict[int, frozenset[str]] = field(default_factory=dict)
    #: Classes some of whose modules a base the run does not rewrite builds (see ``FileJob``).
    built_by_unread_base: frozenset[int] = frozenset()
    #: Orders of the classes that become PyroModules.
    converting: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.converting = {order for order, kind in self.conversions.items() if kind.is_pyro}

    def add_random(self, record: ClassRecord, attr: str) -> None:
        self.random.setdefault(record.order, set()).add(attr)


class Rule(ClassScopedTransformer):
    pass_: ClassVar[str] = STATEMENTS
    enters: ClassVar[frozenset[type]] = frozenset()
    generated_names: ClassVar[dict[str, str]] = {}
    examples: ClassVar[tuple[Example, ...]] = ()

    def __init__(self, context: RewriteContext, first_order: int) -> None:
        super().__init__(context.classes, first_order)
        self.context = context


#: Every rule, in the order they run within a pass.
RULES: list[type[Rule]] = []


def register(rule: type[Rule]) -> type[Rule]:
    """Add ``rule`` to :data:`RULES`, after checking that the walk will reach its hooks."""
    if rule.pass_ not in PASSES:
        raise TypeError(f"{rule.__name__}.pass_ must be one of {PASSES}, not {rule.pass_!r}")
    # The rule's own hooks: libcst's base classes define a no-op hook for every node type.
    own = {name for klass in rule.__mro__[: rule.__mro__.index(Rule)] for name in vars(klass)}
    for name in sorted(own):
        if name.startswith(("visit_", "leave_")):
            node_type = getattr(cst, name.split("_", 1)[1].split("_")[0], None)
            if node_type not in rule.enters:
                raise TypeError(
                    f"{rule.__name__}.{name} would never run: its node type is not in {rule.__name__}.enters"
                )
    for name, module in rule.generated_names.items():
        if SOURCES.setdefault(name, module) != module:
            raise TypeError(
                f"{rule.__name__} imports {name} from {module}, another rule from {SOURCES[name]}"
            )
    RULES.append(rule)
    return rule


def rules(pass_: str) -> list[type[Rule]]:
    return [rule for rule in RULES if rule.pass_ == pass_]


def entered(pass_: str) -> frozenset[type]:
    """The node types the walk of ``pass_`` enters: those its rules declare."""
    return frozenset().union(*(rule.enters for rule in rules(pass_)))
