"""The runtime that code rewritten by bayesify imports.

It adds to :class:`~pyro.nn.module.PyroModule` what a rewritten model needs and
plain Pyro lacks: priors that are picklable and follow ``.to()``, ``.cuda()``
and ``.double()`` (:class:`Prior`), priors on parameters of held layers and
containers set once the model is built (:func:`set_prior`, :func:`set_constraint`,
:func:`pyro_module`), loading checkpoints of the deterministic model
(:func:`load_deterministic`), linear and convolution layers that take a batch of sampled
weights (:mod:`~bayesify.runtime.batched`), and the few functions from a checkpoint to
calibrated predictions: likelihoods (:class:`Categorical`, :class:`Normal`), a guide that
starts at the checkpoint (:class:`CheckpointNormal`), :func:`fit`, :func:`predict`, and the
effect handlers :func:`local_reparameterization` and :func:`flipout`. Importing it imports
torch and pyro.
"""

from bayesify.runtime import batched  # noqa: F401  (PyroModule[nn.Linear] and ConvNd take batched weights)
from bayesify.runtime.checkpoint import load_deterministic
from bayesify.runtime.guides import CheckpointLaplace, CheckpointNormal
from bayesify.runtime.handlers import flipout, local_reparameterization
from bayesify.runtime.held import pyro_module, set_constraint, set_prior
from bayesify.runtime.inference import BayesianModel, fit, supervised
from bayesify.runtime.likelihoods import Categorical, Normal, Prediction
from bayesify.runtime.metaclass import pyro_metaclass, pyro_metaclass_of, pyro_module_class
from bayesify.runtime.prediction import predict
from bayesify.runtime.prior import PRIOR_ANCHOR, Prior

__all__ = [
    "PRIOR_ANCHOR",
    "BayesianModel",
    "Categorical",
    "CheckpointLaplace",
    "CheckpointNormal",
    "Normal",
    "Prediction",
    "Prior",
    "fit",
    "flipout",
    "load_deterministic",
    "local_reparameterization",
    "predict",
    "pyro_metaclass",
    "pyro_metaclass_of",
    "pyro_module",
    "pyro_module_class",
    "set_constraint",
    "set_prior",
    "supervised",
]
