"""Base classes: ``nn.Module`` subclasses become ``PyroModule`` subclasses.

Before::

    class Regressor(nn.Module): ...
    class MaskedLinear(torch.nn.Linear): ...
    class Deep(Regressor): ...
    class Bert(PreTrainedModel): ...      # an nn.Module from a --context file
    class Fit(lightning.LightningModule): ...   # matched by an `external` glob, unread
    class Enc(Net, Interface): ...        # Interface may have a metaclass (abc.ABC, Generic[T])
    class QParam(nn.Parameter): ...       # no module

After::

    class Regressor(PyroModule): ...
    class MaskedLinear(PyroModule[torch.nn.Linear]): ...
    class Deep(Regressor): ...            # inherits: nothing to change
    class Bert(PyroModule[PreTrainedModel]): ...
    class Fit(pyro_module_class(lightning.LightningModule)): ...
    class Enc(Net, Interface, metaclass=pyro_metaclass_of(Net, Interface)): ...
    class QParam(nn.Parameter): ...

The base is recognised by what it resolves to, however ``torch.nn`` was imported; a base that
stays a plain nn.Module keeps the spelling the user wrote inside ``PyroModule[...]``. A base not
known to be a module may bring a metaclass of its own, which only the run time knows:
:func:`~bayesify.runtime.pyro_metaclass_of` combines it with PyroModule's there. So does a
base that bayesify cannot read, or that derives from a class it cannot read: it may be no
module at all (a glob such as ``lightning.*`` matches the library's callbacks too) or bring a
metaclass (torchmetrics' ``Metric(Module, ABC)``), and ``PyroModule[Base]`` would fail at
import; :func:`~bayesify.runtime.pyro_module_class` makes the class there.
"""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from .. import codegen
from ..index import PLAIN_BASES, ClassRecord, Conversion
from .compose import DEFINITIONS
from .registry import STATEMENTS, Example, Rule, register

PYRO_MODULE, PYRO_METACLASS, PYRO_METACLASS_OF = "PyroModule", "pyro_metaclass", "pyro_metaclass_of"
PYRO_MODULE_CLASS = "pyro_module_class"


@register
class BaseClassRewriter(Rule):
    pass_ = STATEMENTS
    enters = DEFINITIONS
    generated_names = {
        PYRO_MODULE: "pyro.nn",
        PYRO_METACLASS: "bayesify.runtime",
        PYRO_METACLASS_OF: "bayesify.runtime",
        PYRO_MODULE_CLASS: "bayesify.runtime",
    }

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        record = self.current_class
        conversion = self.context.conversions.get(record.order) if record else None
        if conversion not in (
            Conversion.ROOT,
            Conversion.LAYER,
            Conversion.EXTERNAL,
            Conversion.FOREIGN,
            Conversion.INHERITS,
        ):
            return updated_node
        kinds = self.context.base_kinds.get(record.order, ())
        kind_of_base = iter(kinds)
        bases = [
            arg if arg.keyword else self._convert(arg, next(kind_of_base, None), conversion)
            for arg in updated_node.bases
        ]
        keywords = [self._metaclass(arg) for arg in updated_node.keywords]
        if not any(arg.keyword and arg.keyword.value == "metaclass" for arg in keywords):
            keywords += self._metaclass_of_bases(record, kinds, bases)
        return updated_node.with_changes(bases=bases, keywords=keywords)

    def _metaclass_of_bases(
        self, record: ClassRecord, kinds: Sequence[Conversion], bases: Sequence[cst.Arg]
    ) -> list[cst.Arg]:
        """``class Enc(Net, Interface)`` -> ``…, metaclass=pyro_metaclass_of(Net, Interface)``: a
        base that is not known to be a module may bring a metaclass of its own (``abc.ABC``, a
        mixin declared with ``metaclass=ABCMeta``, ``Generic[T]``), which Python wants combined
        with PyroModule's; which one it is shows only at run time."""
        if not any(
            kind is Conversion.NONE and base.resolved not in PLAIN_BASES
            for kind, base in zip(kinds, record.bases)
        ):
            return []
        self.context.needed.add(PYRO_METACLASS_OF)
        written = [arg.value.deep_clone() for arg in bases if not arg.keyword]
        return [codegen.keyword_argument("metaclass", codegen.call(PYRO_METACLASS_OF, *written))]

    def _metaclass(self, arg: cst.Arg) -> cst.Arg:
        """``metaclass=abc.ABCMeta`` -> ``metaclass=pyro_metaclass(abc.ABCMeta)``: PyroModule
        has a metaclass of its own, and Python wants one that derives from both."""
        if arg.keyword is None or arg.keyword.value != "metaclass":
            return arg
        value = arg.value
        if (
            isinstance(value, cst.Call)
            and isinstance(value.func, cst.Name)
            and value.func.value in (PYRO_METACLASS, PYRO_METACLASS_OF)
        ):
            return arg
        self.context.needed.add(PYRO_METACLASS)
        return arg.with_changes(value=cst.Call(func=cst.Name(PYRO_METACLASS), args=[cst.Arg(value=value)]))

    def _convert(self, arg: cst.Arg, kind: Conversion, conversion: Conversion) -> cst.Arg:
        if kind is not conversion or kind is Conversion.INHERITS:
            return arg
        if kind is Conversion.FOREIGN:
            self.context.needed.add(PYRO_MODULE_CLASS)
            return arg.with_changes(value=codegen.call(PYRO_MODULE_CLASS, arg.value.deep_clone()))
        self.context.needed.add(PYRO_MODULE)
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
    # valid: bases that may bring a metaclass, combined with PyroModule's at run time
    Example(
        before="""\
import abc

from torch import nn


class Interface(abc.ABC):
    pass


class Net(nn.Module):
    pass


class Encoder(Net, Interface):
    pass
""",
        after="""\
import abc

from torch import nn
from pyro.nn import PyroModule
from bayesify.runtime import pyro_metaclass_of


class Interface(abc.ABC):
    pass


class Net(PyroModule):
    pass


class Encoder(Net, Interface, metaclass=pyro_metaclass_of(Net, Interface)):
    pass
""",
    ),
    # no-op: not a module, even where torch.nn defines it
    Example(
        before="""\
from torch import nn


class Config:
    pass


class QuantizedParameter(nn.Parameter):
    pass
""",
    ),
)
