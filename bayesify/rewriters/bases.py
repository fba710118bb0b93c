"""Base classes: ``nn.Module`` subclasses become ``PyroModule`` subclasses.

Before::

    class Regressor(nn.Module): ...
    class MaskedLinear(torch.nn.Linear): ...
    class Deep(Regressor): ...
    class Bert(PreTrainedModel): ...      # an nn.Module from a --context file, or external

After::

    class Regressor(PyroModule): ...
    class MaskedLinear(PyroModule[torch.nn.Linear]): ...
    class Deep(Regressor): ...            # inherits: nothing to change
    class Bert(PyroModule[PreTrainedModel]): ...

The base is recognised by what it resolves to, however ``torch.nn`` was imported; a base that
stays a plain nn.Module keeps the spelling the user wrote inside ``PyroModule[...]``.
"""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from ..index import ClassRecord, Conversion
from .compose import DEFINITIONS
from .registry import STATEMENTS, Example, Rule, register

PYRO_MODULE, PYRO_METACLASS = "PyroModule", "pyro_metaclass"
#: Bases whose metaclass is not ``type``, which PyroModule's metaclass must be combined with.
BASES_WITH_A_METACLASS = frozenset({"abc.ABC"})


@register
class BaseClassRewriter(Rule):
    pass_ = STATEMENTS
    enters = DEFINITIONS
    generated_names = {PYRO_MODULE: "pyro.nn", PYRO_METACLASS: "bayesify.runtime"}

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        record = self.current_class
        conversion = self.context.conversions.get(record.order) if record else None
        if conversion not in (Conversion.ROOT, Conversion.LAYER, Conversion.EXTERNAL):
            return updated_node
        kinds = iter(self.context.base_kinds.get(record.order, ()))
        bases = [
            arg if arg.keyword else self._convert(arg, next(kinds, None), conversion)
            for arg in updated_node.bases
        ]
        keywords = [self._metaclass(arg) for arg in updated_node.keywords]
        if not any(arg.keyword and arg.keyword.value == "metaclass" for arg in keywords):
            keywords += self._metaclass_of_bases(record, updated_node.bases)
        self.context.needed.add(PYRO_MODULE)
        return updated_node.with_changes(bases=bases, keywords=keywords)

    def _metaclass_of_bases(self, record: ClassRecord, bases: Sequence[cst.Arg]) -> list[cst.Arg]:
        """``class Flow(nn.Module, abc.ABC)`` -> ``…, metaclass=pyro_metaclass(type(abc.ABC))``:
        a base with a metaclass of its own needs one that derives from it and PyroModule's."""
        written = [arg for arg in bases if not arg.keyword]
        for ref, arg in zip(record.bases, written):
            if ref.resolved in BASES_WITH_A_METACLASS:
                self.context.needed.add(PYRO_METACLASS)
                metaclass = cst.Call(func=cst.Name("type"), args=[cst.Arg(value=arg.value)])
                return [
                    cst.Arg(
                        keyword=cst.Name("metaclass"),
                        value=cst.Call(func=cst.Name(PYRO_METACLASS), args=[cst.Arg(value=metaclass)]),
                        equal=cst.AssignEqual(
                            whitespace_before=cst.SimpleWhitespace(""),
                            whitespace_after=cst.SimpleWhitespace(""),
                        ),
                    )
                ]
        return []

    def _metaclass(self, arg: cst.Arg) -> cst.Arg:
        """``metaclass=abc.ABCMeta`` -> ``metaclass=pyro_metaclass(abc.ABCMeta)``: PyroModule
        has a metaclass of its own, and Python wants one that derives from both."""
        if arg.keyword is None or arg.keyword.value != "metaclass":
            return arg
        value = arg.value
        if (
            isinstance(value, cst.Call)
            and isinstance(value.func, cst.Name)
            and value.func.value == PYRO_METACLASS
        ):
            return arg
        self.context.needed.add(PYRO_METACLASS)
        return arg.with_changes(value=cst.Call(func=cst.Name(PYRO_METACLASS), args=[cst.Arg(value=value)]))

    @staticmethod
    def _convert(arg: cst.Arg, kind: Conversion, conversion: Conversion) -> cst.Arg:
        if kind is not conversion:
            return arg
        if kind is Conversion.ROOT:
            return arg.with_changes(value=cst.Name(PYRO_MODULE))
        return arg.with_changes(
            value=cst.Subscript(
                value=cst.Name(PYRO_MODULE),
                slice=[cst.SubscriptElement(slice=cst.Index(value=arg.value))],
            )
        )


#: What the rule does, run by tests/test_rules.py.
BaseClassRewriter.examples = (
    # valid: a root and a layer subclass
    Example(
        before="""\
import torch
from torch import nn


class Regressor(nn.Module):
    pass


class MaskedLinear(torch.nn.Linear):
    pass
""",
        after="""\
import torch
from torch import nn
from pyro.nn import PyroModule


class Regressor(PyroModule):
    pass


class MaskedLinear(PyroModule[torch.nn.Linear]):
    pass
""",
    ),
    # valid: a metaclass of its own
    Example(
        before="""\
import abc

from torch import nn


class Base(nn.Module, metaclass=abc.ABCMeta):
    pass
""",
        after="""\
import abc

from torch import nn
from pyro.nn import PyroModule
from bayesify.runtime import pyro_metaclass


class Base(PyroModule, metaclass=pyro_metaclass(abc.ABCMeta)):
    pass
""",
    ),
    # no-op: not a module
    Example(
        before="""\
class Config:
    pass
""",
    ),
)
