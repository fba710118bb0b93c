"""Module classes that PyroModule must share with other bases: their metaclasses, and
``PyroModule[Base]`` where Pyro's cannot make it or pickles its subclasses as itself."""

import contextlib
import copyreg
import functools
import types
import typing

import torch
from pyro.nn import PyroModule
from pyro.nn.module import _PyroModuleMeta

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


def pyro_module_class(cls: type) -> type:
    """
    ``PyroModule[cls]``, for a base class that may not allow it, which shows only at run time:
    the rewrite gives it to subclasses of a class that a glob of the spec's ``modules:
    external:`` matches (bayesify does not read it) or that brings a metaclass of its own::

        class Metric(pyro_module_class(torchmetrics.Metric)):
            ...

    Where ``PyroModule[cls]`` is a metaclass conflict (torchmetrics' ``Metric`` is ``class
    Metric(Module, ABC)``), the class is made as Pyro makes it, under a metaclass combining
    both, and kept where Pyro keeps its own, so that ``PyroModule[cls]`` then returns it too;
    its instances pickle by the class they were made from. Where the class's
    ``__init_subclass__`` needs keywords that its own class statement gave (tltorch's
    ``class DenseTensor(FactorizedTensor, name="Dense")``), the Pyro class is made without
    it: it is no new kind of the class, to register or check. A class that is not an
    ``nn.Module`` (a glob such as ``lightning.*`` also matches a library's callbacks) is
    returned as it is.
    """
    if not issubclass(cls, torch.nn.Module):
        return cls
    try:
        return _made(cls)
    except TypeError:
        if not any("__init_subclass__" in vars(base) for base in cls.__mro__[:-1]):  # object's aside
            raise
    with _without_init_subclass(cls):
        return _made(cls)


def _call_in_context(made: type) -> type:
    """``made``, a class that ``PyroModule[Base]`` made; where the base's own ``__call__``
    comes before PyroModule's in it (Pyro makes ``PyroModule[ExactGP]`` as ``(ExactGP,
    PyroModule[GP])``, and gpytorch's modules call ``forward`` themselves), given a
    ``__call__`` that runs the base's inside the module's Pyro context: without one, every
    submodule call drew the random weights anew (two draws in one prediction of an exact
    GP, and a trace failed on two sites of one name)."""
    if made.__call__ is PyroModule.__call__ or "__call__" in vars(made):
        return made

    @functools.wraps(made.__call__)
    def __call__(self, *args, **kwargs):
        with self._pyro_context:
            return super(made, self).__call__(*args, **kwargs)

    made.__call__ = __call__
    return made


_pyro_getitem = _PYRO_META.__getitem__


def _getitem(cls, module: type) -> type:
    made = _pyro_getitem(cls, module)
    return made if made is module or made is PyroModule else _call_in_context(made)


# Every class Pyro makes for PyroModule[Base] (the rewrite's, pyro_module's, and pickle's,
# which makes it again in a new process) runs a base's own __call__ inside its Pyro context.
_PYRO_META.__getitem__ = _getitem


@contextlib.contextmanager
def _without_init_subclass(cls: type) -> typing.Iterator[None]:
    """``cls`` with an ``__init_subclass__`` that does nothing, for a class made from it now."""
    own = vars(cls).get("__init_subclass__")
    cls.__init_subclass__ = classmethod(lambda *args, **kwargs: None)
    try:
        yield
    finally:
        if own is None:
            del cls.__init_subclass__
        else:
            cls.__init_subclass__ = own


def _made(cls: type) -> type:
    try:
        return PyroModule[cls]
    except TypeError:
        bases = tuple(pyro_module_class(base) for base in cls.__bases__ if issubclass(base, torch.nn.Module))
        metaclass = pyro_metaclass_of(cls, *bases)
        if metaclass is _PYRO_META:  # no conflict of metaclasses: another error
            raise
        made = metaclass(
            "Pyro" + cls.__name__,
            (cls, *bases),
            {
                "_made_from": cls,
                "__reduce__": _reduce,
                "__module__": cls.__module__,
                "__qualname__": "Pyro" + cls.__qualname__,
            },
        )
        _PyroModuleMeta._pyro_mixin_cache[cls] = made
        return _call_in_context(made)


def _reduce(self):
    """Pickled as Pyro pickles ``PyroModule[cls]``: by the module class it was made from."""
    state = getattr(self, "__getstate__", self.__dict__.copy)()
    return _Unpickled, (self._made_from,), state


class _Unpickled:
    """An instance of ``pyro_module_class(cls)`` for pickle to fill in, as Pyro's own ``_New``
    makes one of ``PyroModule[cls]`` (which, for these classes, is the metaclass conflict)."""

    def __init__(self, cls: type) -> None:
        self.__class__ = pyro_module_class(cls)


def _reduce_ex(self, protocol):
    """Pickle (and ``copy.deepcopy``) a subclass of a ``PyroModule[Layer]`` by its own class.

    Pyro pickles an instance of ``PyroModule[Layer]`` by the layer class, with a ``__reduce__``
    that the class's subclasses inherit: a rewritten ``class MaskedLinear(PyroModule[nn.Linear])``
    came back from ``pickle`` or ``copy.deepcopy`` as a ``PyroLinear``, without its own
    ``forward``, and said nothing. Pickle looks up ``__reduce_ex__`` before ``__reduce__``: this
    one, on :class:`~pyro.nn.PyroModule`, leaves every class's own reduction as it is except
    the one a subclass inherits from a class ``PyroModule[...]`` made.
    """
    mro = type(self).__mro__
    made = set(_PyroModuleMeta._pyro_mixin_cache.values())
    nearest_made = next((place for place, cls in enumerate(mro) if cls in made), 0)
    reducer = next(place for place, cls in enumerate(mro) if "__reduce__" in vars(cls))
    # No made class above it, the made class itself, or a reduction of its own: as it was.
    if nearest_made == 0 or reducer < nearest_made:
        return object.__reduce_ex__(self, protocol)
    state = getattr(self, "__getstate__", self.__dict__.copy)()
    return copyreg.__newobj__, (type(self),), state


PyroModule.__reduce_ex__ = _reduce_ex
