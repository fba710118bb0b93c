"""Metaclasses for module classes that PyroModule must share with other bases."""

import functools
import types
import typing

from pyro.nn import PyroModule

_PYRO_META = type(PyroModule)


def pyro_metaclass(metaclass: type) -> type:
    """
    The metaclass of a class that derives from :class:`~pyro.nn.module.PyroModule` and
    names ``metaclass``: one that derives from both, since Python refuses a class whose
    metaclass is not a subclass of all its bases' metaclasses::

        class Encoder(PyroModule, metaclass=pyro_metaclass(abc.ABCMeta)):
            ...

    The same combined class is returned for the same ``metaclass``.
    """
    return _combined(_most_derived((metaclass, _PYRO_META)))


class _GenericPyroModuleMeta(_PYRO_META):
    """PyroModule's metaclass for a module class that is also ``typing.Generic``: ``Base[Cfg]``
    parametrises it as typing does, where PyroModule's metaclass would read ``Base[nn.Linear]``."""

    def __getitem__(cls, parameters):
        return cls.__class_getitem__(parameters)


def pyro_metaclass_of(*bases: object) -> type:
    """
    The metaclass of a PyroModule class with bases that may bring their own metaclass (an
    ``abc.ABC``, a mixin declared with ``metaclass=ABCMeta``, a class of another package)::

        class Encoder(Net, Interface, metaclass=pyro_metaclass_of(Net, Interface)):
            ...

    It is the most derived metaclass of ``bases`` and PyroModule's, made by combining them
    when none derives from all the others; PyroModule's own when nothing conflicts. A class
    that is also ``typing.Generic`` gets one that parametrises it as typing does.
    """
    classes = types.resolve_bases(bases)
    metaclasses = [type(base) for base in classes]
    if any(isinstance(base, type) and issubclass(base, typing.Generic) for base in classes):
        metaclasses.append(_GenericPyroModuleMeta)
    return _combined(_most_derived((*metaclasses, _PYRO_META)))


def _most_derived(metaclasses: typing.Iterable[type]) -> frozenset[type]:
    """The metaclasses of ``metaclasses`` that no other one derives from."""
    needed: list[type] = []
    for metaclass in metaclasses:
        if not any(issubclass(kept, metaclass) for kept in needed):
            needed = [kept for kept in needed if not issubclass(metaclass, kept)] + [metaclass]
    return frozenset(needed)


@functools.lru_cache(maxsize=None)
def _combined(metaclasses: frozenset[type]) -> type:
    """One metaclass deriving from each of ``metaclasses``, none of which derives from another:
    the same one for the same set, so classes that combine the same bases share it."""
    if len(metaclasses) == 1:
        return next(iter(metaclasses))
    ordered = sorted(metaclasses, key=lambda metaclass: (metaclass.__module__, metaclass.__qualname__))
    own = "".join(metaclass.__name__.lstrip("_") for metaclass in ordered if metaclass is not _PYRO_META)
    return type(f"Pyro{own}", tuple(ordered), {})
