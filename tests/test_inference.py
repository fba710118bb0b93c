"""The runtime's inference layer: likelihoods, the checkpoint guide, fit, predict, batched
layers and the weight-noise handlers, each checked against the Pyro a user would write."""

import collections
import copy
import dataclasses
import importlib.util
import math
import pickle
import subprocess
import sys
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_value
from pyro.nn import PyroModule, PyroSample
from torch.utils.data import DataLoader, TensorDataset

import bayesify.runtime.guides as guides
import bayesify.runtime.prediction as runtime_prediction
from bayesify.runtime import (
    Categorical,
    CheckpointLaplace,
    CheckpointNormal,
    Normal,
    batched,
    fit,
    flipout,
    load_deterministic,
    local_reparameterization,
    predict,
    pyro_module,
    set_prior,
    supervised,
)
from bayesify.runtime.data import read_batches
from bayesify.runtime.inference import _LeanTraceMeanField_ELBO

DATASET_SIZE, BATCH = 120, 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Thousands of tiny steps: with several threads, their hand-offs cost more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_store():
    # Pyro keeps parameters by name in one store: none may leak into (or from) another test.
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def pass_sizes(monkeypatch):
    """The number of samples of each of predict's passes over a batch, as it sizes them."""
    sizes, passes = [], runtime_prediction._passes

    def sized(model, weights, x, num_samples, samples_per_pass, *args):
        sizes.append(samples_per_pass)
        return passes(model, weights, x, num_samples, samples_per_pass, *args)

    monkeypatch.setattr(runtime_prediction, "_passes", sized)
    return sizes


class Net(PyroModule):
    """What the rewrite makes of a small conv net: held layers, priors set once built."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 4)
        pyro_module(self)
        set_prior(self, "Net.*.weight", "Normal", 0, 1)
        set_prior(self, "Net.*.bias", "Normal", 0, 1)

    def forward(self, x):
        hidden = torch.relu(self.conv(x))
        return self.fc(hidden.flatten(-3))


def images(n=BATCH):
    return torch.randn(n, 1, 4, 4), torch.randint(0, 4, (n,))


def log_prob_of_obs(model, *args):
    trace = poutine.trace(model).get_trace(*args)
    trace.compute_log_prob()
    site = trace.nodes["obs"]
    return site["log_prob_sum"] * site["scale"], site["scale"]


@pytest.mark.parametrize(
    "which",
    [
        "categorical",
        "categorical of a sequence",
        "categorical of an image, classes after the batch",
        "normal",
        "normal of one number",
        "normal of an image",
    ],
)
def test_likelihood_is_the_hand_written_plate_scaled_to_the_data_set(which):
    output = torch.randn(BATCH, 3)
    if which == "categorical":
        target = torch.randint(0, 3, (BATCH,))
        likelihood, observed = Categorical(DATASET_SIZE), dist.Categorical(logits=output)
    elif which.startswith("categorical"):
        # One observation is all of an input's labels: a token's or a pixel's is not one.
        if which == "categorical of a sequence":
            output, likelihood = torch.randn(BATCH, 5, 3), Categorical(DATASET_SIZE)
            logits = output
        else:  # (batch, classes, height, width), as torch's cross_entropy takes it
            output, likelihood = torch.randn(BATCH, 3, 4, 4), Categorical(DATASET_SIZE, class_dim=1)
            logits = output.movedim(1, -1)
        target = torch.randint(0, 3, logits.shape[:-1])
        observed = dist.Categorical(logits=logits).to_event(logits.dim() - 2)
    else:
        # One observation is all of an input's output, whatever its shape.
        output = {"normal": output, "normal of one number": output[:, 0], "normal of an image": images()[0]}[
            which
        ]
        target = torch.randn_like(output)
        likelihood = Normal(DATASET_SIZE, scale=0.5)
        observed = dist.Normal(output, 0.5).to_event(output.dim() - 1)

    def by_hand(output, target):
        with pyro.plate("data", DATASET_SIZE, subsample_size=len(target)):
            pyro.sample("obs", observed, obs=target)

    ours, scale = log_prob_of_obs(likelihood, output, target)
    theirs, _ = log_prob_of_obs(by_hand, output, target)
    assert scale == DATASET_SIZE / BATCH
    assert torch.allclose(ours, theirs)


@pytest.mark.parametrize("validate", [False, True])
def test_categorical_likelihoods_log_density_and_gradient_are_torchs_to_the_bit(validate):
    output = torch.randn(BATCH, 3, requires_grad=True)
    target = torch.randint(0, 3, (BATCH,))
    with pyro.validation_enabled(validate), poutine.trace() as traced:
        Categorical(DATASET_SIZE)(output, target)
    observed, torchs = traced.trace.nodes["obs"]["fn"], torch.distributions.Categorical(logits=output)
    ours, theirs = observed.log_prob(target), torchs.log_prob(target)
    assert torch.equal(ours, theirs)
    assert torch.equal(*(torch.autograd.grad(density.sum(), output)[0] for density in (ours, theirs)))
    samples = observed.sample((2,))  # another shape than the batch's
    assert torch.equal(observed.log_prob(samples), torchs.log_prob(samples))


def test_normal_likelihood_finds_the_batch_inside_a_plate_of_particles():
    # Under a vectorised ELBO the outputs carry the particles left of the batch.
    output, target = torch.randn(5, BATCH, 1, 4, 4), torch.randn(BATCH, 1, 4, 4)
    with pyro.plate("particles", 5, dim=-2):
        site = poutine.trace(Normal(DATASET_SIZE, scale=0.5)).get_trace(output, target).nodes["obs"]
    assert site["fn"].batch_shape == (5, BATCH) and site["fn"].event_shape == (1, 4, 4)
    assert site["scale"] == DATASET_SIZE / BATCH


def test_normal_likelihood_learns_its_noise_scale():
    x = torch.linspace(-1, 1, 64).unsqueeze(-1)
    y = 2 * x + 0.3 * torch.randn_like(x)
    net = pyro_module(nn.Linear(1, 1))
    set_prior(net, "Linear.weight", "Normal", 0, 1)
    model = supervised(net, Normal(len(x)))
    fit(model, CheckpointNormal(model), (x, y), epochs=150, lr=0.05, progress=False)
    assert 0.2 < pyro.param("obs.scale").item() < 0.45


def test_parallel_predictive_equals_sequential_for_the_same_weights():
    x, _ = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.1)
    sites = ["conv.weight", "conv.bias", "fc.weight", "fc.bias", "_RETURN"]
    parallel = Predictive(model, guide=guide, num_samples=5, parallel=True, return_sites=sites)(x)
    assert parallel["_RETURN"].shape == (5, BATCH, 4)
    for i in range(5):
        weights = {name: parallel[name][i] for name in sites[:-1]}
        one = poutine.condition(model, weights)(x)
        assert torch.allclose(parallel["_RETURN"][i], one, atol=1e-5)


class Normalized(nn.Module):
    """Random layers before trained batch norms, as in most tabular and vision networks."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm2d = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.fc, self.norm1d = nn.Linear(48, 8), nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        hidden = torch.relu(self.norm2d(self.conv(x)))
        return self.out(torch.relu(self.norm1d(self.fc(hidden.flatten(-3)))))


def test_parallel_predictive_normalizes_each_sample_by_the_batch_norms_statistics():
    # Torch read (samples, batch, channels) as (batch, channels, length): an error, or with as
    # many rows as channels, each row normalized by another channel's statistics, silently.
    net = pyro_module(Normalized())
    set_prior(net, "Normalized.*.weight", "Normal", 0, 1)
    for norm in (net.norm1d, net.norm2d):
        norm.running_mean.uniform_(-3, 3)
        norm.running_var.uniform_(0.5, 4)
    net.eval()
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.1)
    sites = ["conv.weight", "norm2d.weight", "fc.weight", "norm1d.weight", "out.weight", "_RETURN"]
    x = torch.randn(5, 1, 4, 4)
    parallel = Predictive(model, guide=guide, num_samples=3, parallel=True, return_sites=sites)(x)
    for i in range(3):
        one = poutine.condition(model, {name: parallel[name][i] for name in sites[:-1]})(x)
        assert torch.allclose(parallel["_RETURN"][i], one, atol=1e-5)
    with pytest.raises(ValueError, match=r"BatchNorm1d's input \(3, 8, 8\) may be 3 weight samples"):
        Predictive(model, guide=guide, num_samples=3, parallel=True)(torch.randn(8, 1, 4, 4))
    net.train()
    with pytest.raises(ValueError, match="BatchNorm2d normalizes by batch statistics"):
        Predictive(model, guide=guide, num_samples=3, parallel=True)(x)


def test_vectorized_particles_estimate_the_same_elbo():
    x, y = images(32)
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.1)
    guide(x, y)
    vectorized = Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(model, guide, x, y)
    sequential = Trace_ELBO(num_particles=200).loss(model, guide, x, y)
    assert vectorized == pytest.approx(sequential, rel=0.02)


@pytest.mark.parametrize("one_call_a_sample", [True, False], ids=["by sample (CPU)", "grouped (GPU)"])
@pytest.mark.parametrize("differentiated", [False, True])
def test_batched_layers_equal_torchs_layer_for_each_weight_sample(
    differentiated, one_call_a_sample, monkeypatch
):
    # Without autograd (prediction) the bias is added into the product's output: same values.
    monkeypatch.setattr(batched, "_by_sample", lambda input, count, size: one_call_a_sample)
    linear_weights, linear_bias = torch.randn(5, 1, 4, 3), torch.randn(5, 1, 4)
    conv_weights, conv_bias = torch.randn(5, 1, 2, 1, 3, 3), torch.randn(5, 1, 2)
    transposed_weights, transposed_bias = torch.randn(5, 1, 4, 3, 3, 3), torch.randn(5, 1, 6)
    tables, tokens = torch.randn(5, 1, 10, 3), torch.tensor([1, 0, 9, 1, 4, 0, 2])  # 0 pads
    x, images_in = torch.randn(7, 3), torch.randn(7, 1, 6, 6)
    per_sample_images = torch.randn(5, 7, 4, 6, 6)  # what a layer before has made of each sample
    shared_bias = torch.randn(2)  # a bias left deterministic
    parameters = [
        linear_weights,
        linear_bias,
        conv_weights,
        conv_bias,
        transposed_weights,
        transposed_bias,
        tables,
    ]
    for parameter in parameters:
        parameter.requires_grad_(differentiated)
    # stride 2, padding 1, output padding 1, two groups
    options = (2, 1, 1, 2, 1)
    with torch.set_grad_enabled(differentiated):
        outputs = (
            batched.linear(x, linear_weights, linear_bias),
            batched.conv(images_in, conv_weights, conv_bias, 2),
            batched.conv_transpose(per_sample_images, transposed_weights, transposed_bias, 2, *options),
            batched.conv(per_sample_images, conv_weights.expand(5, 1, 2, 4, 3, 3), shared_bias, 2),
            batched.embedding(tokens, tables, 0),
        )
    by_sample = [
        torch.stack([nn.functional.linear(x, linear_weights[i, 0], linear_bias[i, 0]) for i in range(5)]),
        torch.stack([nn.functional.conv2d(images_in, conv_weights[i, 0], conv_bias[i, 0]) for i in range(5)]),
        torch.stack(
            [
                nn.functional.conv_transpose2d(
                    per_sample_images[i], transposed_weights[i, 0], transposed_bias[i, 0], *options
                )
                for i in range(5)
            ]
        ),
        torch.stack(
            [
                nn.functional.conv2d(per_sample_images[i], conv_weights[i, 0].expand(2, 4, 3, 3), shared_bias)
                for i in range(5)
            ]
        ),
        torch.stack([nn.functional.embedding(tokens, tables[i, 0], padding_idx=0) for i in range(5)]),
    ]
    for output, expected in zip(outputs, by_sample):
        assert torch.allclose(output, expected, atol=1e-5)
    if differentiated:
        gradients = torch.autograd.grad(sum(output.sum() for output in outputs), parameters)
        expected = torch.autograd.grad(sum(output.sum() for output in by_sample), parameters)
        assert all(torch.allclose(ours, theirs, atol=1e-5) for ours, theirs in zip(gradients, expected))


def test_batched_layers_pickle_as_pyro_layers():
    layer = PyroModule[nn.Conv2d](1, 2, 3)
    clone = pickle.loads(pickle.dumps(layer))
    assert type(clone) is type(layer) and torch.equal(clone.weight, layer.weight)


@pytest.mark.parametrize("handler", [local_reparameterization, flipout])
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_weight_noise_handlers_keep_the_output_moments(handler, layer):
    if layer == "linear":
        net = PyroModule[nn.Linear](3, 2)
        x = torch.tensor([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]])
        loc, scale = torch.randn(2, 3), torch.rand(2, 3) + 0.2

        def moments():
            return x @ loc.T, x**2 @ (scale**2).T
    else:
        net = PyroModule[nn.Conv1d](1, 2, 2, bias=False)
        x = torch.tensor([[[1.0, -2.0, 0.5]], [[1.0, -2.0, 0.5]]])
        loc, scale = torch.randn(2, 1, 2), torch.rand(2, 1, 2) + 0.2

        def moments():
            mean = nn.functional.conv1d(x, loc)
            return mean, nn.functional.conv1d(x**2, scale**2)

    net.weight = PyroSample(dist.Normal(loc, scale).to_event(loc.dim()))
    net.bias = None
    with handler(), pyro.plate("samples", 20000, dim=-2):
        outputs = net(x).squeeze(1) if layer == "linear" else net(x)
    mean, variance = moments()
    assert torch.allclose(outputs.mean(0), mean, atol=0.05)
    assert torch.allclose(outputs.var(0), variance, rtol=0.06)
    # The two (identical) inputs get their own noise: correlation 0, not 1 as with one weight.
    first, second = outputs[:, 0].flatten(1)[:, 0], outputs[:, 1].flatten(1)[:, 0]
    correlation = torch.corrcoef(torch.stack([first, second]))[0, 1]
    assert abs(correlation) < 0.05


def test_checkpoint_normal_guides_a_subsampled_local_latent_by_its_rows():
    def model(x):
        with pyro.plate("rows", 10, subsample_size=len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    rows, x = torch.tensor([3, 4, 5, 6]), torch.zeros(4)
    guide = CheckpointNormal(model, create_plates=lambda x: pyro.plate("rows", 10, subsample=rows))
    guide(x)  # makes the parameters; the next calls read them from the param store
    loc = next(value for name, value in pyro.get_param_store().items() if name.endswith("locs.z"))
    with torch.no_grad():
        loc.copy_(torch.arange(10.0))
    z = poutine.trace(guide).get_trace(x).nodes["z"]["value"]
    assert torch.allclose(z, rows.float(), atol=0.01)  # the batch's rows of loc, as AutoNormal's reads give


@pytest.mark.parametrize("handler", [local_reparameterization, flipout])
def test_weight_noise_handlers_use_the_guides_normal_not_the_prior(handler):
    net = PyroModule[nn.Linear](3, 2, bias=False)
    net.weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    loc, x = torch.randn(2, 3), torch.randn(5, 3)
    guide = CheckpointNormal(supervised(net, Categorical()), {"weight": loc}, delta=1e-3)
    guide(x)
    with handler():  # the model replays the guide's sample: its prior must not replace the guide's normal
        output = poutine.replay(net, trace=poutine.trace(guide).get_trace(x))(x)
    assert torch.allclose(output, x @ loc.T, atol=0.05)


@pytest.mark.parametrize("bias_prior", [dist.Normal, dist.LogNormal])  # LogNormal: an auxiliary site
def test_fits_default_loss_is_pyros_trace_mean_field_elbo(bias_prior):
    x, y = images()
    net = Net()
    net.fc.bias = PyroSample(bias_prior(0.0, 1.0).expand([4]).to_event(1))
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.1)
    guide(x, y)
    parameters = [value.unconstrained() for value in pyro.get_param_store().values()]

    def loss_and_grads(elbo):
        pyro.set_rng_seed(1)
        with pyro.validation_enabled(False):
            losses = [elbo.differentiable_loss(model, guide, x, y) for _ in range(2)]
        return [loss.detach() for loss in losses] + list(torch.autograd.grad(sum(losses), parameters))

    lean = loss_and_grads(_LeanTraceMeanField_ELBO())
    for ours, pyros in zip(lean, loss_and_grads(TraceMeanField_ELBO()), strict=True):
        assert torch.equal(ours, pyros)  # the same operations: the same numbers, to the last bit


def test_fit_reads_a_tensor_data_loader_as_the_loader_would():
    x, y = images(50)

    def loader():
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)  # shuffled by torch's seed

    torch.manual_seed(4)
    read, after = list(read_batches(loader())), torch.rand(1)
    torch.manual_seed(4)
    expected, expected_after = list(loader()), torch.rand(1)
    assert [len(batch[0]) for batch in read] == [16, 16, 16, 2]
    for ours, its in zip(read, expected, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(ours, its, strict=True))
    assert torch.equal(after, expected_after)  # the same random numbers follow
    custom = DataLoader(TensorDataset(x, y), collate_fn=lambda rows: rows)
    assert read_batches(custom) is custom  # a loader of its own collation is read as it is


class Fourier(nn.Module):
    """A Fourier layer's gains, complex and deterministic, before a random head (an FNO's
    spectral weights with only its projection random)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(9, dtype=torch.cfloat))
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(torch.fft.irfft(torch.fft.rfft(x) * self.gain, n=16))


def test_fit_trains_a_network_that_keeps_complex_parameters():
    # Adam's fused kernel refuses complex parameters, at its first step.
    net = pyro_module(Fourier())
    set_prior(net, "Fourier.head.weight", "Normal", 0, 1)
    x = torch.randn(32, 16)
    model = supervised(net, Normal(len(x)))
    gain = net.gain.detach().clone()
    fit(model, CheckpointNormal(model), (x, x[:, :1]), epochs=3, progress=False)
    assert not torch.equal(net.gain, gain) and net.gain.is_complex()


def test_fit_refuses_an_iterator_it_would_read_once_for_several_epochs():
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model)
    batches = [images() for _ in range(3)]
    with pytest.raises(TypeError, match="epochs 2 to 4 would train on nothing"):
        fit(model, guide, (batch for batch in batches), epochs=4, progress=False)
    assert len(fit(model, guide, iter(batches), epochs=1, progress=False)) == 1
    assert all(loss > 0 for loss in fit(model, guide, batches, epochs=2, progress=False))
    # Telling a loader from an iterator draws nothing: the loader shuffles as it would.
    x, y = images(40)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator())
    loader.generator.manual_seed(7)
    fit(model, guide, loader, epochs=2, progress=False)
    after_fit = loader.generator.get_state()
    loader.generator.manual_seed(7)
    for _ in range(2):
        list(loader)
    assert torch.equal(after_fit, loader.generator.get_state())


def test_fit_names_a_batch_it_cannot_split_into_inputs_and_targets():
    class GraphBatch:  # PyTorch Geometric's Batch: attributes, and indexing that selects graphs
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __getitem__(self, index):
            return self.x[index]

        def __len__(self):
            return len(self.x)

    model = supervised(Net(), Categorical(DATASET_SIZE))
    with pytest.raises(TypeError, match=r"\(x, y\), \(x1, ..., xk, y\) or a dict, not a GraphBatch"):
        fit(model, CheckpointNormal(model), [GraphBatch(*images())], progress=False)


class Molecules(nn.Module):
    """A graph network's energy per molecule: atoms, their molecule, and how many molecules."""

    def __init__(self):
        super().__init__()
        self.atom = nn.Linear(3, 1)

    def forward(self, positions, molecule, molecules):
        return torch.zeros(molecules).index_add(0, molecule, self.atom(positions).squeeze(-1))


def test_fit_reads_one_batch_whose_inputs_hold_a_number_as_one_batch():
    # A number among the inputs (a molecule count) made the batch read as a list of batches,
    # and the error spoke of chemprop's batches.
    net = pyro_module(Molecules())
    set_prior(net, "Molecules.atom.weight", "Normal", 0, 1)
    model = supervised(net, Normal(2, scale=0.1))
    inputs = (torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    losses = fit(model, CheckpointNormal(model), (inputs, torch.randn(2)), epochs=3, progress=False)
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


class Potential(nn.Module):
    """An interatomic potential as schnetpack writes one: the energy, and the forces as its
    gradient by the positions, differentiable by the weights in training mode only."""

    def __init__(self):
        super().__init__()
        self.atom = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, positions):
        positions = positions.requires_grad_()
        energy = self.atom(positions).squeeze(-1)
        (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
        return torch.cat([energy.unsqueeze(-1), -gradient], -1)


def test_a_potentials_forces_train_predict_and_laplace_with_the_modes_they_need():
    torch.manual_seed(0)
    trained, positions = Potential(), torch.randn(16, 3)
    targets = trained(positions).detach()
    net = pyro_module(Potential())
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    values = load_deterministic(net, trained.state_dict())
    model = supervised(net, Normal(len(positions), scale=0.1))
    # Eval mode (a checkpoint's) freed the energy's graph inside forward: torch's bare message.
    with pytest.raises(RuntimeError, match="pass eval_mode=False"):
        fit(model, CheckpointNormal(model, values), (positions, targets), progress=False)
    pyro.clear_param_store()
    guide = CheckpointNormal(model, values)
    losses = fit(model, guide, (positions, targets), epochs=30, lr=0.01, progress=False, eval_mode=False)
    assert losses[-1] < losses[0] and net.training

    with pytest.raises(RuntimeError, match="pass grad=True"):
        predict(model, guide, positions, num_samples=4)
    forces = predict(model, guide, positions, num_samples=20, grad=True).mean[:, 1:]
    by_hand = torch.stack(
        [
            poutine.replay(model.network, trace=poutine.trace(guide).get_trace(positions))(positions)
            for _ in range(20)
        ]
    )
    assert torch.allclose(forces, by_hand.mean(0)[:, 1:].detach(), atol=0.05)

    with pytest.raises(RuntimeError, match="pass eval_mode=False"):
        CheckpointLaplace(model, values, (positions, targets))
    laplace = CheckpointLaplace(model, values, (positions, targets), eval_mode=False)
    assert (predict(model, laplace, positions, grad=True).epistemic > 0).all()


def test_what_the_likelihood_reads_of_the_network_is_the_calls_one_draw():
    # gpytorch evaluates a kernel lazily, in the marginal likelihood, after the network's call
    # returned: a random lengthscale read there was an untraced draw of the prior at each read.
    net = pyro_module(nn.Linear(2, 1))
    net.log_noise = PyroSample(dist.Normal(0.0, 1.0))
    noises = []

    def likelihood(output, y):
        noises.extend([net.log_noise, net.log_noise])
        with pyro.plate("data", len(output)):
            pyro.sample("obs", dist.Normal(output.squeeze(-1), net.log_noise.exp()), obs=y)

    model = supervised(net, likelihood)
    trace = poutine.trace(model).get_trace(torch.randn(4, 2), torch.randn(4))
    assert trace.nodes["log_noise"]["type"] == "sample"
    assert noises[0] is noises[1] is trace.nodes["log_noise"]["value"]


def test_with_module_local_params_the_learned_noise_is_the_models():
    # The network's context is its own parameter store there: the noise went into it, and the
    # prediction read a noise of 1 instead of the learned one.
    with pyro.settings.context(module_local_params=True):
        net = pyro_module(nn.Linear(2, 1))
        set_prior(net, "Linear.weight", "Normal", 0, 1)
        model = supervised(net, Normal(len(x := torch.randn(8, 2))))
        guide = CheckpointNormal(model)
        poutine.trace(model).get_trace(x, 3 + torch.randn(8, 1))
        assert "obs.scale" in pyro.get_param_store()
        assert predict(model, guide, x, num_samples=4).noise > 1.5


def test_fit_leaves_a_frozen_backbone_as_its_checkpoint_has_it():
    # Pyro's parameter store turns requires_grad on when it first reads a parameter: a
    # backbone frozen under a random head was fitted anyway (a trial's TabNet, 53 of 55).
    net = pyro_module(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4)))
    set_prior(net, "Sequential.2.weight", "Normal", 0, 1)
    values = load_deterministic(net, nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4)).state_dict())
    net[0].requires_grad_(False)
    backbone = copy.deepcopy(net[0].state_dict())
    head_bias = net[2].bias.detach().clone()
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, values)
    predict(model, guide, torch.randn(4, 3), num_samples=2)  # Pyro's first read, before fit
    fit(model, guide, (torch.randn(16, 3), torch.randint(0, 4, (16,))), epochs=5, progress=False)
    assert all(torch.equal(value, backbone[name]) for name, value in net[0].state_dict().items())
    assert not any(param.requires_grad for param in net[0].parameters())
    assert not torch.equal(net[2].bias, head_bias)  # what is not frozen trains


def test_fit_reduces_the_loss_with_a_data_loader_and_under_a_handler():
    x, y = images(64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    model = supervised(Net(), Categorical(len(x)))
    guide = CheckpointNormal(model, init_scale=0.1)
    losses = fit(model, guide, loader, epochs=30, lr=0.01, progress=False)
    assert losses[-1] < 0.8 * losses[0]
    with flipout():
        more = fit(model, guide, loader, epochs=5, lr=0.01, progress=False)
    assert sum(more) / len(more) < losses[0]


def assert_passes_replay_one_draw(model, guide, x):
    """However many passes :func:`predict` makes, one draw of the guide: the same predictions
    for the same seed as in one pass (what ``Predictive(parallel=True)`` computes)."""
    guide(x)  # its parameters made, so that both calls start from the same random state
    predictions = []
    for per_pass in (30, 7):
        pyro.set_rng_seed(3)
        predictions.append(predict(model, guide, x, num_samples=30, samples_per_pass=per_pass))
    whole, sliced = predictions
    assert torch.allclose(whole.outputs, sliced.outputs, atol=1e-6)
    assert torch.allclose(whole.epistemic, sliced.epistemic, atol=1e-6)


def assert_predicts_in_one_pass_as_each_sample_alone(model, guide, x, alone, recwarn, samples=6):
    """``predict``'s samples, computed in one pass without a warning, are the network's on each
    sample's weights alone (``alone(weights)``); the same seed draws the same weights."""
    pyro.set_rng_seed(5)
    with torch.no_grad(), pyro.plate(runtime_prediction._SAMPLES, samples, dim=-2):
        weights = poutine.trace(guide).get_trace(x)
    pyro.set_rng_seed(5)
    prediction = predict(model, guide, x, num_samples=samples, samples_per_pass=samples)
    assert not recwarn.list
    for i in range(samples):
        drawn = {name: site["value"][i, 0] for name, site in weights.iter_stochastic_nodes()}
        with torch.no_grad():
            assert torch.allclose(prediction.outputs[i], alone(drawn), atol=1e-5)


def test_predict_replays_the_network_on_one_draw_of_the_guide_as_pyro_samples_it():
    x, _ = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.5)
    guide(x)
    pyro.set_rng_seed(5)
    with torch.no_grad(), pyro.plate("samples", 30, dim=-2):
        weights = poutine.trace(guide).get_trace(x)
        expected = poutine.replay(model.net, trace=weights)(x)
    pyro.set_rng_seed(5)
    # Bit for bit: predict's draws in place are Normal.rsample's values.
    assert torch.equal(predict(model, guide, x, num_samples=30, samples_per_pass=30).outputs, expected)


def test_predict_on_a_cpu_sizes_its_passes_by_the_layers_outputs(monkeypatch, pass_sizes):
    # A convolution's outputs are tens of times its inputs: passes of as many rows as an MLP
    # takes made tensors of hundreds of megabytes on a CPU, each fresh memory to fault in,
    # and predict twice as slow as a pass per sample.
    x, _ = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.5)
    guide(x)
    outputs = []
    for budget in (10**9, 1):
        monkeypatch.setattr(runtime_prediction, "CPU_ELEMENTS_PER_PASS", budget)
        pyro.set_rng_seed(3)
        outputs.append(predict(model, guide, x, num_samples=12).outputs)
    assert pass_sizes == [12, 1]  # the rows' bound alone, then the outputs' bound
    assert torch.allclose(*outputs, atol=1e-6)  # one draw however many passes


ATTENTION_SOURCE = """\
import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, tokens=32, dim=4):
        super().__init__()
        self.qk = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(tokens, 3)

    def forward(self, x):
        q, k = self.qk(x).chunk(2, -1)
        return self.head((q @ k.transpose(-1, -2)).softmax(-1).mean(-1))
"""


def test_predict_sizes_its_passes_by_an_attentions_logits_too(tmp_path, monkeypatch, pass_sizes):
    # The logits, tokens times tokens a row, are no layer's output: passes sized by the
    # layers' outputs (8 x 32 a row here, against 32 x 32) made them tens of megabytes, and a
    # small transformer's prediction twice as slow as a pass per sample.
    _, bayesian = _rewritten(
        tmp_path, ATTENTION_SOURCE, 'version: 1\npriors:\n  "nn.Linear.weight": Normal(0, 1)\n'
    )
    model = supervised(bayesian.Attention(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.1)
    x = torch.randn(10, 32, 4)
    monkeypatch.setattr(runtime_prediction, "CPU_ELEMENTS_PER_PASS", 10 * 32 * 32 * 4)
    predict(model, guide, x, num_samples=12)
    assert pass_sizes == [4]


BACKBONE_SOURCE = """\
import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.backbone(x))
"""


def test_predict_computes_a_deterministic_backbone_once_a_pass(tmp_path, monkeypatch):
    # With only the head random (the "classifier head" a spec selects most), the backbone ran
    # once for every sample: a small CNN's 100 samples took 5.3 s, against 0.26 s now.
    spec = (
        "version: 1\npriors:\n  Classifier.head.weight: Normal(0, 1)\n  Classifier.head.bias: Normal(0, 1)\n"
    )
    deterministic, bayesian = _rewritten(tmp_path, BACKBONE_SOURCE, spec)
    trained = deterministic.Classifier().eval()
    net = bayesian.Classifier()
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, load_deterministic(net, trained.state_dict()), delta=0.3)
    x, _ = images()
    rows = []
    net.backbone.register_forward_hook(lambda module, args, output: rows.append(len(args[0])))
    pyro.set_rng_seed(0)
    once = predict(model, guide, x, num_samples=12, samples_per_pass=12).outputs
    # The guide's setup, a probe on one row, the pass on the inputs themselves (not 12 copies),
    # the check of one sample.
    assert rows == [BATCH, 1, BATCH, BATCH]
    monkeypatch.setattr(runtime_prediction, "_deterministic_trunks", lambda net: [])
    pyro.set_rng_seed(0)
    as_written = predict(model, guide, x, num_samples=12, samples_per_pass=12).outputs
    assert torch.allclose(once, as_written, atol=1e-5)
    assert (once[0] - once[-1]).abs().max() > 0.1  # the head's samples differ


class Features(nn.Module):
    """An encoder that returns its features as a list, as segmentation_models_pytorch's do,
    or as another container."""

    def __init__(self, container):
        super().__init__()
        self.conv, self.container = nn.Conv2d(1, 3, 3, padding=1), container

    def forward(self, x):
        features = [x, torch.relu(self.conv(x))]
        return features if self.container is list else self.container(enumerate(features))


class Merge(nn.Module):
    def forward(self, features):  # a list, as smp's UnetDecoder.forward(features)
        assert isinstance(features, (list, collections.OrderedDict))  # the type the encoder gave
        return torch.cat(features if isinstance(features, list) else list(features.values()), 1)


class UNetLike(nn.Module):
    def __init__(self, container):
        super().__init__()
        self.encoder, self.decoder, self.head = Features(container), Merge(), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


@pytest.mark.parametrize("container", [list, collections.OrderedDict])
def test_a_trunk_that_takes_a_list_of_trunk_outputs_computes_once_too(monkeypatch, container):
    # smp's decoders take the encoder's features as a list: with only the head random, the
    # decoder (and the 14M weights before it) ran once for every sample, slower than all random.
    net = pyro_module(UNetLike(container))
    set_prior(net, "UNetLike.head.weight", "Normal", 0, 1)
    model = supervised(net, Categorical(DATASET_SIZE, class_dim=1))
    guide = CheckpointNormal(model, init_scale=0.3)
    x = torch.randn(BATCH, 1, 4, 4)
    rows = []
    net.decoder.register_forward_hook(lambda module, args, output: rows.append(len(args[0][0])))
    pyro.set_rng_seed(0)
    once = predict(model, guide, x, num_samples=12, samples_per_pass=12).outputs
    assert rows[-2:] == [BATCH, BATCH]  # the pass on the inputs themselves, the check of one sample
    monkeypatch.setattr(runtime_prediction, "_deterministic_trunks", lambda net: [])
    pyro.set_rng_seed(0)
    assert torch.allclose(
        once, predict(model, guide, x, num_samples=12, samples_per_pass=12).outputs, atol=1e-5
    )


SEQUENCE_SOURCE = """\
import torch
from torch import nn


class SequenceClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(1, 8)
        self.mixer = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.mixer(self.embed(x.unsqueeze(-1))).mean(1))
"""


def test_a_backbone_read_through_torch_functions_of_the_inputs_computes_once_too(tmp_path, monkeypatch):
    # mambapy's classifier embeds x.unsqueeze(-1): no copy of the inputs, so its backbone ran
    # for every sample, and 50 samples took 27 s against 11 s a sample at a time (now 1 s).
    spec = "version: 1\npriors:\n  SequenceClassifier.head.weight: Normal(0, 1)\n"
    _, bayesian = _rewritten(tmp_path, SEQUENCE_SOURCE, spec)
    net = bayesian.SequenceClassifier()
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    x = torch.randn(BATCH, 16)
    rows = []
    net.mixer.register_forward_hook(lambda module, args, output: rows.append(len(args[0])))
    pyro.set_rng_seed(0)
    once = predict(model, guide, x, num_samples=10, samples_per_pass=10).outputs
    assert rows == [BATCH, 1, BATCH, BATCH]  # the guide's setup, a probe of one row, the pass, the check
    monkeypatch.setattr(runtime_prediction, "_deterministic_trunks", lambda net: [])
    pyro.set_rng_seed(0)
    assert torch.allclose(
        once, predict(model, guide, x, num_samples=10, samples_per_pass=10).outputs, atol=1e-5
    )


class Residual(nn.Module):
    """A random layer's output added in place to a backbone's, before more backbone."""

    def __init__(self):
        super().__init__()
        self.embed, self.mixer, self.post = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(2)])
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        hidden = self.embed(x)
        for block in self.blocks:  # held in a list, which is never called itself
            hidden = block(hidden)
        hidden += 0.05 * self.mixer(hidden)
        return self.head(self.post(hidden))


class Reparameterized(nn.Module):
    """Draws its own noise, as a VAE's reparameterization does."""

    def forward(self, hidden):
        return hidden + 0.05 * torch.randn_like(hidden)


class NoisyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encode = nn.Linear(3, 6)
        self.noise = Reparameterized()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.noise(self.encode(x)))


def test_a_backbone_output_changed_in_place_is_no_copy_of_it(monkeypatch):
    # A copy changed in place (hidden += ...) stayed a copy of the backbone's output, and the
    # next backbone layer dropped the random mixer (outputs off by 0.15 of 0.35, within the
    # check's tolerance).
    torch.manual_seed(0)
    net = pyro_module(Residual())
    for entry in ["Residual.mixer.weight", "Residual.head.weight"]:
        set_prior(net, entry, "Normal", 0, 1)
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    x = torch.randn(BATCH, 3)
    pyro.set_rng_seed(0)
    once = predict(model, guide, x, num_samples=10, samples_per_pass=5).outputs
    monkeypatch.setattr(runtime_prediction, "_deterministic_trunks", lambda net: [])
    pyro.set_rng_seed(0)
    assert torch.allclose(
        once, predict(model, guide, x, num_samples=10, samples_per_pass=5).outputs, atol=1e-5
    )


def test_a_backbone_that_draws_its_own_noise_draws_it_for_every_sample():
    # Computed once a pass, a reparameterization drew one noise for all the pass's samples.
    net = pyro_module(NoisyNet())
    set_prior(net, "NoisyNet.head.weight", "Normal", 0, 1)
    rows = []
    net.noise.register_forward_hook(lambda module, args, output: rows.append(len(args[0])))
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    predict(model, guide, torch.randn(BATCH, 3), num_samples=5, samples_per_pass=5)
    assert rows == [
        BATCH,
        1,
        5 * BATCH,
        BATCH,
    ]  # the guide's setup, the probe, every sample's rows, the check


def test_blocks_held_in_a_list_compute_once(monkeypatch):
    net = pyro_module(Residual())
    set_prior(net, "Residual.head.weight", "Normal", 0, 1)
    rows = []
    net.blocks[0].register_forward_hook(lambda module, args, output: rows.append(len(args[0])))
    model = supervised(net, Categorical(DATASET_SIZE))
    predict(
        model,
        CheckpointNormal(model, init_scale=0.3),
        torch.randn(BATCH, 3),
        num_samples=10,
        samples_per_pass=10,
    )
    assert rows == [BATCH, 1, BATCH, BATCH]  # the guide's setup, the probe, the pass, the check


FEATURES_FIRST_SOURCE = """\
from torch import nn


class FeaturesFirst(nn.Module):
    def forward(self, x):
        return x.t()


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 5), FeaturesFirst())
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        return self.head(self.backbone(x).t())
"""


def test_a_backbone_whose_output_is_not_one_row_an_input_computes_as_written(tmp_path, recwarn):
    # Features first (as a time-major layer gives its steps first) are no copies of rows: the
    # backbone computes on the batch as the network wrote it.
    spec = "version: 1\npriors:\n  Classifier.head.weight: Normal(0, 1)\n"
    _, bayesian = _rewritten(tmp_path, FEATURES_FIRST_SOURCE, spec)
    model = supervised(bayesian.Classifier(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    x = torch.randn(BATCH, 3)
    pyro.set_rng_seed(0)
    outputs = predict(model, guide, x, num_samples=6, samples_per_pass=6).outputs
    assert not recwarn.list
    pyro.set_rng_seed(0)
    assert torch.allclose(
        outputs, predict(model, guide, x, num_samples=6, samples_per_pass=2).outputs, atol=1e-6
    )


def test_predict_draws_a_large_networks_samples_in_parts(monkeypatch):
    # Every sample's weights in one draw: a U-Net's 14 million random weights, 100 samples,
    # took 7 GB.
    x, _ = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    counts, in_passes = [], runtime_prediction._in_passes
    monkeypatch.setattr(
        runtime_prediction, "_in_passes", lambda *args: counts.append(args[3]) or in_passes(*args)
    )
    monkeypatch.setattr(runtime_prediction, "CPU_WEIGHTS_PER_DRAW", 3 * (27 + 3 + 192 + 4))  # 3 samples
    outputs = predict(model, guide, x, num_samples=10).outputs
    assert counts == [3, 3, 3, 1] and outputs.shape == (10, BATCH, 4)
    assert len({tuple(sample.flatten().tolist()) for sample in outputs}) == 10  # each its own weights


def test_predict_draws_a_laplace_guides_samples_by_what_is_random_in_them(monkeypatch):
    # Its point masses are one value, expanded: counted as weights of every sample, a
    # last-layer Laplace of a large network was drawn a few samples at a time, for nothing.
    checkpoint, x, y = trained_gap_regressor()
    net = GapRegressor()
    model = supervised(net, Normal(len(x), scale=0.1))
    guide = CheckpointLaplace(model, load_deterministic(net, checkpoint), (x, y))
    counts, in_passes = [], runtime_prediction._in_passes
    monkeypatch.setattr(
        runtime_prediction, "_in_passes", lambda *args: counts.append(args[3]) or in_passes(*args)
    )
    monkeypatch.setattr(runtime_prediction, "CPU_WEIGHTS_PER_DRAW", 10 * 33)  # 10 samples of the last layer
    predict(model, guide, x, num_samples=10)
    assert counts == [10]


def test_a_guides_first_predict_gives_what_its_later_ones_give_for_the_same_seed():
    # An autoguide's first call makes its parameters, which ran the model and drew from the
    # priors: on the caller's seed, the first predict differed from the others by 0.15.
    x, _ = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    probabilities = []
    for _ in range(2):
        pyro.set_rng_seed(0)
        probabilities.append(predict(model, guide, x, num_samples=10).probs)
    assert torch.equal(*probabilities)


PREDICT_ALONE = """
import sys

import torch
from torch import nn

from bayesify.runtime import Categorical, CheckpointNormal, load_deterministic, predict, pyro_module, set_prior, supervised

net = pyro_module(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
set_prior(net, "Sequential.*.weight", "Normal", 0, 1)
values = load_deterministic(net, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).state_dict())
model = supervised(net, Categorical())
predict(model, CheckpointNormal(model, values), torch.randn(16, 4))
print(sorted(name for name in ("torch._dynamo", "torch.fx.experimental.symbolic_shapes") if name in sys.modules))
"""


def test_a_process_that_only_predicts_does_not_load_torchs_compiler():
    # A script or a service that loads a fitted model to predict paid a second or two at its
    # first prediction: a dispatch mode and a shape broadcast imported torch._dynamo and torch.fx.
    imported = subprocess.run(
        [sys.executable, "-c", PREDICT_ALONE], capture_output=True, text=True, check=True
    ).stdout
    assert imported.strip() == "[]"


def test_a_predict_before_fit_leaves_the_learned_noise_to_start_at_the_residuals():
    # A look at the start fixed the noise's start at 1, where the residuals were 0.01: the
    # likelihood a hundred times too weak, the fit dragged the network off its checkpoint.
    torch.manual_seed(0)
    net = pyro_module(nn.Linear(2, 1))
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    x = torch.randn(64, 2)
    y = x @ torch.tensor([[1.0], [-2.0]]) + 0.01 * torch.randn(64, 1)
    model = supervised(net, Normal(len(x)))
    guide = CheckpointNormal(model, {"weight": torch.tensor([[1.0, -2.0]])})
    net.bias.data.zero_()
    assert predict(model, guide, x, num_samples=5).noise == 1
    fit(model, guide, (x, y), epochs=1, lr=1e-6, progress=False)
    assert pyro.param("obs.scale").item() < 0.05


def test_predict_summarizes_classification_and_regression():
    x, _ = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.5)
    prediction = predict(model, guide, x, num_samples=30)
    assert prediction.outputs.shape == (30, BATCH, 4) and prediction.probs.shape == (BATCH, 4)
    assert torch.allclose(prediction.probs.sum(-1), torch.ones(BATCH))
    assert (prediction.epistemic >= -1e-6).all() and (prediction.epistemic <= prediction.entropy + 1e-6).all()
    # Passes of 7 samples (the last of 2), or one sample and no plate at a time: 30 samples.
    for per_pass in (7, 1):
        outputs = predict(model, guide, x, num_samples=30, samples_per_pass=per_pass).outputs
        assert outputs.shape == (30, BATCH, 4) and not torch.allclose(outputs[0], outputs[-1])

    assert_passes_replay_one_draw(model, guide, x)
    assert_passes_replay_one_draw(model, AutoNormal(poutine.block(model, hide=["obs"])), x)

    net = pyro_module(nn.Linear(2, 1))
    set_prior(net, "Linear.weight", "Normal", 0, 1)
    regression = supervised(net, Normal(DATASET_SIZE, scale=0.1))
    prediction = predict(regression, CheckpointNormal(regression, init_scale=0.5), torch.randn(BATCH, 2), 50)
    assert prediction.mean.shape == prediction.sd.shape == (BATCH, 1)
    assert (prediction.sd > prediction.epistemic).all() and (prediction.epistemic > 0).all()


class Bernoullis:
    """A likelihood of one's own, as runtime.md describes one: a callable with Pyro statements
    and a ``summarize`` for ``predict``, no ``name``."""

    def __call__(self, output, y=None):
        with pyro.plate("data", DATASET_SIZE, subsample_size=len(output)):
            return pyro.sample("obs", dist.Bernoulli(logits=output.squeeze(-1)), obs=y)

    def summarize(self, outputs):
        return outputs.sigmoid().mean(0).squeeze(-1)


def test_a_likelihood_of_ones_own_goes_through_both_guides_fit_and_predict():
    net = pyro_module(nn.Linear(2, 1))
    set_prior(net, "Linear.weight", "Normal", 0, 1)
    model = supervised(net, Bernoullis())
    x = torch.randn(DATASET_SIZE, 2)
    y = (x[:, 0] > 0).float()
    guide = CheckpointNormal(model, init_scale=0.1)
    first = predict(model, guide, x[:BATCH], num_samples=20)  # the guide set up without targets
    assert first.shape == (BATCH,) and "obs" not in poutine.trace(guide).get_trace(x[:BATCH]).nodes
    fit(model, guide, DataLoader(TensorDataset(x, y), batch_size=BATCH), epochs=10, lr=0.05, progress=False)
    after = predict(model, guide, x, num_samples=20)
    assert ((after > 0.5).float() == y).float().mean() > 0.9
    laplace = CheckpointLaplace(model, {}, (x, y))
    assert predict(model, laplace, x[:BATCH], num_samples=20).shape == (BATCH,)


def test_predict_takes_more_rows_than_the_data_set_had_and_training_says_when_a_batch_does():
    """Node classification trains on a graph's labelled nodes and predicts on all of them: a
    first predict (the guide set up on it) failed in Pyro's subsampling."""
    model = supervised(Net(), Categorical(BATCH))
    x, y = images(3 * BATCH)
    assert predict(model, CheckpointNormal(model), x, num_samples=5).probs.shape == (3 * BATCH, 4)
    with pytest.raises(ValueError, match="a batch of 24 observations from a data set of dataset_size=8"):
        fit(model, CheckpointNormal(model), (x, y), progress=False)


def test_categorical_summary_is_torchs_softmax_and_entropy():
    outputs = 5 * torch.randn(30, BATCH, 4)
    prediction = Categorical().summarize(outputs.clone())
    probs = outputs.softmax(-1).mean(0)
    sample_entropy = dist.Categorical(logits=outputs).entropy().mean(0)
    assert torch.equal(prediction.outputs, outputs)  # the samples' outputs are kept as they were
    assert torch.allclose(prediction.probs, probs, atol=1e-6)
    assert torch.allclose(prediction.entropy, dist.Categorical(probs=probs).entropy(), atol=1e-5)
    assert torch.allclose(prediction.epistemic, prediction.entropy - sample_entropy, atol=1e-5)


def test_checkpoint_guide_starts_at_the_weights_with_a_relative_spread():
    class Positive(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            pyro_module(self)
            set_prior(self, "Positive.fc.weight", "Normal", 0, 1)
            set_prior(self, "Positive.fc.bias", "LogNormal", 0, 1)

        def forward(self, x):
            return self.fc(x)

    trained = nn.Linear(3, 2)
    with torch.no_grad():
        trained.bias.copy_(torch.tensor([-0.5, 0.5]))  # the first is outside LogNormal's support
    net = Positive()
    values = load_deterministic(net, {f"fc.{k}": v for k, v in trained.state_dict().items()})
    model = supervised(net, Categorical())
    guide = CheckpointNormal(model, values, delta=0.2)
    guide(torch.zeros(1, 3))
    loc, scale = guide._get_loc_and_scale("fc.weight")
    assert torch.equal(loc, trained.weight)
    assert torch.allclose(scale, (0.2 * trained.weight.abs()).clamp_min(1e-3))
    # The negative bias cannot start the guide: the site starts from its prior, as if unsaved.
    bias_loc, bias_scale = guide._get_loc_and_scale("fc.bias")
    assert torch.isfinite(bias_loc).all() and not torch.allclose(bias_loc[1], torch.tensor(0.5).log())
    assert torch.allclose(bias_scale, torch.full((2,), 1e-3))


class GapRegressor(PyroModule):
    """A 1-D regression network, its weights random as the recipe's spec makes them."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(1, 32)
        self.out = nn.Linear(32, 1)
        pyro_module(self)
        set_prior(self, "GapRegressor.*.weight", "Normal", 0, 1)
        set_prior(self, "GapRegressor.*.bias", "Normal", 0, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def trained_regressor(x, y, steps):
    """The deterministic GapRegressor trained on ``(x, y)``, and its training residual."""
    trained = nn.Sequential()
    trained.hidden, trained.out = nn.Linear(1, 32), nn.Linear(32, 1)
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(trained.out(torch.tanh(trained.hidden(x))), y).backward()
        optimizer.step()
    with torch.no_grad():
        return trained, (trained.out(torch.tanh(trained.hidden(x))) - y).pow(2).mean().sqrt().item()


def trained_gap_regressor():
    """A checkpoint trained on inputs with a gap in [-1, 1], and its training data."""
    x = torch.cat([torch.linspace(-3, -1, 40), torch.linspace(1, 3, 40)]).unsqueeze(-1)
    y = torch.sin(x) + 0.1 * torch.randn_like(x)
    return trained_regressor(x, y, steps=300)[0].state_dict(), x, y


def test_fit_leaves_the_checkpoints_values_as_they_were():
    # The guide's means were the values' tensors themselves: fit moved them, and with them
    # the deterministic model's own weights where load_deterministic had read them.
    trained = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    checkpoint = {key: value.clone() for key, value in trained.state_dict().items()}
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    values = load_deterministic(pyro_module(net), checkpoint)
    model = supervised(net, Categorical(32))
    guide = CheckpointNormal(model, values)
    fit(model, guide, (torch.randn(32, 4), torch.randint(0, 3, (32,))), epochs=5, lr=0.01, progress=False)
    assert not torch.equal(guide._get_loc_and_scale("0.weight")[0], checkpoint["0.weight"])
    assert all(torch.equal(values[name], checkpoint[name]) for name in values)


def test_fit_refuses_a_network_whose_parameter_names_pyro_holds_for_another_model():
    # A second model of one class without clearing Pyro's store: its optimizer trained the
    # first model's biases, and the second's never moved.
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))

    def classifier():
        net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        set_prior(net, "nn.Linear.weight", "Normal", 0, 1)  # the biases deterministic
        model = supervised(pyro_module(net), Categorical(len(x)))
        return model, CheckpointNormal(model)

    fit(*classifier(), (x, y), progress=False)
    with pytest.raises(ValueError, match="store already holds '0.bias' for another model"):
        fit(*classifier(), (x, y), progress=False)
    pyro.clear_param_store()
    model, guide = classifier()
    before = model.net[0].bias.detach().clone()
    fit(model, guide, (x, y), epochs=3, progress=False)
    assert not torch.equal(model.net[0].bias, before)


def test_fitted_guides_copy_as_lightnings_callbacks_and_torchs_averagedmodel_copy_them():
    # Their first call traced the model with autograd on, and kept the trace: copy.deepcopy
    # refused its non-leaf tensors (Lightning's StochasticWeightAveraging, ddp_spawn).
    x = torch.linspace(-3, 3, 40).unsqueeze(-1)
    y = torch.sin(x)
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)  # the biases deterministic, with autograd
    model = supervised(pyro_module(net), Normal(len(x)))
    mean_field = CheckpointNormal(model)
    fit(model, mean_field, (x, y), epochs=2, progress=False)
    for guide in (mean_field, CheckpointLaplace(model, {}, (x, y))):
        copied = copy.deepcopy(guide)
        predictions = []
        for each in (guide, copied):
            pyro.set_rng_seed(4)
            predictions.append(predict(model, each, x, num_samples=5).mean)
        assert torch.equal(*predictions)


class SharedBlocks(nn.Module):
    """N-BEATS with shared weights: one block held, and run, twice."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.block = nn.Linear(4, 4)
        self.blocks = nn.ModuleList([self.block, self.block])

    def forward(self, x):
        hidden = self.embed(x)
        for block in self.blocks:
            hidden = block(torch.tanh(hidden))
        return hidden[:, :1]


def test_laplace_names_a_last_layer_that_enters_the_network_twice():
    # A trial's N-BEATS stopped at "name the output layer's sites": the site was the output
    # layer's, and the message did not say that the layer runs twice.
    torch.manual_seed(0)
    net = pyro_module(SharedBlocks())
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    model = supervised(net, Normal(50, scale=0.1))
    x, y = torch.randn(50, 3), torch.randn(50, 1)
    with pytest.raises(ValueError, match=r"blocks.1.weight enters the network in more than one place"):
        CheckpointLaplace(model, {"blocks.1.weight": 2 * torch.randn(4, 4)}, (x, y))


def test_laplace_guide_is_the_exact_last_layer_posterior_and_widens_between_the_data(monkeypatch):
    checkpoint, x, y = trained_gap_regressor()
    net = GapRegressor()
    values = load_deterministic(net, checkpoint)
    model = supervised(net, Normal(len(x), scale=0.1))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    with pytest.raises(ValueError, match="needs the training data"):
        CheckpointLaplace(model, values, [])
    monkeypatch.setattr(guides, "MAX_LAPLACE_SIZE", 32)  # a layer too wide for a full covariance
    with pytest.raises(ValueError, match="out.weight, out.bias hold 33 weights"):
        CheckpointLaplace(model, values, loader)
    monkeypatch.undo()
    # A hidden layer's weights enter the network through its nonlinearity: even at the trained
    # network, the curvature of their negative log density has directions below zero.
    with pytest.raises(
        ValueError, match="Hessian of hidden.weight at the checkpoint is not positive definite"
    ):
        CheckpointLaplace(model, values, loader, sites=["hidden.weight"])
    pyro.clear_param_store()
    guide = CheckpointLaplace(model, values, loader)
    assert list(guide.parameters()) == []  # computed, not trained

    # With a normal likelihood and prior, the last layer's posterior given the trained
    # features is Bayesian linear regression's: precision features.T @ features / noise**2 + 1.
    # (Up to float32's precision: the curvatures are 1e4 apart.)
    features = torch.tanh(x @ values["hidden.weight"].T + values["hidden.bias"])
    features = torch.cat([features, torch.ones(len(x), 1)], 1)
    covariance = torch.linalg.inv(features.T @ features / 0.1**2 + torch.eye(33))
    laplace = guide[1]
    scale_tril = laplace.scale[:, None] * laplace.scale_tril
    assert torch.allclose(scale_tril @ scale_tril.T, covariance, atol=0.01)
    assert torch.equal(laplace.loc, torch.cat([values["out.weight"].flatten(), values["out.bias"]]))
    # The hidden layer stays at its trained weights.
    sample = poutine.trace(guide).get_trace(x)
    assert torch.equal(sample.nodes["hidden.weight"]["value"], values["hidden.weight"])

    # Between the two clusters of inputs, the weights' share of the uncertainty grows.
    gap = torch.linspace(-0.5, 0.5, 20).unsqueeze(-1)
    assert predict(model, guide, gap).epistemic.mean() > 2 * predict(model, guide, x).epistemic.mean()
    assert_passes_replay_one_draw(model, guide, gap)


class ActorCritic(nn.Module):
    """stable-baselines3's ActorCriticPolicy: the value head runs before the action head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 8), nn.Tanh())
        self.value_net = nn.Linear(8, 1)
        self.action_net = nn.Linear(8, 2)

    def forward(self, x):
        hidden = self.body(x)
        values = self.value_net(hidden)
        return self.action_net(hidden), values


def test_laplace_guides_last_layer_is_the_last_one_the_observed_output_reads():
    # The site sampled last was the action head's, which the observed value never reads: its
    # Laplace posterior was its prior, and the value's predictions had no spread at all.
    x, y = torch.randn(40, 3), torch.randn(40, 1)
    net = pyro_module(ActorCritic())
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    values = load_deterministic(net, ActorCritic().state_dict())
    model = supervised(net, Normal(len(x), scale=0.1), output=lambda out: out[1])
    guide = CheckpointLaplace(model, values, (x, y))
    laplace = poutine.trace(guide[1]).get_trace(x).stochastic_nodes
    assert "value_net.weight" in laplace and "action_net.weight" not in laplace
    assert (predict(model, guide, x).epistemic > 0).all()
    unread = supervised(net, Normal(len(x), scale=0.1), output=lambda out: out[1].detach())
    with pytest.raises(ValueError, match="depends on none of the random weights"):
        CheckpointLaplace(unread, values, (x, y))


def test_laplace_guide_says_when_the_model_has_nothing_random():
    model = supervised(pyro_module(nn.Linear(2, 1)), Normal(DATASET_SIZE, scale=0.1))
    with pytest.raises(ValueError, match="CheckpointLaplace: the model has no random weights"):
        CheckpointLaplace(model, {}, (torch.randn(BATCH, 2), torch.randn(BATCH, 1)))


def test_laplace_guide_sets_a_learned_noise_by_the_evidence_approximation():
    checkpoint, x, y = trained_gap_regressor()
    net = GapRegressor()
    values = load_deterministic(net, checkpoint)
    model = supervised(net, Normal(len(x)))
    guide = CheckpointLaplace(model, values, DataLoader(TensorDataset(x, y), batch_size=16))

    # MacKay's re-estimate for Bayesian linear regression on the trained features: noise**2 =
    # RSS / (n - gamma), gamma = trace(data precision @ covariance), at its fixed point.
    features = torch.tanh(x @ values["hidden.weight"].T + values["hidden.bias"]).double()
    features = torch.cat([features, torch.ones(len(x), 1, dtype=torch.double)], 1)
    last_layer = torch.cat([values["out.weight"].flatten(), values["out.bias"]]).double()
    residuals = y.double() - features @ last_layer[:, None]
    noise = residuals.pow(2).mean().sqrt()
    for _ in range(100):
        data = features.T @ features / noise**2
        gamma = torch.trace(data @ torch.linalg.inv(data + torch.eye(33, dtype=torch.double)))
        noise = (residuals.pow(2).sum() / (len(x) - gamma)).sqrt()
    assert torch.isclose(pyro.param("obs.scale").double(), noise, rtol=1e-3)
    assert 1 < gamma < 33 and noise > residuals.pow(2).mean().sqrt()  # wider than the residuals
    # The covariance is the posterior's at that noise.
    laplace = guide[1]
    scale_tril = laplace.scale[:, None] * laplace.scale_tril
    covariance = torch.linalg.inv(data + torch.eye(33, dtype=torch.double)).float()
    assert torch.allclose(scale_tril @ scale_tril.T, covariance, atol=0.01)
    assert torch.allclose(predict(model, guide, x[:3]).noise, pyro.param("obs.scale"))


def test_targets_that_differ_from_the_outputs_by_dimensions_of_one_are_one_per_output():
    # Tabular targets come as (batch,), a regressor's outputs as (batch, 1), and labels at
    # times as (batch, 1): broadcast, each target would be observed batch times.
    x = torch.randn(BATCH, 3)
    weight = {"weight": torch.randn(1, 3)}
    regression = poutine.condition(
        supervised(pyro_module(nn.Linear(3, 1)), Normal(DATASET_SIZE, 0.5)), weight
    )
    y = torch.randn(BATCH)
    assert torch.equal(log_prob_of_obs(regression, x, y)[0], log_prob_of_obs(regression, x, y[:, None])[0])
    labels = torch.randint(0, 4, (BATCH,))
    classes = supervised(pyro_module(nn.Linear(3, 4)), Categorical(DATASET_SIZE))
    assert torch.equal(
        log_prob_of_obs(classes, x, labels)[0], log_prob_of_obs(classes, x, labels[:, None])[0]
    )
    outputs = torch.randn(5, BATCH, 1)
    prediction = Normal(scale=0.5).summarize(outputs)
    assert torch.equal(prediction.nll(y), prediction.nll(y[:, None]))
    assert torch.isclose(
        prediction.nll(y), -dist.Normal(outputs[..., 0], 0.5).log_prob(y).exp().mean(0).log().mean()
    )
    with pytest.raises(ValueError, match=r"targets have the shape \(8, 2\).*outputs for them \(8, 1\)"):
        log_prob_of_obs(regression, x, torch.randn(BATCH, 2))


def test_laplace_guide_is_computed_in_eval_mode_and_leaves_the_running_statistics(tmp_path):
    # A network built afresh is in training mode: its BatchNorm would normalize by each batch
    # and update its running statistics while the Hessian is computed.
    net, trained, values = _rewritten_normed_net(tmp_path, ["NormedNet.fc.weight"])
    x, y = torch.randn(16, 1, 4, 4), torch.randn(16, 3)
    covariances = []
    for mode in (True, False):
        pyro.clear_param_store()
        model = supervised(net.train(mode), Normal(len(x), scale=0.5))
        laplace = CheckpointLaplace(model, values, (x, y))[-1]
        covariances.append(laplace.scale[:, None] * laplace.scale_tril)
        assert net.training is mode
        assert torch.equal(net.norm.running_mean, trained.norm.running_mean)
    assert torch.equal(*covariances)


def test_the_evidence_noise_predicts_held_out_data_better_than_the_training_residual():
    # A network fitted closely to 40 noisy points: its residuals understate the noise.
    nlls = {"residual": 0.0, "evidence": 0.0}
    for seed in range(3):
        pyro.set_rng_seed(seed)
        x, x_test = torch.rand(40, 1) * 6 - 3, torch.rand(500, 1) * 6 - 3
        y, y_test = (torch.sin(inputs) + 0.3 * torch.randn_like(inputs) for inputs in (x, x_test))
        trained, residual = trained_regressor(x, y, steps=1000)
        for noise, likelihood in [("residual", Normal(len(x), scale=residual)), ("evidence", Normal(len(x)))]:
            pyro.clear_param_store()
            net = GapRegressor()
            model = supervised(net, likelihood)
            guide = CheckpointLaplace(model, load_deterministic(net, trained.state_dict()), (x, y))
            nlls[noise] += predict(model, guide, x_test).nll(y_test).item() / 3
    assert nlls["evidence"] < nlls["residual"] - 0.05, nlls


MLP_SOURCE = """\
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(2, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))
"""


def test_a_rewritten_model_trains_end_to_end_through_the_recipe(tmp_path):
    spec = 'version: 1\npriors:\n  "MLP.*.weight": Normal(0, 1)\n'
    deterministic, bayesian = _rewritten(tmp_path, MLP_SOURCE, spec)

    x = torch.randn(200, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()
    trained = deterministic.MLP()
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(trained(x), y).backward()
        optimizer.step()

    net = bayesian.MLP()
    values = load_deterministic(net, trained.state_dict())
    model = supervised(net, Categorical(dataset_size=len(x)))
    guide = CheckpointNormal(model, values)
    fit(model, guide, DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True), epochs=20, progress=False)
    prediction = predict(model, guide, x, num_samples=50)
    deterministic_nll = nn.functional.cross_entropy(trained(x), y)
    assert prediction.nll(y) < deterministic_nll + 0.1
    assert (prediction.probs.argmax(-1) == y).float().mean() > 0.9


def _rewritten(tmp_path, source, spec):
    """The module of ``source`` and its rewrite under ``spec`` by the CLI, as a user makes them."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "net.py").write_text(source)
    (tmp_path / "priors.yaml").write_text(spec)
    subprocess.run(
        [sys.executable, "-m", "bayesify", "rewrite", "src", "--out", "bayesian", "--priors", "priors.yaml"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return tuple(_import(tmp_path / folder / "net.py") for folder in ("src", "bayesian"))


def _import(path):
    spec = importlib.util.spec_from_file_location(f"recipe_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HELD_SOURCE = """\
from torch import nn


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


class Agent(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = Head()
"""


def test_a_guide_on_a_network_another_module_holds_starts_at_its_checkpoint(tmp_path):
    # SB3's DQN acts with policy.q_net, whose sites are named from the policy
    # ("q_net.q_net.4.weight"): the values were keyed "q_net.4.weight", matched no site, and
    # the guide started at the prior, silently (predictions off by 18 on Q-values of 25).
    deterministic, bayesian = _rewritten(
        tmp_path, HELD_SOURCE, "version: 1\npriors:\n  Head.fc.weight: Normal(0, 1)\n"
    )
    trained = deterministic.Head()
    with torch.no_grad():
        trained.fc.weight.mul_(10)  # far from the prior
    x = torch.randn(8, 3)
    for guide_type in (CheckpointNormal, CheckpointLaplace):
        pyro.clear_param_store()
        net = bayesian.Agent().head
        values = load_deterministic(net, trained.state_dict())
        assert list(values) == ["head.fc.weight"]
        model = supervised(net, Normal(len(x), scale=0.1))
        guide = (
            guide_type(model, values)
            if guide_type is CheckpointNormal
            else guide_type(model, values, (x, trained(x)))
        )
        prediction = predict(model, guide, x, num_samples=50)
        assert torch.allclose(prediction.mean, trained(x), atol=0.2), guide_type


SLOPE_SOURCE = """\
import torch
from torch import nn


class Slope(nn.Module):
    \"\"\"A network and its derivative by its input, made differentiable in place as DeepXDE does.\"\"\"

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(1, 16)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        with torch.enable_grad():
            x.requires_grad_(True)
            u = self.out(torch.tanh(self.hidden(x)))
            (slope,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        return torch.cat([u, slope], -1)
"""


def test_a_network_that_differentiates_by_its_input_predicts_each_samples_derivative_in_one_pass(
    tmp_path, recwarn
):
    # The first layer read the shared input in place of the network's, so its requires_grad_()
    # left it out of the graph: predict fell back to a pass a sample, 20 times slower, with a
    # warning that blamed the network.
    _, bayesian = _rewritten(
        tmp_path, SLOPE_SOURCE, 'version: 1\npriors:\n  "Slope.*.weight": Normal(0, 1)\n'
    )
    model = supervised(bayesian.Slope(), Normal(DATASET_SIZE, scale=1.0))
    guide = CheckpointNormal(model, init_scale=0.5)
    x = torch.linspace(-1, 1, 201).unsqueeze(-1)
    outputs = predict(model, guide, x, num_samples=5).outputs
    assert not recwarn.list
    # Each sample's slope is its own function's: the central differences of its values.
    differences = (outputs[:, 2:, 0] - outputs[:, :-2, 0]) / (x[2, 0] - x[0, 0])
    assert torch.allclose(outputs[:, 1:-1, 1], differences, atol=0.02)


def test_a_physics_informed_model_trains_with_a_checkpoint_guide_on_collocation_points_alone(tmp_path):
    # A PINN's residual differentiates the network by its input: CheckpointNormal set itself up
    # without autograd and failed ("element 0 of tensors does not require grad"), and fit read
    # the one-input data (x,) as batches of rows.
    _, bayesian = _rewritten(tmp_path, MLP_SOURCE, 'version: 1\npriors:\n  "MLP.*.weight": Normal(0, 1)\n')
    net = bayesian.MLP()

    def model(x):
        x = x.clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(net(x)[:, 0].sum(), x, create_graph=True)
        pyro.factor("physics", -100 * (slope[:, 0] - 1).pow(2).sum())  # du/dx0 = 1

    guide = CheckpointNormal(model, init_scale=0.05)
    collocation = torch.rand(64, 2) * 2 - 1
    losses = fit(model, guide, (collocation,), epochs=300, lr=0.01, progress=False)
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 40


def test_a_guide_refuses_values_that_are_for_none_of_its_sites(tmp_path):
    _, bayesian = _rewritten(tmp_path, HELD_SOURCE, "version: 1\npriors:\n  Head.fc.weight: Normal(0, 1)\n")
    model = supervised(bayesian.Agent().head, Normal(8, scale=0.1))
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"'fc.weight', its sites are 'head.fc.weight'"):
        CheckpointNormal(model, {"fc.weight": torch.zeros(2, 3)})(x)
    with pytest.raises(ValueError, match="none of the values is for a random site"):
        CheckpointLaplace(model, {"fc.weight": torch.zeros(2, 3)}, (x, torch.zeros(8, 2)))


CONV_SOURCE = """\
import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((-1, -2)))
"""
FAN_SPEC = """\
version: 1
priors:
  ConvNet.conv.weight: Normal(0, kaiming())
  ConvNet.conv.bias: Normal(0, radford())
  ConvNet.fc.weight: Normal(deterministic(), xavier())
"""


def test_spec_priors_scaled_by_fan_in_and_centred_on_the_checkpoint(tmp_path):
    deterministic, bayesian = _rewritten(tmp_path, CONV_SOURCE, FAN_SPEC)
    assert 'set_prior(self, "ConvNet.conv.weight", "Normal", 0, "kaiming()")' in (
        (tmp_path / "bayesian" / "net.py").read_text()
    )
    net, trained = bayesian.ConvNet(), deterministic.ConvNet()
    with pytest.raises(RuntimeError, match="load_deterministic"):
        net(torch.zeros(1, 2, 5, 5))  # the centre is the checkpoint's, not loaded yet
    load_deterministic(net, trained.state_dict())
    trace = poutine.trace(net).get_trace(torch.zeros(1, 2, 5, 5))
    prior = {name: site["fn"].base_dist for name, site in trace.nodes.items() if site["type"] == "sample"}
    assert torch.allclose(prior["conv.weight"].scale, torch.tensor((2 / (2 * 3 * 3)) ** 0.5))  # fan_in 2·3·3
    assert torch.allclose(prior["conv.bias"].scale, torch.tensor(1 / 4**0.5))  # a vector: its length
    assert torch.allclose(prior["fc.weight"].scale, torch.tensor((2 / (4 + 3)) ** 0.5))
    assert torch.equal(prior["fc.weight"].loc, trained.fc.weight)
    assert prior["fc.weight"].loc.shape == (3, 4)


BATCHNORM_SOURCE = """\
import torch
from torch import nn


class NormedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        hidden = self.up(torch.relu(self.norm(self.conv(x))))
        return self.fc(hidden.view(hidden.size(0), -1))
"""


def _rewritten_normed_net(tmp_path, spec):
    """The rewritten NormedNet, its trained deterministic twin (running statistics set), and
    the values that start a guide."""
    entries = "".join(f'  "{entry}": Normal(0, 1)\n' for entry in spec)
    deterministic, bayesian = _rewritten(tmp_path, BATCHNORM_SOURCE, "version: 1\npriors:\n" + entries)
    trained = deterministic.NormedNet()
    with torch.no_grad():
        for _ in range(5):
            trained(torch.randn(32, 1, 4, 4) * 2 + 1)
    trained.eval()
    net = bayesian.NormedNet().eval()
    return net, trained, load_deterministic(net, trained.state_dict())


def test_predict_takes_networks_written_for_one_batch_dimension(tmp_path, recwarn):
    # BatchNorm2d wants 4-D inputs and view(size(0), -1) one batch dimension: with only layer
    # weights random, the samples travel in the batch and each layer splits them out.
    net, trained, values = _rewritten_normed_net(tmp_path, ["nn.Conv*.weight", "nn.Linear.weight"])
    assert set(values) == {"conv.weight", "up.weight", "fc.weight"}
    model = supervised(net, Categorical(DATASET_SIZE))
    x, _ = images()
    guide = CheckpointNormal(model, values, delta=1e-7, init_scale=1e-9)
    prediction = predict(model, guide, x, num_samples=12, samples_per_pass=5)
    assert not recwarn.list
    assert prediction.outputs.shape == (12, BATCH, 3)
    with torch.no_grad():
        assert torch.allclose(prediction.outputs, trained(x).expand(12, -1, -1), atol=1e-4)


def test_fit_from_a_checkpoint_runs_the_network_in_eval_mode_and_leaves_its_modes(tmp_path, recwarn):
    # Built afresh, a network is in training mode: a trial's EfficientNet fitted so from its
    # checkpoint reached a test NLL of 0.43, against 0.18 in eval mode; chemprop's output is
    # unscaled in eval mode alone, so its noise was fitted in other units than it predicted.
    built, trained, values = _rewritten_normed_net(tmp_path, ["nn.Conv*.weight", "nn.Linear.weight"])
    x, _ = images()
    data = (x, torch.randint(0, 3, (len(x),)))
    losses = {}
    for mode in ("eval", "train"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        net = copy.deepcopy(built).train(mode == "train")  # fit trains its deterministic parameters
        net.up.eval()
        model = supervised(net, Categorical(DATASET_SIZE))
        losses[mode] = fit(model, CheckpointNormal(model, values), data, epochs=3, progress=False)
        assert (net.training, net.norm.training, net.up.training) == (mode == "train",) * 2 + (False,)
        assert torch.equal(net.norm.running_mean, trained.norm.running_mean)  # not updated by fit
    assert losses["train"] == losses["eval"]
    # Started at the checkpoint as load_deterministic's docstring shows, by Pyro's own guide.
    pyro.clear_param_store()
    net = copy.deepcopy(built).train()
    load_deterministic(net, trained.state_dict())
    model = supervised(net, Categorical(DATASET_SIZE))
    fit(model, AutoNormal(model, init_loc_fn=init_to_value(values=values)), data, progress=False)
    assert net.training and torch.equal(net.norm.running_mean, trained.norm.running_mean)
    assert not recwarn.list


def test_samples_in_the_batch_are_each_computed_with_their_own_weights(tmp_path):
    net, _, values = _rewritten_normed_net(tmp_path, ["nn.Conv*.weight", "nn.Linear.weight"])
    model = supervised(net, Categorical(DATASET_SIZE))
    x, _ = images()
    guide = CheckpointNormal(model, values, delta=0.5)
    with torch.no_grad(), pyro.plate("samples", 4, dim=-2):
        weights = poutine.trace(guide).get_trace(x)
        batch = x.repeat(4, 1, 1, 1)
        with batched.SamplesInBatchMessenger(4, shared=(x, batch)):
            together = poutine.replay(net, trace=weights)(batch).reshape(4, BATCH, 3)
        with batched.SamplesInBatchMessenger(4):  # the first layer splits the batch too
            split = poutine.replay(net, trace=weights)(batch).reshape(4, BATCH, 3)
    assert torch.allclose(together, split, atol=1e-5)
    for i in range(4):
        drawn = {
            name: weights.nodes[name]["value"][i, 0] for name in ("conv.weight", "up.weight", "fc.weight")
        }
        with torch.no_grad():
            assert torch.allclose(together[i], poutine.condition(net, drawn)(x), atol=1e-5)


def test_predict_runs_once_per_sample_where_the_network_cannot_take_a_batch_of_weights(tmp_path):
    # "**.weight" makes the norm's weight random too: it meets the activations themselves, so
    # the samples keep their own dimension, which BatchNorm2d refuses; predict says so and
    # computes one sample at a time.
    net, trained, values = _rewritten_normed_net(tmp_path, ["**.weight"])
    model = supervised(net, Categorical(DATASET_SIZE))
    x, _ = images()
    guide = CheckpointNormal(model, values, delta=1e-7, init_scale=1e-9)
    with pytest.warns(
        UserWarning, match=r"did not take a batch of weight samples \(ValueError: expected 4D"
    ) as caught:
        prediction = predict(model, guide, x, num_samples=7, samples_per_pass=5)
    # Where in the network: the line that called BatchNorm2d, not torch's own.
    assert f"raised at {tmp_path}" in str(caught[0].message)
    assert prediction.outputs.shape == (7, BATCH, 3)
    with torch.no_grad():
        assert torch.allclose(prediction.outputs, trained(x).expand(7, -1, -1), atol=1e-4)


class PackedBatch(nn.Module):
    """Asserts the size of the batch it packs, as vit-pytorch's NaViT does (bare there: pytest
    rewrites this one to say what failed)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        assert len(x) <= 4
        return self.fc(x)


def test_predict_says_where_a_bare_assert_refused_a_batch_of_samples():
    net = pyro_module(PackedBatch())
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    model = supervised(net, Categorical(4))
    with pytest.warns(UserWarning, match=r"(?s)\(AssertionError.*, raised at \S*test_inference.py:\d+\)"):
        predict(model, CheckpointNormal(model), torch.randn(4, 3), num_samples=3)


class HeldTwice(nn.Module):
    """A layer held under two paths (as monai's DynUNet keeps its blocks in ``skip_layers``):
    its weights are in the state_dict under both."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.skips = nn.ModuleList([self.encoder])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        hidden = torch.relu(self.encoder(x))
        return self.head(hidden.view(hidden.size(0), -1))


class BayesianHeldTwice(HeldTwice, PyroModule):
    def __init__(self):
        super().__init__()
        pyro_module(self)
        set_prior(self, "BayesianHeldTwice.*.weight", "Normal", 0, 1)


def test_a_layer_held_twice_loads_from_its_checkpoint_and_predicts_in_one_pass(recwarn):
    trained, net = HeldTwice(), BayesianHeldTwice()
    assert "skips.0.weight" in trained.state_dict()
    values = load_deterministic(net, trained.state_dict())
    # By the one name its site is sampled under: where it is held last.
    assert sorted(values) == ["head.weight", "skips.0.weight"]
    assert torch.equal(values["skips.0.weight"], trained.encoder.weight)
    model = supervised(net, Normal(DATASET_SIZE, scale=1.0))
    x = torch.randn(BATCH, 3)
    prediction = predict(
        model, CheckpointNormal(model, values, delta=1e-7, init_scale=1e-9), x, num_samples=3
    )
    assert not recwarn.list
    with torch.no_grad():
        assert torch.allclose(prediction.mean, trained(x), atol=1e-5)


class MaskedNet(PyroModule):
    """A network of two inputs, as a transformer takes tokens and their mask: features of
    five positions, pooled over the positions the mask keeps."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.head = nn.Linear(6, 4)
        pyro_module(self)
        set_prior(self, "MaskedNet.*.weight", "Normal", 0, 1)

    def forward(self, x, mask):
        hidden = torch.relu(self.embed(x)) * mask.unsqueeze(-1)
        return self.head(hidden.sum(-2) / mask.sum(-1, keepdim=True))


def masked(n=BATCH):
    mask = (torch.rand(n, 5) < 0.7).float()
    mask[:, 0] = 1.0
    return torch.randn(n, 5, 3), mask, torch.randint(0, 4, (n,))


def test_a_network_of_several_inputs_trains_and_predicts_each_sample_with_its_own_weights(recwarn):
    x, mask, y = masked(64)
    model = supervised(MaskedNet(), Categorical(len(x)))
    guide = CheckpointNormal(model, init_scale=0.1)
    # A loader over TensorDataset(x, mask, y) gives flat batches: the inputs, then the targets.
    loader = DataLoader(TensorDataset(x, mask, y), batch_size=16, shuffle=True)
    losses = fit(model, guide, loader, epochs=30, lr=0.01, progress=False)
    assert losses[-1] < 0.8 * losses[0]
    inputs = (x[:BATCH], mask[:BATCH])  # both a row per example: the samples ride in the batch
    assert_predicts_in_one_pass_as_each_sample_alone(
        model, guide, inputs, lambda drawn: poutine.condition(model.net, drawn)(*inputs), recwarn
    )


def test_laplace_guide_reads_several_inputs_as_one_batch_or_from_a_loader():
    x, mask, _ = masked(32)
    model = supervised(MaskedNet(), Normal(len(x), scale=0.5))
    targets = torch.randn(32, 4)
    values = {"embed.weight": torch.randn(6, 3), "head.weight": torch.randn(4, 6)}
    one_batch = CheckpointLaplace(model, values, ((x, mask), targets))
    from_loader = CheckpointLaplace(model, values, DataLoader(TensorDataset(x, mask, targets), batch_size=8))
    laplace, same = one_batch[-1], from_loader[-1]
    assert laplace.latent_dim == 6 * 4  # the head's weight
    assert torch.allclose(laplace.scale, same.scale, rtol=1e-4)
    assert torch.allclose(laplace.scale_tril, same.scale_tril, atol=1e-4)
    prediction = predict(model, one_batch, (x, mask), num_samples=5)
    assert prediction.mean.shape == (32, 4)


class GraphNet(PyroModule):
    """A graph network written for one batch of nodes: each node adds its neighbours' features
    (``index_add`` along the first dimension, over the edges' node indices)."""

    def __init__(self):
        super().__init__()
        self.node = nn.Linear(3, 5)
        self.head = nn.Linear(5, 2)
        pyro_module(self)
        set_prior(self, "GraphNet.*.weight", "Normal", 0, 1)

    def forward(self, x, edges):
        hidden = self.node(x)
        hidden = hidden.index_add(0, edges[1], hidden[edges[0]])
        return self.head(torch.relu(hidden))


class BatchPooled(PyroModule):
    """A network that pools its batch, as a model of sets pools the set it is given: its rows
    are not computed apart."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        pyro_module(self)
        set_prior(self, "BatchPooled.fc.weight", "Normal", 0, 1)

    def forward(self, x):
        hidden = self.fc(x)
        return hidden + hidden.sum(0)


@pytest.mark.parametrize("network", ["graph", "batch-pooled"])
def test_predict_checks_one_sample_and_runs_once_per_sample_where_a_pass_computes_it_wrongly(network):
    # Neither refuses a batch of samples: the graph network indexes the samples' dimension as
    # if it were the nodes', the pooled one sums every sample's rows. Unchecked, both would
    # predict wrongly without a word.
    if network == "graph":
        net, x = GraphNet(), (torch.randn(6, 3), torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]]))
    else:
        net, x = BatchPooled(), torch.randn(6, 3)
    model = supervised(net, Normal(DATASET_SIZE, scale=1.0))
    guide = CheckpointNormal(model, init_scale=0.3)
    with pytest.warns(UserWarning, match="differs from the network run on its weights alone"):
        prediction = predict(model, guide, x, num_samples=8)
    assert prediction.outputs.shape == (8, 6, 2)
    assert prediction.epistemic.gt(0).all()


@torch.no_grad()  # as predict runs it
def test_predicts_check_allows_rounding_small_beside_the_samples_differences():
    # In single precision, monai's SE-ResNeXt-50 under a draw of its prior amplifies the
    # rounding of the same sums in another order to 1e-2 of its outputs (bench/zoo_predict.py
    # in float32): far below its samples' differences, and no wrong computation. The check
    # allows a tenth of those differences, or a thousandth of the outputs' size.
    net = pyro_module(nn.Linear(3, 2))
    set_prior(net, "Linear.weight", "Normal", 0, 1)
    x = torch.randn(5, 3)
    model = supervised(net, Normal(DATASET_SIZE, scale=1.0))
    guide = CheckpointNormal(model, init_scale=0.5)
    with pyro.plate(runtime_prediction._SAMPLES, 4, dim=-2):
        weights = poutine.trace(guide).get_trace(x)
        computed = poutine.replay(net, trace=weights)(x)
    spread = float((computed[0] - computed[-1]).abs().max())
    size = float(computed[-1].abs().max())
    for off, agrees in ((0.05 * spread, True), (0.2 * spread, False)):
        shifted = computed.clone()
        shifted[-1] += off
        if agrees:
            runtime_prediction._check_last_sample(model, weights, x, shifted, 4)
        else:
            with pytest.raises(ValueError, match="differs from the network run on its weights alone"):
                runtime_prediction._check_last_sample(model, weights, x, shifted, 4)
    same = computed[-1:].expand(4, -1, -1).clone()  # no spread: rounding alone is allowed
    same[-1] += 5e-4 * size
    runtime_prediction._check_last_sample(model, weights, x, same, 4)
    same[-1] += 2e-3 * size
    with pytest.raises(ValueError, match="differs"):
        runtime_prediction._check_last_sample(model, weights, x, same, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_predicts_check_allows_the_rounding_of_the_networks_precision(dtype, recwarn):
    # In bfloat16 a pass of many samples and a pass of one round differently by a few
    # hundredths: that is no reason to fall back to a pass per sample.
    x, mask, _ = masked(64)
    model = supervised(MaskedNet().to(dtype), Categorical(DATASET_SIZE))
    prediction = predict(model, CheckpointNormal(model, init_scale=0.1), (x.to(dtype), mask.to(dtype)))
    assert prediction.probs.dtype == dtype
    assert not recwarn.list


def test_predict_runs_the_network_in_eval_mode_and_leaves_each_module_as_it_was(tmp_path, recwarn):
    # In training mode BatchNorm2d normalizes over its whole batch: with the samples in it,
    # over every sample's rows at once. Prediction is inference: the running statistics.
    net, _, values = _rewritten_normed_net(tmp_path, ["nn.Conv*.weight", "nn.Linear.weight"])
    model = supervised(net.train(), Categorical(DATASET_SIZE))
    frozen = next(module for module in net.modules() if isinstance(module, nn.BatchNorm2d)).eval()
    x, _ = images()
    guide = CheckpointNormal(model, values, delta=0.1)
    guide(x)  # set up, its random numbers drawn
    pyro.set_rng_seed(3)
    trained_mode = predict(model, guide, x, num_samples=6, samples_per_pass=6)
    assert not recwarn.list  # one pass, the check agreeing
    assert [module.training for module in net.modules()] == [module is not frozen for module in net.modules()]
    net.eval()
    pyro.set_rng_seed(3)
    assert torch.equal(
        predict(model, guide, x, num_samples=6, samples_per_pass=6).outputs, trained_mode.outputs
    )


class Segmenter(PyroModule):
    """A label per pixel, its logits laid out as torch's cross_entropy takes them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.classify = nn.Conv2d(6, 3, 1)
        pyro_module(self)
        set_prior(self, "Segmenter.*.weight", "Normal", 0, 1)

    def forward(self, x):
        return self.classify(torch.relu(self.conv(x)))  # (batch, classes, height, width)


def test_a_segmentation_network_trains_and_predicts_a_label_per_pixel():
    x = torch.randn(48, 1, 4, 4)
    y = (x[:, 0] > -0.5).long() + (x[:, 0] > 0.5).long()  # three classes by each pixel's value
    model = supervised(Segmenter(), Categorical(len(x), class_dim=1))
    guide = CheckpointNormal(model, init_scale=0.05)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    losses = fit(model, guide, loader, epochs=40, lr=0.03, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    prediction = predict(model, guide, x, num_samples=10)
    assert prediction.outputs.shape == (10, 48, 3, 4, 4)
    assert prediction.probs.shape == (48, 4, 4, 3)  # classes last, a distribution per pixel
    assert torch.allclose(prediction.probs, prediction.outputs.softmax(2).mean(0).movedim(1, -1), atol=1e-6)
    assert (prediction.probs.argmax(-1) == y).float().mean() > 0.8
    assert prediction.nll(y) < 0.5 * math.log(3)


@dataclasses.dataclass
class ClassifierOutput:
    """What a Hugging Face classifier returns: more than its logits."""

    logits: torch.Tensor
    hidden_states: torch.Tensor


class KeywordClassifier(MaskedNet):
    """A network in Hugging Face's manner: inputs by keyword, an output object."""

    def forward(self, input_ids, attention_mask):
        hidden = torch.relu(self.embed(input_ids)) * attention_mask.unsqueeze(-1)
        return ClassifierOutput(self.head(hidden.sum(-2) / attention_mask.sum(-1, keepdim=True)), hidden)


def test_a_network_in_hugging_faces_manner_trains_on_dict_batches_and_predicts_in_one_pass(recwarn):
    x, mask, y = masked(64)
    model = supervised(KeywordClassifier(), Categorical(len(x)), output=lambda out: out.logits)
    guide = CheckpointNormal(model, init_scale=0.1)
    # A dataset of dicts, as a tokenizer makes one: the loader collates them into dict batches.
    rows = [{"input_ids": x[i], "attention_mask": mask[i], "labels": y[i]} for i in range(len(x))]
    losses = fit(
        model, guide, DataLoader(rows, batch_size=16, shuffle=True), epochs=30, lr=0.01, progress=False
    )
    assert losses[-1] < 0.8 * losses[0]
    inputs = {"input_ids": x[:BATCH], "attention_mask": mask[:BATCH]}
    assert_predicts_in_one_pass_as_each_sample_alone(
        model, guide, inputs, lambda drawn: poutine.condition(model.net, drawn)(**inputs).logits, recwarn
    )


class TiedTokens(nn.Module):
    """A token model whose output layer shares the embedding's weight, as pytorch/examples'
    word_language_model ties them; tokens padded with 0."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(12, 5, padding_idx=0)
        self.decoder = nn.Linear(5, 12)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens):
        return self.decoder(torch.tanh(self.encoder(tokens)))


@pytest.mark.parametrize("selected", ["nn.Embedding.weight", "nn.Linear.weight"])
def test_a_random_embedding_predicts_each_sample_with_its_own_table_in_one_pass(selected, recwarn):
    net = pyro_module(TiedTokens())
    set_prior(net, selected, "Normal", 0, 1)
    tokens = torch.randint(0, 12, (BATCH, 6))
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    guide(tokens)  # set up, so that the draws below are the guide's
    assert_predicts_in_one_pass_as_each_sample_alone(
        model, guide, tokens, lambda drawn: poutine.condition(model.net, drawn)(tokens), recwarn
    )


class Encoded(nn.Module):
    """Tokens through torch's own transformer encoder, batch first, pooled into classes."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def test_torchs_transformer_with_random_linear_weights_predicts_in_one_pass(recwarn):
    """MultiheadAttention's out_proj, a Linear that nn.Linear.weight selects, is applied inside
    torch's functional attention, which takes one weight."""
    net = pyro_module(Encoded())
    set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
    tokens = torch.randint(0, 12, (BATCH, 6))
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    guide(tokens)
    assert "encoder.layers.1.self_attn.out_proj.weight" in poutine.trace(guide).get_trace(tokens).nodes
    net.eval()  # as predict runs it, so that the samples alone drop nothing out
    assert_predicts_in_one_pass_as_each_sample_alone(
        model, guide, tokens, lambda drawn: poutine.condition(model.net, drawn)(tokens), recwarn
    )


class OneDictArgument(MaskedNet):
    """A network that takes its inputs as one dict, as pytorch-forecasting's take theirs."""

    def forward(self, x):
        return super().forward(x["features"], x["mask"])


def test_a_network_of_one_dict_argument_predicts_each_sample_with_its_own_weights(recwarn):
    x, mask, y = masked()
    model = supervised(OneDictArgument(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    inputs = ({"features": x, "mask": mask},)  # one argument, a dict: net(inputs[0])
    assert len(fit(model, guide, (inputs, y), epochs=2, progress=False)) == 2  # one batch, not two
    assert_predicts_in_one_pass_as_each_sample_alone(
        model, guide, inputs, lambda drawn: poutine.condition(model.net, drawn)(*inputs), recwarn
    )


def test_laplace_guide_reads_a_dict_batch_as_a_loaders_batches():
    x, mask, _ = masked(32)
    targets = torch.randn(32, 4)
    model = supervised(
        KeywordClassifier(), Normal(len(x), scale=0.5), output=lambda out: out.logits, targets="y"
    )
    values = {"embed.weight": torch.randn(6, 3), "head.weight": torch.randn(4, 6)}
    rows = [{"input_ids": x[i], "attention_mask": mask[i], "y": targets[i]} for i in range(len(x))]
    one_batch = CheckpointLaplace(model, values, {"input_ids": x, "attention_mask": mask, "y": targets})
    from_loader = CheckpointLaplace(model, values, DataLoader(rows, batch_size=8))
    assert torch.allclose(one_batch[-1].scale_tril, from_loader[-1].scale_tril, atol=1e-4)


def test_supervised_says_what_it_reads_where_batches_or_outputs_are_not_its_own():
    x, mask, y = masked(4)
    rows = [{"input_ids": x[i], "attention_mask": mask[i], "label": y[i]} for i in range(4)]
    loader = DataLoader(rows, batch_size=2)
    model = supervised(KeywordClassifier(), Categorical(DATASET_SIZE), output=lambda out: out.logits)
    with pytest.raises(
        KeyError, match=r"targets under 'labels'.*keys 'input_ids', 'attention_mask', 'label'"
    ):
        fit(model, CheckpointNormal(model), loader, progress=False)
    untold = supervised(KeywordClassifier(), Categorical(DATASET_SIZE))
    with pytest.raises(
        TypeError, match=r"KeywordClassifier returned a ClassifierOutput, not a tensor.*out\.logits"
    ):
        fit(untold, CheckpointNormal(untold), (x, mask, y), progress=False)
    # A model of one's own is called with a batch's parts in order, which a dict has not.
    with pytest.raises(TypeError, match=r"model\(\*batch\).*dict \(keys 'input_ids'"):
        fit(model.__call__, CheckpointNormal(model), loader, progress=False)
    # A gpytorch GP returns a distribution: the advice was a Hugging Face model's and a tuple's.
    gp_like = pyro_module(nn.Linear(2, 1))
    gp_like.forward = lambda inputs: torch.distributions.Normal(inputs.sum(-1), 1.0)
    with pytest.raises(TypeError, match=r"returned a Normal, not a tensor.*out\.mean for a distribution"):
        supervised(gp_like, Normal(DATASET_SIZE))(torch.randn(3, 2))


@pytest.mark.parametrize("batches", ["tensors", "dicts"])
def test_predict_reads_a_loader_in_its_order_under_one_draw_of_weights(batches, recwarn):
    x, mask, y = masked(20)
    # A loader draws its workers' seed as it starts: from a generator of its own, so that the
    # weights drawn after it are those drawn for the whole inputs at the same seed.
    generator = torch.Generator().manual_seed(0)
    if batches == "tensors":
        model = supervised(MaskedNet(), Categorical(DATASET_SIZE))
        inputs, loader = (x, mask), DataLoader(TensorDataset(x, mask, y), batch_size=8, generator=generator)
    else:
        model = supervised(KeywordClassifier(), Categorical(DATASET_SIZE), output=lambda out: out.logits)
        inputs = {"input_ids": x, "attention_mask": mask}
        rows = [{"input_ids": x[i], "attention_mask": mask[i], "labels": y[i]} for i in range(len(x))]
        loader = DataLoader(rows, batch_size=8, generator=generator)
    guide = CheckpointNormal(model, init_scale=0.3)
    guide(inputs)
    pyro.set_rng_seed(4)
    whole = predict(model, guide, inputs, num_samples=7)
    pyro.set_rng_seed(4)
    batched = predict(model, guide, loader, num_samples=7)
    assert not recwarn.list
    assert batched.outputs.shape == whole.outputs.shape == (7, 20, 4)
    assert torch.allclose(batched.outputs, whole.outputs, atol=1e-6)
    shuffled = DataLoader(loader.dataset, batch_size=8, shuffle=True)  # its order is no one's to match
    with pytest.raises(ValueError, match=r"shuffles its rows \(shuffle=True\)"):
        predict(model, guide, shuffled, num_samples=7)


def test_a_network_that_was_not_rewritten_is_named_before_anything_trains(recwarn):
    # The class imported from the original source, not from the rewrite's output: no random
    # weights, so nothing to load and nothing to fit.
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.warns(UserWarning, match=r"Sequential has no random parameters.*imported from .*torch"):
        values = load_deterministic(net, net.state_dict())
    assert values == {}
    model = supervised(net, Categorical(DATASET_SIZE))
    with pytest.raises(ValueError, match="no parameters to train.*the class from the rewrite's output"):
        fit(model, CheckpointNormal(model, values), (torch.randn(4, 3), torch.zeros(4, dtype=torch.long)))


def test_a_rewritten_network_its_spec_selects_nothing_in_is_not_told_to_import_the_rewrite():
    # TabNet's head-only entry in a multi-task configuration, which has no such head: the class
    # was the rewrite's, and the warning said to import the rewrite's.
    net = pyro_module(nn.Sequential(nn.Linear(3, 2)))
    set_prior(net, "Sequential.head.weight", "Normal", 0, 1)
    with pytest.warns(UserWarning, match="no random parameters") as caught:
        load_deterministic(net, net.state_dict())
    assert "its priors select nothing in it as built" in str(caught[0].message)
    assert "import the class" not in str(caught[0].message)


class FunctionalLinear(nn.Linear):
    """A Linear whose forward calls the functional form itself, as timm's Linear does."""

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class AtomsToMolecules(nn.Module):
    """schnetpack's energy: a Dense layer (F.linear itself) per atom, summed into molecules."""

    def __init__(self):
        super().__init__()
        self.atom = FunctionalLinear(3, 1)

    def forward(self, positions, molecule):
        energies = self.atom(positions).squeeze(-1)
        return torch.zeros(int(molecule.max()) + 1).index_add(0, molecule, energies)


def test_predicts_fallback_warning_says_what_stopped_the_routed_layers_too(recwarn):
    # It named the first try's error alone, a Dense layer's F.linear, where the sum of atoms
    # into molecules was what kept the samples from sharing a pass.
    net = pyro_module(AtomsToMolecules())
    set_prior(net, "AtomsToMolecules.atom.weight", "Normal", 0, 1)
    model = supervised(net, Normal(2, scale=0.1))
    inputs = (torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert predict(model, CheckpointNormal(model), inputs, num_samples=4).outputs.shape == (4, 2)
    fallback = next(str(warning.message) for warning in recwarn if "did not take" in str(warning.message))
    assert "; with torch's functional forms routed to the batched layers, RuntimeError" in fallback


class OwnForwards(PyroModule):
    """Layers used through torch's functional forms, as library code often uses them: an
    attention's projection, a convolution and a transposed one, and a Linear subclass."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.conv = nn.Conv1d(4, 4, 3)
        self.up = nn.ConvTranspose1d(4, 2, 2, stride=2)
        self.head = FunctionalLinear(20, 3)
        pyro_module(self)
        set_prior(self, "OwnForwards.*.weight", "Normal", 0, 1)

    def forward(self, x):
        hidden = F.linear(x, self.proj.weight, bias=self.proj.bias).transpose(-1, -2)
        hidden = F.conv1d(torch.relu(hidden), self.conv.weight, self.conv.bias, padding=1)
        hidden = F.conv_transpose1d(hidden, weight=self.up.weight, bias=self.up.bias, stride=2)
        return self.head(hidden.flatten(-2))


class Conv1D(nn.Module):
    """transformers' Conv1D, GPT-2's projections: a linear layer whose weight is stored
    ``(in, out)``, computed by ``torch.addmm`` on the rows it flattens itself."""

    def __init__(self, out_features, in_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features) * 0.1)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):
        rows = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return rows.view(*x.shape[:-1], -1)


class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.attend, self.project = Conv1D(6, 3), Conv1D(4, 6)

    def forward(self, x):
        return self.project(torch.tanh(self.attend(x))).mean(-2)


def projected():
    net = pyro_module(Projected())
    set_prior(net, "Projected.*.weight", "Normal", 0, 1)
    return net


# Layers through torch's functional forms are routed to the batched layers; the Conv1D is no
# layer the rewrite knows, so its samples can only travel in the batch: the third try, whose
# result the check of one sample vouches for.
@pytest.mark.parametrize("build", [OwnForwards, projected], ids=["functional-forms", "addmm-conv1d"])
def test_predict_takes_layers_that_library_code_computes_itself(build, recwarn):
    net, x = build(), torch.randn(BATCH, 5, 3)
    model = supervised(net, Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.3)
    guide(x)
    assert_predicts_in_one_pass_as_each_sample_alone(
        model, guide, x, lambda drawn: poutine.condition(net, drawn)(x), recwarn
    )


class Recurrent(nn.Module):
    """A forecaster of the kind users write: a recurrent layer, then a linear head."""

    def __init__(self, layer):
        super().__init__()
        self.cell = layer in (nn.LSTMCell, nn.GRUCell)
        self.rnn, self.head = layer(2, 5), nn.Linear(5, 1)

    def forward(self, x):
        if self.cell:  # unrolled by hand over the sequence
            state = None
            for step in x.unbind(1):
                state = self.rnn(step, state)
            hidden = state[0] if isinstance(state, tuple) else state
        else:
            hidden = self.rnn(x.transpose(0, 1))[0][-1]
        return self.head(hidden)


@pytest.mark.parametrize("layer", [nn.LSTM, nn.GRU, nn.LSTMCell], ids=lambda layer: layer.__name__)
def test_a_random_recurrent_layer_computes_its_own_weights_and_refuses_a_batch_of_them(layer):
    net, x = pyro_module(Recurrent(layer)), torch.randn(BATCH, 6, 2)
    set_prior(net, f"nn.{layer.__name__}.*", "Normal", 0, 1)
    # One draw: the layer computes with the weights the trace holds, as torch's layer does.
    with torch.no_grad():
        trace = poutine.trace(net).get_trace(x)
        plain = Recurrent(layer)
        plain.load_state_dict(
            {**net.state_dict(), **{name: site["value"] for name, site in trace.iter_stochastic_nodes()}}
        )
        assert torch.allclose(trace.nodes["_RETURN"]["value"], plain(x), atol=1e-6)
    # A batch of draws: torch's LSTM would compute them all with the first one's weights.
    model = supervised(net, Normal(DATASET_SIZE, scale=0.1))
    guide = CheckpointNormal(model, init_scale=0.3)
    with pytest.raises(ValueError, match=f"{layer.__name__} takes one sample of its weights at a time"):
        Predictive(model, guide=guide, num_samples=4, parallel=True, return_sites=["_RETURN"])(x)
    with pytest.warns(UserWarning, match=f"{layer.__name__} takes one sample of its weights at a time"):
        prediction = predict(model, guide, x, num_samples=4)
    assert (prediction.outputs[1:] != prediction.outputs[0]).all()  # each sample its own weights


EXPANDED_SOURCE = """\
import torch
from torch import nn


class Points(nn.Module):
    \"\"\"e3nn users' start vector: a learned value broadcast to every point with expand.\"\"\"

    def __init__(self):
        super().__init__()
        self.embed = nn.Parameter(torch.ones(1))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        start = self.embed.expand(*x.shape[:-1], 1)
        return self.fc(torch.cat([x, start], -1)).mean(-2)
"""


def test_a_pass_of_one_sample_whose_output_lost_the_samples_dimension_says_why(tmp_path, monkeypatch):
    # expand(*x.shape[:-1], 1) swallows a pass's one sample: the check of the last sample then
    # indexed the rows as samples, and the warning blamed bayesify ("index 7 out of range").
    _, bayesian = _rewritten(tmp_path, EXPANDED_SOURCE, 'version: 1\npriors:\n  "Points.*": Normal(0, 1)\n')
    model = supervised(bayesian.Points(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.5)
    monkeypatch.setattr(runtime_prediction, "CPU_ELEMENTS_PER_PASS", 1)  # passes of one sample
    x = torch.randn(8, 5, 3)
    with pytest.warns(
        UserWarning, match=r"output \(8, 2\) has no first dimension of the pass's 1 weight samples"
    ):
        prediction = predict(model, guide, x, num_samples=4)
    assert prediction.outputs.shape == (4, 8, 2)


def test_predict_on_a_model_of_ones_own_names_what_it_takes_and_pyros_way():
    # It failed with "'function' object has no attribute 'net'".
    net = Net()

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.factor("log_density", net(x).logsumexp(-1))

    x, _ = images()
    guide = CheckpointNormal(model, init_scale=0.1)
    with pytest.raises(TypeError, match=r"made by supervised\(net, likelihood\), not a function.*Predictive"):
        predict(model, guide, x)


MASKED_SOURCE = """\
import torch
import torch.nn.functional as F
from torch import nn


class MaskedLinear(nn.Linear):
    \"\"\"A MADE's layer, as zuko's and nflows' flows compute it: on its weight times a mask.\"\"\"

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", torch.tril(torch.ones(n_out, n_in)))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(MaskedLinear(2, 64), nn.ReLU(), MaskedLinear(64, 64), nn.ReLU(), MaskedLinear(64, 1))

    def forward(self, x):
        return self.layers(x)
"""


def test_predict_sizes_its_passes_by_what_grows_with_the_rows_not_by_products_of_weights(
    tmp_path, pass_sizes
):
    # The probe counted a masked layer's 64x64 weight * mask as 4,096 elements a row: passes of
    # one sample, through the slow functional routing, slower than samples_per_pass=1.
    _, bayesian = _rewritten(
        tmp_path, MASKED_SOURCE, 'version: 1\npriors:\n  "nn.Linear.weight": Normal(0, 1)\n'
    )
    model = supervised(bayesian.MADE(), Normal(DATASET_SIZE, scale=0.1))
    guide = CheckpointNormal(model, init_scale=0.1)
    x = torch.randn(1000, 2)
    predict(model, guide, x, num_samples=20)
    assert pass_sizes[0] == runtime_prediction.CPU_ROWS_PER_PASS // len(
        x
    )  # the rows bound it, not the weights


def test_fit_names_a_library_batch_whose_last_field_is_no_targets_and_predict_reads_x_still():
    # chemprop's DataLoader gives TrainingBatch(bmg, V_d, X_d, Y, w, lt_mask, gt_mask): read by
    # position, its gt_mask (None, or a mask for inequality targets) was the targets, and
    # Pyro said "forward() takes from 2 to 4 positional arguments but 7 were given".
    TrainingBatch = collections.namedtuple("TrainingBatch", "x Y weights gt_mask")
    x, y = images()
    model = supervised(Net(), Categorical(DATASET_SIZE))
    guide = CheckpointNormal(model, init_scale=0.1)
    for mask in (None, torch.zeros(len(y), dtype=torch.bool)):
        with pytest.raises(
            TypeError, match=r"TrainingBatch\(x, Y, weights, gt_mask\), whose fields it would"
        ):
            fit(model, guide, [TrainingBatch(x, y, torch.ones(len(y)), mask)], progress=False)
    with pytest.raises(TypeError, match=r"a list of 2, whose fields"):
        fit(model, guide, [[x, None]], progress=False)
    identified = DataLoader(TensorDataset(x, torch.arange(len(x))), batch_size=4)  # (x, ids): predict reads x
    assert predict(model, guide, identified, num_samples=3).probs.shape == (len(x), 4)


class _Unscale(nn.Module):
    """chemprop's UnscaleTransform: outputs in the targets' units in eval mode alone."""

    def __init__(self, mean, scale):
        super().__init__()
        self.mean, self.scale = mean, scale

    def forward(self, x):
        return x if self.training else x * self.scale + self.mean


def test_a_network_whose_eval_mode_output_is_in_other_units_than_the_targets_is_warned_of():
    torch.manual_seed(0)
    x = torch.randn(256, 3)
    y = 100 * (x @ torch.tensor([[1.0], [-2.0], [0.5]])) + 500 + 10 * torch.randn(256, 1)
    mean, scale = y.mean().item(), y.std().item()
    trained = nn.Sequential(nn.Linear(3, 1), _Unscale(mean, scale))
    optimizer = torch.optim.Adam(trained.parameters(), 0.05)
    for _ in range(300):  # in training mode, on scaled targets, as chemprop trains
        optimizer.zero_grad()
        (trained(x) - (y - mean) / scale).pow(2).mean().backward()
        optimizer.step()
    fits = {}
    for name, targets in [("scaled", (y - mean) / scale), ("as predicted", y)]:
        pyro.clear_param_store()
        net = pyro_module(nn.Sequential(nn.Linear(3, 1), _Unscale(mean, scale)))
        set_prior(net, "nn.Linear.weight", "Normal", 0, 1)
        model = supervised(net, Normal(len(x)))
        guide = CheckpointNormal(model, load_deterministic(net, trained.state_dict()))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(model, guide, (x, targets), epochs=100, lr=0.01, progress=False)
        fits[name] = [str(warning.message) for warning in caught], predict(model, guide, x, num_samples=20)
    assert any("in other units" in message for message in fits["scaled"][0])
    warned, prediction = fits["as predicted"]
    assert not warned
    assert 8 < float(prediction.sd.mean()) < 12  # the noise, 10, in the targets' units
