"""``@pyro_method`` on methods that read a random attribute or run the module itself.

A ``PyroSample`` attribute is sampled once per call of the outermost ``PyroModule``; outside
such a call it cannot be named or traced. A method other than ``forward`` that reads a random
attribute, and that callers use directly (``model.predict(x)``), needs ``@pyro_method`` to
get the same treatment.

Before (``weight`` made random)::

    def predict(self, x):
        return x @ self.weight

After::

    @pyro_method
    def predict(self, x):
        return x @ self.weight

A method that runs the module itself, ``self(x)`` or ``self.forward(x)`` (an autoregressive
``generate`` that calls it once a token), or another of its methods that reads its layers
or parameters (``self.step(x)``, mambapy's and recurrent models' ``generate``), or its
parts more than once (at two places or in a loop: TabNet's ``forward_masks``, a flow's
``inverse``), gets it too, where the class has random attributes or the spec gives any
weight a prior (a submodule's): every call inside it reads one draw of the weights, not a
draw a token or a part.
A method that ``__init__`` runs (``self._init_weights()``) is not decorated for what it calls:
it runs the parts as they are built.

``forward``, dunder methods, properties, static and class methods are left alone, as are
methods that already carry ``@pyro_method``.
"""

from __future__ import annotations

import libcst as cst

from ..names import dotted_from_cst, is_pyro_nn
from .compose import DEFINITIONS
from .registry import DECORATORS, Example, Rule, register

PYRO_METHOD = "pyro_method"
_LEAVE_ALONE = {"property", "staticmethod", "classmethod", "cached_property", "setter"}


@register
class PyroMethodRewriter(Rule):
    """Reads of ``self.<attr>`` come from the index (:attr:`ClassRecord.method_reads`), so
    this rewriter never looks inside method bodies, nor into any statement line."""

    pass_ = DECORATORS
    enters = DEFINITIONS
    generated_names = {PYRO_METHOD: "pyro.nn"}

    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.FunctionDef:
        scope = self.method_scope()
        if scope is None:
            return updated_node
        record = scope[0]
        name = updated_node.name.value
        reads = record.method_reads.get(name, frozenset())
        random = self.context.random.get(record.order, set())
        # A method that runs the module itself (an autoregressive generate() calling self(x)
        # a token at a time), or another method that runs its parts (self.step(x)), would
        # draw new weights every call: under @pyro_method, one draw. The weights may be any
        # submodule's, built in another file: any prior in the spec.
        runs = self.context.planner.spec.has_priors and record.runs_the_module(name)
        if not (reads & random or runs) or not self._wants_decorator(updated_node):
            return updated_node
        self.context.needed.add(PYRO_METHOD)
        decorator = cst.Decorator(decorator=cst.Name(PYRO_METHOD))
        return updated_node.with_changes(decorators=[decorator, *updated_node.decorators])

    def _wants_decorator(self, node: cst.FunctionDef) -> bool:
        name = node.name.value
        if name == "forward" or (name.startswith("__") and name.endswith("__")):
            return False
        for decorator in node.decorators:
            expression = decorator.decorator
            if isinstance(expression, cst.Call):
                expression = expression.func
            dotted = dotted_from_cst(expression) or ""
            if dotted.rpartition(".")[2] in _LEAVE_ALONE or is_pyro_nn(
                self.context.imports.resolve(dotted), PYRO_METHOD
            ):
                return False
        return True


#: What the rule does, run by tests/test_rules.py.
PyroMethodRewriter.examples = (
    # valid: predict reads a random attribute; forward needs nothing
    Example(
        before="""\
import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return x @ self.weight

    def predict(self, x):
        return x @ self.weight
""",
        after="""\
import torch
from torch import nn
from pyro.nn import PyroModule, PyroSample, pyro_method
from bayesify.runtime import Prior


class Linear(PyroModule):
    def __init__(self):
        super().__init__()
        self.weight = PyroSample(Prior(self, "Normal", 0, 1, shape=2))

    def forward(self, x):
        return x @ self.weight

    @pyro_method
    def predict(self, x):
        return x @ self.weight
""",
        spec="priors:\n  Linear.weight: Normal(0, 1)\n",
    ),
    # valid: generate runs the module once a step; one draw of the weights for all of them
    Example(
        before="""\
import torch
from torch import nn


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(x)

    def generate(self, x, steps):
        for _ in range(steps):
            x = self(x)
        return x
""",
        after="""\
import torch
from torch import nn
from pyro.nn import PyroModule, pyro_method
from bayesify.runtime import pyro_module, set_prior


class Decoder(PyroModule):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 2)
        set_prior(self, "Decoder.head.weight", "Normal", 0, 1)
        pyro_module(self)

    def forward(self, x):
        return self.head(x)

    @pyro_method
    def generate(self, x, steps):
        for _ in range(steps):
            x = self(x)
        return x
""",
        spec="priors:\n  Decoder.head.weight: Normal(0, 1)\n",
    ),
    # valid: generate runs the network a step at a time through another method (mambapy's
    # LM.generate calls self.step); _warm_up, which __init__ runs, is not decorated for it
    Example(
        before="""\
import torch
from torch import nn


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(2, 2)
        self.start = self._warm_up()

    def _warm_up(self):
        return self.advance(torch.zeros(1, 2))

    def forward(self, xs):
        return self.cell(xs)

    def advance(self, h):
        return torch.tanh(self.cell(h))

    def generate(self, h, steps):
        for _ in range(steps):
            h = self.advance(h)
        return h
""",
        after="""\
import torch
from torch import nn
from pyro.nn import PyroModule, pyro_method
from bayesify.runtime import pyro_module, set_prior


class Recurrent(PyroModule):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(2, 2)
        self.start = self._warm_up()
        set_prior(self, "Recurrent.cell.weight", "Normal", 0, 1)
        pyro_module(self)

    def _warm_up(self):
        return self.advance(torch.zeros(1, 2))

    def forward(self, xs):
        return self.cell(xs)

    @pyro_method
    def advance(self, h):
        return torch.tanh(self.cell(h))

    @pyro_method
    def generate(self, h, steps):
        for _ in range(steps):
            h = self.advance(h)
        return h
""",
        spec="priors:\n  Recurrent.cell.weight: Normal(0, 1)\n",
    ),
    # valid: explain runs two blocks that share a layer (TabNet's forward_masks), invert its
    # blocks in a loop (a flow's inverse, its conditioner once a dimension): one draw a call;
    # first runs one part once, and _reset, which __init__ runs, is left alone
    Example(
        before="""\
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.Linear(2, 2)
        self.blocks = nn.ModuleList([nn.Sequential(shared, nn.Tanh()) for _ in range(2)])
        self._reset()

    def _reset(self):
        self.blocks[0][0].reset_parameters()
        self.blocks[1][0].reset_parameters()

    def forward(self, x):
        return self.blocks[1](self.blocks[0](x))

    def explain(self, x):
        hidden = self.blocks[0](x)
        return hidden, self.blocks[1](hidden)

    def invert(self, y):
        for block in reversed(self.blocks):
            y = block(y)
        return y

    def first(self, x):
        return self.blocks[0](x)
""",
        after="""\
from torch import nn
from pyro.nn import PyroModule, pyro_method
from bayesify.runtime import pyro_module, set_prior


class Net(PyroModule):
    def __init__(self):
        super().__init__()
        shared = nn.Linear(2, 2)
        self.blocks = nn.ModuleList([nn.Sequential(shared, nn.Tanh()) for _ in range(2)])
        self._reset()
        set_prior(self, "nn.Linear.weight", "Normal", 0, 1)
        pyro_module(self)

    def _reset(self):
        self.blocks[0][0].reset_parameters()
        self.blocks[1][0].reset_parameters()

    def forward(self, x):
        return self.blocks[1](self.blocks[0](x))

    @pyro_method
    def explain(self, x):
        hidden = self.blocks[0](x)
        return hidden, self.blocks[1](hidden)

    @pyro_method
    def invert(self, y):
        for block in reversed(self.blocks):
            y = block(y)
        return y

    def first(self, x):
        return self.blocks[0](x)
""",
        spec="priors:\n  nn.Linear.weight: Normal(0, 1)\n",
    ),
)
