"""Recognise the statements that define a parameter: the sites a spec entry can select.

Inside a method of a module class (``self`` being the method's first parameter)::

    self.w = nn.Parameter(torch.randn(3))                       PARAMETER
    self.w: nn.Parameter = nn.Parameter(torch.randn(3))         PARAMETER
    self.b = nn.Parameter(torch.zeros(3)) if bias else None     PARAMETER (conditional)
    self.register_parameter("w", nn.Parameter(torch.randn(3)))  REGISTERED
    self.w = PyroSample(Prior(self, "Normal", 0, 1, shape=3))   GENERATED (an earlier rewrite)
    self.w = PyroParam(torch.ones(3), constraint=...)           CONSTRAINED (an earlier rewrite)

Recognising earlier output as sites is what makes a rewrite idempotent and lets a spec change
update generated priors in place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

import libcst as cst

from .names import ImportTable, dotted_from_cst, is_pyro_nn, is_torch_nn
from .shapes import code

RUNTIME_PRIOR = "bayesify.runtime.Prior"


class SiteKind(enum.Enum):
    PARAMETER = "nn.Parameter"
    REGISTERED = "register_parameter"
    GENERATED = "PyroSample"
    CONSTRAINED = "PyroParam"
    HELD = "held module"
    INHERITED = "inherited from a torch.nn layer"


@dataclass(frozen=True)
class ParameterSite:
    attr: str
    kind: SiteKind
    #: The call that makes the value (``nn.Parameter(…)``, ``PyroSample(…)``, ``PyroParam(…)``).
    call: cst.Call
    #: The tensor the parameter is made from; None for a generated PyroSample.
    init: Optional[cst.BaseExpression]
    #: The ``shape=`` source of a generated prior.
    generated_shape: Optional[str] = None


def _self_attribute(target: cst.BaseExpression, self_name: str) -> Optional[str]:
    if (
        isinstance(target, cst.Attribute)
        and isinstance(target.value, cst.Name)
        and target.value.value == self_name
    ):
        return target.attr.value
    return None


def _first_argument(call: cst.Call, keyword: str) -> Optional[cst.BaseExpression]:
    for arg in call.args:
        if arg.keyword is None and not arg.star:
            return arg.value
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg.value
    return None


def _calls(value: cst.BaseExpression):
    """The value itself, or both branches of a conditional expression."""
    if isinstance(value, cst.IfExp):
        yield from _calls(value.body)
        yield from _calls(value.orelse)
    elif isinstance(value, cst.Call):
        yield value


def _resolved(call: cst.Call, imports: ImportTable) -> Optional[str]:
    return imports.resolve(dotted_from_cst(call.func))


def recognize_value(attr: str, value: cst.BaseExpression, imports: ImportTable) -> Optional[ParameterSite]:
    for call in _calls(value):
        resolved = _resolved(call, imports)
        if is_torch_nn(resolved, "Parameter"):
            init = _first_argument(call, "data")
            if init is not None:
                return ParameterSite(attr, SiteKind.PARAMETER, call, init)
        elif is_pyro_nn(resolved, "PyroParam"):
            init = _first_argument(call, "init_value")
            if init is not None:
                return ParameterSite(attr, SiteKind.CONSTRAINED, call, init)
        elif is_pyro_nn(resolved, "PyroSample"):
            prior = _first_argument(call, "prior")
            if isinstance(prior, cst.Call) and _resolved(prior, imports) == RUNTIME_PRIOR:
                shape = next(
                    (a.value for a in prior.args if a.keyword and a.keyword.value == "shape"),
                    None,
                )
                return ParameterSite(
                    attr,
                    SiteKind.GENERATED,
                    call,
                    None,
                    generated_shape=code(shape) if shape is not None else None,
                )
    return None


def recognize(
    statement: cst.BaseSmallStatement, self_name: str, imports: ImportTable
) -> Optional[ParameterSite]:
    """The parameter site ``statement`` defines, if it defines one."""
    if isinstance(statement, cst.Assign) and len(statement.targets) == 1:
        attr = _self_attribute(statement.targets[0].target, self_name)
        return recognize_value(attr, statement.value, imports) if attr else None
    if isinstance(statement, cst.AnnAssign) and statement.value is not None:
        attr = _self_attribute(statement.target, self_name)
        return recognize_value(attr, statement.value, imports) if attr else None
    if isinstance(statement, cst.Expr) and isinstance(statement.value, cst.Call):
        call = statement.value
        func = call.func
        if (
            isinstance(func, cst.Attribute)
            and func.attr.value == "register_parameter"
            and _self_attribute(func, self_name) is not None
            and len(call.args) == 2
            and isinstance(call.args[0].value, cst.SimpleString)
        ):
            name = call.args[0].value.evaluated_value
            site = recognize_value(name, call.args[1].value, imports)
            if site is not None and site.kind is SiteKind.PARAMETER and site.call is call.args[1].value:
                return ParameterSite(name, SiteKind.REGISTERED, site.call, site.init)
    return None
