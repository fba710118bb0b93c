"""The tutorial's pitfalls, found in the rewritten code and reported with file and line.

- **plate**: a random attribute (or a module holding random attributes) first read inside a
  ``pyro.plate`` in ``forward`` is sampled with the plate's batch shape, once per element,
  instead of once::

      with pyro.plate("data", len(x)):
          scale = self.scale          # <- first read here: shape (len(x),)

- **two roots**: a plain ``nn.Module`` (a class the spec excludes) that builds two or more
  PyroModules gives two Pyro roots; sites of the same name then share one parameter.
- **called, then attached**: a PyroModule called on its own fixes its site names as a root;
  attached to another module afterwards, it keeps them.
- **recomputed**: activation checkpointing and ``odeint_adjoint`` run their function again in
  the backward pass, after the model's call has returned: random weights read there are drawn
  again, and their gradients are wrong without a word.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from .diagnostics import Diagnostic
from .index import ClassRecord, Conversion, statement_blocks
from .names import ImportTable, dotted_from_ast
from .rewriters.example import Example


@dataclass(frozen=True)
class LintContext:
    path: str
    imports: ImportTable
    classes: dict[int, ClassRecord]
    conversions: dict[int, Conversion]
    #: Attributes that are random, or hold modules with random attributes, by class order.
    random: dict[int, set[str]]
    #: Dotted names of classes (this file's and imported ones) whose instances are PyroModules.
    pyro_classes: frozenset[str]

    def random_reads(self, cls: ast.ClassDef, record: ClassRecord) -> set[str]:
        """Attributes whose first read samples: random ones, and modules of this file's
        classes that have random attributes (``self.linear = BayesianLinear(...)``)."""
        random_classes = {
            self.classes[o].key for o, attrs in self.random.items() if attrs and o in self.classes
        }
        holders = {
            target.attr
            for node in ast.walk(cls)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            for target in node.targets
            if isinstance(target, ast.Attribute)
            and (
                self.imports.resolve(dotted_from_ast(node.value.func))
                or f"{self.imports.module}.{dotted_from_ast(node.value.func)}"
            )
            in random_classes
        }
        return self.random.get(record.order, set()) | holders


def lint(source: bytes, context: LintContext) -> list[Diagnostic]:
    """The findings for one file, read from its source as it was (so lines are the user's).

    The source is parsed only when some lint can apply: a random attribute and the word
    ``plate``; a class the spec excludes; a PyroModule class built into a local name; the
    name of a function that computes again in the backward pass.
    """
    plate = b"plate" in source and any(context.random.values())
    excluded = Conversion.EXCLUDED in context.conversions.values()
    attached = _builds_locals(source, context)
    recomputed = b"checkpoint" in source or b"odeint_adjoint" in source
    if not (plate or excluded or attached or recomputed):
        return []
    tree = ast.parse(source)
    findings: list[Diagnostic] = []
    for order, node in enumerate(_preorder_classes(tree.body)):
        record = context.classes.get(order)
        conversion = context.conversions.get(order, Conversion.NONE)
        if record is None:
            continue
        if plate and conversion.is_pyro:
            findings += _plate_reads(node, record, context)
        if recomputed and conversion.is_pyro:
            findings += _recomputed(node, record, context)
        if conversion is Conversion.EXCLUDED:
            findings += _two_roots(node, record, context)
    if attached:
        findings += _called_then_attached(tree, context)
    return findings


def _builds_locals(source: bytes, context: LintContext) -> bool:
    """Whether some line binds a local name to a new instance of a PyroModule class."""
    names = {key.rpartition(".")[2] for key in context.pyro_classes}
    if not names:
        return False
    pattern = (
        rb"^[ \t]*\w+[ \t]*=[ \t]*[\w.]*\b(?:"
        + b"|".join(re.escape(n.encode()) for n in sorted(names))
        + rb")\("
    )
    return re.search(pattern, source, re.MULTILINE) is not None


def _preorder_classes(statements: list[ast.stmt]) -> Iterable[ast.ClassDef]:
    """Classes in the pre-order the index numbers them in (they stand only in statements)."""
    for statement in statements:
        if isinstance(statement, ast.ClassDef):
            yield statement
        for block in statement_blocks(statement):
            yield from _preorder_classes(block)


def _is_plate(item: ast.withitem, imports: ImportTable) -> bool:
    call = item.context_expr
    return isinstance(call, ast.Call) and (imports.resolve(dotted_from_ast(call.func)) or "") in (
        "pyro.plate",
        "pyro.primitives.plate",
    )


def _plate_reads(cls: ast.ClassDef, record: ClassRecord, context: LintContext) -> list[Diagnostic]:
    random = context.random_reads(cls, record)
    forward = next(
        (
            m
            for m in cls.body
            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name == "forward"
        ),
        None,
    )
    if not random or forward is None or not forward.args.args:
        return []
    self_name = forward.args.args[0].arg
    first_reads: dict[str, tuple[int, Optional[str]]] = {}

    def walk(node: ast.AST, plate: Optional[str]) -> None:
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                walk(item.context_expr, plate)
            inner = plate
            for item in node.items:
                if _is_plate(item, context.imports):
                    name = item.context_expr.args[0] if item.context_expr.args else None
                    inner = ast.literal_eval(name) if isinstance(name, ast.Constant) else "…"
            for statement in node.body:
                walk(statement, inner)
            return
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == self_name
            and node.attr in random
        ):
            first_reads.setdefault(node.attr, (node.lineno, plate))
        for child in ast.iter_child_nodes(node):
            walk(child, plate)

    for statement in forward.body:
        walk(statement, None)
    return [
        Diagnostic.of(
            "BAY101",
            f"{record.name}.forward first reads the random attribute {attr!r} inside "
            f"pyro.plate({plate!r}), so it is sampled once per element of the plate; read it "
            "before the plate (the tutorial's plate pitfall)",
            context.path,
            line,
        )
        for attr, (line, plate) in sorted(first_reads.items(), key=lambda item: item[1][0])
        if plate is not None
    ]


#: Functions that run the function they are given again in the backward pass, and what to do.
RECOMPUTING = {
    "torch.utils.checkpoint.checkpoint": "leave activation checkpointing off around them",
    "torch.utils.checkpoint.checkpoint_sequential": "leave activation checkpointing off around them",
    "torchdiffeq.odeint_adjoint": "use torchdiffeq's odeint",
    "torchdiffeq._impl.adjoint.odeint_adjoint": "use torchdiffeq's odeint",
}


def _recomputed(cls: ast.ClassDef, record: ClassRecord, context: LintContext) -> list[Diagnostic]:
    findings = []
    for node in ast.walk(cls):
        if not isinstance(node, ast.Call):
            continue
        called = context.imports.resolve(dotted_from_ast(node.func)) or ""
        if called in RECOMPUTING:
            findings.append(
                Diagnostic.of(
                    "BAY104",
                    f"{record.name} calls {called.rpartition('.')[2]}, which runs its function again in "
                    "the backward pass, after the model's call has returned: random weights it reads "
                    f"are drawn again there, and their gradients are wrong; {RECOMPUTING[called]}",
                    context.path,
                    node.lineno,
                )
            )
    return findings


def _makes_pyro_module(value: ast.expr, context: LintContext) -> bool:
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    if isinstance(func, ast.Subscript):
        func = func.value
    resolved = (
        context.imports.resolve(dotted_from_ast(func)) or f"{context.imports.module}.{dotted_from_ast(func)}"
    )
    return (
        resolved in context.pyro_classes
        or resolved.rpartition(".")[2] == "PyroModule"
        or resolved == "bayesify.runtime.pyro_module"
    )


def _two_roots(cls: ast.ClassDef, record: ClassRecord, context: LintContext) -> list[Diagnostic]:
    built = [
        node
        for node in ast.walk(cls)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) for t in node.targets)
        and _makes_pyro_module(node.value, context)
    ]
    if len(built) < 2:
        return []
    return [
        Diagnostic.of(
            "BAY102",
            f"{record.name} stays a plain nn.Module but builds {len(built)} PyroModules: each is a "
            "Pyro root, and sites of the same name in them share one parameter; make one an "
            f"attribute of the other, or do not exclude {record.name} (the tutorial's naming pitfall)",
            context.path,
            built[1].lineno,
        )
    ]


def _called_then_attached(tree: ast.Module, context: LintContext) -> list[Diagnostic]:
    findings = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        instances: set[str] = set()
        called: set[str] = set()
        for node in _in_order(function.body):
            if isinstance(node, ast.Assign) and _makes_pyro_module(node.value, context):
                instances.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in instances:
                called.add(node.func.id)
            elif (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Name)
                and node.value.id in called
                and any(isinstance(t, ast.Attribute) for t in node.targets)
            ):
                findings.append(
                    Diagnostic.of(
                        "BAY103",
                        f"{node.value.id} was called on its own before being attached to another "
                        "module: its sites were named as a root and keep those names; attach it "
                        "first, then call the outer module",
                        context.path,
                        node.lineno,
                    )
                )
    return findings


def _in_order(statements: list[ast.stmt]) -> Iterable[ast.AST]:
    """Nodes in source order, not descending into nested functions or classes."""
    for statement in statements:
        pending = [statement]
        while pending:
            node = pending.pop(0)
            yield node
            pending[:0] = [
                child
                for child in ast.iter_child_nodes(node)
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            ]


#: The model of the examples below, and the spec that makes its ``loc`` random.
_MODEL = """\
import pyro
import pyro.distributions as dist
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(()))
"""
_RANDOM_LOC = "priors:\n  Model.loc: Normal(0, 1)\n"
#: A block with a random layer, its forward's body to follow (the word "checkpoint" is in
#: both examples' source, so that the lint reads them).
_BLOCK = """\
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
"""
_RANDOM_FC = "priors:\n  Block.fc.weight: Normal(0, 1)\n"

#: What each lint finds, and what it leaves alone (its findings only: the rewrite is the
#: rules' business), run by tests/test_rules.py.
EXAMPLES = (
    # BAY101: a random attribute first read inside a plate
    Example(
        before=_MODEL
        + """\

    def forward(self, data):
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(self.loc, 1), obs=data)
""",
        spec=_RANDOM_LOC,
        diagnostics=("BAY101",),
    ),
    # no finding: read before the plate
    Example(
        before=_MODEL
        + """\

    def forward(self, data):
        loc = self.loc
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1), obs=data)
""",
        spec=_RANDOM_LOC,
    ),
    # BAY102: a plain module that builds two Pyro roots
    Example(
        before=_MODEL
        + """\


class Twins(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = Model()
        self.right = Model()
""",
        spec="priors:\n  Model.loc: Normal(0, 1)\nmodules:\n  exclude: [Twins]\n",
        diagnostics=("BAY102",),
    ),
    # BAY103: called on its own, then attached
    Example(
        before=_MODEL
        + """\


def build(outer):
    model = Model()
    model(torch.zeros(2))
    outer.model = model
""",
        spec=_RANDOM_LOC,
        diagnostics=("BAY103",),
    ),
    # BAY104: activation checkpointing around random weights
    Example(
        before=_BLOCK
        + """\
        return checkpoint(self.fc, x, use_reentrant=False)
""",
        spec=_RANDOM_FC,
        diagnostics=("BAY104",),
    ),
    # no finding: the block called as it is
    Example(
        before=_BLOCK
        + """\
        return self.fc(x)
""",
        spec=_RANDOM_FC,
    ),
)
