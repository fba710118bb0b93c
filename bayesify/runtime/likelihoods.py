"""Likelihoods: the observation statement of a supervised model, scaled to the data set.

A likelihood is called with the network's output on a batch and the batch's targets, and
does what a Pyro user writes at the end of a model::

    with pyro.plate("data", dataset_size, subsample_size=len(y)):
        pyro.sample("obs", dist.Categorical(logits=logits), obs=y)

The plate's ``subsample_size`` makes Pyro scale the batch's log-likelihood by
``dataset_size / len(y)``, so an ELBO estimated on a minibatch is that of the whole data
set, and the prior keeps its weight. It also turns sampled network outputs into a
:class:`Prediction`.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.runtime import get_plates
from torch.distributions import constraints

from bayesify.runtime.prior import user_stacklevel


@dataclass
class Prediction:
    """
    What :func:`~bayesify.runtime.predict` returns: a summary of the network's outputs under
    posterior samples of its weights. Fields that do not apply to a likelihood are ``None``.

    :ivar outputs: the network's output for every weight sample, ``(num_samples, batch, ...)``.
    :ivar probs: classification: the class probabilities averaged over the samples.
    :ivar mean: regression: the predictive mean.
    :ivar sd: regression: the predictive standard deviation (weights and noise).
    :ivar entropy: the entropy of the predictive distribution, per input (for regression,
        that of a normal distribution with the predictive standard deviation).
    :ivar epistemic: the part of the uncertainty due to the weights: for classification the
        mutual information between the label and the weights (the entropy minus the
        samples' mean entropy), for regression the standard deviation of the samples' means.
    """

    outputs: torch.Tensor
    entropy: torch.Tensor
    epistemic: torch.Tensor
    probs: Optional[torch.Tensor] = None
    mean: Optional[torch.Tensor] = None
    sd: Optional[torch.Tensor] = None
    #: The observation noise's scale (regression only).
    noise: Optional[torch.Tensor] = None

    def nll(self, target: torch.Tensor) -> torch.Tensor:
        """The mean negative log-likelihood of ``target`` under the predictive distribution
        (the average over weight samples of the likelihood, not of its log)."""
        if self.probs is not None:
            target = _shaped_as(target, self.probs.shape[:-1])
            picked = self.probs.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
            return -picked.clamp_min(torch.finfo(self.probs.dtype).tiny).log().mean()
        per_sample = dist.Normal(self.outputs, self.noise).log_prob(
            _shaped_as(target, self.outputs.shape[1:])
        )
        log_mixture = per_sample.logsumexp(0) - math.log(self.outputs.shape[0])
        return -log_mixture.mean()


class Categorical:
    """
    Class labels from the network's logits: ``obs ~ Categorical(logits=output)`` for every
    input of the batch, in a plate scaled to ``dataset_size``. One observation is all of an
    input's labels: one label for a ``(batch, classes)`` output, a label per token for a
    ``(batch, tokens, classes)`` one, a label per pixel for a segmentation.

    :param int dataset_size: the number of training inputs (``None``: no scaling, every
        call sees the whole data set).
    :param int class_dim: the output's dimension of classes: ``-1``, last, as
        :class:`~pyro.distributions.Categorical` takes logits; or ``1``, after the batch, as
        :func:`torch.nn.functional.cross_entropy` takes an image's ``(batch, classes,
        height, width)``. A dimension from the left counts from the batch's, whatever
        plates enclose the model (the particles of a vectorised ELBO, the samples of
        ``Predictive``).
    :param str name: the name of the observed sample site.
    """

    def __init__(self, dataset_size: Optional[int] = None, name: str = "obs", *, class_dim: int = -1) -> None:
        self.dataset_size = dataset_size
        self.name = name
        self.class_dim = class_dim

    def __call__(self, output: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.class_dim != -1:
            output = output.movedim(self._class_dim(_enclosing_plates()), -1)
        # Beyond (batch, classes), an input's labels are one observation: the batch is the
        # first dimension after the enclosing plates', not the one left of the classes.
        event_dim = 0 if output.dim() <= 2 else output.dim() - 2 - _enclosing_plates()
        if target is not None:
            target = _shaped_as(target, output.shape[output.dim() - event_dim - 2 : -1])
        labels = _ClassLabels(logits=output)
        with _data_plate(self.dataset_size, output.shape[-2 - event_dim], target is not None):
            return pyro.sample(self.name, labels.to_event(event_dim) if event_dim else labels, obs=target)

    def _class_dim(self, leading: int) -> int:
        """The classes' dimension in outputs with ``leading`` dimensions left of the batch."""
        return self.class_dim if self.class_dim < 0 else leading + self.class_dim

    def summarize(self, outputs: torch.Tensor) -> Prediction:
        # softmax and log_softmax written out: torch's CPU kernels take ten times longer over
        # a short last dimension (ten classes) than these few element-wise operations. In place
        # where a tensor of every sample's outputs is not read again: on a CPU each new one is
        # also fresh memory to fault in, as much time again as the arithmetic.
        logits = outputs if self.class_dim == -1 else outputs.movedim(self._class_dim(1), -1)
        shifted = logits - logits.amax(-1, keepdim=True)
        sample_probs = shifted.exp()
        total = sample_probs.sum(-1, keepdim=True)
        sample_probs /= total
        log_probs = shifted.sub_(total.log())
        sample_entropy = -log_probs.mul_(sample_probs).sum(-1)
        probs = sample_probs.mean(0)
        entropy = _entropy(probs)
        return Prediction(
            outputs=outputs, probs=probs, entropy=entropy, epistemic=entropy - sample_entropy.mean(0)
        )


class Normal:
    """
    Real targets with Gaussian noise: ``obs ~ Normal(output, scale)``, one observation per
    input of the batch (every dimension of ``output`` after the batch's), in a plate scaled to
    ``dataset_size``.

    :param int dataset_size: as for :class:`Categorical`.
    :param float scale: the noise's standard deviation; ``None`` learns it, as the Pyro
        parameter ``"<name>.scale"`` (a point estimate).
    :param float init_scale: where a learned scale starts; ``None``: at the root mean square
        of the residuals of the first batch it observes (for a network started at trained
        weights, the trained model's noise). Until then, calls without targets (a
        :func:`~bayesify.runtime.predict` before :func:`~bayesify.runtime.fit`) read a
        noise of 1.
    :param int event_dim: the number of trailing dimensions of one observation. ``None``:
        every dimension after the batch's (``0`` for a network that returns ``(batch,)``,
        ``1`` for ``(batch, targets)``, ``3`` for images ``(batch, channels, height,
        width)``), the dimensions left of the batch being those of enclosing plates (the
        particles of a vectorised ELBO, the samples of ``Predictive``).
    """

    def __init__(
        self,
        dataset_size: Optional[int] = None,
        scale: Optional[float] = None,
        *,
        init_scale: Optional[float] = None,
        event_dim: Optional[int] = None,
        name: str = "obs",
    ) -> None:
        self.dataset_size = dataset_size
        self.fixed_scale = scale
        self.init_scale = init_scale
        self.event_dim = event_dim
        self.name = name

    def scale(self, output: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The noise scale, on the device and with the dtype of ``output``."""
        if self.fixed_scale is not None:
            return torch.as_tensor(self.fixed_scale, dtype=output.dtype, device=output.device)
        name = f"{self.name}.scale"
        if name in pyro.get_param_store():
            return pyro.param(name)
        initial = self.init_scale
        if initial is None:
            if target is None:
                # Not made yet: a predict before fit would fix its start at 1, however far
                # the residuals are from it (an FNO's were 0.01, and its fit ended at 0.9).
                return torch.ones((), dtype=output.dtype, device=output.device)
            initial = (target - output).detach().pow(2).mean().sqrt().clamp_min(1e-3)
            _warn_of_other_units(initial, target)
        initial = torch.as_tensor(initial, dtype=output.dtype, device=output.device)
        return pyro.param(name, initial, constraint=constraints.positive)

    def __call__(self, output: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        event_dim = self.event_dim
        if event_dim is None:
            event_dim = output.dim() - 1 - _enclosing_plates()
        if target is not None:
            target = _shaped_as(target, output.shape[output.dim() - event_dim - 1 :])
        noise = dist.Normal(output, self.scale(output, target)).to_event(event_dim)
        with _data_plate(self.dataset_size, output.shape[output.dim() - event_dim - 1], target is not None):
            return pyro.sample(self.name, noise, obs=target)

    def summarize(self, outputs: torch.Tensor) -> Prediction:
        noise = self.scale(outputs).detach()
        mean = outputs.mean(0)
        epistemic = outputs.std(0, unbiased=False)
        sd = (epistemic**2 + noise**2).sqrt()
        entropy = 0.5 * torch.log(2 * math.pi * math.e * sd**2)
        return Prediction(
            outputs=outputs, mean=mean, sd=sd, entropy=entropy, epistemic=epistemic, noise=noise
        )


class _ClassLabels(dist.Categorical):
    """
    :class:`~pyro.distributions.Categorical`, whose log-density of one label per batch
    element is read from its normalized logits directly, where torch's first broadcasts the
    labels against the logits and slices them back: the same numbers and gradient, and a
    quarter less time for the likelihood of a small network's batch, gradient included.
    Other values (enumerated classes, a batch of samples) and validated calls take torch's
    way.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args or value.shape != self.batch_shape:
            return super().log_prob(value)
        return self.logits.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)


def _shaped_as(target: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``target`` as one observation per output, of ``shape``: targets ``(batch,)`` against
    outputs ``(batch, 1)`` (or labels ``(batch, 1)`` against logits ``(batch, classes)``), as
    tabular data comes, would broadcast to ``(batch, batch)`` and be observed as many times
    over without a word; they differ only by dimensions of size one, and are reshaped. Any
    other difference is an error."""
    if target.shape == shape:
        return target
    if [size for size in target.shape if size != 1] == [size for size in shape if size != 1]:
        return target.reshape(shape)
    raise ValueError(
        f"the targets have the shape {tuple(target.shape)}, and the network's outputs for them "
        f"{tuple(shape)}: give one target per output"
    )


def _warn_of_other_units(residual: torch.Tensor, target: torch.Tensor) -> None:
    """Warns where a network's outputs miss the first batch's targets by ten times the targets'
    own size: a network's outputs of about 0 (one not yet trained) miss them by about their
    size, and a trained one by less; one that does computes in other units than its targets
    (chemprop's output, unscaled in eval mode, against the scaled targets its loaders give;
    the trial's fit went from an RMSE of 10 to 537)."""
    size = float(target.detach().float().pow(2).mean().sqrt())
    if size > 0 and float(residual) > 10 * size:
        warnings.warn(
            f"Normal: the network's outputs miss the first batch's targets by {float(residual):.4g} (root "
            f"mean square), ten times the targets' own size ({size:.4g}): its outputs and the targets "
            "are in other units (fit and predict run a network started at its checkpoint in eval mode, "
            "where an output transform such as chemprop's unscaling applies: give the targets in the units "
            "of its eval-mode outputs)",
            stacklevel=user_stacklevel(),
        )


def _enclosing_plates() -> int:
    """The number of vectorised plates around the model: dimensions left of the batch."""
    return sum(1 for frame in get_plates() if frame.vectorized and frame.dim is not None)


def _data_plate(dataset_size: Optional[int], batch_size: int, observed: bool) -> pyro.plate:
    """The plate of a batch drawn from ``dataset_size`` rows. Without targets (a guide set up,
    a prediction on more rows than were trained on) nothing is scaled, and any batch goes."""
    if dataset_size and batch_size > dataset_size:
        if observed:
            raise ValueError(
                f"a batch of {batch_size} observations from a data set of dataset_size={dataset_size}: "
                "dataset_size is the number of training observations along the output's first dimension"
            )
        dataset_size = batch_size
    return pyro.plate("data", dataset_size or batch_size, subsample_size=batch_size, dim=-1)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1)
