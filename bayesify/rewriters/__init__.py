"""The rewrites, one module a concern; each is a small libcst transformer.

- :mod:`.bases`: ``nn.Module`` subclasses become ``PyroModule`` subclasses.
- :mod:`.parameters`: selected parameters become ``PyroSample`` priors or ``PyroParam``\\ s.
- :mod:`.methods`: ``@pyro_method`` on methods that read a random attribute.
- :mod:`.imports`: the imports the other rewrites need, and nothing more.

:mod:`.context` holds what they share: which class and method a node is in.
"""
