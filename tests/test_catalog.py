"""bayesify/catalog.py must match the installed pyro and torch, and stay importable without them.

The catalog is generated (``python tools/generate_catalog.py``); these tests recheck its facts
against the installed packages by their own, simpler introspection, so that a stale table or
a generator bug fails here rather than as a wrong spec error or a broken rewrite.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from bayesify import catalog
from bayesify.catalog import CONSTRAINTS, DISTRIBUTIONS, NN_CONTAINERS, NN_LAYERS, Signature

torch = pytest.importorskip("torch")
pyro_distributions = pytest.importorskip("pyro.distributions")
torch_constraints = pytest.importorskip("torch.distributions.constraints")

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATOR = REPO_ROOT / "tools" / "generate_catalog.py"


def _named_parameters(function) -> list[inspect.Parameter]:
    """Parameters of a signature other than self, *args and **kwargs."""
    return [
        parameter
        for parameter in inspect.signature(function).parameters.values()
        if parameter.name != "self"
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def _leading_required(parameters: list[inspect.Parameter]) -> int:
    count = 0
    for parameter in parameters:
        if parameter.default is not parameter.empty:
            break
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# In sync with the installed packages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_distribution_signature_matches_pyro(name):
    cls = getattr(pyro_distributions, name, None)
    assert inspect.isclass(cls), f"pyro.distributions has no class {name}"
    assert issubclass(cls, torch.distributions.Distribution)
    parameters = [p for p in _named_parameters(cls.__init__) if p.name != "validate_args"]
    if parameters:
        expected = Signature(tuple(p.name for p in parameters), _leading_required(parameters))
    else:
        # A bare ``*args, **kwargs`` constructor: the generator falls back to arg_constraints.
        expected = Signature(tuple(cls.arg_constraints), 0)
    assert DISTRIBUTIONS[name] == expected


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_distribution_has_no_shape_parameter(name):
    # The runtime passes ``shape=`` to its prior factory itself.
    assert "shape" not in DISTRIBUTIONS[name].params


def test_keyword_only_params_are_keyword_only_in_pyro():
    for name, keyword_only in catalog.DISTRIBUTION_KEYWORD_ONLY_PARAMS.items():
        parameters = inspect.signature(getattr(pyro_distributions, name).__init__).parameters
        assert all(parameters[p].kind is inspect.Parameter.KEYWORD_ONLY for p in keyword_only)
        assert set(keyword_only) <= set(DISTRIBUTIONS[name].params)
    for name, signature in DISTRIBUTIONS.items():
        parameters = inspect.signature(getattr(pyro_distributions, name).__init__).parameters
        keyword_only = tuple(
            p for p in signature.params if parameters[p].kind is inspect.Parameter.KEYWORD_ONLY
        )
        assert catalog.DISTRIBUTION_KEYWORD_ONLY_PARAMS.get(name, ()) == keyword_only


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_constraint_matches_torch(name):
    assert name in torch_constraints.__all__
    obj = getattr(torch_constraints, name)
    signature = CONSTRAINTS[name]
    if signature is None:
        assert isinstance(obj, torch_constraints.Constraint), f"{name} is not a constant"
        torch.distributions.transform_to(obj)  # usable by a PyroParam
    else:
        assert callable(obj) and not isinstance(obj, torch_constraints.Constraint)
        parameters = _named_parameters(obj)
        assert signature == Signature(tuple(p.name for p in parameters), _leading_required(parameters))
        built = obj(*[float(i) for i in range(signature.required)])
        assert isinstance(built, torch_constraints.Constraint)


def test_nn_layers_are_torch_nn_modules():
    for name in NN_LAYERS:
        cls = getattr(torch.nn, name, None)
        assert inspect.isclass(cls) and issubclass(cls, torch.nn.Module), name


def test_nn_layers_cover_every_public_torch_nn_module():
    public_modules = {
        name
        for name in dir(torch.nn)
        if not name.startswith("_")
        and inspect.isclass(getattr(torch.nn, name))
        and issubclass(getattr(torch.nn, name), torch.nn.Module)
    }
    assert set(NN_LAYERS) == public_modules


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: torch.nn.Linear(3, 2), "Linear"),
        (lambda: torch.nn.Conv2d(1, 2, 3), "Conv2d"),
        (lambda: torch.nn.LSTM(3, 2), "LSTM"),
        (lambda: torch.nn.MultiheadAttention(4, 2), "MultiheadAttention"),
        (lambda: torch.nn.LayerNorm(3), "LayerNorm"),
        (lambda: torch.nn.Embedding(5, 2), "Embedding"),
    ],
)
def test_nn_layer_parameters_match_a_real_instance(build, name):
    assert NN_LAYERS[name] == tuple(n for n, _ in build().named_parameters())


def test_nn_containers_are_torch_nn_containers():
    assert NN_CONTAINERS == {
        "Sequential",
        "ModuleList",
        "ModuleDict",
        "ParameterList",
        "ParameterDict",
    }
    for name in NN_CONTAINERS:
        assert issubclass(getattr(torch.nn, name), torch.nn.Module)


def test_generator_check_passes():
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        "bayesify/catalog.py is stale; run `python tools/generate_catalog.py`:\n"
        + result.stdout
        + result.stderr
    )


def test_importing_the_catalog_loads_neither_torch_nor_pyro():
    probe = (
        "import sys, bayesify.catalog\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pyro'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_catalog_says_it_is_generated():
    text = (REPO_ROOT / "bayesify" / "catalog.py").read_text(encoding="utf-8")
    assert "generated by `python tools/generate_catalog.py`" in text.splitlines()[0].lower()
    assert "do not edit by hand" in text.lower()


# ---------------------------------------------------------------------------------------------
# Facts users write priors specs against
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, required",
    [
        ("Normal", ("loc", "scale"), 2),
        ("LogNormal", ("loc", "scale"), 2),
        ("Gamma", ("concentration", "rate"), 2),
        ("Beta", ("concentration1", "concentration0"), 2),
        ("HalfNormal", ("scale",), 1),
        ("HalfCauchy", ("scale",), 1),
        ("Laplace", ("loc", "scale"), 2),
        ("Cauchy", ("loc", "scale"), 2),
        ("Exponential", ("rate",), 1),
        ("StudentT", ("df", "loc", "scale"), 1),
        ("Uniform", ("low", "high"), 2),
        ("Bernoulli", ("probs", "logits"), 0),
    ],
)
def test_common_priors(name, params, required):
    assert DISTRIBUTIONS[name] == Signature(params, required)


@pytest.mark.parametrize(
    "name",
    [
        "TransformedDistribution",
        "MixtureSameFamily",
        "Independent",
        "MaskedDistribution",
        "ImproperUniform",
        "TorchDistribution",
        "ExponentialFamily",
    ],
)
def test_distributions_that_need_more_than_numbers_are_left_out(name):
    assert name not in DISTRIBUTIONS


@pytest.mark.parametrize("name", ["positive", "real", "unit_interval", "simplex", "nonnegative"])
def test_constant_constraints(name):
    assert CONSTRAINTS[name] is None


@pytest.mark.parametrize(
    "name, params",
    [
        ("interval", ("lower_bound", "upper_bound")),
        ("half_open_interval", ("lower_bound", "upper_bound")),
        ("greater_than", ("lower_bound",)),
        ("greater_than_eq", ("lower_bound",)),
        ("less_than", ("upper_bound",)),
    ],
)
def test_constraint_factories(name, params):
    assert CONSTRAINTS[name] == Signature(params, len(params))


@pytest.mark.parametrize("name", ["boolean", "dependent", "integer_interval", "cat", "stack"])
def test_constraints_a_pyro_param_cannot_use_are_left_out(name):
    assert name not in CONSTRAINTS


def test_common_layer_parameters():
    assert NN_LAYERS["Linear"] == ("weight", "bias")
    assert NN_LAYERS["LSTM"] == ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    assert NN_LAYERS["MultiheadAttention"] == (
        "in_proj_weight",
        "in_proj_bias",
        "out_proj.weight",
        "out_proj.bias",
    )
    assert NN_LAYERS["ReLU"] == ()
    assert NN_LAYERS["InstanceNorm1d"] == ()  # affine=False by default


# ---------------------------------------------------------------------------------------------
# Generator rules with no case in the installed pyro (yet)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_catalog", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_falls_back_to_arg_constraints_for_star_args(generator):
    class StarArgs(torch.distributions.Distribution):
        arg_constraints = {"loc": torch_constraints.real, "scale": torch_constraints.positive}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    entry = generator.describe_distribution("StarArgs", StarArgs)
    assert entry.exclusion_reason is None
    assert entry.signature_from_arg_constraints
    assert tuple(entry.signature) == (("loc", "scale"), 0)


def test_generator_excludes_a_shape_parameter(generator):
    class Shaped(torch.distributions.Distribution):
        arg_constraints = {"loc": torch_constraints.real}

        def __init__(self, loc, shape=(), validate_args=None):
            super().__init__(validate_args=validate_args)

    entry = generator.describe_distribution("Shaped", Shaped)
    assert entry.signature is None
    assert "shape" in entry.exclusion_reason


def test_generator_excludes_a_non_numeric_required_argument(generator):
    class Wrapper(torch.distributions.Distribution):
        arg_constraints = {}

        def __init__(self, base_dist, validate_args=None):
            super().__init__(validate_args=validate_args)

    entry = generator.describe_distribution("Wrapper", Wrapper)
    assert entry.signature is None
    assert "base_dist" in entry.exclusion_reason
