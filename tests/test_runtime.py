"""The runtime that rewritten code imports, checked against hand-written Pyro.

Each ``Rewritten*`` module is what the rewriter emits; each ``Hand*`` module is the
same model written by hand as in Pyro's "Modules in Pyro" tutorial, and each
``Deterministic*`` module is the plain PyTorch model a checkpoint comes from.
Modules live at module level so that pickle can find their classes.
"""

import copy
import io
import pickle
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn as nn
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from bayesify.runtime import PRIOR_ANCHOR, Prior, load_deterministic, pyro_module, set_prior

IN_SIZE, OUT_SIZE, N_DATA = 5, 2, 30


class LinearForward(PyroModule):
    def forward(self, input_):
        return self.gate * (self.bias + input_ @ self.weight)


class RewrittenLinear(LinearForward):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.weight = PyroSample(Prior(self, "Normal", 0, 1, shape=(in_size, out_size)))
        self.bias = PyroSample(Prior(self, "LogNormal", 0, 1, shape=(out_size,)))
        self.gate = PyroParam(torch.rand(out_size), constraint=constraints.interval(0, 1))


class HandLinear(LinearForward):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.weight = PyroSample(dist.Normal(0, 1).expand([in_size, out_size]).to_event(2))
        self.bias = PyroSample(dist.LogNormal(0, 1).expand([out_size]).to_event(1))
        self.gate = PyroParam(torch.rand(out_size), constraint=constraints.interval(0, 1))


class RegressorForward(PyroModule):
    def forward(self, input_, output=None):
        obs_loc = self.linear(input_) + self.offset
        obs_scale = self.obs_scale
        with pyro.plate("instances", len(input_)):
            return pyro.sample("obs", dist.Normal(obs_loc, obs_scale).to_event(1), obs=output)


class RewrittenRegressor(RegressorForward):
    def __init__(self, in_size=IN_SIZE, out_size=OUT_SIZE):
        super().__init__()
        self.linear = RewrittenLinear(in_size, out_size)
        self.offset = nn.Parameter(torch.zeros(out_size))
        self.obs_scale = PyroSample(Prior(self, "LogNormal", 0, 1))


class HandRegressor(RegressorForward):
    def __init__(self, in_size=IN_SIZE, out_size=OUT_SIZE):
        super().__init__()
        self.linear = HandLinear(in_size, out_size)
        self.offset = nn.Parameter(torch.zeros(out_size))
        self.obs_scale = PyroSample(dist.LogNormal(0, 1))


class DeterministicLinear(nn.Module):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_size, out_size))
        self.bias = nn.Parameter(torch.randn(out_size).exp())
        self.gate = nn.Parameter(torch.rand(out_size))


class DeterministicRegressor(nn.Module):
    def __init__(self, in_size=IN_SIZE, out_size=OUT_SIZE):
        super().__init__()
        self.linear = DeterministicLinear(in_size, out_size)
        self.offset = nn.Parameter(torch.randn(out_size))
        self.obs_scale = nn.Parameter(torch.tensor(0.5))


class HierForward(PyroModule):
    def forward(self, data):
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(self.x, 1.0).to_event(1), obs=data)
        return self.x


class RewrittenHier(HierForward):
    def __init__(self):
        super().__init__()
        self.loc = PyroSample(Prior(self, "Normal", 0, 1, shape=(3,)))
        self.scale = nn.Parameter(torch.ones(3))
        self.x = PyroSample(Prior(self, "Normal", "loc", "scale", shape=(3,)))


class HandHier(HierForward):
    def __init__(self):
        super().__init__()
        self.loc = PyroSample(dist.Normal(0, 1).expand([3]).to_event(1))
        self.scale = nn.Parameter(torch.ones(3))
        self.x = PyroSample(lambda self: dist.Normal(self.loc, self.scale).to_event(1))


class TutorialForward(PyroModule):
    def forward(self):
        return self.x


class RewrittenTutorialModel(TutorialForward):
    def __init__(self):
        super().__init__()
        self.dof = PyroSample(Prior(self, "Gamma", 3, 1))
        self.loc = PyroSample(Prior(self, "Normal", 0, 1))
        self.scale = PyroSample(Prior(self, "InverseGamma", "dof", 1))
        self.x = PyroSample(Prior(self, "Normal", "loc", "scale"))


class TutorialModel(TutorialForward):
    """The hierarchical model of the tutorial, verbatim."""

    def __init__(self):
        super().__init__()
        self.dof = PyroSample(dist.Gamma(3, 1))
        self.loc = PyroSample(dist.Normal(0, 1))
        self.scale = PyroSample(lambda self: dist.InverseGamma(self.dof, 1))
        self.x = PyroSample(lambda self: dist.Normal(self.loc, self.scale))


@pytest.fixture(autouse=True)
def fresh_param_store():
    # PyroModules sync their parameters with the global param store by site name,
    # and the rewritten and hand-written twins share site names.
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def regression_data(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_DATA, IN_SIZE, generator=generator, dtype=dtype)
    y = x @ torch.randn(IN_SIZE, OUT_SIZE, generator=generator, dtype=dtype) + 1
    return x, y


def seeded_trace(model_class, *args, seed=1):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return poutine.trace(model_class()).get_trace(*args)


def sites(trace):
    return {
        name: (site["type"], site["value"])
        for name, site in trace.nodes.items()
        if site["type"] in ("sample", "param")
    }


def assert_same_sites(actual_trace, expected_trace):
    actual, expected = sites(actual_trace), sites(expected_trace)
    assert list(actual) == list(expected)
    for name, (site_type, value) in expected.items():
        assert actual[name][0] == site_type, name
        assert actual[name][1].shape == value.shape, name
        assert torch.equal(actual[name][1], value), name
    assert torch.equal(actual_trace.log_prob_sum(), expected_trace.log_prob_sum())


def svi_losses(model, *args, steps=20, **guide_options):
    guide = AutoNormal(model, **guide_options)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    return [svi.step(*args) for _ in range(steps)]


def seeded_svi_losses(model_class, *args, seed=2):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return svi_losses(model_class(), *args)


def sample_dtypes_and_devices(model, *args):
    trace = poutine.trace(model).get_trace(*args)
    return {
        name: (site["value"].dtype, site["value"].device)
        for name, site in trace.iter_stochastic_nodes()
        if not site_is_subsample(site)
    }


@pytest.mark.parametrize(
    "shape, hand_written",
    [
        ((5, 2), dist.Normal(0, 1).expand([5, 2]).to_event(2)),
        (torch.Size([5, 2]), dist.Normal(0, 1).expand([5, 2]).to_event(2)),
        ([5, 2], dist.Normal(0, 1).expand([5, 2]).to_event(2)),
        (4, dist.Normal(0, 1).expand([4]).to_event(1)),
        ((), dist.Normal(0, 1)),
        (None, dist.Normal(0, 1)),
    ],
)
def test_prior_is_the_hand_written_distribution(shape, hand_written):
    module = PyroModule()
    prior = Prior(module, "Normal", 0, 1, shape=shape)(module)
    assert prior.batch_shape == hand_written.batch_shape
    assert prior.event_shape == hand_written.event_shape
    pyro.set_rng_seed(0)
    expected = hand_written.sample()
    pyro.set_rng_seed(0)
    assert torch.equal(prior.sample(), expected)
    assert torch.equal(prior.log_prob(expected), hand_written.log_prob(expected))


def test_prior_takes_keyword_hyperparameters():
    module = PyroModule()
    prior = Prior(module, "Beta", concentration1=2, concentration0=3.5, shape=(2,))(module)
    assert torch.equal(prior.mean, dist.Beta(2.0, 3.5).expand([2]).to_event(1).mean)


def test_rewritten_model_samples_like_hand_written():
    x, y = regression_data()
    assert_same_sites(seeded_trace(RewrittenRegressor, x, y), seeded_trace(HandRegressor, x, y))


def test_rewritten_model_trains_like_hand_written():
    x, y = regression_data()
    losses = seeded_svi_losses(RewrittenRegressor, x, y)
    assert losses == seeded_svi_losses(HandRegressor, x, y)
    assert losses[-1] < losses[0]


def test_hierarchical_prior_is_the_tutorials_lambda():
    assert_same_sites(seeded_trace(RewrittenTutorialModel), seeded_trace(TutorialModel))


def test_hierarchical_prior_reads_sibling_sample_and_parameter():
    data = torch.randn(N_DATA, 3)
    rewritten, hand = seeded_trace(RewrittenHier, data), seeded_trace(HandHier, data)
    assert_same_sites(rewritten, hand)
    assert rewritten.nodes["scale"]["type"] == "param"
    assert seeded_svi_losses(RewrittenHier, data) == seeded_svi_losses(HandHier, data)


def test_hierarchical_prior_follows_its_sibling():
    model = RewrittenHier()
    with torch.no_grad():
        model.scale.fill_(0.25)
    x_site = poutine.trace(model).get_trace(torch.randn(N_DATA, 3)).nodes["x"]
    assert torch.allclose(x_site["fn"].stddev, torch.full((3,), 0.25))


@pytest.mark.parametrize(
    "convert, dtype",
    [
        (nn.Module.double, torch.float64),
        (nn.Module.half, torch.float16),
        (lambda model: model.to(torch.float64), torch.float64),
        (lambda model: model.double().float(), torch.float32),
    ],
)
def test_samples_follow_the_module_dtype(convert, dtype):
    model = convert(RewrittenRegressor())
    x, y = regression_data(dtype)
    samples = sample_dtypes_and_devices(model, x, y)
    assert set(samples) == {"linear.weight", "linear.bias", "obs_scale"}
    assert {dtype for dtype, _ in samples.values()} == {dtype}


def test_svi_runs_in_float64():
    model = RewrittenRegressor().double()
    x, y = regression_data(torch.float64)
    pyro.set_rng_seed(0)
    losses = svi_losses(model, x, y)
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses)
    assert losses[-1] < losses[0]
    assert {value.dtype for value in pyro.get_param_store().values()} == {torch.float64}


def test_samples_follow_the_module_device():
    model = RewrittenRegressor().to("meta")
    x, y = (tensor.to("meta") for tensor in regression_data())
    # Distribution argument checks call .item(), which meta tensors cannot answer.
    with pyro.validation_enabled(False):
        samples = sample_dtypes_and_devices(model, x, y)
    assert {device.type for _, device in samples.values()} == {"meta"}


def test_prior_added_after_a_move_starts_on_the_module():
    model = HandRegressor().double()
    model.linear.weight = PyroSample(Prior(model.linear, "Normal", 0, 1, shape=(IN_SIZE, OUT_SIZE)))
    assert model.linear.weight.dtype == torch.float64


def pickle_round_trip(model):
    return pickle.loads(pickle.dumps(model))


def torch_save_round_trip(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("round_trip", [pickle_round_trip, torch_save_round_trip, copy.deepcopy])
def test_model_survives_round_trip(round_trip):
    x, y = regression_data()
    model = RewrittenRegressor().double()
    copied = round_trip(model)
    pyro.set_rng_seed(3)
    expected = poutine.trace(model).get_trace(x.double(), y.double())
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    assert_same_sites(poutine.trace(copied).get_trace(x.double(), y.double()), expected)
    assert {dtype for dtype, _ in sample_dtypes_and_devices(copied, x.double()).values()} == {torch.float64}


@pytest.mark.parametrize("round_trip", [pickle_round_trip, torch_save_round_trip, copy.deepcopy])
def test_copy_uses_its_own_hyperparameters(round_trip):
    model = RewrittenHier()
    copied = round_trip(model)
    with torch.no_grad():
        copied.scale.fill_(0.25)
    data = torch.randn(N_DATA, 3)
    copied_site = poutine.trace(copied).get_trace(data).nodes["x"]
    pyro.clear_param_store()
    original_site = poutine.trace(model).get_trace(data).nodes["x"]
    assert torch.allclose(copied_site["fn"].stddev, torch.full((3,), 0.25))
    assert torch.allclose(original_site["fn"].stddev, torch.ones(3))


def test_state_dict_round_trip_into_a_fresh_instance():
    x, y = regression_data()
    model = RewrittenRegressor()
    svi_losses(model, x, y, steps=5)
    state = model.state_dict()
    assert set(state) == {"linear.gate_unconstrained", "offset"}
    assert not any(PRIOR_ANCHOR in key for key in state)

    pyro.clear_param_store()
    fresh = RewrittenRegressor()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.linear.gate, model.linear.gate)
    assert torch.equal(fresh.offset, model.offset)


class SelfSavingLinear(nn.Module):
    """A layer that saves its parameters by reading its attributes, as PyTorch Geometric's
    ``Linear`` does in its own ``_save_to_state_dict``."""

    def __init__(self, n, m):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m, n))
        self.bias = nn.Parameter(torch.zeros(m))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight.detach()
        destination[prefix + "bias"] = self.bias.detach()

    def forward(self, x):
        return x @ self.weight.T + self.bias


def graph_like():
    net = pyro_module(nn.Sequential(SelfSavingLinear(3, 4), nn.Linear(4, 2)))
    set_prior(net, "**.weight", "Normal", 0, 1)
    return net


@pytest.mark.parametrize("round_trip", [lambda net: net, pickle_round_trip, copy.deepcopy])
def test_a_layer_that_saves_itself_keeps_its_random_weights_out_of_the_state_dict(round_trip):
    """Each state_dict() held a new draw from the prior of such a layer's random weight, and
    load_state_dict refused it as an unexpected key (the docs' way of keeping a fitted model)."""
    net = round_trip(graph_like())
    state = net.state_dict()
    assert set(state) == {"0.bias", "1.bias"}
    fresh = graph_like()
    fresh.load_state_dict(state)
    assert torch.equal(fresh[0].bias, net[0].bias)


def test_load_deterministic_loads_the_rest_and_returns_the_random_weights():
    deterministic = DeterministicRegressor()
    model = RewrittenRegressor()
    replaced = load_deterministic(model, deterministic.state_dict())

    expected = {
        "linear.weight": deterministic.linear.weight,
        "linear.bias": deterministic.linear.bias,
        "obs_scale": deterministic.obs_scale,
    }
    assert set(replaced) == set(expected)
    for name, value in expected.items():
        assert torch.equal(replaced[name], value)
    assert torch.equal(model.offset, deterministic.offset)
    assert torch.allclose(model.linear.gate, deterministic.linear.gate)


def test_load_deterministic_starts_autonormal_at_the_deterministic_weights():
    deterministic = DeterministicRegressor()
    saved = copy.deepcopy(deterministic.state_dict())
    model = RewrittenRegressor()
    replaced = load_deterministic(model, deterministic.state_dict())
    guide = AutoNormal(model, init_loc_fn=init_to_value(values=replaced))
    x, y = regression_data()
    guide(x, y)

    assert torch.allclose(guide.locs.linear.weight, deterministic.linear.weight)
    # AutoNormal's locations live in unconstrained space: log for LogNormal sites.
    assert torch.allclose(guide.locs.linear.bias, deterministic.linear.bias.log())
    assert torch.allclose(guide.locs.obs_scale, deterministic.obs_scale.log())

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(3):
        svi.step(x, y)
    assert not torch.equal(guide.locs.linear.weight, deterministic.linear.weight)
    for name, value in deterministic.state_dict().items():
        assert torch.equal(value, saved[name]), f"training the guide changed {name}"


def test_load_deterministic_returns_values_in_the_model_dtype():
    model = RewrittenRegressor().double()
    replaced = load_deterministic(model, DeterministicRegressor().state_dict())
    assert {value.dtype for value in replaced.values()} == {torch.float64}
    x, y = regression_data(torch.float64)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values=replaced))
    SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()).step(x, y)


def test_load_deterministic_strict_names_missing_and_unexpected_keys():
    state = DeterministicRegressor().state_dict()
    del state["linear.bias"]
    state["head.weight"] = torch.zeros(1)
    model = RewrittenRegressor()
    offset_before = model.offset.detach().clone()

    with pytest.raises(
        RuntimeError, match=r"missing keys \['linear.bias'\].*unexpected keys \['head.weight'\]"
    ):
        load_deterministic(model, state)
    assert torch.equal(model.offset, offset_before)

    replaced = load_deterministic(model, state, strict=False)
    assert set(replaced) == {"linear.weight", "obs_scale"}
    assert torch.equal(model.offset, state["offset"])


def test_load_deterministic_refuses_values_of_another_shape_than_their_prior_before_loading_any():
    # A guide started at a value of another shape broadcasts against the prior's samples: the
    # shape a rewrite read wrongly from an initializer would go unnoticed.
    model = RewrittenRegressor()
    offset_before = model.offset.detach().clone()
    state = DeterministicRegressor(in_size=IN_SIZE + 1).state_dict()
    with pytest.raises(
        ValueError,
        match=rf"linear\.weight is \({IN_SIZE + 1}, {OUT_SIZE}\) in the checkpoint and \({IN_SIZE}, ",
    ):
        load_deterministic(model, state)
    assert torch.equal(model.offset, offset_before)
    assert model.linear._pyro_samples["weight"].deterministic is None


def test_load_deterministic_names_the_prefix_a_checkpoint_holds_the_keys_under():
    # Lightning saves a held network's parameters as "backbone.linear.weight": strict=False, as
    # the error suggested, loaded nothing and said nothing.
    state = {f"backbone.{key}": value for key, value in DeterministicRegressor().state_dict().items()}
    with pytest.raises(RuntimeError, match=r"under the prefix 'backbone.': load \{key.removeprefix"):
        load_deterministic(RewrittenRegressor(), state)
    with pytest.warns(UserWarning, match="nothing was loaded; the checkpoint holds them under the prefix"):
        assert load_deterministic(RewrittenRegressor(), state, strict=False) == {}
    unprefixed = {key.removeprefix("backbone."): value for key, value in state.items()}
    assert set(load_deterministic(RewrittenRegressor(), unprefixed)) == {
        "linear.weight",
        "linear.bias",
        "obs_scale",
    }
    # The other way round: the model holds the saved network (a library's trainer saved it) as
    # an attribute, and its keys carry the attribute's name.
    holder = pyro_module(nn.ModuleDict({"wd": nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))}))
    set_prior(holder, "nn.Linear.weight", "Normal", 0, 1)
    saved = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).state_dict()
    with pytest.raises(
        RuntimeError, match=r"the model holds them under the prefix 'wd.': load \{'wd.' \+ key"
    ):
        load_deterministic(holder, saved)
    assert set(load_deterministic(holder, {"wd." + key: value for key, value in saved.items()})) == {
        "wd.0.weight",
        "wd.1.weight",
    }


def test_load_deterministic_names_the_key_a_checkpoint_holds_the_state_dict_under():
    # PyTorch's tutorial saves {"epoch": ..., "model_state_dict": ...}, as DeepXDE does: the
    # error named it only as an unexpected key, and strict=False, as it suggested, loaded nothing.
    saved = {"epoch": 3, "model_state_dict": DeterministicRegressor().state_dict()}
    with pytest.raises(
        RuntimeError, match=r"under 'model_state_dict': load checkpoint\['model_state_dict'\]"
    ):
        load_deterministic(RewrittenRegressor(), saved)
    assert set(load_deterministic(RewrittenRegressor(), saved["model_state_dict"])) == {
        "linear.weight",
        "linear.bias",
        "obs_scale",
    }


class _Spectral(nn.Module):
    """An FNO layer's gains, in one line: complex, for the first modes of the FFT."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, dtype=torch.cfloat))


def test_a_prior_on_a_complex_parameter_is_refused_with_the_way_to_make_it_random():
    # Its prior drew real values and load_deterministic cast the checkpoint's, the imaginary
    # part lost: the model ran on other weights (outputs off by 1.3 of 1.7), said nothing.
    net = _Spectral()
    set_prior(net, "_Spectral.weight", "Normal", 0, 1)
    with pytest.raises(ValueError, match=r"_Spectral.weight a prior, but it is complex .*view_as_real"):
        pyro_module(net)
    rewritten = PyroModule()  # what the source rewrite makes of it, its initializer dropped
    rewritten.weight = PyroSample(Prior(rewritten, "Normal", 0, 1, shape=(4,)))
    with pytest.raises(ValueError, match=r"checkpoint's weight is complex \(torch.complex64\)"):
        load_deterministic(rewritten, _Spectral().state_dict())


def test_a_load_state_dict_that_leaves_out_random_weights_warns():
    # neuralforecast's NeuralForecast.load passes strict=False: the checkpoint's weights were
    # dropped as unexpected, and the forecasts came from prior draws (off by 1,750), silently.
    model = RewrittenRegressor()
    with pytest.warns(
        UserWarning, match="leaves out the checkpoint's values of random weights.*load_deterministic"
    ):
        incompatible = model.load_state_dict(DeterministicRegressor().state_dict(), strict=False)
    assert "linear.weight" in incompatible.unexpected_keys
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_deterministic(RewrittenRegressor(), DeterministicRegressor().state_dict())


def test_unknown_distribution_suggests_the_closest_name():
    with pytest.raises(
        ValueError, match="'Normall' is not a pyro.distributions distribution; did you mean 'Normal'"
    ):
        Prior(PyroModule(), "Normall", 0, 1)


def test_missing_sibling_is_named():
    module = PyroModule()
    module.x = PyroSample(Prior(module, "Normal", "lco", 1))
    with pytest.raises(AttributeError, match=r"reads PyroModule.lco, which does not exist"):
        module.x


def test_a_network_called_outside_inference_after_its_checkpoint_loaded_is_warned_of():
    # Lightning's trainer.predict on the rewritten chemprop MPNN: prior draws, RMSE 11 times
    # the checkpoint's, and nothing said.
    model = RewrittenRegressor()
    x, _ = regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.linear(x)  # before a checkpoint is loaded, drawing from the prior is what is asked
    load_deterministic(model, DeterministicRegressor().state_dict())
    held = nn.Sequential(nn.Linear(3, 2))
    set_prior(held, "nn.Linear.*", "Normal", 0, 1)
    pyro_module(held)
    load_deterministic(held, nn.Sequential(nn.Linear(3, 2)).state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repr(held)  # nn.Linear's extra_repr reads its bias: no prediction
    with pytest.warns(UserWarning, match="drawn from its prior: the network runs outside Pyro") as caught:
        model.linear(x)
    assert caught[0].filename == __file__
    guide = AutoNormal(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        poutine.replay(model.linear, trace=poutine.trace(guide).get_trace(x))(x)


def test_a_weight_drawn_inside_a_plate_of_data_is_warned_of_and_not_in_plates_of_samples():
    model = RewrittenRegressor()
    x, y = regression_data()
    with pytest.warns(
        UserWarning, match=r"random parameter of RewrittenLinear is drawn inside pyro.plate\('data'\)"
    ):
        with poutine.trace(), pyro.plate("data", len(x)):
            model.linear(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with poutine.trace(), pyro.plate("samples", 3, dim=-2):  # a user's own plate of samples
            model.linear(x)
        # Pyro's, at -1 around a model without a plate of its own
        for samples in ("num_particles_vectorized", "_num_predictive_samples"):
            with poutine.trace(), pyro.plate(samples, 3, dim=-1):
                model.linear.weight
