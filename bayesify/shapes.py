"""Read a parameter's shape from its initializer, without running it.

A prior must be expanded to the parameter's exact shape. Where the initializer spells the
shape out, bayesify copies it into the generated code, so the replaced initializer is never
evaluated (no ``torch.randn`` drawn for a weight that is now random)::

    torch.randn(in_size, out_size)               ->  (in_size, out_size)
    torch.zeros((3, 4), dtype=torch.float64)     ->  (3, 4)
    torch.empty(n).uniform_(-1, 1) * 0.1         ->  n           (an int n means (n,))
    nn.init.xavier_normal_(torch.empty(a, b))    ->  (a, b)
    torch.tensor([[1.0, 2.0]])                   ->  (1, 2)
    torch.randn(*lead, n)                        ->  (*lead, n)
    make_weight(a)                               ->  None        (the caller falls back)
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from .names import ImportTable, dotted_from_cst

SIZE_FACTORIES = frozenset({"randn", "rand", "zeros", "ones", "empty", "full", "normal", "randint"})
#: Tensor methods whose result has the shape of the tensor they are called on.
SHAPE_PRESERVING_METHODS = frozenset(
    {
        "abs",
        "abs_",
        "add",
        "add_",
        "bernoulli_",
        "cauchy_",
        "clamp",
        "clamp_",
        "clone",
        "contiguous",
        "detach",
        "div",
        "div_",
        "double",
        "exp",
        "exp_",
        "exponential_",
        "fill_",
        "float",
        "geometric_",
        "half",
        "log",
        "log_",
        "log_normal_",
        "mul",
        "mul_",
        "neg",
        "normal_",
        "random_",
        "requires_grad_",
        "sigmoid",
        "sqrt",
        "sub",
        "sub_",
        "tanh",
        "to",
        "type",
        "uniform_",
        "zero_",
    }
)
_EMPTY = cst.Module([])


def code(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)


def static_shape(node: cst.BaseExpression, imports: ImportTable) -> Optional[str]:
    """The source text of ``node``'s shape, or None when it cannot be read statically."""
    node = _strip_shape_preserving(node, imports)
    if not isinstance(node, cst.Call):
        return None
    resolved = imports.resolve(dotted_from_cst(node.func)) or ""
    module, _, name = resolved.rpartition(".")
    if module != "torch":
        return None
    if any(arg.star == "**" for arg in node.args):  # the size may be among them
        return None
    positional = [arg for arg in node.args if arg.keyword is None]
    keywords = {arg.keyword.value: arg.value for arg in node.args if arg.keyword is not None}
    if any(arg.star for arg in positional):
        # e3nn's torch.randn(*((f_in, f_out) if f_in is not None else ()), n): the sizes
        # unpacked stay unpacked in the shape, (*(...), n).
        if name not in SIZE_FACTORIES or name in ("full", "normal", "randint"):
            return None
        return _tuple(_size(arg.value, bool(arg.star)) for arg in positional)
    if name in ("tensor", "as_tensor") and positional:
        dims = _literal_shape(positional[0].value)
        return _tuple(str(d) for d in dims) if dims is not None else None
    if name == "eye" and positional:
        rows = code(positional[0].value)
        cols = code(positional[1].value) if len(positional) > 1 else rows
        return _tuple([rows, cols])
    if name in ("full", "normal", "randint"):
        size = keywords.get("size")
        if size is None and name == "full" and positional:
            size = positional[0].value
        if size is None and name == "normal" and len(positional) >= 3:
            size = positional[2].value
        if size is None and name == "randint" and positional:
            last = positional[-1].value
            size = last if isinstance(last, (cst.Tuple, cst.List)) else None
        return _sizes([size]) if size is not None else None
    if name in SIZE_FACTORIES:
        if "size" in keywords:
            return _sizes([keywords["size"]])
        return _sizes([arg.value for arg in positional]) if positional else None
    return None


def _strip_shape_preserving(node: cst.BaseExpression, imports: ImportTable) -> cst.BaseExpression:
    while True:
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            resolved = imports.resolve(dotted_from_cst(node.func)) or ""
            if resolved.startswith("torch.nn.init.") and node.args:
                node = node.args[0].value
                continue
            if node.func.attr.value in SHAPE_PRESERVING_METHODS and not resolved.startswith("torch."):
                node = node.func.value
                continue
        if isinstance(node, cst.BinaryOperation):
            if _is_number(node.right):
                node = node.left
                continue
            if _is_number(node.left):
                node = node.right
                continue
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
            node = node.expression
            continue
        return node


def _is_number(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.UnaryOperation):
        node = node.expression
    return isinstance(node, (cst.Integer, cst.Float))


def _sizes(values: list[cst.BaseExpression]) -> str:
    """``(a, b)`` for ``f(a, b)`` or ``f((a, b))``; a lone name stays as it is (int or size)."""
    if len(values) == 1:
        only = values[0]
        if isinstance(only, (cst.Tuple, cst.List)):
            return _tuple(
                _size(element.value, isinstance(element, cst.StarredElement)) for element in only.elements
            )
        return code(only)
    return _tuple(code(value) for value in values)


def _size(value: cst.BaseExpression, unpacked: bool) -> str:
    """A size's text in a shape's tuple, sizes unpacked into it (``*lead``) as they were."""
    return f"*{code(value)}" if unpacked else code(value)


def _tuple(parts) -> str:
    parts = list(parts)
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


def _literal_shape(node: cst.BaseExpression) -> Optional[list[int]]:
    if _is_number(node):
        return []
    if isinstance(node, (cst.List, cst.Tuple)):
        inner = [_literal_shape(element.value) for element in node.elements]
        if not inner:
            return [0]
        if any(shape is None or shape != inner[0] for shape in inner):
            return None
        return [len(inner), *inner[0]]
    return None
