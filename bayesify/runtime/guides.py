"""Guides that start at the deterministic model's checkpoint: :class:`CheckpointNormal`, a
mean-field normal to train from it, and :class:`CheckpointLaplace`, a last-layer Laplace
approximation at it, with nothing to train."""

import functools
import itertools
from contextlib import ExitStack
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import AutoGuideList, AutoMultivariateNormal, AutoNormal, init_to_median
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroParam
from pyro.nn.module import _is_module_local_param_enabled
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints

from bayesify.runtime import likelihoods
from bayesify.runtime.data import Batch, as_batches, model_batches, tensors_in
from bayesify.runtime.held import Tied
from bayesify.runtime.inference import BayesianModel, _in_eval_mode, _keeping_frozen, _raise_naming_eval_mode

#: The default relative spread of :class:`CheckpointNormal`: sd = DELTA * |trained weight|.
DELTA = 0.01
#: The default spread of a site without a trained value (and the least spread of any site).
INIT_SCALE = 1e-3
#: The most weights :class:`CheckpointLaplace` gives a full covariance (a Hessian of this size squared).
MAX_LAPLACE_SIZE = 5000


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
        _set_up_without_graph(super()._setup_prototype, *args, **kwargs)
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


def _set_up_without_graph(set_up: Callable, *args, **kwargs) -> None:
    """Sets a guide up without autograd: the trace it keeps would hold the model's outputs with
    their graph, which copy.deepcopy refuses (a Lightning callback's copy, torch's
    AveragedModel). With autograd where the model differentiates the network itself (a
    PINN's physics residual, a potential's forces)."""
    try:
        with torch.no_grad():
            set_up(*args, **kwargs)
    except RuntimeError:
        set_up(*args, **kwargs)


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
        module sampled last of those the observed output depends on (the last layer's
        weight and bias). At most
        :data:`MAX_LAPLACE_SIZE` weights in all: the Hessian has their number squared.
    :param bool eval_mode: compute it with the network in eval mode, as
        :func:`~bayesify.runtime.predict` runs it; ``False`` for a network whose forward
        needs training mode to be differentiated (see :func:`~bayesify.runtime.fit`).
    """

    def __init__(
        self,
        model: Callable,
        values: Dict[str, torch.Tensor],
        data: Union[Iterable[Batch], Batch],
        *,
        sites: Optional[Sequence[str]] = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model)
        try:
            with _keeping_frozen(model):
                self._approximate(model, values, data, sites, eval_mode)
        except RuntimeError as error:
            _raise_naming_eval_mode(error, eval_mode, "CheckpointLaplace")

    def _approximate(self, model, values, data, sites, eval_mode) -> None:
        joint = model  # the observations included: the Hessian is the posterior's
        batches = iter(
            model_batches(as_batches(data), model.targets if isinstance(model, BayesianModel) else None)
        )
        first = next(batches, None)
        if first is None:
            raise ValueError("CheckpointLaplace needs the training data: a DataLoader or (x, y), not nothing")
        if isinstance(model, BayesianModel):
            model = poutine.block(model, hide=[model.observed])
        init = functools.partial(_init_to_checkpoint, values=values)
        # At the trained network as it predicts: BatchNorm's running statistics (which a pass
        # in training mode would also update), dropout off.
        with _in_eval_mode(joint.net if eval_mode and isinstance(joint, BayesianModel) else None):
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
                module = _observed(joint, prototype, latent, first)[-1].rpartition(".")[0]
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
            _set_up_without_graph(self, *first)
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


def _observed(model: Callable, prototype: poutine.Trace, latent: List[str], batch: Batch) -> List[str]:
    """The ``latent`` sites, in the order sampled, that the output a supervised model observes
    depends on: the module sampled last may be a head the likelihood never sees (an
    actor-critic's action head, when the value is observed), whose Laplace posterior is its
    prior's, and whose predictions had no spread at all. Every site, for a model of one's own."""
    if not isinstance(model, BayesianModel):
        return latent
    values = {name: prototype.nodes[name]["value"].detach().requires_grad_() for name in latent}
    with torch.enable_grad(), poutine.block():
        output = poutine.condition(model.network, data=values)(batch[0])
    sums = [tensor.sum() for tensor in tensors_in(output) if tensor.requires_grad]
    read = (
        torch.autograd.grad(sums, list(values.values()), allow_unused=True) if sums else [None] * len(values)
    )
    observed = [name for name, gradient in zip(values, read) if gradient is not None]
    if not observed:
        raise ValueError(
            "CheckpointLaplace: the output the likelihood observes depends on none of the random weights "
            f"({_some(latent)}): does supervised(..., output=...) pick the output the spec makes random?"
        )
    return observed


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
