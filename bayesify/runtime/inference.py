"""From a rewritten model and a checkpoint to calibrated predictions, in plain Pyro.

Four small pieces, each replaceable by the Pyro a user would write instead::

    net = BayesianMLP()                                    # the rewritten model
    replaced = load_deterministic(net, torch.load("mlp.pt"))
    model = supervised(net, Categorical(dataset_size=len(train)))
    guide = CheckpointNormal(model, replaced)              # starts at the trained weights
    fit(model, guide, DataLoader(train, batch_size=64, shuffle=True), epochs=10)
    prediction = predict(model, guide, x_test, num_samples=100)

:func:`supervised` is the Pyro model ``model(x, y=None)``; :class:`CheckpointNormal` an
:class:`~pyro.infer.autoguide.AutoNormal`; :func:`fit` a loop of ELBO steps; :func:`predict`
what :class:`~pyro.infer.predictive.Predictive` computes, summarized by the likelihood. For
regression, :class:`CheckpointLaplace` replaces the guide and the fit: a last-layer Laplace
approximation at the trained weights, as Pyro's ``AutoLaplaceApproximation`` makes one.
"""

import contextlib
import functools
import itertools
import os
import traceback
import warnings
import weakref
from contextlib import ExitStack
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import sum_rightmost
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.autoguide import AutoGuideList, AutoMultivariateNormal, AutoNormal, init_to_median
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.autoguide.utils import deep_setattr
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import _is_module_local_param_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import warn_if_nan
from torch.distributions import biject_to, constraints
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, RandomSampler, TensorDataset, default_collate
from tqdm.auto import tqdm

from bayesify.runtime import likelihoods
from bayesify.runtime.batched import BATCHED_LAYERS, FunctionalLayers, SamplesInBatchMessenger
from bayesify.runtime.held import Tied
from bayesify.runtime.likelihoods import Prediction

#: The default relative spread of :class:`CheckpointNormal`: sd = DELTA * |trained weight|.
DELTA = 0.01
#: The default spread of a site without a trained value (and the least spread of any site).
INIT_SCALE = 1e-3
#: The most weights :class:`CheckpointLaplace` gives a full covariance (a Hessian of this size squared).
MAX_LAPLACE_SIZE = 5000
#: How many rows (weight samples times inputs) one pass of :func:`predict` computes on a CPU.
CPU_ROWS_PER_PASS = 5_000
#: How many elements the widest output of an operation in one pass of :func:`predict` holds
#: on a CPU, at most (4 MB in single precision).
CPU_ELEMENTS_PER_PASS = 2**20
#: The same where a deterministic trunk computes once a pass (:class:`_ComputedOnce`): every
#: pass computes the trunk again, which costs more than the page faults of larger copies of
#: its output (a Mamba backbone's, 50 samples of 256 sequences: passes of 4 samples took
#: 6.0 s, of 25 samples 0.6 s).
CPU_ELEMENTS_PER_PASS_ONCE = 2**24

#: A network's input: one tensor, the tuple of the tensors it takes (``net(*inputs)``), or a
#: dict of them by keyword (``net(**inputs)``).
Inputs = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
#: A batch ``(x, y)``, the network's inputs and the targets; or a dict holding both.
Batch = Union[Sequence[Union[torch.Tensor, Inputs]], Mapping[str, torch.Tensor]]


class BayesianModel:
    """``model(x, y=None)``: the network's output on ``x`` (a tensor, a tuple of the network's
    inputs, or a dict of them by keyword), observed as ``y`` through the likelihood. Made by
    :func:`supervised`; ``net``, ``likelihood``, ``output`` and ``targets`` are its parts."""

    def __init__(
        self, net: torch.nn.Module, likelihood, output: Optional[Callable] = None, targets: str = "labels"
    ) -> None:
        self.net = net
        self.likelihood = likelihood
        self.output = output
        self.targets = targets

    def __call__(self, x: Inputs, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        output = self.network(x)
        self.likelihood(output, y)
        return output

    @property
    def observed(self) -> str:
        """The name of the likelihood's observed site: its ``name``, else Pyro's usual ``"obs"``."""
        return getattr(self.likelihood, "name", "obs")

    def network(self, x: Inputs) -> torch.Tensor:
        """The tensor the likelihood observes: the network's output on ``x``, or ``output`` of it."""
        returned = _called(self.net, x)
        if self.output is not None:
            return self.output(returned)
        if not isinstance(returned, torch.Tensor):
            raise TypeError(
                f"{type(self.net).__name__} returned a {type(returned).__name__}, not a tensor: say which "
                "tensor the likelihood observes, e.g. supervised(net, likelihood, output=lambda out: "
                "out.logits) for a Hugging Face model, or output=lambda out: out[0] for a tuple"
            )
        return returned


def supervised(
    net: torch.nn.Module, likelihood, *, output: Optional[Callable] = None, targets: str = "labels"
) -> BayesianModel:
    """
    The Pyro model of a supervised network: ``model(x, y=None)`` runs ``net(x)`` (sampling
    its random weights) and observes ``y`` through ``likelihood``
    (:class:`~bayesify.runtime.Categorical`, :class:`~bayesify.runtime.Normal`, or any
    callable ``likelihood(output, y)`` with Pyro statements); it returns the output. The same
    as writing::

        def model(x, y=None):
            output = net(x)
            likelihood(output, y)
            return output

    For a network of several inputs (a transformer's tokens and attention mask, a graph
    network's features and edges), ``x`` is the tuple of them: ``model((tokens, mask), y)``
    runs ``net(tokens, mask)``; or a dict of them by keyword, as Hugging Face models take
    theirs: ``model({"input_ids": tokens, "attention_mask": mask}, y)`` runs ``net(**x)``; a
    network that takes one dict as its argument takes the tuple of it, ``model((x,), y)``.
    :func:`fit`, :class:`CheckpointLaplace` and :func:`predict` take such inputs too.

    :param callable output: where the network returns more than the tensor the likelihood
        observes, the function that picks it out: ``lambda out: out.logits`` for a model that
        returns a Hugging Face ``ModelOutput``. :func:`predict` summarizes what it picks.
    :param str targets: the key of the targets in a batch that is a dict (what a
        ``DataLoader`` over a dataset of dicts gives): its other keys are the network's
        inputs, by keyword. ``"labels"``, Hugging Face's name.
    """
    return BayesianModel(net, likelihood, output, targets)


class CheckpointNormal(AutoNormal):
    """
    An :class:`~pyro.infer.autoguide.AutoNormal` that starts at the deterministic model's
    weights, with a spread relative to each weight (as bayesian-torch's MOPED): the
    posterior of weight ``w`` starts as ``Normal(w, delta * |w|)``, at least ``init_scale``.

    The spread matters, and a fit of ordinary length changes it little (Adam moves its
    logarithm by about the learning rate a step), so it is the calibration: started at
    :class:`~pyro.infer.autoguide.AutoNormal`'s default of 0.1 for every weight, a network
    whose weights are ~0.1 forgets its training in the first steps and is badly calibrated
    after a normal-length fit. The default, 1% of each weight, is where smaller spreads stopped
    improving the digits classifier of bench/quality.py (docs/runtime.md has the figures).
    A site without a trained value (a prior on a parameter the checkpoint lacks) starts at
    its prior's median with spread ``init_scale``.

    Sites whose prior is on the real line are sampled from the guide's normal distribution
    itself, so :class:`~pyro.infer.TraceMeanField_ELBO` computes their KL divergence in
    closed form and the effect handlers of :mod:`bayesify.runtime.handlers` see their mean
    and spread. Other sites go through AutoNormal's transform, as usual.

    :param callable model: the Pyro model. The observed site of a :func:`supervised` model
        is never guided, even when the guide is first called without targets; for a model of
        one's own, block it (``poutine.block(model, hide=["obs"])``) or call the guide first
        with targets.
    :param dict values: starting values by site name (what
        :func:`~bayesify.runtime.load_deterministic` returns). A value outside its prior's
        support (a negative bias under a ``LogNormal`` prior) is not used: that site starts
        as if it had no value.
    :param float delta: the relative spread.
    :param float init_scale: the spread of sites without a value, and the least spread.
    """

    def __init__(
        self,
        model: Callable,
        values: Optional[Dict[str, torch.Tensor]] = None,
        *,
        delta: float = DELTA,
        init_scale: float = INIT_SCALE,
        create_plates=None,
    ) -> None:
        self.values = dict(values or {})
        self.delta = delta
        if isinstance(model, BayesianModel):
            # Without targets (a first call by Predictive) the observations are no latent.
            model = poutine.block(model, hide=[model.observed])
        super().__init__(
            model,
            init_loc_fn=functools.partial(_init_to_checkpoint, values=self.values),
            init_scale=init_scale,
            create_plates=create_plates,
        )

    def _setup_prototype(self, *args, **kwargs) -> None:
        # Without autograd: the trace it keeps would hold the model's outputs with their graph,
        # which copy.deepcopy refuses (a Lightning callback's copy, torch's AveragedModel).
        # A model that differentiates the network itself (a PINN's physics residual) needs it.
        try:
            with torch.no_grad():
                super()._setup_prototype(*args, **kwargs)
        except RuntimeError:
            super()._setup_prototype(*args, **kwargs)
        _refuse_values_of_other_sites(self.values, self.prototype_trace)
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if _usable(site, self.values):
                loc, _ = self._get_loc_and_scale(name)
                loc = loc.detach()
                spread = (self.delta * loc.abs()).clamp_min(self._init_scale)
                deep_setattr(
                    self.scales, name, PyroParam(spread, self.scale_constraint, self._event_dims[name])
                )
        # What each call reads of every site, found once: a site's plates, event dimensions and
        # whether its prior is on the real line (a chain of Pyro and torch lookups per site).
        self._guided = [
            (
                name,
                site,
                [frame.name for frame in site["cond_indep_stack"] if frame.vectorized],
                self._event_dims[name],
                _unbounded(site["fn"].support),
            )
            for name, site in self.prototype_trace.iter_stochastic_nodes()
        ]

    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        # Read once a call, not once a site: each read of a Pyro setting imports its module.
        from_store = not _is_module_local_param_enabled()
        result = {}
        for name, site, frames, event_dim, unbounded in self._guided:
            with ExitStack() as stack:
                for frame in frames:
                    stack.enter_context(plates[frame])
                loc, scale = self._get_loc_and_scale(name, from_store)
                normal = dist.Normal(loc, scale).to_event(event_dim)
                if unbounded:
                    result[name] = pyro.sample(name, normal)
                else:
                    result[name] = self._transformed(name, site, normal)
        return result

    def _get_loc_and_scale(self, name: str, from_store: Optional[bool] = None):
        # AutoNormal reads them as attributes of its PyroModules, each read a chain of Pyro's
        # attribute lookups; once they are in the param store (after the first call), reading
        # them there by name is the same pyro.param statement, at a third of the cost. Its
        # event_dim, as AutoNormal's reads give it, lets a subsampling plate take the rows of
        # a local latent's loc and scale. With module-local params (``from_store`` False),
        # Pyro's own reads.
        if from_store is None:
            from_store = not _is_module_local_param_enabled()
        store = pyro.get_param_store()
        loc_name, scale_name = f"{self._pyro_name}.locs.{name}", f"{self._pyro_name}.scales.{name}"
        if from_store and loc_name in store and scale_name in store:
            event_dim = self._event_dims[name]
            return pyro.param(loc_name, event_dim=event_dim), pyro.param(scale_name, event_dim=event_dim)
        return super()._get_loc_and_scale(name)

    def _transformed(self, name: str, site: dict, normal: dist.Distribution) -> torch.Tensor:
        """AutoNormal's own path: a normal sample in the unconstrained space, mapped onto the
        prior's support, with the Jacobian in a Delta site."""
        transform = biject_to(site["fn"].support)
        unconstrained = pyro.sample(name + "_unconstrained", normal, infer={"is_auxiliary": True})
        value = transform(unconstrained)
        log_density = 0.0
        if poutine.get_mask() is not False:
            log_density = transform.inv.log_abs_det_jacobian(value, unconstrained)
            log_density = sum_rightmost(log_density, log_density.dim() - value.dim() + site["fn"].event_dim)
        return pyro.sample(name, dist.Delta(value, log_density=log_density, event_dim=site["fn"].event_dim))


def _unbounded(support: constraints.Constraint) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _refuse_values_of_other_sites(values: Dict[str, torch.Tensor], trace: poutine.Trace) -> None:
    """Refuses starting values none of which is a site of the model: every site would start at
    its prior, silently."""
    sites = [name for name, site in trace.iter_stochastic_nodes() if not site["is_observed"]]
    if values and sites and not set(values) & set(sites):
        raise ValueError(
            f"none of the values is for a random site of the model: they are for {_some(values)}, its sites "
            f"are {_some(sites)}; pass what load_deterministic returns for the network the model runs "
            "(site names are paths from the outermost PyroModule that holds it)"
        )


def _some(names: Iterable[str], shown: int = 3) -> str:
    names = sorted(names)
    listed = ", ".join(repr(name) for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _usable(site: dict, values: Dict[str, torch.Tensor]) -> bool:
    value = values.get(site["name"])
    return value is not None and bool(site["fn"].support.check(value).all())


def _init_to_checkpoint(site: dict, values: Dict[str, torch.Tensor]) -> torch.Tensor:
    """A copy of the site's value from the checkpoint where it lies inside the prior's support
    (the guide trains it in place, and the caller's values stay the checkpoint's), else the
    prior's median (AutoNormal would start from NaN, e.g. a negative bias under a LogNormal)."""
    return values[site["name"]].clone() if _usable(site, values) else init_to_median(site)


class CheckpointLaplace(AutoGuideList):
    """
    A last-layer Laplace approximation at the deterministic model's weights, as Pyro's
    :meth:`~pyro.infer.autoguide.AutoLaplaceApproximation.laplace_approximation` makes one:
    the random sites of the network's last layer get an
    :class:`~pyro.infer.autoguide.AutoMultivariateNormal` centred on their trained values,
    whose covariance is the inverse Hessian of the negative log joint density over ``data``;
    every other random site stays at its trained value (a point mass). With a normal
    likelihood and a normal prior, this is the exact posterior covariance of the last layer
    given the trained features (and the posterior itself when the trained values are the MAP).

    It is what gives a regression network uncertainty between clusters of data: a
    mean-field posterior (:class:`CheckpointNormal`) barely widens there, a full covariance
    of the last layer does. It is computed once, when the guide is made, and has no Pyro
    parameters (its mean and covariance are buffers, as in Pyro's Laplace guide): predict
    with it directly, without :func:`fit`, which would move the point masses and the noise
    away from where the covariance was computed.

    The noise of a :func:`supervised` model's learned :class:`~bayesify.runtime.Normal` is
    set with the covariance, as MacKay's evidence approximation sets it: ``noise**2 = RSS /
    (n - gamma)``, the residual sum of squares of the trained network over ``data`` shared
    among the ``n`` targets less ``gamma``, the number of last-layer weights the data
    determine (``trace(H_data @ covariance)``), at its fixed point. A network's residuals on
    its own training data understate the noise; this is the correction for the last layer's
    degrees of freedom. A fixed ``Normal(dataset_size, scale=...)`` is left as it is.

    :param callable model: the Pyro model, e.g. a :func:`supervised` one.
    :param dict values: the trained values by site name (what
        :func:`~bayesify.runtime.load_deterministic` returns); a value outside its prior's
        support is replaced by the prior's median, as in :class:`CheckpointNormal`.
    :param data: the training data, as for :func:`fit`: an iterable of batches ``(x, y)``
        or one batch. Each batch's Hessian counts by its share of the data.
    :param sites: the names of the sites given a full covariance; by default those of the
        module whose site is sampled last (the last layer's weight and bias). At most
        :data:`MAX_LAPLACE_SIZE` weights in all: the Hessian has their number squared.
    """

    def __init__(
        self,
        model: Callable,
        values: Dict[str, torch.Tensor],
        data: Union[Iterable[Batch], Batch],
        *,
        sites: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(model)
        joint = model  # the observations included: the Hessian is the posterior's
        batches = iter(_model_batches(model, _as_batches(data)))
        first = next(batches, None)
        if first is None:
            raise ValueError("CheckpointLaplace needs the training data: a DataLoader or (x, y), not nothing")
        if isinstance(model, BayesianModel):
            model = poutine.block(model, hide=[model.observed])
        init = functools.partial(_init_to_checkpoint, values=values)
        # At the trained network as it predicts: BatchNorm's running statistics (which a pass
        # in training mode would also update), dropout off.
        with _in_eval_mode(joint.net if isinstance(joint, BayesianModel) else None):
            with poutine.block():
                prototype = poutine.trace(InitMessenger(init)(model)).get_trace(*first)
            latent = [
                name
                for name, site in prototype.iter_stochastic_nodes()
                if not site["is_observed"] and not site_is_subsample(site)
            ]
            if not latent:
                raise ValueError(
                    "CheckpointLaplace: the model has no random weights (is the network the class from the "
                    "rewrite's output, and does the spec select something in it? `bayesify plan --build` says)"
                )
            _refuse_values_of_other_sites(values, prototype)
            if sites is None:
                module = latent[-1].rpartition(".")[0]
                sites = [name for name in latent if name.rpartition(".")[0] == module]
            size = sum(prototype.nodes[name]["value"].numel() for name in sites)
            if size > MAX_LAPLACE_SIZE:  # before the guide holds a scale of that size squared
                raise ValueError(
                    f"CheckpointLaplace: {', '.join(sites)} hold {size} weights, and a full covariance of "
                    f"more than {MAX_LAPLACE_SIZE} is too large to compute; name fewer with sites=[...], or "
                    "use CheckpointNormal"
                )
            fixed = {name: prototype.nodes[name]["value"].detach() for name in latent if name not in sites}
            self.append(functools.partial(_point_masses, fixed))
            laplace = AutoMultivariateNormal(
                poutine.block(poutine.condition(model, data=fixed), expose=list(sites)), init_loc_fn=init
            )
            self.append(laplace)
            with torch.no_grad():  # sets up the parts, their traces free of the model's graph
                self(*first)
            noise = None  # a learned normal noise is re-estimated with the covariance
            likelihood = joint.likelihood if isinstance(joint, BayesianModel) else None
            if isinstance(likelihood, likelihoods.Normal) and likelihood.fixed_scale is None:
                noise = f"{likelihood.name}.scale"
            try:
                _set_laplace_covariance(laplace, joint, fixed, itertools.chain([first], batches), noise)
            except torch.linalg.LinAlgError:
                net = joint.net if isinstance(joint, BayesianModel) else None
                shared = _read_in_several_places(net, sites) if net is not None else []
                cause = (
                    f"{', '.join(shared)} {'enters' if len(shared) == 1 else 'enter'} the network in more "
                    "than one place (a layer held twice, or tied), so nonlinearly"
                    if shared
                    else "weights that enter the network nonlinearly, as a recurrent layer's do, or values "
                    "that are no trained optimum"
                )
                raise ValueError(
                    f"CheckpointLaplace: the Hessian of {', '.join(sites)} at the checkpoint is not positive "
                    f"definite, so no normal distribution approximates their posterior there ({cause}): "
                    "name the sites of an output layer used once, or use CheckpointNormal"
                ) from None


def _read_in_several_places(net: torch.nn.Module, sites: Sequence[str]) -> List[str]:
    """The ``sites`` of ``net`` whose module it holds under more than one path (N-BEATS's
    shared blocks), or whose value another module reads too (tied weights)."""
    paths: Dict[int, int] = {}
    for _, module in net.named_modules(remove_duplicate=False):
        paths[id(module)] = paths.get(id(module), 0) + 1
    owners = {getattr(module, "_pyro_name", None): module for module in net.modules()}
    tied = {
        (id(prior.module), prior.name)
        for module in net.modules()
        for prior in module.__dict__.get("_pyro_samples", {}).values()
        if isinstance(prior, Tied)
    }
    shared = []
    for site in sites:
        owner_name, _, attribute = site.rpartition(".")
        owner = owners.get(owner_name)
        if owner is not None and (paths.get(id(owner), 0) > 1 or (id(owner), attribute) in tied):
            shared.append(site)
    return shared


def _point_masses(values: Dict[str, torch.Tensor], *args, **kwargs) -> Dict[str, torch.Tensor]:
    return {
        name: pyro.sample(name, dist.Delta(value, event_dim=value.dim())) for name, value in values.items()
    }


def _set_laplace_covariance(
    guide: AutoMultivariateNormal,
    model: Callable,
    fixed: Dict[str, torch.Tensor],
    batches: Iterable[Batch],
    noise: Optional[str] = None,
) -> None:
    """Sets the guide's scale to the inverse Hessian of the negative log joint at its loc (in
    the unconstrained space), summed over the batches (each batch's likelihood is scaled to
    the whole data set by the model's plate, and counts by its share of it); as in Pyro's
    ``laplace_approximation``, the mean and covariance become buffers.

    With ``noise``, the name of a learned normal noise scale in the param store, that scale
    is re-estimated first, as in MacKay's evidence approximation: ``noise**2 = RSS / (n -
    gamma)``, where ``gamma`` is the number of weights the data determine, ``trace(H_data @
    covariance)``, iterated to its fixed point. The residuals of a network fitted to its
    training data understate the noise by about that many degrees of freedom."""

    def conditioned(latent: torch.Tensor):
        """The values of every latent site at ``latent``, and the log-Jacobian of its transforms."""
        values, log_jacobian = dict(fixed), 0.0
        for site, unconstrained in guide._unpack_latent(latent):
            transform = biject_to(site["fn"].support)
            values[site["name"]] = value = transform(unconstrained)
            log_jacobian = log_jacobian + transform.log_abs_det_jacobian(unconstrained, value).sum()
        return values, log_jacobian

    def observations(batch: Batch, values: Dict[str, torch.Tensor]):
        """The model's trace on ``batch`` at ``values``, and its observed sites."""
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*batch)
        observed = [
            site
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"] and name not in values
        ]
        return trace, observed

    def negative_log_density(batch: Batch, observed: bool, latent: torch.Tensor) -> torch.Tensor:
        values, log_jacobian = conditioned(latent)
        trace, sites = observations(batch, values)
        if not observed:  # the prior's part: the density of the sites at ``latent``
            sites = [trace.nodes[site["name"]] for site, _ in guide._unpack_latent(latent)]
        density = sum((site["fn"].log_prob(site["value"]) * site["scale"]).sum() for site in sites)
        return -(density if observed else density + log_jacobian)

    loc = guide.loc.detach()
    batches = iter(batches)
    first = next(batches)
    # The prior's curvature is every batch's; the likelihood's is weighed by each batch's share.
    prior = torch.autograd.functional.hessian(
        functools.partial(negative_log_density, first, False), loc, vectorize=True
    ).double()
    likelihood, rows, squares, count = 0.0, 0, 0.0, 0
    for batch in itertools.chain([first], batches):
        hessian = torch.autograd.functional.hessian(
            functools.partial(negative_log_density, batch, True), loc, vectorize=True
        )
        likelihood = likelihood + len(batch[-1]) * hessian.double()
        rows += len(batch[-1])
        if noise is not None:
            with torch.no_grad():
                for site in observations(batch, conditioned(loc)[0])[1]:
                    squares += float((site["value"] - site["fn"].mean).pow(2).sum())
                    count += site["value"].numel()
    likelihood = likelihood / rows
    with torch.no_grad():
        if noise is not None:
            # The likelihood's curvature scales as 1 / noise**2: iterate without recomputing it.
            start = pyro.param(noise).detach().double()
            noise_scale = start
            for _ in range(50):
                data = likelihood * (start / noise_scale) ** 2
                determined = (data * _inverse(prior + data)).sum()  # trace(data @ covariance)
                noise_scale, previous = (squares / (count - determined).clamp_min(1.0)).sqrt(), noise_scale
                if (noise_scale - previous).abs() < 1e-6 * noise_scale:
                    break
            likelihood = likelihood * (start / noise_scale) ** 2
            pyro.get_param_store()[noise] = noise_scale.to(pyro.param(noise).dtype)
        covariance = _inverse(prior + likelihood)
        scale = covariance.diagonal().sqrt()
        correlation = torch.linalg.cholesky(covariance / scale[:, None] / scale[None, :])
    del guide.loc, guide.scale, guide.scale_tril
    guide.register_buffer("loc", loc)
    guide.register_buffer("scale", scale.to(loc.dtype))
    guide.register_buffer("scale_tril", correlation.to(loc.dtype))


def _inverse(precision: torch.Tensor) -> torch.Tensor:
    # In double precision: a well-determined last layer has curvatures 1e6 apart.
    return torch.cholesky_inverse(torch.linalg.cholesky((precision + precision.T) / 2))


class _LeanTraceMeanField_ELBO(TraceMeanField_ELBO):
    """
    :class:`~pyro.infer.TraceMeanField_ELBO` computing only the log-densities that its sum
    reads. Pyro's computes every site's log-density, in the model and the guide, then uses
    only the observations' where a latent site's KL divergence has a closed form; on a
    network with one site per weight tensor, those unused log-densities cost a quarter of
    a step. Here a step computes the observations' log-densities and the KL divergences;
    the first step that needs another density (a site without a closed-form KL, an
    auxiliary site of the guide) computes them all, as Pyro's does, from then on. With
    Pyro's validation on, every step is Pyro's own, checks included.

    With one particle, the loss is the particle's surrogate loss itself: Pyro's sum over
    particles adds a constant (the loss less its own value, read with a sync) and divides by
    one, which leaves the value and the gradient as they are, bit for bit, at the cost of a
    few scalar operations and their autograd nodes a step. The NaN warning is kept; the
    backward hook that Pyro adds to watch the loss's own gradient (always one) is not.
    """

    _every_density = False

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if self.num_particles != 1 or self.vectorize_particles:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss, surrogate_loss = self._differentiable_loss_particle(
            *self._get_trace(model, guide, args, kwargs)
        )
        warn_if_nan(loss, "loss")
        return surrogate_loss

    def _get_trace(self, model, guide, args, kwargs):
        if self._every_density or is_validation_enabled() or isinstance(poutine.unwrap(guide), Messenger):
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = poutine.trace(guide, graph_type="flat").get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace), graph_type="flat").get_trace(
            *args, **kwargs
        )
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob(lambda name, site: site["is_observed"])
        return model_trace, prune_subsample_sites(guide_trace)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        try:
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        except KeyError:  # it read a density this class did not compute
            if self._every_density:
                raise
            self._every_density = True
            model_trace.compute_log_prob()
            guide_trace.compute_score_parts()
            return super()._differentiable_loss_particle(model_trace, guide_trace)


def fit(
    model: Callable,
    guide: Callable,
    data: Union[Iterable[Batch], Batch],
    epochs: int = 1,
    *,
    lr: float = 1e-3,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    loss=None,
    progress: bool = True,
) -> List[float]:
    """
    Trains ``guide`` (and the model's deterministic parameters) by stochastic variational
    inference, and returns the mean loss of each epoch.

    Each step is ``loss.differentiable_loss(model, guide, x, y)``, its gradient, and a step
    of a torch optimizer over every Pyro parameter the first step used (Pyro's way of using
    a torch optimizer; one optimizer for all parameters is faster than ``pyro.optim``'s one
    per parameter). The first step runs with Pyro's validation on, so bad targets and shapes
    fail there with Pyro's message; the others run without its checks, which cost as much
    as a small network's step.

    :param data: an iterable of batches ``(x, y)`` (a :class:`~torch.utils.data.DataLoader`),
        read once per epoch; or one batch ``(x, y)``, the whole data set. ``x`` is a tensor,
        or a tuple of a network's inputs; for a :func:`supervised` model, a batch of more than
        two tensors ``(x1, ..., xk, y)``, as a ``DataLoader`` over ``TensorDataset(x1, ...,
        xk, y)`` gives, is the inputs ``(x1, ..., xk)`` and the targets ``y``, and a dict
        batch (a ``DataLoader`` over a dataset of dicts) is the targets under the model's
        ``targets`` key and the network's inputs by keyword under the others. A
        ``DataLoader`` over a :class:`~torch.utils.data.TensorDataset` is read by indexing
        the tensors with its batches of indices: the same batches, without collating rows.
    :param float lr: the learning rate, Adam's usual. Adam moves every parameter by about
        ``lr`` a step: in a fit of a few hundred steps, the means of a guide started at the
        trained weights move to where the weight noise fits the data, and the spreads (in
        their unconstrained space) by a fraction of their size, so that the guide's starting
        spread, :class:`CheckpointNormal`'s ``delta``, is the posterior's.
    :param optimizer: a :class:`torch.optim.Optimizer` class, called with the parameters and
        ``lr`` (Adam and AdamW with ``fused=True`` where torch has the kernel).
    :param loss: a Pyro ELBO (default :class:`~pyro.infer.TraceMeanField_ELBO`, whose KL
        divergences are in closed form where the guide and prior allow, and estimated where
        not; as a subclass that computes only the log-densities it reads, and with one
        particle returns the particle's loss without Pyro's zero-valued correction term).
        ``Trace_ELBO(num_particles=8, vectorize_particles=True)`` averages several weight
        samples per step.
    :param bool progress: show a progress bar with the current loss.
    :returns: the mean loss per epoch.
    """
    data = _as_batches(data)
    if epochs > 1 and isinstance(data, Iterator):  # not iter(data): a loader's iterator draws its seed
        raise TypeError(
            f"fit: data is an iterator ({type(data).__name__}), which the first epoch reads to its end, "
            f"so epochs 2 to {epochs} would train on nothing: pass something read anew each epoch, "
            "a DataLoader or a list of batches"
        )
    elbo = loss or _LeanTraceMeanField_ELBO()
    optimizing = None

    def step(batch: Batch) -> float:
        nonlocal optimizing
        if optimizing is None:
            with pyro.validation_enabled(True), poutine.trace(param_only=True) as found:
                value = elbo.differentiable_loss(model, guide, *batch)
            params = [site["value"].unconstrained() for site in found.trace.nodes.values()]
            _refuse_parameters_of_another_model(model)
            _warn_of_batch_norm_in_training(model, guide)
            if not params:
                raise ValueError(
                    "fit: the model and the guide have no parameters to train: the network has no random "
                    "weights (is it the class from the rewrite's output?) and nothing learned"
                )
            optimizing = _optimizer(optimizer, params, lr)
        else:
            with pyro.validation_enabled(False):
                value = elbo.differentiable_loss(model, guide, *batch)
        optimizing.zero_grad()
        value.backward()
        optimizing.step()
        return value.item()

    losses = []
    with tqdm(range(epochs), disable=not progress, desc="fit", unit="epoch") as bar:
        for _ in bar:
            step_losses = [step(batch) for batch in _model_batches(model, data)]
            losses.append(sum(step_losses) / max(len(step_losses), 1))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    return losses


def _warn_of_batch_norm_in_training(model: Callable, guide: Callable) -> None:
    """Warns where a guide started at a checkpoint fits a network whose ``BatchNorm`` is in
    training mode: its batch statistics hide from the likelihood how the weights' means drift
    under the KL term, and the running statistics that prediction uses lag behind them."""
    if not (isinstance(model, BayesianModel) and isinstance(guide, CheckpointNormal) and guide.values):
        return
    if any(
        isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training
        for module in model.net.modules()
    ):
        warnings.warn(
            "fit: the network's BatchNorm is in training mode, and the guide starts at a checkpoint: its "
            "predictions lose their calibration (a trial's NLL 0.43 against 0.18); call net.eval() before fit",
            stacklevel=3,
        )


def _refuse_parameters_of_another_model(model: Callable) -> None:
    """Raises where Pyro's parameter store holds another tensor under the name of one of the
    network's parameters: that of an earlier model of the same class (a sweep, a reload after
    training in the same process), which an optimizer of the store's tensors would train
    while the network computes with its own."""
    net = model.net if isinstance(model, BayesianModel) else model
    if not isinstance(net, torch.nn.Module) or _is_module_local_param_enabled():
        return
    store = pyro.get_param_store()
    for module in net.modules():
        if not isinstance(module, PyroModule) or not module.__dict__["_pyro_context"].used:
            continue
        for name, parameter in module._parameters.items():
            if parameter is None or name.endswith("_unconstrained"):
                continue
            fullname = module._pyro_get_fullname(name)
            if store._params.get(fullname, parameter) is not parameter:
                raise ValueError(
                    f"fit: Pyro's parameter store already holds {fullname!r} for another model (Pyro keeps "
                    "parameters by name, across models), so this network's own would not be trained: call "
                    "pyro.clear_param_store() before building a model, or set "
                    "pyro.settings.set(module_local_params=True)"
                )


def _as_batches(data: Union[Iterable[Batch], Batch]) -> Iterable[Batch]:
    """``data`` as an iterable of batches: one batch (``(x, y)``, its targets a tensor, its
    inputs tensors, or tuples and dicts holding nothing but tensors; or a dict of tensors) is
    a list of itself."""
    if isinstance(data, Mapping) and all(isinstance(part, torch.Tensor) for part in data.values()):
        return [data]
    if isinstance(data, (tuple, list)) and len(data) > 1 and isinstance(data[-1], torch.Tensor):
        if all(map(_holds_only_tensors, data[:-1])):
            return [tuple(data)]
    return data


def _model_batches(model: Callable, data: Iterable[Batch]) -> Iterable[Batch]:
    """The batches of ``data`` as ``model`` takes them, ``model(*batch)``: a :func:`supervised`
    model's batch of more than two tensors ``(x1, ..., xk, y)`` as ``((x1, ..., xk), y)``, and
    its dict batch as the dict of its inputs and its targets."""
    if not isinstance(model, BayesianModel):
        return (_positional(batch) for batch in _batches(data))
    return (_inputs_and_targets(batch, model.targets) for batch in _batches(data))


def _positional(batch: Batch) -> Batch:
    if isinstance(batch, torch.Tensor):  # a model of one input: fit(model, guide, (x,)), a loader of x
        return (batch,)
    if isinstance(batch, Mapping):  # its keys would be the model's arguments
        raise TypeError(
            f"a model of one's own is called with a batch's parts in order, model(*batch), and this "
            f"batch is a dict (keys {', '.join(map(repr, batch))}): make the loader give tuples, or "
            "make the model with supervised(net, likelihood), which reads dict batches"
        )
    return batch


def _inputs_and_targets(batch: Batch, targets: str) -> Batch:
    if isinstance(batch, Mapping):
        if targets not in batch:
            raise KeyError(
                f"a supervised model reads a dict batch's targets under {targets!r}, and this batch has "
                f"the keys {', '.join(map(repr, batch))}: name its key, supervised(..., targets='...')"
            )
        return {key: value for key, value in batch.items() if key != targets}, batch[targets]
    if not isinstance(batch, (tuple, list)):
        raise TypeError(
            f"a supervised model reads a batch as (x, y), (x1, ..., xk, y) or a dict, not a "
            f"{type(batch).__name__}: give batches of one of those, e.g. for PyTorch Geometric a "
            "DataLoader whose collate_fn makes a Batch b and returns ((b.x, b.edge_index, b.batch), b.y)"
        )
    return (tuple(batch[:-1]), batch[-1]) if len(batch) > 2 else batch


def _called(fn: Callable, x: Inputs):
    """``fn`` on the inputs ``x``: ``fn(x)`` for a tensor, ``fn(*x)`` for a tuple, ``fn(**x)``
    for a dict."""
    if isinstance(x, Mapping):
        return fn(**x)
    return fn(*x) if isinstance(x, (tuple, list)) else fn(x)


def _parts(value) -> Optional[list]:
    """The items of a tuple or list, or the values of a dict; ``None`` for anything else."""
    if isinstance(value, Mapping):
        return list(value.values())
    return list(value) if isinstance(value, (tuple, list)) else None


def _tensors_in(value) -> List[torch.Tensor]:
    """The tensors in ``value``, in order: itself, or those its tuples, lists and dicts hold."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [tensor for part in _parts(value) or () for tensor in _tensors_in(part)]


def _holds_only_tensors(value) -> bool:
    """Whether ``value`` is a tensor, or tuples, lists and dicts of nothing but tensors."""
    parts = _parts(value)
    return isinstance(value, torch.Tensor) or bool(parts) and all(map(_holds_only_tensors, parts))


def _with_tensors(value, tensors: Iterator[torch.Tensor]):
    """``value`` with its tensors replaced, in the order of :func:`_tensors_in`, by ``tensors``."""
    if isinstance(value, torch.Tensor):
        return next(tensors)
    if isinstance(value, Mapping):
        return {key: _with_tensors(part, tensors) for key, part in value.items()}
    if isinstance(value, (tuple, list)):
        parts = [_with_tensors(part, tensors) for part in value]
        return type(value)(*parts) if hasattr(value, "_fields") else type(value)(parts)  # a named tuple
    return value


def _batches(data: Iterable[Batch]) -> Iterable[Batch]:
    """The batches of ``data``. A :class:`~torch.utils.data.DataLoader` that collates rows of a
    :class:`~torch.utils.data.TensorDataset` in this process gives the same batches as the
    dataset's tensors indexed with each batch's indices from its sampler: one indexing per
    tensor instead of a lookup per row and a stack, which costs a small network a sixth of
    its step."""
    if (
        isinstance(data, DataLoader)
        and isinstance(data.dataset, TensorDataset)
        and data.batch_sampler is not None
        and data.collate_fn is default_collate
        and data.num_workers == 0
        and not data.pin_memory
    ):
        return _indexed(data)
    return data


def _indexed(loader: DataLoader) -> Iterable[Batch]:
    batches = iter(loader.batch_sampler)
    # The random draw with which the loader's own iterator starts (its workers' seed), so
    # that the batches, and every random number after them, are those the loader gives.
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
    for indices in batches:
        # index_select, not tensor[indices]: indexing with a list of ints takes torch's general
        # indexing path, about twice as long for a small batch.
        rows = torch.as_tensor(indices, dtype=torch.long)
        yield tuple(tensor.index_select(0, rows.to(tensor.device)) for tensor in loader.dataset.tensors)


def _optimizer(optimizer: Callable[..., torch.optim.Optimizer], params, lr: float) -> torch.optim.Optimizer:
    """``optimizer(params, lr=lr)``; Adam's fused kernel where torch has one for the parameters'
    device and dtype: one kernel for all parameters, against a dozen operations per parameter.
    Not for complex parameters (a Fourier layer's), which the kernel refuses at its first step."""
    params = list(params)
    if optimizer in (torch.optim.Adam, torch.optim.AdamW) and not any(param.is_complex() for param in params):
        try:
            return optimizer(params, lr=lr, fused=True)
        except RuntimeError:
            pass
    return optimizer(params, lr=lr)


@torch.no_grad()
def predict(
    model: BayesianModel,
    guide: Callable,
    x: Union[Inputs, DataLoader],
    num_samples: int = 100,
    *,
    samples_per_pass: Optional[int] = None,
) -> Prediction:
    """
    The model's predictions on ``x`` under ``num_samples`` weight samples from ``guide``,
    summarized by the model's likelihood: averaged class probabilities, or a predictive
    mean and standard deviation, with the predictive entropy and the epistemic spread (see
    :class:`~bayesify.runtime.Prediction`).

    It is what ``Predictive(model, guide=guide, num_samples=num_samples, parallel=True,
    return_sites=["_RETURN"])`` computes, without sampling the observations: the guide is
    sampled once, inside a plate of ``num_samples`` samples left of the data plate, and the
    network replayed on those weights, ``samples_per_pass`` samples at a time, one vectorised
    pass for all of them. That needs the network's layers to take a batch of weights
    (rewritten ``nn.Linear``, ``nn.ConvNd`` and ``nn.ConvTransposeNd`` layers do, see
    :mod:`bayesify.runtime.batched`). When the random sites are all weights and biases of such
    layers, a pass's samples travel in the network's own batch
    (:class:`~bayesify.runtime.batched.SamplesInBatchMessenger`), so code written for one
    batch dimension between the layers (``BatchNorm2d``, ``x.view(x.size(0), -1)``) computes
    as written; otherwise they keep a dimension of their own, left of the batch. Where a pass
    fails, it runs again with torch's functional forms routed to the batched layers
    (:class:`~bayesify.runtime.batched.FunctionalLayers`), for code that calls them with a
    layer's weight (``F.linear(x, self.qkv.weight)``, a Linear subclass with a forward of
    its own). The last sample of the first pass is computed again on its own, and must
    agree: a network can take a batch of samples and compute it wrongly (a graph network's
    messages between the rows of its batch, a dropout that stays on in eval mode). A network
    that fails either way runs once per sample, with a warning that says why. The network
    runs in eval mode (``BatchNorm`` with its running statistics, dropout off), and each
    module is left in the mode it was in; Pyro's validation is off: the guide's
    distributions were checked as it was fitted.

    :param x: the network's input, the tuple of its inputs, or the dict of them by keyword, as
        the model takes it (a dict batch without its targets); or a
        :class:`~torch.utils.data.DataLoader`, whose batches are read as :func:`fit` reads
        them, their targets left out (a batch of one tensor is the inputs alone), and
        predicted in its order under the same draw of weights (one that shuffles is refused).
        Several inputs travel in the batch only where each holds one row per example (a
        transformer's tokens and mask do; a graph network's edges do not, and its samples
        keep their own dimension, or a pass each).
    :param int samples_per_pass: how many samples one pass of the network computes. By
        default, on a GPU all of them; on a CPU, as many as make a pass's rows (samples times
        inputs) about :data:`CPU_ROWS_PER_PASS`, and fewer where a layer's outputs would hold
        more than :data:`CPU_ELEMENTS_PER_PASS` elements, so that they stay small (larger
        passes are slower there, smaller ones pay Pyro's cost of a replay more often).
        However many passes, the weights are those of one draw from the guide, which holds
        every sample's weights at once (as ``Predictive(parallel=True)`` does): the same
        predictions for the same seed. ``1`` samples the guide and runs the network once per
        sample, without any plate, for a network whose layers cannot take a batch of weights
        (other draws of the same guide for the same seed).
    """
    batches = _prediction_inputs(model, x)
    outputs = None
    with pyro.validation_enabled(False), _in_eval_mode(model.net):
        _set_up(guide, batches[0])
        if samples_per_pass != 1:
            try:
                outputs = _in_passes(model, guide, batches, num_samples, samples_per_pass)
            except Exception as error:
                warnings.warn(
                    f"predict: the network did not take a batch of weight samples ({_described(error)}); "
                    "it runs once per sample instead, as with samples_per_pass=1, which skips this try",
                    stacklevel=3,
                )
        if outputs is None:
            outputs = torch.stack(
                [
                    _joined([_replayed(model, weights, inputs) for inputs in batches], dim=0)
                    for weights in (poutine.trace(guide).get_trace(batches[0]) for _ in range(num_samples))
                ]
            )
    return model.likelihood.summarize(outputs)


def _described(error: BaseException) -> str:
    """``error``'s type, message and where it was raised: in the network's code rather than
    torch's, Pyro's or this runtime's, where it passed through them (a bare ``assert`` in a
    library's forward has nothing else to say)."""
    frames = traceback.extract_tb(error.__traceback__)
    libraries = tuple(os.path.dirname(module.__file__) + os.sep for module in (torch, pyro, likelihoods))
    frame = next((each for each in reversed(frames) if not each.filename.startswith(libraries)), frames[-1])
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"{message}, raised at {frame.filename}:{frame.lineno}"


def _set_up(guide: Callable, x: Inputs) -> None:
    """Makes an autoguide's parameters (its first call runs the model, which draws from the
    priors) without drawing from the random numbers the caller seeded: a guide's first
    ``predict`` gives what its later ones give for the same seed."""
    if getattr(guide, "prototype_trace", False) is not None:
        return
    devices = [tensor.device for tensor in _tensors_in(x) if tensor.is_cuda][:1]
    with torch.random.fork_rng(devices=devices), poutine.block():
        guide(x)


def _prediction_inputs(model: BayesianModel, x: Union[Inputs, DataLoader]) -> List[Inputs]:
    """The inputs of each batch that :func:`predict` computes: ``x``, or a loader's batches
    without their targets."""
    if not isinstance(x, DataLoader):
        return [x]
    if isinstance(x.sampler, RandomSampler):
        raise ValueError(
            "predict reads a DataLoader in its order, and this one shuffles its rows (shuffle=True): "
            "the predictions could not be matched to their inputs; predict with a loader made with "
            "shuffle=False"
        )
    batches = [_without_targets(batch, model.targets) for batch in _batches(x)]
    if not batches:
        raise ValueError("predict: the DataLoader gave no batches")
    return batches


def _without_targets(batch: Batch, targets: str) -> Inputs:
    if isinstance(batch, Mapping):
        return {key: value for key, value in batch.items() if key != targets}
    return batch[0] if len(batch) == 1 else _inputs_and_targets(batch, targets)[0]


@contextlib.contextmanager
def _in_eval_mode(net: Optional[torch.nn.Module]):
    """``net`` in eval mode, then each module back in the mode it was in (no network: nothing)."""
    training = [] if net is None else [module for module in net.modules() if module.training]
    if net is not None:
        net.eval()
    try:
        yield
    finally:
        for module in training:
            module.training = True


def _joined(outputs: List[torch.Tensor], dim: int) -> torch.Tensor:
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim)


def _in_passes(
    model: BayesianModel,
    guide: Callable,
    batches: List[Inputs],
    num_samples: int,
    samples_per_pass: Optional[int],
) -> torch.Tensor:
    """The network's outputs on every batch of inputs for ``num_samples`` weight samples, a
    vectorised pass for several samples at a time."""
    # One trace of the guide for every sample and every batch (its cost is Pyro's, per site,
    # whatever the number of samples), and the network on slices of it.
    with _DrawnInPlace(), pyro.plate(_SAMPLES, num_samples, dim=-2):
        weights = poutine.trace(guide).get_trace(batches[0])

    # A layer's widest output a row is the network's, whichever batch and whichever try below;
    # with the trunks computed once a pass, the widest of what computes once a sample.
    widest = _widest_output(model, weights, batches[0]) if samples_per_pass is None else 0
    trunks = _deterministic_trunks(model.net)
    widest_each = (
        _widest_output_each_sample(model, weights, batches[0], num_samples, trunks) if trunks else None
    )
    if widest_each is None:
        trunks = []
    per_pass = {
        once: [_per_pass(x, num_samples, samples_per_pass, width, budget) for x in batches]
        for once, width, budget in [
            (False, widest, CPU_ELEMENTS_PER_PASS),
            (True, widest_each, CPU_ELEMENTS_PER_PASS_ONCE),
        ]
    }

    def every_batch(any_module: bool = False) -> torch.Tensor:
        if trunks:
            # A trunk computed once a pass is a guess about the network's code (that its
            # modules compute row by row): the passes as they were decide where it fails,
            # unless none was computed once and they would fail alike.
            computed: List[torch.nn.Module] = []
            try:
                return passes(any_module, trunks, computed)
            except Exception:
                if not computed:
                    raise
        return passes(any_module, [], [])

    def passes(any_module: bool, trunks: List[torch.nn.Module], computed: list) -> torch.Tensor:
        return _joined(
            [
                _passes(model, weights, x, num_samples, size, any_module, trunks, computed)
                for x, size in zip(batches, per_pass[bool(trunks)])
            ],
            dim=1,
        )

    try:
        return every_batch()
    except DisagreeingSampleError:
        raise
    except Exception as error:
        first_error = error
    # Among the causes, a layer called through torch's functional forms, which refuses a
    # batch of weights: FunctionalLayers routes it to the batched layers, at the cost of a
    # Python call for every torch call of a pass (5% of a small MLP's prediction), which only
    # the networks that need it pay. A layer the rewrite does not know (transformers' Conv1D,
    # addmm on rows it flattens itself) takes its samples only in the batch: last, they
    # travel there for any module's weight, the check telling whether it computed right.
    with FunctionalLayers():
        try:
            return every_batch()
        except DisagreeingSampleError:
            raise
        except Exception:
            pass
        try:
            return every_batch(any_module=True)
        except Exception:  # a disagreement too: this layout was a guess, the first error says why
            raise first_error from None


def _per_pass(
    x: Inputs,
    num_samples: int,
    samples_per_pass: Optional[int],
    widest: int,
    budget: int = CPU_ELEMENTS_PER_PASS,
) -> int:
    """How many samples a pass on ``x`` computes: ``samples_per_pass``, or by default every
    sample on a GPU; on a CPU, about :data:`CPU_ROWS_PER_PASS` rows, and fewer where an
    operation's outputs, ``widest`` elements a row, would hold more than ``budget``. A
    convolution's outputs are tens of times its inputs: beyond a few megabytes, torch's
    allocator on a CPU maps fresh memory for every tensor, and its page faults cost more than
    the pass."""
    if samples_per_pass is None:
        inputs = _tensors_in(x)
        if inputs and inputs[0].device.type != "cpu":
            return num_samples
        rows = len(inputs[0]) if inputs and inputs[0].dim() else 1
        samples_per_pass = CPU_ROWS_PER_PASS // rows
        if widest:
            samples_per_pass = min(samples_per_pass, budget // (widest * rows))
    return max(1, min(samples_per_pass, num_samples))


def _widest_output(model: BayesianModel, weights: poutine.Trace, x: Inputs) -> int:
    """The most elements an operation of the network outputs for one row of the inputs ``x``
    on a CPU and one sample of the weights, from a run on the first row (0 where the inputs
    are no rows of examples, are on a GPU, or the network cannot run on one row). Every
    operation's, not only every module's: an attention's logits, computed between its layers,
    are tokens times tokens a head."""
    first = _first_rows(x)
    if first is None or first[0].device.type != "cpu":
        return 0
    recorder = _WidestOutputs()
    try:
        with recorder:
            _replayed(model, _one_draw(weights, 0), _with_tensors(x, iter(first)))
    except Exception:  # the passes will say what fails, if anything
        return 0
    return recorder.widest


def _widest_output_each_sample(
    model: BayesianModel,
    weights: poutine.Trace,
    x: Inputs,
    num_samples: int,
    trunks: Sequence[torch.nn.Module],
) -> Optional[int]:
    """As :func:`_widest_output`, of the operations that a pass with ``trunks`` computed once
    (:class:`_ComputedOnce`) computes for every sample, a trunk's output copied for each
    included, from a pass of two samples on the first row; None where no trunk computes once
    in it (the network reads none with nothing but the inputs' copies, or fails so)."""
    first = _first_rows(x)
    if first is None:
        return None
    count = min(2, num_samples)  # samples that differ, as a pass's do
    copies = [row.repeat(count, *(1,) * (row.dim() - 1)) for row in first]
    once = _ComputedOnce(trunks, count, 1, dict(zip(copies, first)))
    recorder = _WidestOutputs(once)
    try:
        with pyro.plate(_SAMPLES, count, dim=-2), SamplesInBatchMessenger(count), once, recorder:
            _replayed(model, _sliced(weights, 0, count), _with_tensors(x, iter(copies)))
    except Exception:  # the passes will say what fails, if anything
        return None
    if not once.computed or once.draws:  # a trunk's own random numbers: one draw a sample, as written
        return None
    return -(-recorder.widest_outside // count)


def _first_rows(x: Inputs) -> Optional[List[torch.Tensor]]:
    """The first row of each of the inputs ``x``; None where they are no rows of examples."""
    inputs = _tensors_in(x)
    return None if _rows(inputs) is None else [input[:1] for input in inputs]


def _rows(inputs: List[torch.Tensor]) -> Optional[int]:
    """How many rows of examples each of ``inputs`` holds; None where they hold none, or not
    as many (a graph network's edges)."""
    rows = len(inputs[0]) if inputs and inputs[0].dim() else None
    if rows is None or any(not input.dim() or len(input) != rows for input in inputs):
        return None
    return rows


class _WidestOutputs(TorchDispatchMode):
    """Records the most elements a tensor that an operation makes holds (views, which make
    none, left out): of all, and of those made while ``once`` computes no trunk."""

    def __init__(self, once: Optional["_ComputedOnce"] = None) -> None:
        super().__init__()
        self.widest = self.widest_outside = 0
        self._once = once

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if not func.is_view:
            width = max([0, *(tensor.numel() for tensor in _tensors_in(output))])
            self.widest = max(self.widest, width)
            if self._once is None or not self._once.inside:
                self.widest_outside = max(self.widest_outside, width)
        return output


def _passes(
    model: BayesianModel,
    weights: poutine.Trace,
    x: Inputs,
    num_samples: int,
    samples_per_pass: int,
    any_module: bool = False,
    trunks: Sequence[torch.nn.Module] = (),
    computed: Optional[list] = None,
) -> torch.Tensor:
    """The network's outputs on the sampled ``weights``, ``samples_per_pass`` samples a pass;
    the samples in the batch where every random site is a batched layer's weight or bias
    (with ``any_module``, any module's), each of ``trunks`` computed once a pass where it reads
    nothing but the inputs' copies (see :class:`_ComputedOnce`; each one so computed is
    appended to ``computed``)."""
    inputs = _tensors_in(x)  # those of a dict that one argument holds too
    size = _rows(inputs)
    # The samples travel in the batch where nothing but the layers meets them and every input
    # is one row per example (a graph network's edges are not): the inputs once per sample,
    # made once for all passes.
    repeated = None
    if size is not None and _only_layer_weights(model.net, weights, any_module):
        repeated = [input.repeat(samples_per_pass, *(1,) * (input.dim() - 1)) for input in inputs]
    outputs = None
    for start in range(0, num_samples, samples_per_pass):
        stop = min(start + samples_per_pass, num_samples)
        count = stop - start
        with pyro.plate(_SAMPLES, count, dim=-2):
            if repeated is not None:
                rows = [batch[: count * size] for batch in repeated]
                shared = (inputs[0], rows[0]) if len(inputs) == 1 else None
                once = (
                    _ComputedOnce(trunks, count, size, dict(zip(rows, inputs)), computed)
                    if trunks and count > 1
                    else contextlib.nullcontext()
                )
                with SamplesInBatchMessenger(count, shared=shared), once:
                    output = _replayed(model, _sliced(weights, start, stop), _with_tensors(x, iter(rows)))
                output = output.reshape(count, size, *output.shape[1:])
            else:
                output = _replayed(model, _sliced(weights, start, stop), x)
        # Into one tensor as each pass ends, rather than concatenated at the end: a pass's
        # output kept would sit in memory its activations freed, and the next pass's
        # activations would need fresh memory (on a CPU, pages to fault in) every pass.
        if outputs is None:
            _check_last_sample(model, weights, x, output)
            outputs = output.new_empty((num_samples, *output.shape[1:]))
        outputs[start:stop] = output
        del output
    return outputs


def _deterministic_trunks(net: torch.nn.Module) -> List[torch.nn.Module]:
    """The largest modules of ``net`` that hold no random weight: a classifier's backbone
    before its random head, and the modules between (a positional embedding before the layers
    that read it). None where nothing in ``net`` is random."""
    random: set = set()
    for module in reversed(list(net.modules())):  # every module after those it holds
        if module.__dict__.get("_pyro_samples") or any(id(child) in random for child in module.children()):
            random.add(id(module))
    trunks = []
    for module in net.modules():
        if id(module) in random:
            for child in module.children():
                if id(child) not in random:
                    trunks.extend(_called_parts(child))
    return trunks


def _called_parts(module: torch.nn.Module) -> List[torch.nn.Module]:
    """``module``, or where it is a container that is never called (``nn.ModuleList``,
    ``nn.ModuleDict``: no forward of its own), the parts of it that are."""
    if type(module).forward is not torch.nn.Module.forward:
        return [module]
    return [part for child in module.children() for part in _called_parts(child)]


class _ComputedOnce(TorchFunctionMode):
    """
    While a pass's batch holds the inputs once per sample (``x.repeat(count, 1)``), computes
    each of ``trunks`` that is called with nothing but such copies on the inputs themselves,
    once, and gives its output once per sample in the same way: a deterministic backbone
    before a random head computes once a pass, not once a sample. The output of a trunk so
    computed is a copy too, for the next one, and so is what a torch function computes from
    copies where it is, element for element, ``count`` blocks each equal to the function of
    the inputs themselves (``x.unsqueeze(-1)`` between two trunks). A copy changed in place
    is no copy any more. An output that is not one row per input is computed again on the
    copies, as the network wrote it.

    :param trunks: modules that hold no random weight.
    :param int count: the samples of the pass.
    :param int rows: the inputs' rows.
    :param dict copies: each copy in the batch, by the inputs it repeats.
    :param list computed: where to append each trunk computed once.
    """

    def __init__(
        self,
        trunks: Sequence[torch.nn.Module],
        count: int,
        rows: int,
        copies: Mapping[torch.Tensor, torch.Tensor],
        computed: Optional[list] = None,
    ) -> None:
        super().__init__()
        self.trunks = trunks
        self.count = count
        self.rows = rows
        self.computed = [] if computed is None else computed
        #: How many trunk calls computing once are under way (what runs now runs once a pass).
        self.inside = 0
        #: Whether a trunk computed once drew random numbers of its own (a sampling layer,
        #: a dropout left on), which computed once every sample of the pass would share.
        self.draws = False
        self._copies: Dict[int, tuple] = {}
        for copy, original in copies.items():
            self._register(copy, original)
        self._called: List[Optional[tuple]] = []  # a trunk's arguments and random state, or None
        self._hooks: list = []

    def __enter__(self) -> "_ComputedOnce":
        for trunk in self.trunks:
            self._hooks.append(trunk.register_forward_pre_hook(self._on_originals, with_kwargs=True))
            self._hooks.append(
                trunk.register_forward_hook(self._repeated, with_kwargs=True, always_call=True)
            )
        return super().__enter__()

    def __exit__(self, *exc_info) -> None:
        for hook in self._hooks:
            hook.remove()
        super().__exit__(*exc_info)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not (isinstance(result, torch.Tensor) and result.dim() and len(result) == self.count * self.rows):
            return result
        if any(tensor is result for tensor in _tensors_in((args, kwargs))):
            return result  # an in-place function
        originals = self._on_originals_of(args, kwargs, only_copies=False)  # a parameter added too
        if originals is None:
            return result
        try:
            on_originals = func(*originals[0], **originals[1])
        except Exception:  # sizes read from the copies (x.view(len(x), -1)): computed as written
            return result
        if (
            isinstance(on_originals, torch.Tensor)
            and on_originals.shape == (self.rows, *result.shape[1:])
            and torch.equal(
                result.unflatten(0, (self.count, self.rows)),
                on_originals.expand(self.count, *on_originals.shape),
            )
        ):
            self._register(result, on_originals)
        return result

    def _register(self, copy: torch.Tensor, original: torch.Tensor) -> None:
        # Held while the copy lives, no longer: a pass's copies would otherwise stay in memory
        # to its end, where torch frees each activation after its use.
        key = id(copy)
        self._copies[key] = (
            weakref.ref(copy, lambda _: self._copies.pop(key, None)),
            copy._version,
            original,
        )

    def _original(self, value) -> Optional[torch.Tensor]:
        entry = self._copies.get(id(value)) if isinstance(value, torch.Tensor) else None
        if entry is None or entry[0]() is not value or value._version != entry[1]:
            return None  # no copy, or one changed in place since (h += ..., h[mask] = ...)
        return entry[2]

    def _on_originals_of(self, args: tuple, kwargs: dict, only_copies: bool) -> Optional[Tuple[tuple, dict]]:
        """``args`` and ``kwargs`` with each copy replaced by what it repeats; None where they
        hold no copy, a tensor in a container, or (``only_copies``) a tensor that is no copy."""
        values = [*args, *kwargs.values()]
        if any(_parts(value) and _tensors_in(value) for value in values):
            return None
        tensors = [value for value in values if isinstance(value, torch.Tensor)]
        swap = {
            id(tensor): original for tensor in tensors if (original := self._original(tensor)) is not None
        }
        if not swap or only_copies and len(swap) < len(tensors):
            return None
        return (
            tuple(swap.get(id(value), value) for value in args),
            {key: swap.get(id(value), value) for key, value in kwargs.items()},
        )

    def _on_originals(self, module, args, kwargs):
        originals = self._on_originals_of(args, kwargs, only_copies=True)
        self._called.append(None if originals is None else (args, kwargs, torch.get_rng_state()))
        if originals is not None:
            self.computed.append(module)
            self.inside += 1
        return originals

    def _repeated(self, module, args, kwargs, output):
        called = self._called.pop()
        if called is None:
            return None
        self.inside -= 1
        if output is None:  # it raised (or returns nothing): the error goes on as it is
            return None
        if not torch.equal(called[2], torch.get_rng_state()):
            self.draws = True
        outputs = [output] if isinstance(output, torch.Tensor) else output
        if type(outputs) in (list, tuple) and all(
            isinstance(part, torch.Tensor) and part.dim() and len(part) == self.rows for part in outputs
        ):
            copies = [self._copy(part) for part in outputs]
            return copies[0] if isinstance(output, torch.Tensor) else type(output)(copies)
        return module.forward(*called[0], **called[1])

    def _copy(self, original: torch.Tensor) -> torch.Tensor:
        copy = original.repeat(self.count, *(1,) * (original.dim() - 1))
        self._register(copy, original)
        return copy


#: The name of :func:`predict`'s plate of weight samples.
_SAMPLES = "predictive_samples"


class _DrawnInPlace(Messenger):
    """
    Draws a sample site of a normal distribution (or an :class:`~torch.distributions.Independent`
    one) as ``Normal.rsample`` does, ``loc + eps * scale``, bit for bit (the same standard
    normals, the same products and sums), computed into ``eps``: without two more tensors of
    the size of every sample's weights, each fresh memory on a CPU.
    """

    def _pyro_sample(self, msg) -> None:
        if msg["done"] or msg["is_observed"] or msg["value"] is not None or msg["args"] or msg["kwargs"]:
            return
        normal = msg["fn"]
        if (
            isinstance(normal, torch.distributions.Independent)
            and type(normal).rsample is _INDEPENDENT_RSAMPLE
        ):
            normal = normal.base_dist
        if getattr(type(normal), "rsample", None) is not _NORMAL_RSAMPLE or torch._C._get_tracing_state():
            return
        eps = torch.empty(normal.batch_shape, dtype=normal.loc.dtype, device=normal.loc.device).normal_()
        msg["value"] = eps.mul_(normal.scale).add_(normal.loc)


_NORMAL_RSAMPLE = torch.distributions.Normal.rsample
_INDEPENDENT_RSAMPLE = torch.distributions.Independent.rsample


def _sliced(weights: poutine.Trace, start: int, stop: int) -> poutine.Trace:
    """The sampled sites of ``weights``, each value narrowed to samples ``start:stop`` along the
    dimension of the plate of samples (a site that does not vary along it is kept whole)."""
    return _each_site(weights, lambda value, dim, event_dim: value.narrow(dim, start, stop - start))


def _one_draw(weights: poutine.Trace, index: int) -> poutine.Trace:
    """The sampled sites of ``weights`` at sample ``index``, shaped as one draw outside the
    plate of samples: without its dimension, nor the dimensions of size one left of it."""

    def select(value: torch.Tensor, dim: int, event_dim: int) -> torch.Tensor:
        value = value.select(dim, index)
        while value.dim() > event_dim and value.shape[0] == 1:
            value = value[0]
        return value

    return _each_site(weights, select)


def _each_site(weights: poutine.Trace, take: Callable) -> poutine.Trace:
    """The sampled sites of ``weights``, each value ``take(value, dim, event_dim)`` where it
    varies along the plate of samples, ``dim`` its dimension (else kept whole)."""
    taken = poutine.Trace()
    for name, site in weights.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        value, event_dim = site["value"], site["fn"].event_dim
        for frame in site["cond_indep_stack"]:
            if frame.name == _SAMPLES:
                dim = value.dim() - event_dim + frame.dim
                if dim >= 0 and value.shape[dim] == frame.size:
                    value = take(value, dim, event_dim)
        taken.add_node(name, type="sample", value=value, infer=site["infer"], is_observed=False)
    return taken


def _check_last_sample(
    model: BayesianModel, weights: poutine.Trace, x: Inputs, computed: torch.Tensor
) -> None:
    """Raises where the last of the first pass's outputs, ``computed``, are not the network's
    outputs on that sample's weights alone. A network can take a batch of samples and still
    compute them wrongly (a graph network's messages between the rows of its batch, an
    indexing of the first dimension, a dropout that stays on in eval mode): one pass of one
    sample is what it costs to know.

    They agree when they differ by no more than rounding (a thousandth of the outputs' size,
    a few hundredths in half precision) or no more than a tenth of the difference between
    the pass's first and last samples: in single precision a deep network started far from
    training (weights drawn from a wide prior) amplifies the rounding of another order of
    the same sums to a hundredth, which is no wrong computation and leaves the samples'
    spread as it is."""
    index = len(computed) - 1  # the first pass's samples are the draw's first
    alone, last = _replayed(model, _one_draw(weights, index), x), computed[-1]
    if alone.shape != last.shape:
        raise ValueError(
            f"sample {index} has the shape {tuple(last.shape)} in one pass with others, "
            f"{tuple(alone.shape)} alone"
        )
    if not alone.numel():
        return
    allowed = 0.0
    if alone.is_floating_point():
        rounding = max(1e-3, torch.finfo(alone.dtype).eps ** 0.5) * float(alone.abs().max())
        allowed = max(rounding, 0.1 * float((computed[0] - last).abs().max()))
    if not float((last - alone).abs().max()) <= allowed:  # not: a NaN disagrees too
        raise DisagreeingSampleError(
            f"sample {index}, computed with others in one pass, differs from the network run on its "
            "weights alone: the network mixes the rows of its batch or indexes its first dimension, "
            "or samples by itself (a dropout that stays on in eval mode)"
        )


class DisagreeingSampleError(ValueError):
    """A pass computed without an error, and wrongly."""


def _replayed(model: BayesianModel, weights: poutine.Trace, x: Inputs) -> torch.Tensor:
    return poutine.replay(model.network, trace=weights)(x)


def _only_layer_weights(net: torch.nn.Module, weights: poutine.Trace, any_module: bool = False) -> bool:
    """Whether every weight sampled in ``weights`` is the weight or bias of one of ``net``'s
    batched layers (:mod:`bayesify.runtime.batched`; with ``any_module``, of any module), so
    that nothing else meets the samples."""
    modules = dict(net.named_modules(remove_duplicate=False))  # a layer held twice: either name
    layers = torch.nn.Module if any_module else BATCHED_LAYERS
    for name, site in weights.iter_stochastic_nodes():
        if site["infer"].get("is_auxiliary"):
            continue
        owner, _, attribute = name.rpartition(".")
        if attribute not in ("weight", "bias") or not isinstance(modules.get(owner), layers):
            return False
    return True
