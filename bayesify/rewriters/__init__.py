"""The rewrite rules, one module a rule, each registering itself with :mod:`.registry`.

Statement rules (the first walk, in this order):

- :mod:`.bases`: ``nn.Module`` subclasses become ``PyroModule`` subclasses.
- :mod:`.parameters`: selected parameters become ``PyroSample`` priors or ``PyroParam``\\ s.
- :mod:`.held`: what a converted class holds becomes Pyro too (``pyro_module(self)``), and
  priors below held modules are set once the model is built (``set_prior``).

Decorator rules (the second walk, once every random attribute is known):

- :mod:`.methods`: ``@pyro_method`` on methods that read a random attribute or run the module.

And the machinery they share:

- :mod:`.imports`: the imports the rules' output needs, and nothing more (run last, on the
  whole module).
- :mod:`.registry`: :func:`~.registry.register`, the shared
  :class:`~.registry.RewriteContext`, and :class:`~.registry.Example`.
- :mod:`.compose`: one walk for all the rules of a pass.
- :mod:`.context`: which class and method a node is in.

To add a rule: write ``rewriters/<rule>.py`` with a :class:`~.registry.Rule` subclass
decorated with ``@register``; set its ``pass_``, the node types it ``enters`` (a hook for an
undeclared type is refused), the ``generated_names`` its output uses (name -> module) and its
``examples`` (valid, invalid and no-op; tests/test_rules.py runs them); read and write the
shared ``self.context``; import the module below. A fact the rule needs about other files
goes in :class:`bayesify.engine.FileJob` (and the cache's job fingerprint).
"""

from . import bases, parameters, held, methods  # noqa: F401, I001  (importing registers them, in this order)
