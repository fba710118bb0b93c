"""The runtime that code rewritten by bayesify imports.

It adds to :class:`~pyro.nn.module.PyroModule` what a rewritten model needs and
plain Pyro lacks: priors that are picklable and follow ``.to()``, ``.cuda()``
and ``.double()`` (:class:`Prior`), and loading checkpoints of the deterministic
model (:func:`load_deterministic`). Importing it imports torch and pyro.
"""

from bayesify.runtime.checkpoint import load_deterministic
from bayesify.runtime.prior import PRIOR_ANCHOR, Prior

__all__ = ["PRIOR_ANCHOR", "Prior", "load_deterministic"]
