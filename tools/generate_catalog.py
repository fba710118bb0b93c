"""Write ``bayesify/catalog.py``: static tables of what the installed torch and pyro offer.

bayesify's CLI must never import torch or pyro (a pre-commit hook environment must not pull
in a multi-GB torch), yet it validates priors specs against pyro's distributions and
torch's constraints, and it needs to know which parameters torch's built-in layers hold.
This script introspects the installed packages once and writes those facts as plain data.

Usage::

    python tools/generate_catalog.py           # rewrite bayesify/catalog.py
    python tools/generate_catalog.py --check   # exit 1, printing a diff, if it is stale

The output depends only on the installed torch and pyro-ppl (everything is sorted and no
version or date is written), so rerunning it on the same versions changes nothing.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pyro.distributions
import torch
import torch.distributions.constraints as torch_constraints
import torch.nn
from torch.distributions import Distribution, transform_to

CATALOG_PATH = Path(__file__).resolve().parent.parent / "bayesify" / "catalog.py"

# black's and ruff's default line length: the output is already formatted as they would
# format it, so a formatter hook leaves the generated file alone.
LINE_LENGTH = 88

# The runtime passes ``shape=`` to its own prior factory, so a distribution taking a ``shape``
# argument could not be called through it.
RESERVED_PARAMETER_NAMES = frozenset({"shape"})


class Signature(NamedTuple):
    """Mirror of ``bayesify.catalog.Signature`` (the generator must not import bayesify)."""

    params: tuple[str, ...]
    required: int


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------

# Distributions excluded although their arguments are numeric, because they are no prior over
# a parameter's value. Each reason is written into the catalog next to the exclusion.
NOT_PRIORS = {
    "LKJCorrCholesky": "deprecated alias of LKJCholesky; warns on construction",
    "TruncatedPolyaGamma": "its only argument, prototype, is a tensor read for its dtype and "
    "device, not a parameter",
    "Unit": "pyro.factor's helper: its samples are empty tensors, never a value",
}

# Required arguments that are numbers or tensors although the class does not list them in
# arg_constraints (which holds only the arguments torch validates against a constraint).
NUMERIC_ARGUMENTS_OUTSIDE_ARG_CONSTRAINTS = {
    "Empirical": frozenset({"samples", "log_weights"}),
    "GroupedNormalNormal": frozenset({"group_idx"}),
    "LKJ": frozenset({"dim"}),
    "LKJCholesky": frozenset({"dim"}),
    "RelaxedBernoulli": frozenset({"temperature"}),
    "RelaxedBernoulliStraightThrough": frozenset({"temperature"}),
    "RelaxedOneHotCategorical": frozenset({"temperature"}),
    "RelaxedOneHotCategoricalStraightThrough": frozenset({"temperature"}),
}

# Distributions whose arg_constraints is a property of the instance rather than a class-level
# dict: an instance built from these arguments tells which arguments are tensors.
ARG_CONSTRAINTS_EXAMPLES: dict[str, Callable[[], Distribution]] = {
    "Uniform": lambda: pyro.distributions.Uniform(0.0, 1.0),
    "Wishart": lambda: pyro.distributions.Wishart(3.0, torch.eye(2)),
}


class Support(NamedTuple):
    """Mirror of ``bayesify.catalog.Support``."""

    lower: float | None
    lower_inclusive: bool
    upper: float | None
    upper_inclusive: bool


class DistributionEntry(NamedTuple):
    """What the generator learned about one pyro distribution."""

    signature: Signature | None
    exclusion_reason: str | None
    signature_from_arg_constraints: bool
    # Tensor arguments with an event dimension: {"loc": 1, "scale_tril": 2}.
    multivariate_arguments: dict[str, int]
    keyword_only: tuple[str, ...]
    # The bounds of scalar arguments whose constraint has numeric bounds: {"scale": (0, ...)}.
    supports: dict[str, Support] = {}


def _class_attribute_owner(cls: type, attribute: str) -> type:
    """The class in ``cls``'s MRO whose own namespace defines ``attribute``."""
    return next(klass for klass in cls.__mro__ if attribute in vars(klass))


def _tensor_argument_constraints(name: str, cls: type) -> dict[str, Any] | None:
    """The class's arg_constraints, or None where the class declares none (abstract bases)."""
    owner = _class_attribute_owner(cls, "arg_constraints")
    declared = vars(owner)["arg_constraints"]
    if isinstance(declared, dict):
        return declared
    if owner is Distribution:
        # torch's base property raises NotImplementedError: an abstract base class.
        return None
    if name in ARG_CONSTRAINTS_EXAMPLES:
        return ARG_CONSTRAINTS_EXAMPLES[name]().arg_constraints
    raise LookupError(
        f"{name}.arg_constraints is an instance property: add an example construction to "
        "ARG_CONSTRAINTS_EXAMPLES in tools/generate_catalog.py"
    )


def _event_dim(constraint: Any) -> int:
    try:
        return int(constraint.event_dim)
    except NotImplementedError:  # constraints.dependent cannot tell statically
        return 0


def scalar_support(constraint: Any) -> Support | None:
    """The bounds a scalar argument must keep, read from its constraint's numeric
    ``lower_bound``/``upper_bound``, with ``check`` telling whether each bound is allowed;
    None for a constraint without numeric bounds (real, dependent, simplex, ...)."""
    if _event_dim(constraint) != 0:
        return None
    lower = getattr(constraint, "lower_bound", None)
    upper = getattr(constraint, "upper_bound", None)
    bounds = [bound for bound in (lower, upper) if bound is not None]
    if not bounds or not all(isinstance(bound, (int, float)) for bound in bounds):
        return None

    def allowed(bound: float | None) -> bool:
        return bound is not None and bool(constraint.check(torch.tensor(float(bound))))

    return Support(
        None if lower is None else float(lower),
        allowed(lower),
        None if upper is None else float(upper),
        allowed(upper),
    )


def _constructor_parameters(cls: type) -> list[inspect.Parameter] | None:
    """Named constructor parameters after ``self``, or None for a bare ``*args, **kwargs``."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = [
        parameter
        for parameter in parameters
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if not named and parameters:
        return None
    return named


def describe_distribution(name: str, cls: type) -> DistributionEntry:
    """Whether ``cls`` can be a prior written with numeric arguments, and how it is called."""

    def excluded(reason: str) -> DistributionEntry:
        return DistributionEntry(None, reason, False, {}, ())

    if name in NOT_PRIORS:
        return excluded(NOT_PRIORS[name])
    try:
        tensor_arguments = _tensor_argument_constraints(name, cls)
    except LookupError as error:
        return excluded(str(error))
    if tensor_arguments is None:
        return excluded("abstract base class (declares no parameters)")

    parameters = _constructor_parameters(cls)
    signature_from_arg_constraints = parameters is None
    if parameters is None:
        # The signature says nothing; arg_constraints lists the tensor parameters in the
        # order torch documents them. Which are required cannot be known: treat all as
        # optional and let the runtime report a missing one.
        params = tuple(tensor_arguments)
        signature = Signature(params, 0)
        keyword_only: tuple[str, ...] = ()
    else:
        parameters = [p for p in parameters if p.name != "validate_args"]
        reserved = [p.name for p in parameters if p.name in RESERVED_PARAMETER_NAMES]
        if reserved:
            return excluded(f"takes {reserved[0]!r}, which the runtime passes itself")
        required_names = [p.name for p in parameters if p.default is p.empty]
        leading_required = 0
        while (
            leading_required < len(parameters)
            and parameters[leading_required].default is inspect.Parameter.empty
        ):
            leading_required += 1
        if leading_required != len(required_names):
            return excluded(
                "a required keyword-only argument follows optional ones, which a Signature " "cannot express"
            )
        numeric = set(tensor_arguments) | NUMERIC_ARGUMENTS_OUTSIDE_ARG_CONSTRAINTS.get(name, frozenset())
        non_numeric = [argument for argument in required_names if argument not in numeric]
        if non_numeric:
            return excluded("requires arguments that are not numbers: " + ", ".join(non_numeric))
        signature = Signature(tuple(p.name for p in parameters), leading_required)
        keyword_only = tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)

    multivariate = {
        argument: _event_dim(constraint)
        for argument, constraint in tensor_arguments.items()
        if _event_dim(constraint) > 0
    }
    supports = {
        argument: support
        for argument, constraint in tensor_arguments.items()
        if argument in signature.params and (support := scalar_support(constraint)) is not None
    }
    return DistributionEntry(
        signature, None, signature_from_arg_constraints, multivariate, keyword_only, supports
    )


def collect_distributions() -> dict[str, DistributionEntry]:
    entries = {}
    for name in sorted(dir(pyro.distributions)):
        candidate = getattr(pyro.distributions, name)
        if name.startswith("_") or not inspect.isclass(candidate):
            continue
        if issubclass(candidate, Distribution):
            entries[name] = describe_distribution(name, candidate)
    return entries


# --------------------------------------------------------------------------------------------
# Constraints
# --------------------------------------------------------------------------------------------


class ConstraintEntry(NamedTuple):
    signature: Signature | None  # None: a constant constraint object
    exclusion_reason: str | None


def _numeric_example_arguments(count: int) -> list[float]:
    """Increasing numbers, so that (lower_bound, upper_bound) pairs form a valid interval."""
    return [float(position) for position in range(count)]


def _has_bijection(constraint: Any) -> bool:
    """Whether a PyroParam can be constrained to it (pyro's runtime uses ``transform_to``)."""
    try:
        transform_to(constraint)
    except NotImplementedError:
        return False
    return True


def describe_constraint(candidate: Any) -> ConstraintEntry:
    no_bijection = "no transform_to bijection is registered, so a PyroParam cannot use it"
    if candidate is torch_constraints.Constraint:
        return ConstraintEntry(None, "the abstract base class of all constraints")
    if isinstance(candidate, torch_constraints.Constraint):
        if not _has_bijection(candidate):
            return ConstraintEntry(None, no_bijection)
        return ConstraintEntry(None, None)

    if not callable(candidate):
        return ConstraintEntry(None, "neither a constraint nor a factory of one")
    parameters = list(inspect.signature(candidate).parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return ConstraintEntry(None, "takes *args or **kwargs")
    required = [p for p in parameters if p.default is p.empty]
    try:
        built = candidate(*_numeric_example_arguments(len(required)))
    except (TypeError, ValueError, AssertionError):
        return ConstraintEntry(None, "cannot be built from numbers alone")
    if not isinstance(built, torch_constraints.Constraint):
        return ConstraintEntry(None, "does not return a constraint")
    if not _has_bijection(built):
        return ConstraintEntry(None, no_bijection)
    return ConstraintEntry(Signature(tuple(p.name for p in parameters), len(required)), None)


def collect_constraints() -> dict[str, ConstraintEntry]:
    public_names = getattr(torch_constraints, "__all__", None) or [
        name for name in dir(torch_constraints) if not name.startswith("_")
    ]
    return {name: describe_constraint(getattr(torch_constraints, name)) for name in sorted(public_names)}


# --------------------------------------------------------------------------------------------
# torch.nn layers
# --------------------------------------------------------------------------------------------

NN_CONTAINERS = (
    "ModuleDict",
    "ModuleList",
    "ParameterDict",
    "ParameterList",
    "Sequential",
)

# Constructor arguments for layers whose required arguments are not all small integers (the
# default guess, see ``_guess_layer_arguments``), or whose signature is ``*args, **kwargs``.
LAYER_EXAMPLE_ARGUMENTS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "AdaptiveLogSoftmaxWithLoss": ((4, 4, [2]), {}),
    "FractionalMaxPool2d": ((2,), {"output_size": 2}),
    "FractionalMaxPool3d": ((2,), {"output_size": 2}),
    "GRU": ((2, 2), {}),
    "LSTM": ((2, 2), {}),
    "RNN": ((2, 2), {}),
    "RNNBase": (("LSTM", 2, 2), {}),
    "RNNCellBase": ((2, 2), {"bias": True, "num_chunks": 1}),
    "Unflatten": ((1, (2, 2)), {}),
}

# Layers that have more parameters, numbered, when given more layers, directions or cutoffs:
# built so, their parameter names with each number made a ``*`` are NN_NUMBERED_PARAMETERS.
LAYER_NUMBERED_ARGUMENTS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "AdaptiveLogSoftmaxWithLoss": ((4, 4, [2, 3]), {}),
    "GRU": ((2, 2), {"num_layers": 2, "bidirectional": True}),
    "LSTM": ((2, 2), {"num_layers": 2, "bidirectional": True, "proj_size": 1}),
    "RNN": ((2, 2), {"num_layers": 2, "bidirectional": True}),
    "RNNBase": (("LSTM", 2, 2), {"num_layers": 2, "bidirectional": True, "proj_size": 1}),
}

# Layers whose parameters are those of the modules they are given: there is no default.
LAYERS_WRAPPING_OTHER_MODULES = {
    "DataParallel": "wraps the module it is given (module.*)",
    "TransformerDecoder": "copies the decoder layer it is given (layers.N.*)",
    "TransformerEncoder": "copies the encoder layer it is given (layers.N.*)",
}


def _guess_layer_arguments(cls: type) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Every required argument is a size, count or kernel for nearly all torch layers: 2."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    keyword_arguments = {
        p.name: 2
        for p in parameters
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return (), keyword_arguments


class MeasuredLayer(NamedTuple):
    """What a torch.nn layer built with its defaults holds."""

    #: The names of its parameters, as ``named_parameters()`` gives them; None: not measured.
    parameter_names: tuple[str, ...] | None
    #: Why it could not be measured ("" where it was).
    why_not: str
    #: Whether it holds child modules (assumed where it could not be measured).
    holds_modules: bool
    #: The torch.nn layer class of each module below it that holds parameters, by path.
    sublayers: dict[str, str]


def measure_layer_parameters(name: str, cls: type) -> MeasuredLayer:
    """Instantiate ``cls`` on the meta device (no memory, no init cost) and list its parameters."""
    if name in LAYERS_WRAPPING_OTHER_MODULES:
        return MeasuredLayer(None, LAYERS_WRAPPING_OTHER_MODULES[name], True, {})
    args, kwargs = LAYER_EXAMPLE_ARGUMENTS.get(name) or _guess_layer_arguments(cls)
    with warnings.catch_warnings():
        # Deprecated classes (Container) and odd-but-valid settings warn; neither matters here.
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                layer = cls(*args, **kwargs)
        # Whatever the failure, the layer cannot be built simply: record why and move on.
        except Exception as error:
            return MeasuredLayer(None, f"{type(error).__name__}: {error}".splitlines()[0], True, {})
    names = tuple(parameter_name for parameter_name, _ in layer.named_parameters())
    sublayers = {
        path: _public_layer(type(module))
        for path, module in layer.named_modules()
        if path and any(True for _ in module.parameters())
    }
    return MeasuredLayer(names, "", any(True for _ in layer.children()), sublayers)


def _public_layer(cls: type) -> str:
    """The torch.nn class a module is an instance of, as a layer-type selector names it:
    MultiheadAttention's ``NonDynamicallyQuantizableLinear`` is an ``nn.Linear``."""
    return next(base.__name__ for base in cls.__mro__ if getattr(torch.nn, base.__name__, None) is base)


def collect_numbered_parameters() -> dict[str, tuple[str, ...]]:
    numbered = {}
    for name, (args, kwargs) in sorted(LAYER_NUMBERED_ARGUMENTS.items()):
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # proj_size=1 makes zero-element tensors on meta
            layer = getattr(torch.nn, name)(*args, **kwargs)
        globs = (re.sub(r"\d+", "*", parameter_name) for parameter_name, _ in layer.named_parameters())
        numbered[name] = tuple(dict.fromkeys(globs))
    return numbered


def collect_layers() -> (
    tuple[dict[str, tuple[str, ...]], dict[str, str], set[str], dict[str, dict[str, str]]]
):
    layers: dict[str, tuple[str, ...]] = {}
    unmeasured: dict[str, str] = {}
    composite: set[str] = set()
    sublayers: dict[str, dict[str, str]] = {}
    for name in sorted(dir(torch.nn)):
        candidate = getattr(torch.nn, name)
        if name.startswith("_") or not inspect.isclass(candidate):
            continue
        if not issubclass(candidate, torch.nn.Module):
            continue
        measured = measure_layer_parameters(name, candidate)
        if measured.holds_modules and name not in NN_CONTAINERS:
            composite.add(name)
            if measured.sublayers:
                sublayers[name] = measured.sublayers
        if measured.parameter_names is None:
            unmeasured[name] = measured.why_not
        layers[name] = measured.parameter_names or ()
    return layers, unmeasured, composite, sublayers


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

HEADER = '''\
# GENERATED by `python tools/generate_catalog.py` from the installed torch and pyro-ppl.
# Do not edit by hand: change the generator and rerun it. `--check` tells whether it is stale,
# and tests/test_catalog.py fails when it no longer matches the installed packages.
"""What pyro and torch offer, as plain data, for the parts of bayesify that never import them.

The CLI validates a priors spec and plans a rewrite without torch or pyro installed; these
tables are what it knows of them:

- ``DISTRIBUTIONS``: the ``pyro.distributions`` classes a prior may name, with how they are
  called (numeric literal or tensor arguments only).
- ``CONSTRAINTS``: the ``torch.distributions.constraints`` a ``PyroParam`` can be constrained
  to, as constants (``positive``) or numeric factories (``interval(0, 1)``).
- ``NN_LAYERS``: every ``torch.nn`` module class, with the parameters it has by default.
- ``NN_CONTAINERS``: the ``torch.nn`` containers whose children a selector can reach.
- ``NN_LAYER_BASES``: the private ``torch.nn.modules`` classes layers derive from.
"""

from __future__ import annotations

from typing import NamedTuple


class Signature(NamedTuple):
    """How a distribution or constraint factory is called."""

    # Constructor parameter names in order, excluding validate_args.
    params: tuple[str, ...]
    # How many leading params have no default.
    required: int


class Support(NamedTuple):
    """The numbers a scalar argument of a distribution may take (None: unbounded)."""

    lower: float | None
    lower_inclusive: bool
    upper: float | None
    upper_inclusive: bool
'''


def _quote(name: str) -> str:
    """A name as a double-quoted string literal (the quotes black and ruff settle on)."""
    if not name.isascii() or '"' in name or "\\" in name:
        raise ValueError(f"unexpected character in name {name!r}")
    return f'"{name}"'


def _render_tuple(items: list[str]) -> str:
    """A tuple display of already rendered items; one item keeps its comma: ("weight",)."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _render_names_entry(key: str, names: tuple[str, ...]) -> list[str]:
    """``    "key": ("a", "b"),`` or, when too long, black's layout: one name a line."""
    quoted = [_quote(name) for name in names]
    one_line = f"    {_quote(key)}: {_render_tuple(quoted)},"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    return [f"    {_quote(key)}: ("] + [f"        {name}," for name in quoted] + ["    ),"]


def _render_mapping_entry(key: str, mapping: dict[str, str]) -> list[str]:
    """``    "key": {"a": "b"},`` or, when too long, black's layout: one pair a line."""
    pairs = [f"{_quote(name)}: {_quote(value)}" for name, value in mapping.items()]
    one_line = f"    {_quote(key)}: {{{', '.join(pairs)}}},"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    return [f"    {_quote(key)}: {{"] + [f"        {pair}," for pair in pairs] + ["    },"]


def _render_signature_entry(key: str, signature: Signature) -> list[str]:
    """``    "key": Signature(("a", "b"), 2),`` or, when too long, black's layout of it."""
    pad = " " * 4
    params = [_quote(p) for p in signature.params]
    rendered_params = _render_tuple(params)
    one_line = f"{pad}{_quote(key)}: Signature({rendered_params}, {signature.required}),"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    arguments_line = f"{pad * 2}{rendered_params}, {signature.required}"
    if len(arguments_line) <= LINE_LENGTH:
        return [f"{pad}{_quote(key)}: Signature(", arguments_line, f"{pad}),"]
    return (
        [f"{pad}{_quote(key)}: Signature(", f"{pad * 2}("]
        + [f"{pad * 3}{param}," for param in params]
        + [f"{pad * 2}),", f"{pad * 2}{signature.required},", f"{pad}),"]
    )


def _comment_block(title: str, lines: list[str]) -> list[str]:
    """A wrapped ``# title`` comment, then one ``#   line`` per item (nothing if none)."""
    if not lines:
        return []
    block = textwrap.wrap(title, LINE_LENGTH, initial_indent="# ", subsequent_indent="# ")
    for line in lines:
        block += textwrap.wrap(
            line,
            LINE_LENGTH,
            initial_indent="#   ",
            subsequent_indent="#       ",
            break_on_hyphens=False,
        )
    return block


def collect_layer_bases() -> set[str]:
    """The private module classes of torch.nn.modules that layers derive from (``_ConvNd``,
    ``_BatchNorm``), which users subclass too; its other private classes are no modules."""
    bases: set[str] = set()
    for info in pkgutil.iter_modules(torch.nn.modules.__path__):
        module = importlib.import_module(f"torch.nn.modules.{info.name}")
        for name, candidate in vars(module).items():
            if (
                name.startswith("_")
                and inspect.isclass(candidate)
                and candidate.__module__.startswith("torch.nn.modules.")
                and issubclass(candidate, torch.nn.Module)
            ):
                bases.add(name)
    return bases


def render_catalog() -> str:
    distributions = collect_distributions()
    constraints = collect_constraints()
    layers, unmeasured_layers, composite, sublayers = collect_layers()

    included = {name: e for name, e in distributions.items() if e.signature is not None}
    out = [HEADER, ""]

    out += [
        "# Left out by rule: a distribution taking a `shape` argument, since the runtime passes",
        "# `shape=` to its prior factory itself (it would be named below).",
    ]
    out += _comment_block(
        "pyro.distributions classes left out, and why:",
        [
            f"{name}: {entry.exclusion_reason}"
            for name, entry in distributions.items()
            if entry.signature is None
        ],
    )
    out += _comment_block(
        "Signatures read from arg_constraints, since the constructor takes *args, **kwargs "
        "(none of their parameters is marked required):",
        [name for name, entry in included.items() if entry.signature_from_arg_constraints],
    )
    out += _comment_block(
        "Multivariate: these arguments have event dimensions (1: a vector, 2: a matrix), so "
        "they take a tensor (a sibling attribute) rather than a numeric literal:",
        [
            f"{name}: " + ", ".join(f"{arg} ({dim})" for arg, dim in entry.multivariate_arguments.items())
            for name, entry in included.items()
            if entry.multivariate_arguments
        ],
    )
    out.append("DISTRIBUTIONS: dict[str, Signature] = {")
    for name, entry in included.items():
        out += _render_signature_entry(name, entry.signature)
    out += ["}", ""]

    out += [
        "# Parameters that can only be passed by keyword (after a bare `*`), so that a",
        "# positional argument never maps to them; a subset of the Signature's params.",
    ]
    out.append("DISTRIBUTION_KEYWORD_ONLY_PARAMS: dict[str, tuple[str, ...]] = {")
    for name, entry in included.items():
        if entry.keyword_only:
            out += _render_names_entry(name, entry.keyword_only)
    out += ["}", ""]

    out += [
        "# Scalar arguments whose constraint has numeric bounds (scale > 0, probs in [0, 1]):",
        "# a spec's number outside them fails at the first forward, so the spec is refused.",
        "DISTRIBUTION_SUPPORTS: dict[str, dict[str, Support]] = {",
    ]
    for name, entry in included.items():
        if entry.supports:
            out.append(f"    {_quote(name)}: {{")
            out += [
                f"        {_quote(argument)}: Support({support.lower!r}, {support.lower_inclusive}, "
                f"{support.upper!r}, {support.upper_inclusive}),"
                for argument, support in entry.supports.items()
            ]
            out.append("    },")
    out += ["}", ""]

    out += _comment_block(
        "torch.distributions.constraints names left out, and why:",
        [
            f"{name}: {entry.exclusion_reason}"
            for name, entry in constraints.items()
            if entry.exclusion_reason is not None
        ],
    )
    out += [
        "# None: a constant constraint object; a Signature: a factory called with numbers.",
        "CONSTRAINTS: dict[str, Signature | None] = {",
    ]
    for name, entry in constraints.items():
        if entry.exclusion_reason is not None:
            continue
        if entry.signature is None:
            out.append(f"    {_quote(name)}: None,")
        else:
            out += _render_signature_entry(name, entry.signature)
    out += ["}", ""]

    out += _comment_block(
        "torch.nn module classes not measured (listed with no parameters), and why:",
        [f"{name}: {why}" for name, why in unmeasured_layers.items()],
    )
    out += [
        "# Every public torch.nn module class -> the names (as named_parameters() gives them)",
        "# of the parameters of an instance built with its defaults and small sizes. Module and",
        "# the containers are here too, empty. Layers measured with example arguments (RNNs,",
        "# AdaptiveLogSoftmaxWithLoss) have more parameters when given more layers or cutoffs.",
        "NN_LAYERS: dict[str, tuple[str, ...]] = {",
    ]
    for name, parameter_names in layers.items():
        out += _render_names_entry(name, parameter_names)
    out += ["}", ""]

    out += [
        "# The layers whose parameters are numbered by their arguments (num_layers, bidirectional,",
        "# proj_size, cutoffs) -> globs of every name they may have (``weight_ih_l*_reverse``).",
        "NN_NUMBERED_PARAMETERS: dict[str, tuple[str, ...]] = {",
    ]
    for name, globs in collect_numbered_parameters().items():
        out += _render_names_entry(name, globs)
    out += ["}", ""]

    containers = ", ".join(_quote(name) for name in NN_CONTAINERS)
    out += [
        "NN_CONTAINERS: frozenset[str] = frozenset(",
        f"    {{{containers}}}",
        ")",
        "",
        "# torch.nn layers (not containers) whose instances hold modules of their own",
        "# (MultiheadAttention's out_proj): PyroModule[Layer] alone would leave those plain.",
        "NN_COMPOSITE_LAYERS: frozenset[str] = frozenset(",
        "    {",
        *(f"        {_quote(name)}," for name in sorted(composite)),
        "    }",
        ")",
        "",
        "# Those layers -> the torch.nn layer class of each module below them that holds",
        "# parameters, by path: a layer-type entry (nn.Linear.weight) selects MultiheadAttention's",
        "# out_proj.weight, whose class derives from nn.Linear.",
        "NN_SUBLAYERS: dict[str, dict[str, str]] = {",
        *(line for name, paths in sublayers.items() for line in _render_mapping_entry(name, paths)),
        "}",
        "",
        "# Private torch.nn.modules classes that layers derive from (users subclass _ConvNd too).",
        "# Every other torch.nn class (Parameter, Buffer, LazyModuleMixin) is no module.",
        "NN_LAYER_BASES: frozenset[str] = frozenset(",
        "    {",
        *(f"        {_quote(name)}," for name in sorted(collect_layer_bases())),
        "    }",
        ")",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and print a diff if bayesify/catalog.py is stale",
    )
    options = parser.parse_args(argv)

    generated = render_catalog()
    current = CATALOG_PATH.read_text(encoding="utf-8") if CATALOG_PATH.exists() else ""
    if options.check:
        if current == generated:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                fromfile="bayesify/catalog.py (on disk)",
                tofile="bayesify/catalog.py (generated)",
            )
        )
        print(
            "bayesify/catalog.py is stale: run `python tools/generate_catalog.py`",
            file=sys.stderr,
        )
        return 1
    if current != generated:
        CATALOG_PATH.write_text(generated, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
