"""From a rewritten model and a checkpoint to calibrated predictions, in plain Pyro.

Four small pieces, each replaceable by the Pyro a user would write instead::

    net = BayesianMLP()                                    # the rewritten model
    replaced = load_deterministic(net, torch.load("mlp.pt"))
    model = supervised(net, Categorical(dataset_size=len(train)))
    guide = CheckpointNormal(model, replaced)              # starts at the trained weights
    fit(model, guide, DataLoader(train, batch_size=64, shuffle=True), epochs=10)
    prediction = predict(model, guide, x_test, num_samples=100)

:func:`supervised` (here) is the Pyro model ``model(x, y=None)``; :func:`fit` (here) a loop
of ELBO steps; :class:`~bayesify.runtime.guides.CheckpointNormal` an
:class:`~pyro.infer.autoguide.AutoNormal`, and for regression
:class:`~bayesify.runtime.guides.CheckpointLaplace`, which replaces the guide and the fit: a
last-layer Laplace approximation at the trained weights, as Pyro's
``AutoLaplaceApproximation`` makes one; :func:`~bayesify.runtime.prediction.predict` what
:class:`~pyro.infer.predictive.Predictive` computes, summarized by the likelihood.
"""

import contextlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Union

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from pyro.nn.module import _is_module_local_param_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan
from tqdm.auto import tqdm

from bayesify.runtime.data import Batch, Inputs, as_batches, called_on, model_batches
from bayesify.runtime.prior import Prior


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
        # The likelihood runs inside the network's Pyro context too: what it reads of the
        # network (a GP's kernel, which gpytorch evaluates lazily, in the marginal likelihood)
        # is then the call's one draw, a site of the trace, not an untraced draw of the prior.
        # Not with module-local parameters, whose context is the network's own parameter store:
        # the likelihood's (a learned noise) are the model's, in Pyro's.
        shared = isinstance(self.net, PyroModule) and not _is_module_local_param_enabled()
        with self.net._pyro_context if shared else contextlib.nullcontext():
            output = self.network(x)
            self.likelihood(output, y)
        return output

    @property
    def observed(self) -> str:
        """The name of the likelihood's observed site: its ``name``, else Pyro's usual ``"obs"``."""
        return getattr(self.likelihood, "name", "obs")

    def network(self, x: Inputs) -> torch.Tensor:
        """The tensor the likelihood observes: the network's output on ``x``, or ``output`` of it."""
        returned = called_on(self.net, x)
        if self.output is not None:
            return self.output(returned)
        if not isinstance(returned, torch.Tensor):
            raise TypeError(
                f"{type(self.net).__name__} returned a {type(returned).__name__}, not a tensor: say which "
                "tensor the likelihood observes, e.g. supervised(net, likelihood, output=lambda out: "
                "out.logits) for a Hugging Face model, output=lambda out: out[0] for a tuple, or "
                "output=lambda out: out.mean for a distribution (a gpytorch GP's), whose likelihood is then "
                "one of your own"
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
    as writing, for a network that is a :class:`~pyro.nn.PyroModule`::

        def model(x, y=None):
            with net._pyro_context:  # one draw of the weights for the whole call
                output = net(x)
                likelihood(output, y)
            return output

    so that what the likelihood reads of the network (a GP's kernel, which gpytorch
    evaluates lazily; the network called again) is the same draw, traced once.

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
    eval_mode: Optional[bool] = None,
) -> List[float]:
    """
    Trains ``guide`` (and the model's deterministic parameters, except those that do not
    require grad: ``net.backbone.requires_grad_(False)`` keeps a backbone as its checkpoint
    has it under a random head) by stochastic variational inference, and returns the mean
    loss of each epoch.

    Each step is ``loss.differentiable_loss(model, guide, x, y)``, its gradient, and a step
    of a torch optimizer over every Pyro parameter the first step used (Pyro's way of using
    a torch optimizer; one optimizer for all parameters is faster than ``pyro.optim``'s one
    per parameter). The first step runs with Pyro's validation on, so bad targets and shapes
    fail there with Pyro's message; the others run without its checks, which cost as much
    as a small network's step. Where the guide starts at a checkpoint (its ``values``), the
    network is fitted in eval mode, as :func:`~bayesify.runtime.predict` runs it (``BatchNorm``
    by its trained running statistics, dropout off), and each module is left in its mode after.

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
    :param eval_mode: for a :func:`supervised` model (a model of one's own runs its network
        as it is): ``None`` (the default), eval mode where the guide starts at a checkpoint,
        the modules' own modes otherwise; ``True``: eval mode; ``False``: the
        modules' own modes, for a network whose forward needs training mode to be
        differentiated (an interatomic potential's forces,
        ``torch.autograd.grad(energy, positions, create_graph=self.training)``).
    :returns: the mean loss per epoch.
    """
    data = as_batches(data)
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
            params = [param for param in params if id(param) not in frozen]
            for param in frozen.values():  # no gradients for them from the second step on
                param.requires_grad_(False)
            _refuse_parameters_of_another_model(model)
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

    def first_step(batch: Batch) -> float:
        try:
            return step(batch)
        except RuntimeError as error:
            _raise_naming_eval_mode(error, in_eval_mode, "fit")

    # Started at a checkpoint, the network is the trained one in eval mode, as predict runs it:
    # in training mode its BatchNorm's batch statistics hid from the likelihood how the weights'
    # means drift (a trial's NLL 0.43 against 0.18), and an output transform that applies in
    # eval mode alone (chemprop's unscaling) left the learned noise in other units than the
    # predictions.
    if eval_mode is None:
        eval_mode = isinstance(model, BayesianModel) and _started_at_a_checkpoint(model.net, guide)
    in_eval_mode = eval_mode and isinstance(model, BayesianModel)
    losses = []
    with (
        _keeping_frozen(model) as frozen,
        _in_eval_mode(model.net if in_eval_mode else None),
        tqdm(range(epochs), disable=not progress, desc="fit", unit="epoch") as bar,
    ):
        for _ in bar:
            step_losses = [
                (first_step if optimizing is None else step)(batch) for batch in batches_for(model, data)
            ]
            losses.append(sum(step_losses) / max(len(step_losses), 1))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    return losses


def batches_for(model: Callable, data: Iterable[Batch]) -> Iterable[Batch]:
    """The batches of ``data`` as ``model`` takes them: a :func:`supervised` model's inputs
    and targets, a model of one's own's parts in order (see :func:`~bayesify.runtime.data.model_batches`)."""
    return model_batches(data, model.targets if isinstance(model, BayesianModel) else None)


def _started_at_a_checkpoint(net: torch.nn.Module, guide: Callable) -> bool:
    """Whether a fit starts from the trained network: a guide started at its values, or a
    network whose checkpoint :func:`~bayesify.runtime.load_deterministic` loaded (an
    ``AutoNormal`` started at its values by ``init_to_value``)."""
    return bool(getattr(guide, "values", None)) or any(
        isinstance(prior, Prior) and prior.deterministic is not None
        for module in net.modules()
        for prior in module.__dict__.get("_pyro_samples", {}).values()
    )


@contextlib.contextmanager
def _keeping_frozen(model: Callable) -> Iterator[Dict[int, torch.Tensor]]:
    """Gives the network's parameters that do not require grad, by id, and leaves them so
    after: frozen by the user (``net.backbone.requires_grad_(False)``, a fixed backbone under
    a random head), they are turned on again by Pyro's parameter store when it first reads
    them."""
    net = model.net if isinstance(model, BayesianModel) else model
    frozen = {}
    if isinstance(net, torch.nn.Module):
        frozen = {id(param): param for param in net.parameters() if not param.requires_grad}
    try:
        yield frozen
    finally:
        for param in frozen.values():
            param.requires_grad_(False)


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


#: What torch says when a forward that differentiates itself ran in the wrong mode or
#: without autograd: its graph was freed, or never made.
_AUTOGRAD_ERRORS = ("backward through the graph a second time", "does not require grad")


def _raise_naming_eval_mode(error: RuntimeError, in_eval_mode: bool, caller: str) -> None:
    """Raises ``error`` again, saying that ``caller`` ran the network in eval mode where that
    may be its cause."""
    if not in_eval_mode or not any(text in str(error) for text in _AUTOGRAD_ERRORS):
        raise error
    raise RuntimeError(
        f"{error}\n{caller} ran the network in eval mode, as it does at a checkpoint; a forward that "
        "differentiates itself in training mode only (forces as torch.autograd.grad(energy, positions, "
        "create_graph=self.training)) cannot be differentiated again so: pass eval_mode=False"
    ) from error


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
