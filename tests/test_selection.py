"""Selection on the models users build: layer types, any depth, absent targets, shared and tied
parameters, compared with what a Pyro user does by hand at run time (``to_pyro_module_`` and a
``PyroSample`` on every Linear and Conv weight)."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from pyro.nn import PyroSample
from pyro.nn.module import to_pyro_module_
from test_execution import FIXTURES, load, sites, svi_losses

from bayesify.cli import main
from bayesify.runner import run_source
from bayesify.runtime.built import parameters
from bayesify.selectors import match_path, parse
from bayesify.spec import parse_spec

X = torch.randn(3, 4, 4)


def rewritten(tmp_path, spec_text: str, name: str, source: bytes = b""):
    """``source`` (the selection fixture's input) rewritten with ``spec_text``, imported as ``name``."""
    source = source or (FIXTURES / "selection" / "input" / "zoo.py").read_bytes()
    result = run_source(source, parse_spec(spec_text))
    assert not result.failed and not result.unmatched, (result.failed, result.unmatched)
    path = tmp_path / f"{name}.py"
    path.write_bytes(result.results[0].rewritten)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def by_hand(model: nn.Module, scale: float) -> nn.Module:
    """The run-time baseline: every Linear and Conv weight random, the rest Pyro params."""
    to_pyro_module_(model)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            shape = module.weight.shape
            module.weight = PyroSample(dist.Normal(0.0, scale).expand(shape).to_event(len(shape)))
    return model


def regression(net):
    def model(x, y=None):
        out = net(x)
        with pyro.plate("rows", out.shape[0]):
            return pyro.sample("y", dist.Normal(out, 1.0).to_event(1), obs=y)

    return model


@pytest.mark.parametrize(
    "spec",
    ["nn.Linear.weight: Normal(0, 0.1)\n  nn.Conv*.weight: Normal(0, 0.1)", "nn.*.weight: Normal(0, 0.1)"],
)
@pytest.mark.parametrize("build", ["Net", "Sized"])
def test_every_linear_and_conv_weight_by_type_equals_the_run_time_baseline(tmp_path, spec, build):
    ours_module = rewritten(tmp_path, f"version: 1\npriors:\n  {spec}\n", f"by_type_{build}_{len(spec)}")
    deterministic = load("selection", "zoo.py", "input")
    torch.manual_seed(0)
    ours = getattr(ours_module, build)()
    torch.manual_seed(0)
    theirs = by_hand(getattr(deterministic, build)(), 0.1)
    y = torch.randn(3, 1 if build == "Sized" else 3)
    assert sites(regression(ours), X, y) == sites(regression(theirs), X, y)
    assert svi_losses(regression(ours), 3, X, y) == svi_losses(regression(theirs), 3, X, y)


def test_the_fixture_spec_builds_every_configuration_with_exactly_the_intended_sites():
    zoo = load("selection", "zoo.py")
    net = zoo.Net()
    kinds = {name: (kind, shape) for name, kind, shape in sites(net, X)}
    random = {name for name, (kind, _) in kinds.items() if kind == "sample"}
    # The shared layer is one site, named where Pyro names it; each Conv and Linear weight is
    # random; the head's weight by `**.fc.weight`, though it was assigned by tuple unpacking.
    assert random == {
        "blocks.1.shared.weight",
        "blocks.0.conv.weight",
        "blocks.1.conv.weight",
        "fc.weight",
        "project_out.weight",
        "bias",
        "fc.bias",
        "blocks.0.norm.weight",
        "blocks.1.norm.weight",
    }
    decided = deciding_entries(net)
    assert decided["fc.weight"] == "**.fc.weight"
    assert decided["project_out.weight"] == "Net.project_out.weight"
    assert decided["blocks.1.shared.weight"] == "nn.Linear.weight"  # the shared layer, also held as pos
    # In NormAct, `*.*.weight` finds nothing below (its act has no weight), and that is fine;
    # in Block, it selects NormAct's own weight (Block.norm.weight).
    assert decided["blocks.0.norm.weight"] == "*.*.weight"
    # project=False: the head is an nn.Identity(), and Net.project_out.weight selects nothing.
    assert "project_out.weight" not in {name for name, _, _ in sites(zoo.Net(project=False), X)}


def deciding_entries(net):
    """The spec entry that decided each parameter, by site name, as ``plan --build`` lists it."""
    return {row["name"]: row["selector"] for row in parameters(net)}


def test_a_tied_parameter_is_one_sample_in_both_places():
    zoo = load("selection", "zoo.py")
    net = zoo.Net()
    trace = pyro.poutine.trace(net).get_trace(X)
    assert torch.equal(trace.nodes["fc.bias"]["value"], trace.nodes["bias"]["value"])
    assert trace.nodes["bias"]["fn"].event_shape == (3,)


def test_a_backbone_run_in_its_parents_init_builds_traces_and_trains():
    zoo = load("selection", "zoo.py")
    losses = svi_losses(regression(zoo.Sized()), 3, X, torch.randn(3, 1))
    assert all(math.isfinite(loss) for loss in losses)
    names = {name for name, kind, _ in sites(zoo.Sized(), X) if kind == "sample"}
    assert {"head.weight", "backbone.fc.weight", "backbone.blocks.0.conv.weight"} <= names


def test_a_base_with_a_metaclass_keeps_its_abstract_methods():
    zoo = load("selection", "zoo.py")
    with pytest.raises(TypeError, match="abstract"):
        zoo.LazyDistribution()
    assert {name for name, kind, _ in sites(zoo.Gaussian(), X) if kind == "sample"} == {"loc.weight"}


def test_the_first_entry_of_the_spec_wins_across_nested_classes(tmp_path):
    # Block notes `Block.conv.weight` (later in the spec); Net notes `**.conv.weight` (earlier):
    # the earlier one decides, though Block's __init__ ends first.
    spec = (
        "version: 1\npriors:\n  '**.conv.weight': Normal(0, 0.3)\n  Block.conv.weight: Normal(0, 2)\n"
        "  Block.shared.weight: Normal(0, 1)\n"
    )
    module = rewritten(tmp_path, spec, "first_wins")
    net = module.Net()
    assert deciding_entries(net)["blocks.0.conv.weight"] == "**.conv.weight"
    trace = pyro.poutine.trace(net).get_trace(X)
    assert float(trace.nodes["blocks.0.conv.weight"]["fn"].base_dist.scale.flatten()[0]) == pytest.approx(0.3)


def test_a_head_assigned_by_tuple_unpacking_is_selected_by_a_path_glob(tmp_path):
    module = rewritten(tmp_path, "version: 1\npriors:\n  '*.fc.weight': Normal(0, 1)\n", "unpacked")
    assert {name for name, kind, _ in sites(module.Net(), X) if kind == "sample"} == {"fc.weight"}


MISSPELT = """\
version: 1
priors:
  MLPP.fc.weight: Normal(0, 1)
  MLP.nett.weight: Normal(0, 1)
  MLP.fc.wieght: Normal(0, 1)
  nn.Lienar.weight: Normal(0, 1)
  nn.Conv*.wieght: Normal(0, 1)
  Conv2d.weight: Normal(0, 1)
  nn.Linear.weight: Normal(0, 1)
  timm.layers.Conv2dSame.weight: Normal(0, 1)
"""


def test_a_misspelt_selector_is_an_error_with_a_did_you_mean():
    source = (
        b"from torch import nn\n\nclass MLP(nn.Module):\n    def __init__(self):\n"
        b"        super().__init__()\n        self.net = nn.Sequential()\n        self.fc = nn.Linear(2, 2)\n"
    )
    result = run_source(source, parse_spec(MISSPELT))
    hints = {entry.selector.text: result.hints[entry.line] for entry in result.unmatched}
    assert hints == {
        "MLPP.fc.weight": "; did you mean 'MLP'?",
        "MLP.nett.weight": "; did you mean 'net'?",
        "MLP.fc.wieght": "; did you mean 'weight'?",
        "nn.Lienar.weight": "; did you mean 'nn.Linear'?",
        "nn.Conv*.wieght": "; did you mean 'weight'?",
        # no class of the code's own: torch's layer, which is written with `nn.`
        "Conv2d.weight": "; did you mean 'nn.Conv2d.weight', which selects every torch.nn.Conv2d?",
    }  # a layer type that can select, and another library's layer, are no error


RECURRENT = b"""\
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 3, num_layers=2, bidirectional=True, proj_size=2)

    def forward(self, x):
        return self.rnn(x)[0]
"""


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_parameters_numbered_by_a_recurrent_layers_arguments_are_selected(tmp_path):
    """``weight_ih_l1`` exists only in a two-layer LSTM, ``*_reverse`` in a bidirectional one,
    ``weight_hr_l0`` with proj_size: the static check knows them as patterns, not the
    catalog's default names only; a name no LSTM has is still an error."""
    spec = (
        "version: 1\npriors:\n  nn.LSTM.weight_ih_l1: Normal(0, 1)\n"
        "  Tagger.rnn.weight_hh_l1_reverse: Normal(0, 1)\n  '**.weight_hr_l0': Normal(0, 1)\n"
    )
    module = rewritten(tmp_path, spec, "recurrent", RECURRENT)
    built = sites(module.Tagger(), torch.ones(5, 1, 4))
    assert {name: shape for name, kind, shape in built if kind == "sample"} == {
        "rnn.weight_ih_l1": (12, 4),
        "rnn.weight_hh_l1_reverse": (12, 2),
        "rnn.weight_hr_l0": (2, 3),
    }
    misspelt = (
        "version: 1\npriors:\n  nn.LSTM.weight_ih_x1: Normal(0, 1)\n  Tagger.rnn.weight_ih_x1: Normal(0, 1)\n"
    )
    unmatched = run_source(RECURRENT, parse_spec(misspelt)).unmatched
    assert [entry.selector.text for entry in unmatched] == ["nn.LSTM.weight_ih_x1", "Tagger.rnn.weight_ih_x1"]


COMPOSITE = b"""\
from torch import nn


class Encoder(nn.TransformerEncoderLayer):
    def __init__(self):
        super().__init__(d_model=4, nhead=2, dim_feedforward=8)


class Attending(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2)

    def forward(self, x):
        return self.attn(x, x, x)[0]
"""


GENERATOR = b"""\
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(x)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()  # the random weights are a block's, not the decoder's own

    def forward(self, x):
        return self.block(x)

    def generate(self, x, steps):
        return torch.stack([self(x) for _ in range(steps)])
"""


def test_a_method_that_runs_the_module_a_step_at_a_time_reads_one_draw_of_the_weights(tmp_path):
    """nanoGPT's generate() calls the model once a token: each call drew new weights from the
    prior (82% of a trial's transitions impossible)."""
    module = rewritten(
        tmp_path, "version: 1\npriors:\n  nn.Linear.weight: Normal(0, 1)\n", "generator", GENERATOR
    )
    decoder, x = module.Decoder(), torch.ones(3)
    first, second = decoder.generate(x, 4), decoder.generate(x, 4)
    assert all(torch.equal(step, first[0]) for step in first)  # one draw in a call
    assert not torch.equal(first[0], second[0])  # another in the next
    trace = pyro.poutine.trace(decoder.generate).get_trace(x, 4)  # one site, traceable
    assert [name for name, site in trace.nodes.items() if site["type"] == "sample"] == ["block.head.weight"]


def test_the_plan_selects_by_type_inside_torchs_composite_layers_as_the_built_model_does(tmp_path):
    """MultiheadAttention's out_proj and a TransformerEncoderLayer's linear1 are nn.Linear
    layers made inside torch's own __init__: the plan (and the rewrite's count) said
    "deterministic" for them while ``nn.Linear.weight`` made them random in the built model."""
    spec = "version: 1\npriors:\n  nn.Linear.weight: Normal(0, 1)\n"
    result = run_source(COMPOSITE, parse_spec(spec))
    planned = {site.name for site in result.sites if site.entry is not None}
    module = rewritten(tmp_path, spec, "composite", COMPOSITE)
    x = torch.ones(3, 1, 4)
    for name, model in (("Encoder", module.Encoder()), ("Attending", module.Attending())):
        built = {f"{name}.{site}" for site, kind, _ in sites(model, x) if kind == "sample"}
        assert built == {site for site in planned if site.startswith(f"{name}.")}
    assert "Encoder.self_attn.out_proj.weight" in planned and "Attending.attn.out_proj.weight" in planned


WITHOUT_SOME = b"""\
from torch import nn


class Head(nn.Module):
    def __init__(self, config, tied):
        super().__init__()
        self.lm_head = nn.Linear(4, 2, bias=False)
        self.proj = nn.Linear(4, 2, bias=config.bias)
        self.norm = nn.LayerNorm(4, elementwise_affine=False)
        self.out = nn.Linear(4, 2, bias=False) if tied else nn.Linear(4, 2)
"""


def test_the_plan_lists_no_parameter_a_layer_is_built_without():
    """nanoGPT's ``lm_head = nn.Linear(…, bias=False)``: the plan (and ``init``'s starter spec)
    listed an lm_head.bias the model never has."""
    result = run_source(WITHOUT_SOME, parse_spec("version: 1\npriors:\n  '**.bias': Normal(0, 1)\n"))
    assert {site.name for site in result.sites} == {
        "Head.lm_head.weight",
        "Head.proj.weight",
        "Head.proj.bias",  # config.bias: known when built
        "Head.out.weight",
        "Head.out.bias",  # built with a bias in one branch
    }
    namespace = {}
    exec(WITHOUT_SOME, namespace)  # the model as written, with the biases that may be there
    head = namespace["Head"](config=type("Config", (), {"bias": True}), tied=False)
    assert {f"Head.{name}" for name, _ in head.named_parameters()} == {site.name for site in result.sites}


KEYED = b"""\
from torch import nn


class GPT(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(wte=nn.Embedding(10, n), drop=nn.Dropout(0.1), ln_f=nn.LayerNorm(n, bias=False))
        )
        self.heads = nn.ModuleDict({"a": nn.Linear(n, 2), "b": nn.Linear(n, 3, bias=False)})
        self.mlp = nn.Sequential(nn.Linear(n, n, bias=False), nn.ReLU(), nn.Linear(n, 1))
"""


def test_the_plan_lists_the_layers_of_a_module_dict_built_from_dict_call():
    """nanoGPT's and minGPT's ``transformer = nn.ModuleDict(dict(wte=…, ln_f=…))``: the static
    plan listed none of its parameters, and listed biases its containers' layers are built
    without."""
    result = run_source(
        KEYED, parse_spec("version: 1\npriors:\n  '**.weight': Normal(0, 1)\n  '**.bias': Normal(0, 1)\n")
    )
    namespace = {}
    exec(KEYED, namespace)
    built = namespace["GPT"](n=4)
    assert {site.name for site in result.sites} == {f"GPT.{name}" for name, _ in built.named_parameters()}


@pytest.mark.parametrize(
    "text, kind, owner, path",
    [
        ("Net.fc.weight", "class", "Net", ("fc", "weight")),
        ("nn.Conv*.weight", "type", "torch.nn.Conv*", ("weight",)),
        ("torch.nn.Linear.bias", "type", "torch.nn.Linear", ("bias",)),
        ("timm.layers.Conv2dSame.weight", "type", "timm.layers.Conv2dSame", ("weight",)),
        ("**.fc.weight", "any", "**", ("fc", "weight")),
        ("ResNet.**.weight", "class", "ResNet", ("**", "weight")),
    ],
)
def test_selector_forms(text, kind, owner, path):
    selector = parse(text)
    assert (selector.kind, selector.owner, selector.path) == (kind, owner, path)


def test_any_depth_matches_zero_or_more_segments():
    assert match_path(("**", "weight"), ("weight",))
    assert match_path(("**", "fc", "weight"), ("layer", "0", "fc", "weight"))
    assert not match_path(("**", "fc", "weight"), ("fc", "bias"))
    assert match_path(("layers", "**"), ("layers", "0", "conv", "weight"))


def test_plan_build_lists_the_built_models_sites_and_the_entries_that_select_nothing(tmp_path, monkeypatch):
    shutil.copytree(FIXTURES / "selection" / "input", tmp_path / "models")
    (tmp_path / "models" / "__init__.py").write_text("")
    shutil.copy(FIXTURES / "selection" / "priors.yaml", tmp_path / "priors.yaml")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["plan", "models", "--priors", "priors.yaml", "--build", "models.zoo:Net(project=False)"]
    )
    assert result.exit_code == 0, result.output
    built = result.output.split("\n\n", 1)[1].splitlines()
    assert built[0] == "built models.zoo:Net (Net): 7 random, 0 constrained, 3 deterministic"
    rows = {line.split()[0]: line for line in built[2:] if not line.startswith("priors.yaml")}
    assert "(**.fc.weight)" in rows["fc.weight"] and "tied: reads bias" in rows["fc.bias"]
    assert rows["blocks.0.conv.bias"].endswith("deterministic")
    assert built[-1] == "priors.yaml:5: Net.project_out.weight: selects nothing in the built model"
    assert (tmp_path / "models" / "zoo.py").read_bytes() == (
        FIXTURES / "selection" / "input" / "zoo.py"
    ).read_bytes()


def test_plan_build_names_another_librarys_namesake_that_a_torch_layer_type_misses(tmp_path, monkeypatch):
    """PyTorch Geometric keeps GCNConv's weight in its own ``Linear``, no ``nn.Linear``:
    ``nn.Linear.weight`` leaves it deterministic, which the build says with the entry that
    selects it; that entry does."""
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "__init__.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Linear(nn.Module):\n"
        "    def __init__(self, n, m):\n        super().__init__()\n"
        "        self.weight = nn.Parameter(torch.zeros(m, n))\n"
    )
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\nimport graphs\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.lin = graphs.Linear(3, 2)\n        self.fc = nn.Linear(2, 2)\n"
        '        print("number of parameters: 12")\n'  # as nanoGPT's GPT does: not the build's report
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def built(spec: str) -> list[str]:
        (tmp_path / "priors.yaml").write_text(f"version: 1\npriors:\n{spec}")
        result = CliRunner().invoke(
            main, ["plan", "net.py", "--priors", "priors.yaml", "--build", "net:Net()"]
        )
        assert result.exit_code == 0, result.output
        return result.output.split("\n\n", 1)[1].splitlines()

    by_torch_type = built("  nn.Linear.weight: Normal(0, 1)\n")
    assert by_torch_type[0] == "built net:Net (Net): 1 random, 0 constrained, 2 deterministic"
    assert by_torch_type[-1] == (
        "priors.yaml:3: nn.Linear.weight: the model holds graphs.Linear, which is no torch.nn layer and stays "
        "deterministic; to select it, add 'graphs.Linear.weight'"
    )
    both = built("  nn.Linear.weight: Normal(0, 1)\n  graphs.Linear.weight: Normal(0, 1)\n")
    assert both[0] == "built net:Net (Net): 2 random, 0 constrained, 1 deterministic"
    assert not any("no torch.nn layer" in line for line in both)


DEEP = """\
from torch import nn


def stack(width, depth):
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])


class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = stack(3, 2)
        self.fc = nn.Linear(3, 1)
"""


@pytest.mark.parametrize(
    "later, shadowed",
    [
        # Decided when built: the rewrite cannot see what stack() returns.
        ("Deep.layers.*.weight", "layers.0.weight"),
        # Planned by the rewrite, which leaves the later entry out of the code.
        ("Deep.fc.weight", "Deep.fc.weight"),
    ],
)
def test_plan_build_tells_an_entry_an_earlier_one_overrides_from_one_that_selects_nothing(
    tmp_path, monkeypatch, later, shadowed
):
    (tmp_path / "deep.py").write_text(DEEP)
    (tmp_path / "priors.yaml").write_text(
        f"version: 1\npriors:\n  nn.Linear.weight: Normal(0, 1)\n  {later}: Normal(0, 0.1)\n"
        "  Deep.head.weight: Normal(0, 1)\n"
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["plan", "deep.py", "--priors", "priors.yaml", "--allow-unmatched", "--build", "deep:Deep()"]
    )
    assert result.exit_code == 0, result.output
    assert (
        f"priors.yaml:4: {later}: selects only what an earlier entry decides ({shadowed} by priors.yaml:3)"
        in (result.output)
    )
    assert "priors.yaml:5: Deep.head.weight: selects nothing in the built model" in result.output


HELD = """\
from torch import nn


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


class Agent(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = Head()


def head():
    return Agent().head
"""


def test_plan_build_of_a_network_another_module_holds_names_the_entries_that_decided_it(
    tmp_path, monkeypatch
):
    # A factory returning SB3's policy.q_net: its sites were listed random, "selected by -",
    # and its entry said to select nothing in the built model.
    (tmp_path / "held.py").write_text(HELD)
    (tmp_path / "priors.yaml").write_text("version: 1\npriors:\n  Head.fc.weight: Normal(0, 1)\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["plan", "held.py", "--priors", "priors.yaml", "--build", "held:head()"]
    )
    assert result.exit_code == 0, result.output
    built = result.output.split("\n\n", 1)[1].splitlines()
    assert built[2].split() == [
        "head.fc.weight",
        "(2,",
        "3)",
        "priors.yaml:3",
        "(Head.fc.weight)",
        "random:",
        "Normal(0,",
        "1)",
    ]
    assert "selects nothing" not in result.output


SUBCLASS = """\
import torch
from torch import nn


class TensorProduct(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))


class FullyConnectedTensorProduct(TensorProduct):  # e3nn's: it only configures its base
    def __init__(self, n):
        super().__init__(n)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.tp = FullyConnectedTensorProduct(3)
"""


def test_plan_build_credits_a_base_classs_entry_with_the_parameter_a_subclass_inherits(tmp_path, monkeypatch):
    # e3nn's FullyConnectedTensorProduct: its weight, random by the TensorProduct entry, was
    # listed "selected by -", and that entry as selecting nothing in the built model.
    (tmp_path / "tp.py").write_text(SUBCLASS)
    (tmp_path / "priors.yaml").write_text("version: 1\npriors:\n  TensorProduct.weight: Normal(0, 1)\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "tp.py", "--priors", "priors.yaml", "--build", "tp:Net()"])
    assert result.exit_code == 0, result.output
    built = result.output.split("\n\n", 1)[1].splitlines()
    assert built[2].split()[:4] == ["tp.weight", "(3,)", "priors.yaml:3", "(TensorProduct.weight)"]
    assert "selects nothing" not in result.output


def test_plan_build_refuses_a_module_that_is_not_the_rewritten_one(tmp_path, monkeypatch):
    (tmp_path / "net.py").write_bytes((FIXTURES / "selection" / "input" / "zoo.py").read_bytes())
    monkeypatch.chdir(tmp_path)
    bad_call = CliRunner().invoke(main, ["plan", "net.py", "--build", "net:Net(x=print)"])
    assert bad_call.exit_code == 2 and "literal" in bad_call.output
    elsewhere = CliRunner().invoke(main, ["plan", "net.py", "--build", "json:loads('1')"])
    assert elsewhere.exit_code == 123 and "not from the files of the run" in elsewhere.output


def test_plan_build_names_the_python_that_lacked_a_dependency(tmp_path, monkeypatch):
    # A project's dependencies (einops) in its own environment, bayesify run from another.
    (tmp_path / "net.py").write_text("import only_in_the_projects_environment\nfrom torch import nn\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "net.py", "--build", "net:Net()"])
    assert result.exit_code == 123 and "No module named 'only_in_the_projects_environment'" in result.output
    assert f"built by {sys.executable}" in result.output and "-m bayesify plan --build" in result.output


TIED_BY_A_METHOD = b"""\
import torch
from torch import nn


class LM(nn.Module):
    _tied_weights_keys = {"norm.weight": "scale", "head.weight": "embed.weight"}

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.scale = nn.Parameter(torch.ones(4))
        self.tie_weights()

    def tie_weights(self):
        self.norm.weight = self.scale
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids)))
"""


def test_parameters_a_method_ties_by_name_stay_tied(tmp_path):
    spec = "version: 1\npriors:\n  LM.scale: LogNormal(0, 0.1)\n  nn.Embedding.weight: Normal(0, 1)\n"
    module = rewritten(tmp_path, spec, "tied_lm", TIED_BY_A_METHOD)
    # A file that ties weights by name keeps its parameters until the model is built.
    assert "self.scale = nn.Parameter(torch.ones(4))" in Path(module.__file__).read_text()
    trace = pyro.poutine.trace(module.LM()).get_trace(torch.tensor([[1, 2]]))
    assert torch.equal(trace.nodes["norm.weight"]["value"], trace.nodes["scale"]["value"])
    assert torch.equal(trace.nodes["head.weight"]["value"], trace.nodes["embed.weight"]["value"])
    assert trace.nodes["scale"]["fn"].base_dist.__class__.__name__ == "LogNormal"
