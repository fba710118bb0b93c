"""Read and validate ``priors.yaml``: the spec is data, never code.

The YAML is composed into nodes with PyYAML's safe loader (so every entry keeps its line and
no tag can build a Python object), and each prior or constraint is parsed with :mod:`ast` and
checked against :mod:`bayesify.catalog`. Nothing in a spec is ever evaluated: what reaches
rewritten code is a whitelisted distribution or constraint name and numbers or sibling names.

>>> spec = parse_spec("version: 1\\npriors:\\n  Linear.weight: Normal(0, 1)\\n", "priors.yaml")
>>> spec.entries[0].action.arguments()
([0, 1], {})
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import libcst as cst
import yaml

from . import catalog, codegen
from .names import dotted_from_ast
from .selectors import TYPE, Selector, SelectorError
from .selectors import parse as parse_selector

SECTIONS = ("priors", "constraints")
TOP_LEVEL_KEYS = ("version", "priors", "constraints", "modules")
MODULES_KEYS = ("exclude", "external", "context")
_PLAIN_TAGS = {"tag:yaml.org,2002:" + kind for kind in ("str", "int", "float", "null", "bool", "map", "seq")}
#: A prior or constraint longer than this is no hand-written spec entry; it is not parsed.
MAX_EXPRESSION = 1000


class SpecError(Exception):
    """A spec problem, rendered ``file:line: message`` like a compiler error."""

    def __init__(self, path: str, line: Optional[int], message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Sibling:
    """A bare name in a prior: the value of a sibling attribute (a hierarchical prior)."""

    name: str

    @property
    def value(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Number:
    value: Union[int, float]

    def __str__(self) -> str:
        return repr(self.value)


#: Values a prior's argument can take from the parameter it is for, written as calls with no
#: arguments (``kaiming()``), so that no sibling attribute's name can be mistaken for one. The
#: runtime's :class:`~bayesify.runtime.Prior` computes them (torch.nn.init's fans of the
#: parameter's shape: a weight is ``(out, in, *kernel)``):
PARAMETER_VALUES = {
    "radford": "1 / sqrt(fan_in)",
    "xavier": "sqrt(2 / (fan_in + fan_out))",
    "kaiming": "sqrt(2 / fan_in)",
    "deterministic": "the deterministic model's value, from the checkpoint load_deterministic loads",
}


@dataclass(frozen=True)
class FromParameter:
    """``kaiming()`` in a prior: a value the runtime computes from the parameter (its shape, or
    its checkpoint value); see :data:`PARAMETER_VALUES`."""

    name: str

    @property
    def value(self) -> str:
        # A string that no identifier equals: the runtime tells it from a sibling's name.
        return f"{self.name}()"

    def __str__(self) -> str:
        return self.value


Argument = Union[Sibling, Number, FromParameter]


def _shown_arguments(args: tuple[Argument, ...], kwargs: tuple[tuple[str, Argument], ...]) -> str:
    return ", ".join([*map(str, args), *(f"{key}={value}" for key, value in kwargs)])


@dataclass(frozen=True)
class Prior:
    """``Normal(0, 1)``: a random site drawn from a pyro distribution."""

    family: str
    args: tuple[Argument, ...]
    kwargs: tuple[tuple[str, Argument], ...]

    def arguments(self) -> tuple[list[Union[str, int, float]], dict[str, Union[str, int, float]]]:
        """The distribution's arguments as values for :mod:`bayesify.codegen`: numbers, and
        sibling names as strings (read from the module when the prior is sampled)."""
        return [a.value for a in self.args], {key: value.value for key, value in self.kwargs}

    def siblings(self) -> list[str]:
        values = [*self.args, *(v for _, v in self.kwargs)]
        return [v.name for v in values if isinstance(v, Sibling)]

    def __str__(self) -> str:
        return f"{self.family}({_shown_arguments(self.args, self.kwargs)})"


@dataclass(frozen=True)
class Constraint:
    """``positive`` or ``interval(0, 1)``: a learnable parameter kept inside a support."""

    name: str
    args: Optional[tuple[Number, ...]] = None
    kwargs: tuple[tuple[str, Number], ...] = ()

    def node(self) -> cst.BaseExpression:
        """``constraints.interval(0, 1)`` as code, from the catalog's name and numbers."""
        attribute = codegen.dotted(f"constraints.{self.name}")
        if self.args is None:
            return attribute
        return codegen.call(
            attribute, *(a.value for a in self.args), **{key: v.value for key, v in self.kwargs}
        )

    def __str__(self) -> str:
        if self.args is None:
            return self.name
        return f"{self.name}({_shown_arguments(self.args, self.kwargs)})"


Action = Union[Prior, Constraint]


@dataclass(frozen=True)
class Entry:
    """One line of the spec: a selector and what it makes of the parameters it selects."""

    selector: Selector
    action: Action
    line: int
    section: str

    def describe(self, spec_path: str) -> str:
        return f"{spec_path}:{self.line} ({self.section}: {self.selector.text}: {self.action})"


@dataclass(frozen=True)
class Spec:
    path: str
    entries: tuple[Entry, ...]
    exclude: tuple[str, ...]
    fingerprint: str
    #: Globs of dotted names of nn.Module classes outside the rewritten files.
    external: tuple[str, ...] = ()
    #: Read-only source paths (relative to the spec) indexed for their classes.
    context: tuple[str, ...] = ()

    @property
    def has_priors(self) -> bool:
        return any(isinstance(entry.action, Prior) for entry in self.entries)

    def select(
        self, module: str, class_name: str, path: tuple[str, ...], layers: tuple[tuple[int, str], ...] = ()
    ) -> list[Entry]:
        """The entries that select ``path`` of class ``class_name`` in ``module``, in spec
        order: the first one wins. ``layers`` are the torch.nn layers known on the way, as
        ``(depth, name)``: ``(1, "Linear")`` where ``path[:1]`` holds an ``nn.Linear``, ``(0, ...)``
        for a class deriving from one; layer-type entries select below them."""
        return [entry for entry in self.entries if selects(entry.selector, module, class_name, path, layers)]


def selects(
    selector: Selector,
    module: str,
    class_name: str,
    path: tuple[str, ...],
    layers: tuple[tuple[int, str], ...],
) -> bool:
    """Whether ``selector`` selects ``path`` of a class of the run, as far as its source tells."""
    if selector.kind == TYPE:
        glob = selector.torch_layer_glob
        return glob is not None and any(
            fnmatch.fnmatchcase(layer, glob) and selector.matches_path(path[depth:])
            for depth, layer in layers
        )
    return selector.matches_class(module, class_name) and selector.matches_path(path)


EMPTY_SPEC = Spec(path="<no spec>", entries=(), exclude=(), fingerprint="")


def load_spec(path: Union[str, Path]) -> Spec:
    shown = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise SpecError(shown, None, f"cannot read the spec: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise SpecError(
            shown, line, f"the spec is not UTF-8 (byte {raw[error.start]:#04x}: {error.reason})"
        ) from None
    return parse_spec(text, shown)


def parse_spec(text: str, path: str = "priors.yaml") -> Spec:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        raise SpecError(
            path, line, f"not valid YAML: control character {_code_point(error.character)} is not allowed"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(path, mark.line + 1 if mark else None, f"not valid YAML: {problem}") from None
    if root is None or root.tag == "tag:yaml.org,2002:null":
        raise SpecError(path, 1, "the spec is empty; it needs at least `version: 1`")
    top = _mapping(root, path, "the spec")
    for key, _ in top.values():
        _check_known(key.value, TOP_LEVEL_KEYS, path, key.start_mark.line + 1, "top-level key")
    version = top.get("version")
    if version is None or version[1].value != "1":
        line = version[1].start_mark.line + 1 if version else root.start_mark.line + 1
        raise SpecError(path, line, "the spec must start with `version: 1`")
    entries: list[Entry] = []
    for section in SECTIONS:
        if section in top:
            entries.extend(_entries(top[section][1], section, path))
    entries.sort(key=lambda entry: entry.line)
    _check_duplicates(entries, path)
    lists: dict[str, tuple[str, ...]] = {}
    if "modules" in top:
        modules = _mapping(top["modules"][1], path, "`modules`")
        for key, _ in modules.values():
            _check_known(key.value, MODULES_KEYS, path, key.start_mark.line + 1, "key of `modules`")
        for key, (_, node) in modules.items():
            lists[key] = tuple(_scalar(item, path) for item in _sequence(node, path))
    fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()
    folder = Path(path).parent
    return Spec(
        path=path,
        entries=tuple(entries),
        exclude=lists.get("exclude", ()),
        external=lists.get("external", ()),
        context=tuple(str(folder / item) for item in lists.get("context", ())),
        fingerprint=fingerprint,
    )


def _code_point(character: Union[int, str]) -> str:
    return f"U+{character if isinstance(character, int) else ord(character):04X}"


def _check_duplicates(entries: list[Entry], path: str) -> None:
    """A selector under both ``priors`` and ``constraints``: only the first would apply."""
    first: dict[str, Entry] = {}
    for entry in entries:
        earlier = first.setdefault(entry.selector.text, entry)
        if earlier is not entry:
            raise SpecError(
                path,
                entry.line,
                f"{entry.selector.text!r} is given twice (first on line {earlier.line}, under "
                f"`{earlier.section}`); a parameter is either random or constrained",
            )


def _mapping(node: yaml.Node, path: str, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    _check_tag(node, path)
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise SpecError(path, node.start_mark.line + 1, f"{what} must be a mapping")
    result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in node.value:
        name = _scalar(key, path)
        _check_tag(value, path)
        if name in result:
            first = result[name][0].start_mark.line + 1
            raise SpecError(path, key.start_mark.line + 1, f"{name!r} is given twice (first on line {first})")
        result[name] = (key, value)
    return result


def _sequence(node: yaml.Node, path: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        raise SpecError(path, node.start_mark.line + 1, "expected a list, like [Container, *Guide]")
    return node.value


def _scalar(node: yaml.Node, path: str) -> str:
    _check_tag(node, path)
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError(path, node.start_mark.line + 1, "expected a plain value here")
    return node.value


def _check_tag(node: yaml.Node, path: str) -> None:
    if node.tag not in _PLAIN_TAGS:
        raise SpecError(
            path,
            node.start_mark.line + 1,
            f"YAML tag {node.tag!r} is not allowed: the spec is plain data",
        )


def _entries(node: yaml.Node, section: str, path: str) -> list[Entry]:
    entries = []
    for text, (key, value) in _mapping(node, path, f"`{section}`").items():
        line = key.start_mark.line + 1
        try:
            selector = parse_selector(text)
        except SelectorError as error:
            raise SpecError(path, line, str(error)) from None
        source = _scalar(value, path)
        where = f"{section}: {text}"
        action = (
            parse_prior(source, path, line, where)
            if section == "priors"
            else parse_constraint(source, path, line, where)
        )
        entries.append(Entry(selector, action, line, section))
    return entries


def _check_known(name: str, known, path: str, line: int, what: str) -> None:
    if name not in known:
        raise SpecError(path, line, f"unknown {what} {name!r}{_suggest(name, known)}")


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _shown(source: str, limit: int = 60) -> str:
    """``source`` quoted for a message, cut short: a hostile spec cannot flood the terminal."""
    text = source.strip()
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _expression(source: str, path: str, line: int, where: str, what: str) -> ast.expr:
    if len(source) > MAX_EXPRESSION:
        raise SpecError(
            path, line, f"{where}: {_shown(source)} is too long ({len(source)} characters) for {what}"
        )
    try:
        return ast.parse(source.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: a NUL byte, or an integer literal of more digits than Python converts;
        # RecursionError and MemoryError: nesting deeper than the parser goes.
        raise SpecError(path, line, f"{where}: {_shown(source)} is not {what}") from None


def _callee(node: ast.expr, prefixes: tuple[str, ...]) -> Optional[str]:
    """``Normal`` for ``Normal``, ``dist.Normal`` or ``pyro.distributions.Normal``."""
    prefix, _, name = (dotted_from_ast(node) or "").rpartition(".")
    return name if name and (not prefix or prefix in prefixes) else None


#: Bare names that read as numbers or as the module, never as a sibling attribute.
_NOT_SIBLINGS = {
    "inf": "is not a finite number",
    "infinity": "is not a finite number",
    "nan": "is not a number",
    "self": "is the module itself, not a sibling attribute",
}


def _number(node: ast.expr, source: str, path: str, line: int, where: str) -> Optional[Number]:
    negative = False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        negative = isinstance(node.op, ast.USub)
        node = node.operand
    if not (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return None
    written = _shown(ast.get_source_segment(source, node) or repr(node.value))
    if not _finite(node.value):
        raise SpecError(path, line, f"{where}: {written} is not a finite number")
    mantissa = (ast.get_source_segment(source, node) or "").lower().partition("e")[0]
    if node.value == 0 and any(digit in mantissa for digit in "123456789"):
        raise SpecError(path, line, f"{where}: {written} is too small for a float and would be 0")
    return Number(-node.value if negative else node.value)


def _finite(value: Union[int, float]) -> bool:
    """``1e999`` is ``inf``; an integer beyond any float fits no tensor. Neither is a usable
    hyperparameter."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _argument(node: ast.expr, source: str, path: str, line: int, where: str, siblings: bool) -> Argument:
    number = _number(node, source, path, line, where)
    if number is not None:
        return number
    named = node.operand if isinstance(node, ast.UnaryOp) else node
    if isinstance(named, ast.Name) and named.id.lower() in _NOT_SIBLINGS:
        raise SpecError(path, line, f"{where}: {named.id!r} {_NOT_SIBLINGS[named.id.lower()]}")
    if siblings and isinstance(node, ast.Name) and not _is_dunder(node.id):
        return Sibling(node.id)
    called = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
    if siblings and called in PARAMETER_VALUES:
        if node.args or node.keywords:  # type: ignore[attr-defined]  # a call
            raise SpecError(path, line, f"{where}: {called}() takes no arguments")
        return FromParameter(called)
    allowed = (
        f"finite numbers, names of sibling attributes, or {', '.join(f'{n}()' for n in PARAMETER_VALUES)}"
        if siblings
        else "finite numbers"
    )
    shown = _shown(ast.get_source_segment(source, node) or "")
    hint = _suggest(called, PARAMETER_VALUES) if siblings and called else ""
    raise SpecError(path, line, f"{where}: argument {shown} is not allowed; arguments are {allowed}{hint}")


def _is_dunder(name: str) -> bool:
    """``__class__``, ``__dict__`` (and ``__`` itself): Python's own names, never a sibling
    parameter."""
    return name.startswith("__") and name.endswith("__")


def _bind(
    call: ast.Call,
    source: str,
    signature: catalog.Signature,
    name: str,
    path: str,
    line: int,
    where: str,
    siblings: bool,
) -> tuple[tuple[Argument, ...], tuple[tuple[str, Argument], ...]]:
    """Check ``call``'s arguments against ``signature``; ``source`` is the text parsed."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        raise SpecError(path, line, f"{where}: * and ** arguments are not allowed")
    params = signature.params
    keyword_only = catalog.DISTRIBUTION_KEYWORD_ONLY_PARAMS.get(name, ())
    positional = [p for p in params if p not in keyword_only]
    if len(call.args) > len(positional):
        raise SpecError(
            path,
            line,
            f"{where}: {name} takes at most {len(positional)} positional arguments "
            f"({', '.join(positional)}), {len(call.args)} given",
        )
    bound = set(positional[: len(call.args)])
    for keyword in call.keywords:
        if keyword.arg not in params:
            raise SpecError(
                path,
                line,
                f"{where}: {name} has no argument {keyword.arg!r}{_suggest(keyword.arg, params)}"
                f" (it takes {', '.join(params)})",
            )
        if keyword.arg in bound:
            raise SpecError(path, line, f"{where}: argument {keyword.arg!r} is given twice")
        bound.add(keyword.arg)
    missing = [p for p in params[: signature.required] if p not in bound]
    if missing:
        raise SpecError(
            path, line, f"{where}: {name} needs {', '.join(missing)} (it takes {', '.join(params)})"
        )
    args = tuple(_argument(a, source, path, line, where, siblings) for a in call.args)
    kwargs = tuple((k.arg, _argument(k.value, source, path, line, where, siblings)) for k in call.keywords)
    return args, kwargs


def parse_prior(source: str, path: str, line: int, where: str) -> Prior:
    node = _expression(source, path, line, where, "a distribution call like Normal(0, 1)")
    if not isinstance(node, ast.Call) or _callee(node.func, ("dist", "pyro.distributions")) is None:
        raise SpecError(path, line, f"{where}: {_shown(source)} is not a distribution call like Normal(0, 1)")
    family = _callee(node.func, ("dist", "pyro.distributions"))
    signature = catalog.DISTRIBUTIONS.get(family)
    if signature is None:
        raise SpecError(
            path,
            line,
            f"{where}: unknown distribution {family!r}{_suggest(family, catalog.DISTRIBUTIONS)}",
        )
    args, kwargs = _bind(node, source.strip(), signature, family, path, line, where, siblings=True)
    keyword_only = catalog.DISTRIBUTION_KEYWORD_ONLY_PARAMS.get(family, ())
    named = [*zip((p for p in signature.params if p not in keyword_only), args), *kwargs]
    supports = catalog.DISTRIBUTION_SUPPORTS.get(family, {})
    for argument, value in named:
        support = supports.get(argument)
        if isinstance(value, Number) and support is not None and not _inside(value.value, support):
            raise SpecError(
                path, line, f"{where}: {family}'s {argument} must be {_describe(support)}, not {value}"
            )
    return Prior(family, args, kwargs)


def _inside(value: Union[int, float], support: catalog.Support) -> bool:
    """Whether ``value`` keeps the bounds torch checks at the first forward."""
    if support.lower is not None:
        if value < support.lower or (value == support.lower and not support.lower_inclusive):
            return False
    if support.upper is not None:
        if value > support.upper or (value == support.upper and not support.upper_inclusive):
            return False
    return True


def _describe(support: catalog.Support) -> str:
    """``> 0``, ``≥ 0`` or ``in [0, 1]``."""
    if support.lower is not None and support.upper is not None:
        opening = "[" if support.lower_inclusive else "("
        closing = "]" if support.upper_inclusive else ")"
        return f"in {opening}{support.lower:g}, {support.upper:g}{closing}"
    if support.lower is not None:
        return f"{'≥' if support.lower_inclusive else '>'} {support.lower:g}"
    return f"{'≤' if support.upper_inclusive else '<'} {support.upper:g}"


def parse_constraint(source: str, path: str, line: int, where: str) -> Constraint:
    node = _expression(source, path, line, where, "a constraint like positive or interval(0, 1)")
    call = node if isinstance(node, ast.Call) else None
    name = _callee(call.func if call else node, ("constraints", "torch.distributions.constraints"))
    if name is None:
        raise SpecError(
            path, line, f"{where}: {_shown(source)} is not a constraint like positive or interval(0, 1)"
        )
    if name not in catalog.CONSTRAINTS:
        raise SpecError(
            path, line, f"{where}: unknown constraint {name!r}{_suggest(name, catalog.CONSTRAINTS)}"
        )
    signature = catalog.CONSTRAINTS[name]
    if signature is None:
        if call is not None:
            raise SpecError(path, line, f"{where}: {name} takes no arguments; write `{name}`")
        return Constraint(name, None)
    if call is None:
        raise SpecError(path, line, f"{where}: {name} needs arguments ({', '.join(signature.params)})")
    args, kwargs = _bind(call, source.strip(), signature, name, path, line, where, siblings=False)
    return Constraint(name, args, kwargs)  # type: ignore[arg-type]  # siblings=False: numbers
