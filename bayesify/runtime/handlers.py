"""Local reparameterization and flipout, as Pyro effect handlers.

Both lower the variance of the gradient of an ELBO estimated with one weight sample per
step, by giving each input of a batch its own (local reparameterization) or a decorrelated
(flipout) perturbation of the weights. They apply to the layers of
:mod:`bayesify.runtime.batched` (rewritten ``nn.Linear`` and ``nn.ConvNd``), whose
operations are the Pyro effects ``"linear"`` and ``"conv"``, when the weight was sampled
from a normal distribution with a known mean and spread: a site of
:class:`~bayesify.runtime.CheckpointNormal` or :class:`~pyro.infer.autoguide.AutoNormal`.
Other layers and weights are computed as usual. Use them around training::

    with local_reparameterization():
        fit(model, guide, loader, epochs=10)

or ``svi.step`` in a loop of one's own. Predictions need neither: :func:`predict` samples
whole weights.

- :func:`local_reparameterization` (Kingma, Salimans & Welling, 2015): the pre-activation of
  a layer ``x @ W.T`` with ``W ~ Normal(loc, scale)`` is normal with mean ``x @ loc.T`` and
  variance ``x**2 @ (scale**2).T``; it is sampled for every input, independently.
- :func:`flipout` (Wen et al., 2018): ``x @ loc.T + ((x * s) @ (W - loc).T) * r``, with random
  signs ``s``, ``r`` per input: the weight sample is shared, its perturbation decorrelated.
"""

from typing import Callable, Optional

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from bayesify.runtime.batched import _batched_conv, _batched_linear

#: Attribute of a sampled weight tensor: the (loc, scale) of the normal it was drawn from.
_POSTERIOR = "_bayesify_normal"


class _WeightNoiseMessenger(Messenger):
    """Notes the normal each weight was drawn from; replaces the operations of layers whose
    weight it knows."""

    def _pyro_post_sample(self, msg) -> None:
        value = msg["value"]
        if msg["is_observed"] or not isinstance(value, torch.Tensor) or hasattr(value, _POSTERIOR):
            # A model site replaying a guide's sample keeps the guide's (posterior) normal.
            return
        fn = msg["fn"]
        while isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        if isinstance(fn, torch.distributions.Normal):
            setattr(value, _POSTERIOR, (fn.loc, fn.scale))
        elif isinstance(fn, dist.Delta) and hasattr(fn.v, _POSTERIOR):
            # AutoNormal samples a normal first, then puts its value in a Delta site.
            setattr(value, _POSTERIOR, getattr(fn.v, _POSTERIOR))

    def _pyro_linear(self, msg) -> None:
        input, weight, bias = msg["args"]
        posterior = getattr(weight, _POSTERIOR, None)
        if posterior is not None:
            msg["value"] = self._noisy(_batched_linear, input, weight, *posterior, bias, ())

    def _pyro_conv(self, msg) -> None:
        input, weight, bias, dims, *options = msg["args"]
        posterior = getattr(weight, _POSTERIOR, None)
        if posterior is not None:
            operation = lambda *args: _batched_conv(*args[:3], dims, *options)  # noqa: E731
            msg["value"] = self._noisy(operation, input, weight, *posterior, bias, (1,) * dims)


class LocalReparameterizationMessenger(_WeightNoiseMessenger):
    """See :func:`local_reparameterization`."""

    def _noisy(self, operation, input, weight, loc, scale, bias, spatial):
        mean = operation(input, loc, bias)
        variance = operation(input**2, scale**2, None)
        return mean + variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt() * torch.randn_like(mean)


class FlipoutMessenger(_WeightNoiseMessenger):
    """See :func:`flipout`."""

    def _noisy(self, operation, input, weight, loc, scale, bias, spatial):
        mean = operation(input, loc, bias)
        in_signs = _signs(input, len(spatial))
        perturbation = operation(input * in_signs, weight - loc, None)
        return mean + perturbation * _signs(perturbation, len(spatial))


def _signs(like: torch.Tensor, spatial: int) -> torch.Tensor:
    """Random ±1, one per input and channel (shared over a convolution's positions)."""
    shape = like.shape[: like.dim() - spatial] + (1,) * spatial
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(0.5).mul_(2).sub_(1)


def local_reparameterization(fn: Optional[Callable] = None):
    """
    An effect handler that samples the output of each rewritten ``Linear`` and ``ConvNd``
    layer whose weight has a normal posterior, instead of the weight: independently for
    every input of the batch. Use as a context manager, ``with local_reparameterization():
    svi.step(x, y)``, or wrap a callable, ``local_reparameterization(svi.step)``.
    """
    messenger = LocalReparameterizationMessenger()
    return messenger(fn) if fn is not None else messenger


def flipout(fn: Optional[Callable] = None):
    """
    An effect handler that gives each input of a batch a decorrelated perturbation of the
    sampled weight of each rewritten ``Linear`` and ``ConvNd`` layer whose weight has a
    normal posterior. Used as :func:`local_reparameterization`.
    """
    messenger = FlipoutMessenger()
    return messenger(fn) if fn is not None else messenger
