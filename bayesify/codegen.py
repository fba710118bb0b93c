"""Generated code is built as libcst nodes from checked values, never by pasting text.

Spec text is untrusted: a pull request that edits ``priors.yaml`` must not be able to run code
wherever the model is built. So nothing from a spec is ever spliced into source text. It
reaches generated code only in three forms, each made here:

- a string literal (:func:`literal`), whose content is escaped by construction and checked to
  read back as the same value;
- a finite number (:func:`literal`);
- a Python identifier (:func:`name`), checked by :meth:`str.isidentifier` and against the
  keywords.

>>> code(call("set_prior", name("self"), 'a"+b', "Normal", 0, -1.5, scale=2))
'set_prior(self, "a\\\\"+b", "Normal", 0, -1.5, scale=2)'
"""

from __future__ import annotations

import ast
import keyword
import math
from typing import Union

import libcst as cst

_TIGHT_EQUAL = cst.AssignEqual(
    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
)
Value = Union[str, int, float, bool, None, cst.BaseExpression]


class UnsafeValue(ValueError):
    """A value that cannot be written into generated code as what it claims to be."""


def name(identifier: str) -> cst.Name:
    """A name node for ``identifier``, which must be a Python identifier and no keyword."""
    if not isinstance(identifier, str) or not identifier.isidentifier() or keyword.iskeyword(identifier):
        raise UnsafeValue(f"{identifier!r} is not a Python identifier")
    return cst.Name(identifier)


def dotted(path: str) -> cst.BaseExpression:
    """``constraints.positive`` as an attribute chain, every part a checked identifier."""
    parts = path.split(".")
    node: cst.BaseExpression = name(parts[0])
    for part in parts[1:]:
        node = cst.Attribute(value=node, attr=name(part))
    return node


def literal(value: Value) -> cst.BaseExpression:
    """A literal for a string, a finite number, a bool or None; a node passes unchanged."""
    if isinstance(value, cst.BaseExpression):
        return value
    if value is None or isinstance(value, bool):
        return cst.Name(repr(value))
    if isinstance(value, str):
        # Every character that is not printable ASCII is escaped, so the literal fits a source
        # file in any encoding; the read-back proves the escaping is whole.
        text = '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
        if ast.literal_eval(text) != value:
            raise UnsafeValue(f"{value!r} cannot be written as a string literal")
        return cst.SimpleString(text)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise UnsafeValue(f"{value!r} is not a finite number")
        text = repr(abs(value))
        node: cst.BaseExpression = cst.Integer(text) if isinstance(value, int) else cst.Float(text)
        if value < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0):
            node = cst.UnaryOperation(operator=cst.Minus(), expression=node)
        return node
    raise UnsafeValue(f"{value!r} ({type(value).__name__}) cannot be written into generated code")


def call(func: Union[str, cst.BaseExpression], *args: Value, **kwargs: Value) -> cst.Call:
    """``func(*args, **kwargs)``; a string ``func`` is a dotted name, the arguments literals."""
    arguments = [cst.Arg(literal(value)) for value in args]
    arguments += [keyword_argument(key, value) for key, value in kwargs.items()]
    return cst.Call(func=dotted(func) if isinstance(func, str) else func, args=arguments)


def keyword_argument(key: str, value: Value) -> cst.Arg:
    """The argument ``key=value``, as in a call or a class statement's ``metaclass=...``."""
    return cst.Arg(literal(value), keyword=name(key), equal=_TIGHT_EQUAL)


def statement(expression: cst.BaseExpression) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine(body=[cst.Expr(expression)])


def code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)
