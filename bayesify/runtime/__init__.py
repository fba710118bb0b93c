"""The runtime that code rewritten by bayesify imports.

It adds to :class:`~pyro.nn.module.PyroModule` what a rewritten model needs and
plain Pyro lacks: priors that are picklable and follow ``.to()``, ``.cuda()``
and ``.double()`` (:class:`Prior`), priors on parameters of held layers and
containers set once the model is built (:func:`set_prior`, :func:`set_constraint`,
:func:`pyro_module`), and loading checkpoints of the deterministic model
(:func:`load_deterministic`). Importing it imports torch and pyro.
"""

from bayesify.runtime.checkpoint import load_deterministic
from bayesify.runtime.held import pyro_module, set_constraint, set_prior
from bayesify.runtime.metaclass import pyro_metaclass
from bayesify.runtime.prior import PRIOR_ANCHOR, Prior

__all__ = [
    "PRIOR_ANCHOR",
    "Prior",
    "load_deterministic",
    "pyro_metaclass",
    "pyro_module",
    "set_constraint",
    "set_prior",
]
