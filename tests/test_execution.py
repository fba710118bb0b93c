"""Rewritten code is tested by running it: import the golden outputs, build the models, trace
them, step SVI, and compare with the same models written by hand in Pyro."""

from __future__ import annotations

import abc
import copy
import importlib.util
import math
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn as nn
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroParam, PyroSample, pyro_method
from pyro.optim import Adam
from torch.distributions import constraints

from bayesify import runner
from bayesify.runtime import pyro_metaclass_of
from bayesify.spec import parse_spec

FIXTURES = Path(__file__).parent / "fixtures"


def load(case: str, relative: str, which: str = "expected"):
    path = FIXTURES / case / which / relative
    name = f"fixture_{case}_{which}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sites(model, *args):
    pyro.clear_param_store()  # PyroModules share Pyro's global store by site name
    trace = poutine.trace(model).get_trace(*args)
    return [
        (name, site["type"], tuple(site["value"].shape))
        for name, site in trace.nodes.items()
        if site["type"] in ("sample", "param")
    ]


def read(module, *names):
    """Read attributes the way a method of the module does (inside its Pyro context)."""
    return pyro_method(lambda self: [getattr(self, name) for name in names])(module)


def svi_losses(model, steps, *args, lr=0.01):
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": lr}), Trace_ELBO())
    return [svi.step(*args) for _ in range(steps)]


class TutorialModel(PyroModule):
    """The tutorial's regression model, around whichever Linear it is given."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear
        self.obs_scale = PyroSample(dist.LogNormal(0, 1))

    def forward(self, input, output=None):
        obs_loc = self.linear(input)
        obs_scale = self.obs_scale
        with pyro.plate("instances", len(input)):
            return pyro.sample("obs", dist.Normal(obs_loc, obs_scale).to_event(1), obs=output)


class BayesianLinear(PyroModule):
    """The tutorial's hand-written Bayesian Linear."""

    def __init__(self, in_size, out_size):
        super().__init__()
        self.bias = PyroSample(prior=dist.LogNormal(0, 1).expand([out_size]).to_event(1))
        self.weight = PyroSample(prior=dist.Normal(0, 1).expand([in_size, out_size]).to_event(2))

    def forward(self, input):
        return self.bias + input @ self.weight


def tutorial_run(linear_class, steps):
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    model = TutorialModel(linear_class(5, 2))
    x = torch.randn(100, 5)
    y = model(x)
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    return [svi.step(x, y) / y.numel() for _ in range(steps)], model, x


def test_rewritten_tutorial_linear_reproduces_the_tutorial_loss_table():
    """The tutorial's table (pyro 1.9, torch 2.x), from code bayesify wrote."""
    Linear = load("tutorial_linear", "linear.py").Linear
    losses, _, _ = tutorial_run(Linear, 501)
    table = {0: 7.186, 100: 2.185, 200: 1.87, 300: 1.739, 400: 1.691, 500: 1.673}
    assert {step: float(f"{losses[step]:.4g}") for step in table} == table


def test_rewritten_linear_equals_hand_written_pyro():
    Linear = load("tutorial_linear", "linear.py").Linear
    ours, model, x = tutorial_run(Linear, 30)
    theirs, hand_model, _ = tutorial_run(BayesianLinear, 30)
    assert ours == theirs
    assert sites(model, x) == sites(hand_model, x)
    assert [name for name, *_ in sites(model, x)][:2] == ["linear.bias", "linear.weight"]


def test_rewritten_module_draws_no_random_numbers_for_replaced_initializers():
    Linear = load("tutorial_linear", "linear.py").Linear
    torch.manual_seed(0)
    Linear(50, 40)
    after_build = torch.randn(3)
    torch.manual_seed(0)
    assert torch.equal(after_build, torch.randn(3))


def test_rewritten_model_follows_dtype_and_survives_copies():
    Linear = load("tutorial_linear", "linear.py").Linear
    model = TutorialModel(Linear(5, 2)).double()
    x = torch.randn(10, 5, dtype=torch.float64)
    assert model(x).dtype == torch.float64
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert clone(x).shape == (10, 2)
        assert clone(x).dtype == torch.float64


def test_shapes_match_the_deterministic_parameters():
    deterministic = load("shapes", "shapes.py", which="input").Shapes(3, 4)
    rewritten = load("shapes", "shapes.py").Shapes(3, 4)
    names = [name for name, _ in deterministic.named_parameters()]
    trace = poutine.trace(read).get_trace(rewritten, *names)
    for name, parameter in deterministic.named_parameters():
        site = trace.nodes[name]
        assert site["type"] == "sample"
        assert site["value"].shape == parameter.shape, name
        assert site["fn"].event_shape == parameter.shape, name


class HandHier(PyroModule):
    def __init__(self, n):
        super().__init__()
        self.loc = PyroSample(dist.Normal(0, 1).expand([n]).to_event(1))
        self.scale = PyroParam(torch.ones(n), constraint=constraints.positive)
        self.x = PyroSample(lambda self: dist.Normal(self.loc, self.scale).to_event(1))

    def forward(self):
        return self.x


def test_hierarchical_prior_equals_the_tutorial_lambda_form():
    Hier = load("hierarchical", "hier.py").Hier

    def model_of(cls):
        def model(data):
            value = cls_instance()
            pyro.sample("obs", dist.Normal(value, 1.0).to_event(1), obs=data)

        cls_instance = cls(3)
        return model

    data = torch.tensor([0.5, -1.0, 2.0])
    ours = svi_losses(model_of(Hier), 25, data)
    theirs = svi_losses(model_of(HandHier), 25, data)
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert sites(Hier(3)) == sites(HandHier(3))


class HandGate(PyroModule):
    def __init__(self, n):
        super().__init__()
        self.p = PyroParam(torch.full((n,), 0.5), constraint=constraints.interval(0, 1))
        self.temperature = PyroParam(torch.ones(()), constraint=constraints.positive)
        self.weight = nn.Parameter(torch.randn(n, n))

    def forward(self, x):
        return torch.sigmoid(x @ self.weight / self.temperature) * self.p


def test_constrained_parameters_are_learned_within_their_support():
    Gate = load("constraints", "gate.py").Gate

    def regression(module):
        def model(x, y):
            with pyro.plate("data", len(x)):
                pyro.sample("y", dist.Normal(module(x), 0.1).to_event(1), obs=y)

        return model

    x, y = torch.randn(20, 3), torch.rand(20, 3)
    torch.manual_seed(0)
    ours = Gate(3)
    torch.manual_seed(0)
    theirs = HandGate(3)
    assert svi_losses(regression(ours), 20, x, y) == svi_losses(regression(theirs), 20, x, y)
    store = pyro.get_param_store()
    assert {"p", "temperature", "weight"} <= set(store.keys())
    assert bool(((store["p"] > 0) & (store["p"] < 1)).all()) and bool(store["temperature"] > 0)


def test_register_annotated_and_conditional_parameters_become_random():
    Forms = load("register_and_annotated", "forms.py").Forms
    assert sites(Forms(4), torch.zeros(4)) == [
        ("loc", "sample", (4,)),
        ("scale", "sample", (4,)),
        ("offset", "sample", (4,)),
    ]
    assert sites(Forms(4, bias=False), torch.zeros(4)) == [("loc", "sample", (4,)), ("scale", "sample", (4,))]


def test_layer_subclass_keeps_layer_parameters_as_named_pyro_params():
    MaskedLinear = load("layer_subclass", "masked.py").MaskedLinear
    layer = MaskedLinear(3, 2)
    assert isinstance(layer, nn.Linear) and isinstance(layer, PyroModule)
    assert sites(layer, torch.zeros(5, 3)) == [
        ("weight", "param", (2, 3)),
        ("bias", "param", (2,)),
        ("gain", "sample", (2,)),
    ]


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda module: pickle.loads(pickle.dumps(module))])
def test_layer_subclass_survives_copies_as_its_own_class(clone):
    # Pyro pickles PyroModule[nn.Linear] by the layer class, and its subclasses inherited
    # that: a copy came back a PyroLinear, without the mask its own forward applies.
    MaskedLinear = load("layer_subclass", "masked.py").MaskedLinear
    layer = MaskedLinear(3, 2)
    layer.mask[0] = 0
    copied = clone(layer)
    assert type(copied) is MaskedLinear
    x = torch.ones(4, 3)
    with poutine.trace() as traced:
        expected = layer(x)
    assert torch.equal(poutine.replay(copied, trace=traced.trace)(x), expected)
    assert type(clone(nn.Sequential(PyroModule[nn.Linear](3, 2)))[0]) is PyroModule[nn.Linear]


def test_pyro_method_makes_a_helper_method_sample_its_prior():
    Regressor = load("pyro_method", "model.py").Regressor
    model = Regressor(3)
    trace = poutine.trace(model.predict).get_trace(torch.ones(3))
    assert trace.nodes["weight"]["type"] == "sample"
    assert repr(model) == "Regressor(3)"


def test_a_method_that_runs_blocks_sharing_a_layer_reads_one_draw_of_it(tmp_path):
    # TabNet's forward_masks runs blocks that share a layer: undecorated, each block drew the
    # shared weight anew, and a trace of it failed on two sites of one name.
    from bayesify.rewriters.methods import PyroMethodRewriter

    example = PyroMethodRewriter.examples[3]
    source = tmp_path / "blocks.py"
    source.write_text(example.before)
    rewritten = runner.run([source], parse_spec("version: 1\n" + example.spec), jobs=1).results[0].rewritten
    namespace: dict = {}
    exec(rewritten, namespace)
    net, x = namespace["Net"](), torch.randn(4, 2)
    draw = poutine.trace(net.explain).get_trace(x)
    assert [name for name, site in draw.nodes.items() if site["type"] == "sample"] == ["blocks.1.0.weight"]
    hidden, output = poutine.replay(net.explain, trace=draw)(x)
    assert torch.equal(output, poutine.replay(net, trace=draw)(x))
    assert torch.equal(poutine.replay(net.invert, trace=draw)(x), poutine.replay(net, trace=draw)(x))


class _CallsForwardItself(nn.Module):
    """gpytorch's Module: a __call__ of its own that runs forward, not nn.Module's."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


def test_a_class_on_a_base_that_calls_forward_itself_reads_one_draw_a_call():
    # pyro_module_class(ExactGP) put gpytorch's __call__ before PyroModule's: no Pyro context
    # was opened, and each call of the feature extractor drew its weights anew.
    from bayesify.runtime import pyro_module, pyro_module_class, set_prior

    class Model(pyro_module_class(_CallsForwardItself)):  # what the rewrite makes of a subclass
        def __init__(self):
            super().__init__()
            self.features = nn.Linear(2, 2)
            set_prior(self, "nn.Linear.weight", "Normal", 0, 1)
            pyro_module(self)

        def forward(self, x):
            return self.features(x) - self.features(x)

    model = Model()
    trace = poutine.trace(model).get_trace(torch.randn(3, 2))
    assert [name for name, site in trace.nodes.items() if site["type"] == "sample"] == ["features.weight"]
    assert torch.equal(model(torch.randn(3, 2)), torch.zeros(3, 2))


HELD_GP = """
from torch import nn


class CallsForwardItself(nn.Module):  # gpytorch's Module
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class Held(CallsForwardItself):
    def __init__(self):
        super().__init__()
        self.features = nn.Linear(2, 2)

    def forward(self, x):
        return self.features(x) - self.features(x)
"""


def test_a_held_module_on_such_a_base_reads_one_draw_a_call_after_pickling_too(tmp_path, monkeypatch):
    # Pickle makes PyroModule[Held] anew in a new process, as Pyro makes it: there it ran
    # Held's __call__ outside any Pyro context again.
    from bayesify.runtime import pyro_module, set_prior

    (tmp_path / "heldgp.py").write_text(HELD_GP)
    monkeypatch.syspath_prepend(str(tmp_path))
    import heldgp

    net = pyro_module(heldgp.Held())
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    assert torch.equal(net(torch.randn(3, 2)), torch.zeros(3, 2))
    torch.save(net, tmp_path / "net.pt")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch, bayesify.runtime; sys.path.insert(0, sys.argv[1]); "
            "net = torch.load(sys.argv[2], weights_only=False); "
            "print(torch.equal(net(torch.randn(3, 2)), torch.zeros(3, 2)))",
            str(tmp_path),
            str(tmp_path / "net.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert loaded.stdout.strip() == "True", loaded.stderr


def test_every_import_spelling_gives_a_pyro_module_with_a_random_site():
    for file, cls in [
        ("alias_nn", "A"),
        ("from_torch", "B"),
        ("dotted", "C"),
        ("renamed", "D"),
        ("tnn", "E"),
    ]:
        instance = getattr(load("import_spellings", f"{file}.py"), cls)()
        assert isinstance(instance, PyroModule), cls
        assert sites(read, instance, "w") == [("w", "sample", (2,))], cls


def test_cross_file_subclass_inherits_the_conversion(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES / "cross_file" / "expected"))
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        monkeypatch.delitem(sys.modules, name)
    models = importlib.import_module("pkg.models")
    encoder = models.ShiftedEncoder(3)
    assert isinstance(encoder, PyroModule)
    assert sites(encoder, torch.ones(3)) == [("scale", "sample", (3,)), ("shift", "sample", (3,))]
    assert poutine.trace(encoder.describe).get_trace().nodes["scale"]["type"] == "sample"


def test_a_base_a_package_reexports_converts_its_subclass(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES / "reexported_base" / "expected"))
    for name in [m for m in sys.modules if m == "flowlib" or m.startswith("flowlib.")]:
        monkeypatch.delitem(sys.modules, name)
    flowlib = importlib.import_module("flowlib")
    flow = flowlib.PlanarFlow(3)
    assert isinstance(flow, flowlib.flows.Flow) and isinstance(flow, PyroModule)
    assert sorted(sites(flow, torch.ones(2, 3))) == [
        ("b", "param", (1,)),
        ("u", "sample", (3,)),
        ("w", "sample", (3,)),
    ]
    shift = flowlib.model.Shift(3)  # its base comes through `from .invertible import *`
    assert isinstance(shift, PyroModule)
    assert sites(shift.inverse, torch.ones(3)) == [("shift", "sample", (3,))]


def _import_fresh(monkeypatch, root: Path, *packages: str):
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.partition(".")[0] in packages]:
        monkeypatch.delitem(sys.modules, name)
    return [importlib.import_module(name) for name in packages]


def test_bases_bayesify_cannot_read_convert_at_run_time(monkeypatch, tmp_path):
    """An `external` glob matches a library's modules and its other classes alike, and a base
    may bring a metaclass (torchmetrics' ``Metric(Module, ABC)``): ``PyroModule[Base]`` failed
    at import for both, which only the run time can tell apart."""
    library = tmp_path / "otherlib"
    library.mkdir()
    (library / "__init__.py").write_text("")
    (library / "blocks.py").write_text(
        "import abc\nfrom torch import nn\n\n\nclass ExternalBlock(nn.Module, abc.ABC):\n"
        "    def __init__(self):\n        super().__init__()\n        self.proj = nn.Linear(2, 2)\n"
    )
    (library / "callbacks.py").write_text("class Callback:\n    pass\n")
    (tmp_path / "mysterylib.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(FIXTURES / "context_bases" / "context"))
    _import_fresh(monkeypatch, tmp_path, "otherlib", "mysterylib", "basepkg")
    model = load("context_bases", "model.py")
    wrapped, accuracy = model.Wrapped(), model.Accuracy()
    for module, base in ((wrapped, model.ExternalBlock), (accuracy, model.Metric)):
        assert isinstance(module, PyroModule) and isinstance(module, base)
        assert isinstance(type(module), abc.ABCMeta)
        assert type(pickle.loads(pickle.dumps(module))) is type(module)
    assert not isinstance(model.Printer(), PyroModule)
    classifier = model.Classifier(3, 2)
    assert [name for name, kind, _ in sites(classifier, torch.ones(4, 3)) if kind == "sample"] == [
        "head.weight"
    ]
    # A package's model subclassed for its configuration: nn.Linear.weight selects the layers
    # its base builds (nothing was random in rtdl.MLP's subclass, and the rewrite said nothing).
    # An entry on a layer that an `external` glob's base builds, which bayesify cannot read.
    configured = model.Configured()
    assert [name for name, kind, _ in sites(configured, torch.ones(3, 2)) if kind == "sample"] == [
        "proj.weight"
    ]
    # An entry for a parameter the base builds (Tuned.output.bias) holds on a second run too.
    for configured, own in ((model.Tuned(), ["output.bias"]), (model.Sized(4), [])):
        random = [name for name, kind, _ in sites(configured, torch.ones(3, 4)) if kind == "sample"]
        assert sorted(random) == sorted(["layers.0.weight", "output.weight", *own])


def test_layers_built_in_loops_conditionals_and_unpacking_get_their_priors(monkeypatch):
    """A flow library's coupling layers and a vector quantizer: every layer the spec names
    is a sample site, in each configuration; an nn.Identity() in its place breaks nothing."""
    _import_fresh(monkeypatch, FIXTURES / "built_in_loops" / "expected", "coupling", "quantize")
    from coupling.flows import RealNVP
    from quantize.vq import ResidualVQ, VectorQuantize

    def samples(model, *args):
        return sorted(name for name, kind, _ in sites(model, *args) if kind == "sample")

    residual = RealNVP(4, 8, 2, residual=True)
    assert samples(residual, torch.ones(3, 4)) == sorted(
        f"layers.{i}.transform_net.{name}.weight"
        for i in range(2)
        for name in ["initial_layer", *(f"blocks.{b}.linear_layers.{k}" for b in range(2) for k in range(2))]
    )
    mlp = RealNVP(4, 8, 2, residual=False)
    assert samples(mlp, torch.ones(3, 4)) == [
        f"layers.{i}.transform_net.net.{k}.weight" for i in range(2) for k in (0, 2)
    ]
    projected = ResidualVQ(4, num_quantizers=2, codebook_size=5, codebook_dim=3)
    assert samples(projected, torch.ones(2, 4)) == [
        "layers.0._codebook.embed",
        "layers.1._codebook.embed",
        "norms.1.weight",
        "project_in.weight",
    ]
    plain = ResidualVQ(4, num_quantizers=1, codebook_size=5)
    assert samples(plain, torch.ones(2, 4)) == ["layers.0._codebook.embed", "norms.1.weight"]
    assert samples(VectorQuantize(4, 5, codebook_dim=2), torch.ones(2, 4)) == [
        "_codebook.embed",
        "project_out.weight",
    ]


def test_init_lists_every_parameter_the_built_models_have(tmp_path, monkeypatch):
    """`bayesify init` on the flow and quantizer fixtures, then a rewrite with its starter
    spec: no parameter of any built configuration is left out (none stays a param site)."""
    from click.testing import CliRunner

    from bayesify.cli import main

    work = tmp_path / "src"
    shutil.copytree(FIXTURES / "built_in_loops" / "input", work)
    starter = tmp_path / "priors.yaml"
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(work), "-o", str(starter)]).exit_code == 0
    rewritten = runner.invoke(main, ["rewrite", str(work), "--priors", str(starter)])
    assert rewritten.exit_code == 0, rewritten.output
    _import_fresh(monkeypatch, work, "coupling", "quantize")
    from coupling.flows import RealNVP
    from quantize.vq import ResidualVQ, VectorQuantize

    for model, inputs in [
        (RealNVP(4, 8, 2, residual=True), torch.ones(3, 4)),
        (RealNVP(4, 8, 2, residual=False), torch.ones(3, 4)),
        (ResidualVQ(4, num_quantizers=2, codebook_size=5, codebook_dim=3), torch.ones(2, 4)),
        (VectorQuantize(4, 5, codebook_dim=2), torch.ones(2, 4)),
    ]:
        found = sites(model, inputs)
        assert found and all(kind == "sample" for _, kind, _ in found), [s for s in found if s[1] != "sample"]


def test_excluded_container_stays_a_plain_module():
    serving = load("exclude", "serving.py")
    assert not isinstance(serving.Container(None, None), PyroModule)
    assert isinstance(serving.Net(), PyroModule)


def _hand_prior(module, name, prior):
    value = getattr(module, name)
    setattr(module, name, PyroSample(prior.expand(value.shape).to_event(value.dim())))


class HandNet(PyroModule):
    """The held_layers fixture's Net, made Bayesian by hand the way Pyro's docs do it."""

    def __init__(self, n=4):
        super().__init__()
        from pyro.nn.module import to_pyro_module_

        self.fc = PyroModule[nn.Linear](n, n)
        self.conv = PyroModule[nn.Conv1d](1, 2, 3)
        self.emb = PyroModule[nn.Embedding](10, n)
        self.norm = PyroModule[nn.LayerNorm](n)
        self.bn = PyroModule[nn.BatchNorm1d](n)
        self.rnn = PyroModule[nn.GRU](n, n)
        self.attn = nn.MultiheadAttention(n, 2)
        to_pyro_module_(self.attn)  # its out_proj too
        self.proj = PyroModule[nn.Linear](n, n, bias=False)
        self.layers = PyroModule[nn.Sequential](
            PyroModule[nn.Linear](n, n), PyroModule[nn.ReLU](), PyroModule[nn.Linear](n, n)
        )
        self.blocks = PyroModule[nn.ModuleList]([PyroModule[nn.Linear](n, n) for _ in range(2)])
        head_a = PyroModule[nn.Linear](n, 1)
        head_b = nn.Sequential(nn.Linear(n, n), nn.Tanh())
        to_pyro_module_(head_b)
        self.heads = PyroModule[nn.ModuleDict]({"a": head_a, "b": head_b})
        self.scales = PyroModule[nn.ParameterList]([nn.Parameter(torch.ones(n)) for _ in range(2)])
        self.act = PyroModule[nn.GELU]()
        normal = dist.Normal(0.0, 1.0)
        for module, name in [
            (self.fc, "weight"),
            (self.conv, "weight"),
            (self.emb, "weight"),
            (self.attn.out_proj, "weight"),
            (self.proj, "weight"),
            (self.layers[0], "weight"),
            (self.layers[2], "weight"),
            (self.blocks[0], "weight"),
            (self.heads["a"], "weight"),
        ]:
            _hand_prior(module, name, normal)
        _hand_prior(self.rnn, "weight_ih_l0", dist.Normal(0.0, 0.5))
        _hand_prior(self.scales, "1", dist.LogNormal(0.0, 1.0))
        for module in (self.norm, self.bn):
            module.weight = PyroParam(module.weight.detach().clone(), constraint=constraints.positive)

    forward = None  # set below from the rewritten class: the same computation


def test_held_layers_and_containers_equal_hand_written_pyro():
    Net = load("held_layers", "net.py").Net
    HandNet.forward = Net.forward
    x = torch.randint(0, 10, (3, 5))

    def regression(net):
        def model(x, y=None):
            out = net(x)
            with pyro.plate("rows", out.shape[0]):
                pyro.sample("y", dist.Normal(out, 1.0).to_event(2), obs=y)

        return model

    torch.manual_seed(0)
    ours = Net()
    torch.manual_seed(0)
    theirs = HandNet()
    y = torch.randn(3, 5, 1)
    assert sites(regression(ours), x, y) == sites(regression(theirs), x, y)
    assert svi_losses(regression(ours), 10, x, y) == svi_losses(regression(theirs), 10, x, y)


def test_held_parameters_not_random_are_pyro_params_named_by_module_path():
    Net = load("held_layers", "net.py").Net
    names = {name: kind for name, kind, _ in sites(Net(), torch.randint(0, 10, (3, 5)))}
    assert not [name for name in names if "$$$" in name]
    assert names["fc.weight"] == "sample" and names["fc.bias"] == "param"
    assert names["layers.0.weight"] == "sample" and names["layers.0.bias"] == "param"
    assert names["heads.b.0.weight"] == "param"  # built by a factory function
    assert names["scales.1"] == "sample" and names["scales.0"] == "param"
    assert names["norm.weight"] == "param" and names["proj.weight"] == "sample"
    assert names["attn.in_proj_weight"] == "param"


class _Metric(nn.Module, abc.ABC):
    """torchmetrics' ``Metric`` is ``class Metric(Module, ABC)``: a module with ``ABCMeta``."""

    def forward(self, prediction, target):
        return (prediction - target).pow(2).mean()


def test_a_held_module_with_a_metaclass_of_its_own_converts_and_pickles():
    # A forecaster holds its loss and metrics (pytorch-forecasting's every model does):
    # PyroModule[that class] is a metaclass conflict, which blocked the whole model.
    from bayesify.runtime import pyro_module, set_prior

    net = nn.Module()
    net.rnn, net.head, net.loss = nn.GRU(1, 4), nn.Linear(4, 1), _Metric()
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    pyro_module(net)
    assert isinstance(net.loss, PyroModule) and isinstance(net.loss, _Metric)
    assert isinstance(type(net.loss), abc.ABCMeta)
    copied = pickle.loads(pickle.dumps(net))
    assert type(copied.loss) is type(net.loss)
    assert torch.equal(net.loss(torch.ones(3), torch.zeros(3)), torch.tensor(1.0))
    assert [
        name for name, site in poutine.trace(net.head).get_trace(torch.zeros(2, 4)).iter_stochastic_nodes()
    ] == ["head.weight"]


class _Scaled(nn.Module):
    def forward(self, x, weight):
        return x * weight


class _CodeGenerated(nn.Module):
    """e3nn's layers: a torch.fx GraphModule computes with a weight that the layer passes it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.main = torch.fx.symbolic_trace(_Scaled())

    def forward(self, x):
        return self.main(x, self.weight)


def test_a_held_graph_module_without_parameters_keeps_its_class_and_the_model_pickles():
    # PyroModule[GraphModule] pickled its class by reference, a class local to torch.fx: the
    # model could not be saved, copied or pickled.
    from bayesify.runtime import pyro_module, set_prior

    net = nn.Sequential(_CodeGenerated(), nn.ReLU())
    set_prior(net, "Sequential.0.weight", "Normal", 0, 1)
    pyro_module(net)
    assert isinstance(net[0].main, torch.fx.GraphModule) and not isinstance(net[0].main, PyroModule)
    for copied in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        trace = poutine.trace(copied).get_trace(torch.ones(2, 3))
        assert [name for name, _ in trace.iter_stochastic_nodes()] == ["0.weight"]
        assert trace.nodes["_RETURN"]["value"].shape == (2, 3)


class _Registered(type):
    """tltorch's ``MetaFactorizedTensor``: a metaclass of its own."""


class _Factorized(nn.Module, metaclass=_Registered):
    """tltorch's ``FactorizedTensor``: each kind registers by the name its class statement gives."""

    kinds = {}

    def __init_subclass__(cls, name, **kwargs):
        super().__init_subclass__(**kwargs)
        _Factorized.kinds[name] = cls


class _Dense(_Factorized, name="Dense"):
    def __init__(self):
        super().__init__()
        self.tensor = nn.Parameter(torch.ones(2, 3))

    def forward(self, x):
        return x @ self.tensor


class _Plain(nn.Module):
    def __init_subclass__(cls, name, **kwargs):
        super().__init_subclass__(**kwargs)


class _PlainDense(_Plain, name="Dense"):
    def __init__(self):
        super().__init__()
        self.tensor = nn.Parameter(torch.ones(2, 3))


def test_a_held_module_whose_class_statement_gave_its_init_subclass_keywords_converts():
    # neuralop's SpectralConv holds a tltorch DenseTensor as its weight: making its Pyro class
    # called __init_subclass__ without the name, and no FNO could be built, whatever the spec.
    from bayesify.runtime import pyro_module, set_prior

    net = nn.Module()
    net.spectral, net.plain = _Dense(), _PlainDense()
    set_prior(net, "**.tensor", "Normal", 0, 1)
    pyro_module(net)
    assert isinstance(net.spectral, PyroModule) and isinstance(net.spectral, _Dense)
    assert isinstance(net.plain, PyroModule) and isinstance(net.plain, _PlainDense)
    assert _Factorized.kinds == {"Dense": _Dense}  # the Pyro class is no new kind
    trace = poutine.trace(net.spectral).get_trace(torch.zeros(4, 2))
    assert [name for name, _ in trace.iter_stochastic_nodes()] == ["spectral.tensor"]
    assert _Dense.__init_subclass__.__func__ is _Factorized.__dict__["__init_subclass__"].__func__


class _Policy(nn.Module):
    """stable-baselines3's policies build their optimizer in ``__init__``."""

    def __init__(self):
        super().__init__()
        self.q_net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)


def test_an_optimizer_built_over_parameters_the_spec_replaces_is_warned_of():
    # DQN.learn trained the replaced tensors for 15,000 steps, every call drawing the random
    # weights from their prior: the agent ended at chance, and nothing said why.
    from bayesify.runtime import pyro_module, set_prior

    policy = _Policy()
    set_prior(policy, "nn.Linear.weight", "Normal", 0, 1)
    with pytest.warns(
        UserWarning, match=r"the model holds as 'optimizer' was built over 2 parameters that the spec"
    ):
        pyro_module(policy)
    untouched = _Policy()
    set_prior(untouched, "_Policy.absent.weight", "Normal", 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyro_module(untouched)


def test_inherited_layer_parameters_get_priors():
    layers = load("inherited_layer", "layers.py")
    masked = layers.MaskedLinear(3, 2)
    assert sites(masked, torch.zeros(4, 3)) == [("weight", "sample", (2, 3)), ("bias", "param", (2,))]
    assert pyro.get_param_store().get_param("bias").abs().max() < 1
    attention = layers.SelfAttention(4, 2)
    kinds = {name: kind for name, kind, _ in sites(attention, torch.zeros(3, 4))}
    assert kinds["out_proj.weight"] == "sample" and kinds["in_proj_weight"] == "param"


def test_an_entry_whose_target_is_absent_in_this_configuration_leaves_the_model_as_it_is():
    from bayesify.runtime import pyro_module, set_prior

    net = PyroModule()
    net.fc = PyroModule[nn.Linear](2, 2, bias=False)
    net.head = nn.Identity()
    set_prior(net, "Net.fc.bias", "Normal", 0, 1)
    set_prior(net, "Net.head.weight", "Normal", 0, 1)
    pyro_module(net)
    assert [name for name, _ in net.named_parameters()] == ["fc.weight"]


def test_containers_keep_their_order_around_empty_slots():
    # x-transformers keeps each layer's norms as ModuleList([pre_norm, None, None]) and unpacks
    # it by iteration: re-registered after the empty slots, the pre-norm ran as a post-norm.
    from bayesify.runtime import pyro_module, set_prior

    net = PyroModule()
    net.norms = nn.ModuleList([nn.LayerNorm(2), None, nn.Linear(2, 2)])
    net.blocks = nn.ModuleDict({"a": nn.Linear(2, 2), "b": None, "c": nn.Tanh()})
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    pyro_module(net)
    assert [type(module) for module in net.norms] == [
        PyroModule[nn.LayerNorm],
        type(None),
        PyroModule[nn.Linear],
    ]
    assert list(net.blocks) == ["a", "b", "c"]
    assert [name for name, _ in net.named_parameters()] == [
        "norms.0.weight",
        "norms.0.bias",
        "norms.2.bias",
        "blocks.a.bias",
    ]


class _UnitRows(nn.Module):
    def forward(self, weight):
        return weight / weight.norm(dim=-1, keepdim=True)


def test_a_parametrized_weight_is_selected_by_the_layers_name_for_it():
    # vit-pytorch's nViT normalizes its Linear weights with torch's parametrize: the layer
    # holds no `weight`, and `nn.Linear.weight` selected nothing.
    from torch.nn.utils import parametrize

    from bayesify.runtime import load_deterministic, pyro_module, set_prior

    def net():
        held = nn.Module()
        held.fc = nn.Linear(4, 3)
        parametrize.register_parametrization(held.fc, "weight", _UnitRows())
        return held

    deterministic, bayesian = net(), net()
    set_prior(bayesian, "nn.Linear.weight", "Normal", 0, 1)
    pyro_module(bayesian)
    values = load_deterministic(bayesian, deterministic.state_dict())
    assert list(values) == ["fc.parametrizations.weight.original"]
    trace = poutine.trace(bayesian.fc).get_trace(torch.ones(2, 4))
    drawn = trace.nodes["fc.parametrizations.weight.original"]["value"]
    assert torch.allclose(
        trace.nodes["_RETURN"]["value"], torch.ones(2, 4) @ _UnitRows()(drawn).T + bayesian.fc.bias
    )
    with poutine.condition(data=values):
        assert torch.allclose(bayesian.fc(torch.ones(2, 4)), deterministic.fc(torch.ones(2, 4)))


def test_a_layer_built_only_sometimes_gets_its_prior_when_it_is_there():
    from bayesify.runtime import pyro_module, set_prior

    with_layer, without = PyroModule(), PyroModule()
    with_layer.expand = PyroModule[nn.Linear](2, 2)
    for net in (with_layer, without):
        set_prior(net, "Block.expand.weight", "Normal", 0, 1)
        pyro_module(net)
    assert "weight" in with_layer.expand._pyro_samples
    assert list(without.parameters()) == []


def test_a_constraint_its_initial_value_breaks_fails_construction_by_name():
    from bayesify.runtime import pyro_module, set_constraint

    layer = PyroModule[nn.Linear](3, 2)
    with torch.no_grad():
        layer.bias.fill_(-1.0)
    set_constraint(layer, "Head.bias", constraints.positive)
    with pytest.raises(ValueError, match="'Head.bias' constrains PyroLinear.bias"):
        pyro_module(layer)


def test_a_layer_subclass_without_init_gets_one_that_sets_its_priors():
    ScaledLinear = load("inherited_layer", "layers.py").ScaledLinear
    layer = ScaledLinear(3, 2, bias=False)
    assert sites(layer, torch.zeros(4, 3)) == [("weight", "sample", (2, 3))]


def test_bases_that_are_no_modules_or_bring_a_metaclass_or_are_generic_build_and_train(monkeypatch):
    """diffusers' nn.Parameter subclass stays a parameter, monai's ABCMeta interfaces and
    kornia's Generic module bases are combined with PyroModule's metaclass at import."""
    (mixins,) = _import_fresh(monkeypatch, FIXTURES / "foreign_bases" / "expected", "mixins")
    from mixins.interfaces import Encoder, Named
    from mixins.nets import Config, Configured, Enc, Head, QParam

    assert issubclass(QParam, nn.Parameter) and not issubclass(QParam, nn.Module)
    encoder = Enc(3)
    assert all(isinstance(encoder, base) for base in (PyroModule, Encoder, Named))
    assert encoder.describe() == "Enc"
    assert isinstance(encoder.offset, QParam)
    unfinished_bases = (mixins.nets.Net, Encoder)
    unfinished = pyro_metaclass_of(*unfinished_bases)("Unfinished", unfinished_bases, {})
    with pytest.raises(TypeError, match="abstract"):  # the interface is still enforced
        unfinished(3)
    assert sorted(sites(encoder.encode, torch.ones(2, 3))) == [
        ("offset", "param", (3,)),
        ("weight", "sample", (3,)),
    ]
    assert Configured[Config].__origin__ is Configured
    head = Head(Config())
    assert isinstance(head, PyroModule) and sites(head, torch.ones(3)) == [("bias", "sample", (3,))]
    for model in (encoder.encode, head):
        losses = svi_losses(model, 2, torch.ones(2, 3))
        assert all(math.isfinite(loss) for loss in losses)


def test_modules_built_by_helpers_inherited_or_attached_by_name_get_their_priors(monkeypatch):
    """monai's idioms: a head built by a helper defined after ``__init__`` (SegResNetVAE), a
    subclass naming the head its base builds (GlobalNet), ``add_module``/``setattr`` layers of
    an ``nn.Sequential`` subclass (FullyConnectedNet), the layers of a block built and thrown
    away (Quicknat); the subclass's own entry wins there."""
    _import_fresh(monkeypatch, FIXTURES / "built_by_helpers" / "expected", "blocks")
    from blocks import Encoder, Stack, Tuned, Unwrapped

    def scales(model):
        pyro.clear_param_store()
        trace = poutine.trace(model).get_trace(torch.ones(3))
        return {
            name: site["fn"].base_dist.scale.unique().item()
            for name, site in trace.nodes.items()
            if site["type"] == "sample"
        }

    assert scales(Encoder(3)) == {"head.weight": 1.0, "extra.0.weight": 1.0}
    assert scales(Tuned(3)) == {"head.weight": 0.5, "extra.0.weight": 1.0}
    assert scales(Stack(3)) == {"output.weight": 1.0}
    # The layers of blocks built and thrown away in __init__ keep the names the model gives them.
    assert scales(Unwrapped(3)) == {"layers.0.weight": 1.0, "layers.1.weight": 1.0}
    assert all(math.isfinite(loss) for loss in svi_losses(Tuned(3), 2, torch.ones(2, 3)))


@pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated")
def test_torchscript_interfaces_stay_plain_modules_and_their_implementations_train(monkeypatch):
    """monai's ``@torch.jit.interface class CellInterface(torch.nn.Module)``, however
    ``interface`` is spelled: TorchScript refuses it any other base, so it stays as written
    and the modules that implement it become ``PyroModule[CellInterface]``."""
    _import_fresh(monkeypatch, FIXTURES / "foreign_bases" / "expected", "mixins")
    from mixins.scripted import Cell, CellInterface, HeadInterface, Stem, StemInterface

    for interface in (CellInterface, StemInterface, HeadInterface):
        assert interface.__bases__ == (nn.Module,) and hasattr(interface, "__torch_script_interface__")
    stem = Stem(3)
    assert isinstance(stem.cell, PyroModule) and isinstance(stem.cell, CellInterface)
    assert sites(stem, torch.ones(3)) == [("cell.weight", "sample", (3,))]
    assert sites(Cell(3), torch.ones(3), torch.ones(3)) == [("weight", "sample", (3,))]
    assert all(math.isfinite(loss) for loss in svi_losses(stem, 2, torch.ones(2, 3)))
