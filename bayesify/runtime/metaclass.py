"""A metaclass for a module class that names its own, so PyroModule can join it."""

import functools

from pyro.nn import PyroModule


@functools.lru_cache(maxsize=None)
def pyro_metaclass(metaclass: type) -> type:
    """
    The metaclass of a class that derives from :class:`~pyro.nn.module.PyroModule` and
    names ``metaclass``: one that derives from both, since Python refuses a class whose
    metaclass is not a subclass of all its bases' metaclasses::

        class Encoder(PyroModule, metaclass=pyro_metaclass(abc.ABCMeta)):
            ...

    The same combined class is returned for the same ``metaclass``.
    """
    pyro_meta = type(PyroModule)
    if issubclass(metaclass, pyro_meta):
        return metaclass
    return type(f"Pyro{metaclass.__name__}", (metaclass, pyro_meta), {})
