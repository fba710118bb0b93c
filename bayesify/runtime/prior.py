"""Picklable priors for :class:`~pyro.nn.module.PyroSample` that follow their module."""

import difflib
import itertools
import math
import os
import sys
import warnings
from typing import Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import broadcast_shape
from pyro.poutine.plate_messenger import PlateMessenger
from pyro.poutine.runtime import _PYRO_STACK, am_i_wrapped

#: Name of the empty buffer that :class:`Prior` registers on its module.
#:
#: A prior's numeric hyperparameters are plain numbers, so nothing in the module
#: tells them where to live: ``dist.Normal(0., 1.)`` is float32 on the CPU even
#: after ``model.cuda()`` or ``model.double()``. A buffer moves with every
#: ``.to()``, ``.cuda()``, ``.double()`` and ``.half()``, so its device and dtype
#: are the module's. It is non-persistent: it never appears in a ``state_dict``,
#: and checkpoints of the deterministic model still load strictly.
PRIOR_ANCHOR = "_bayesify_prior_anchor"

ShapeLike = Union[int, Sequence[int], torch.Size, None]


class Prior:
    """
    A prior for a :class:`~pyro.nn.module.PyroSample` attribute of a
    :class:`~pyro.nn.module.PyroModule`, written as data instead of a lambda so
    that the module survives ``pickle``, ``torch.save`` and ``copy.deepcopy``.

    Pyro calls the prior with the module that holds the attribute each time the
    attribute is sampled. The result is the distribution a Pyro user writes by
    hand, with every dimension of ``shape`` an event dimension::

        class BayesianLinear(PyroModule):
            def __init__(self, in_size, out_size):
                super().__init__()
                # same as PyroSample(dist.Normal(0, 1).expand([in_size, out_size]).to_event(2))
                self.weight = PyroSample(Prior(self, "Normal", 0, 1, shape=(in_size, out_size)))

    A string argument ``"radford()"``, ``"xavier()"`` or ``"kaiming()"`` is a scale computed
    from ``shape`` by the fans that :mod:`torch.nn.init` counts (a weight is ``(out, in,
    *kernel)``; a vector counts its length as both): ``1 / sqrt(fan_in)``, ``sqrt(2 / (fan_in
    + fan_out))`` and ``sqrt(2 / fan_in)``, as TyXe's ``LayerwiseNormalPrior``. The string
    ``"deterministic()"`` is the deterministic model's value of the parameter, which
    :func:`~bayesify.runtime.load_deterministic` hands to the prior from a checkpoint (a prior
    centred on the trained weights, as bayesian-torch's MOPED). Any other string argument
    names a sibling attribute of the module, read when the prior is sampled, so sibling :class:`~pyro.nn.module.PyroSample` attributes
    are sampled first and parameters are read through Pyro (a hierarchical
    prior)::

        class Hier(PyroModule):
            def __init__(self):
                super().__init__()
                self.loc = PyroSample(Prior(self, "Normal", 0, 1, shape=(3,)))
                self.scale = nn.Parameter(torch.ones(3))
                # same as PyroSample(lambda self: dist.Normal(self.loc, self.scale).to_event(1))
                self.x = PyroSample(Prior(self, "Normal", "loc", "scale", shape=(3,)))

    Numeric hyperparameters are created on the device and with the dtype of the
    module, so samples follow ``module.to(...)``, ``.cuda()`` and ``.double()``.
    The prior keeps no reference to ``module``: a copy of the module samples
    from its own attributes.

    :param torch.nn.Module module: the module whose attribute the prior is for.
        A non-persistent buffer named :data:`PRIOR_ANCHOR` is registered on it
        (once) to track its device and dtype.
    :param str family: name of a :mod:`pyro.distributions` class, e.g. ``"Normal"``.
    :param args: positional arguments of ``family``: numbers, or names of
        sibling attributes of ``module``.
    :param shape: the shape of the sampled value: a tuple of ints, an int
        ``n`` meaning ``(n,)``, or ``None`` (the distribution's own shape).
    :param kwargs: keyword arguments of ``family``, like ``args``; booleans
        (e.g. ``validate_args``) are passed unchanged.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        family: str,
        *args: Union[float, str],
        shape: ShapeLike = None,
        **kwargs: Union[float, str, bool],
    ) -> None:
        self.family = _distribution_class(family)
        for value in (*args, *kwargs.values()):
            if not isinstance(value, (int, float, str)):
                raise TypeError(
                    f"Prior({family!r}, ...) arguments must be numbers or names of "
                    f"sibling attributes, got {value!r}"
                )
        self.args = args
        self.kwargs = kwargs
        self.shape = _normalize_shape(shape)
        # A prior of numbers alone is the same distribution every time, for one device and
        # dtype: it is built once for each, as a hand-written ``PyroSample(dist...)`` is.
        self._fixed = not any(
            isinstance(value, str) and value not in FROM_PARAMETER for value in (*args, *kwargs.values())
        )
        #: The deterministic model's value, for a ``"deterministic()"`` argument.
        self.deterministic: Optional[torch.Tensor] = None
        self._built: dict[tuple[torch.device, torch.dtype], dist.Distribution] = {}
        _register_anchor(module)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_built"] = {}  # built again where the copy lives
        return state

    def __call__(self, module: torch.nn.Module) -> dist.Distribution:
        anchor = module._buffers.get(PRIOR_ANCHOR)
        if anchor is None:
            raise RuntimeError(
                f"{self!r} is sampled for a {type(module).__name__} it was not built "
                f"for: pass the module that holds the attribute to Prior(...)"
            )
        _warn_where_drawn_wrongly(self, module)
        if not self._fixed:
            return self._build(module, anchor)
        key = (anchor.device, anchor.dtype)
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = self._build(module, anchor)
        return built

    def _build(self, module: torch.nn.Module, anchor: torch.Tensor) -> dist.Distribution:
        args = [self._resolve(module, anchor, value) for value in self.args]
        kwargs = {key: self._resolve(module, anchor, value) for key, value in self.kwargs.items()}
        prior = self.family(*args, **kwargs)
        # pyro's broadcast_shape, not torch's: torch's imports torch.fx's symbolic shapes, about
        # a second, the first time a prior is sampled in a process.
        batch_shape = broadcast_shape(prior.batch_shape, self.shape)
        if batch_shape != prior.batch_shape:
            prior = prior.expand(batch_shape)
        return prior.to_event(len(self.shape)) if self.shape else prior

    def load_deterministic(self, value: torch.Tensor) -> None:
        """Sets the deterministic model's value that a ``"deterministic()"`` argument reads."""
        self.deterministic = value.detach().clone()
        self._built = {}

    def _resolve(self, module, anchor, value):
        if isinstance(value, bool):
            return value
        if value == "deterministic()":
            if self.deterministic is None:
                raise RuntimeError(
                    f"{self!r} is centred on the deterministic model's value: load a checkpoint "
                    "with bayesify.runtime.load_deterministic(model, state_dict) before sampling"
                )
            return self.deterministic.to(anchor.device, anchor.dtype)
        if value in FROM_PARAMETER:
            scale = FROM_PARAMETER[value](*_fans(self.shape))
            return torch.as_tensor(scale, dtype=anchor.dtype, device=anchor.device)
        if isinstance(value, str):
            try:
                return getattr(module, value)
            except AttributeError:
                # Re-raised so the message names the prior: the bare one would name
                # only the sibling, from inside the sampled attribute's lookup.
                raise AttributeError(
                    f"{self!r} reads {type(module).__name__}.{value}, which does not exist"
                ) from None
        return torch.as_tensor(value, dtype=anchor.dtype, device=anchor.device)

    def __repr__(self) -> str:
        arguments = [repr(value) for value in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        arguments.append(f"shape={self.shape!r}")
        return f"Prior({self.family.__name__!r}, {', '.join(arguments)})"


#: The scales a prior argument can compute from the parameter's shape, by (fan_in, fan_out).
FROM_PARAMETER = {
    "radford()": lambda fan_in, fan_out: 1 / math.sqrt(fan_in),
    "xavier()": lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out)),
    "kaiming()": lambda fan_in, fan_out: math.sqrt(2 / fan_in),
}


def _fans(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` as :mod:`torch.nn.init` counts them; a vector's length is both."""
    if len(shape) < 2:
        size = shape[0] if shape else 1
        return size, size
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _distribution_class(family: str) -> type:
    candidate = getattr(dist, family, None)
    if isinstance(candidate, type) and issubclass(candidate, dist.Distribution):
        return candidate
    known = [
        name
        for name in dir(dist)
        if isinstance(getattr(dist, name), type) and issubclass(getattr(dist, name), dist.Distribution)
    ]
    suggestion = difflib.get_close_matches(family, known, n=1)
    hint = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
    raise ValueError(f"{family!r} is not a pyro.distributions distribution{hint}")


def _normalize_shape(shape: ShapeLike) -> Tuple[int, ...]:
    if shape is None:
        return ()
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(size) for size in shape)


def _register_anchor(module: torch.nn.Module) -> None:
    if PRIOR_ANCHOR in module._buffers:
        return
    # A prior attached after the module was moved (``model.cuda()`` then
    # ``model.w = PyroSample(Prior(model, ...))``) must start where the module is.
    placed = next(
        (
            tensor
            for tensor in itertools.chain(module.parameters(), module.buffers())
            if tensor.is_floating_point()
        ),
        None,
    )
    if placed is None:
        anchor = torch.empty(0)
    else:
        anchor = torch.empty(0, dtype=placed.dtype, device=placed.device)
    module.register_buffer(PRIOR_ANCHOR, anchor, persistent=False)
    module.register_load_state_dict_pre_hook(_warn_of_values_for_random_sites)


def _warn_where_drawn_wrongly(prior: Prior, module: torch.nn.Module) -> None:
    """Warns of the two ways a random weight is drawn that a model never means: from its
    prior, by a network called outside Pyro's inference after its checkpoint was loaded (a
    training framework's predict loop: chemprop's through Lightning predicted 11 times worse
    than its checkpoint); and inside a plate of data, one draw for each element (a network
    called inside the likelihood's plate, or one whose forward returns a function that runs it
    later, as zuko's flows do)."""
    if not am_i_wrapped():
        # Inside a call of the network, not a read of its attributes (print(net) reads a bias).
        if prior.deterministic is not None and module._pyro_context.active:
            warnings.warn(
                f"a random parameter of {type(module).__name__} is drawn from its prior: the network runs "
                "outside Pyro's inference after load_deterministic loaded its checkpoint, so it predicts "
                "with prior draws, neither the checkpoint's weights nor a guide's. Predict with "
                "bayesify.runtime.predict(model, guide, x), or run it under a guide's draw: "
                "poutine.replay(net, trace=poutine.trace(guide).get_trace(x))(x)",
                stacklevel=user_stacklevel(),
            )
        return
    # A plate of data is the rightmost: a plate of samples around a model lies left of its
    # data's (Pyro's own, named here, lie at -1 around a model without plates). The stack is
    # read directly: Pyro's get_plates() sends a message through every handler, every draw.
    for plate in _PYRO_STACK:
        if isinstance(plate, PlateMessenger) and plate.dim == -1 and plate.name not in SAMPLE_PLATES:
            warnings.warn(
                f"a random parameter of {type(module).__name__} is drawn inside pyro.plate({plate.name!r}): one "
                "draw for each of its elements, not one for the model. Call the network before the plate (a "
                "module whose forward returns a function or a distribution runs its layers where that is "
                "used: call it, and read what it returns, before the plate; see docs/pitfalls.md)",
                stacklevel=user_stacklevel(),
            )
            return


#: Pyro's plates of weight samples: of ``Predictive(parallel=True)`` and of
#: ``vectorize_particles=True``.
SAMPLE_PLATES = frozenset({"_num_predictive_samples", "num_particles_vectorized"})


def _warn_of_values_for_random_sites(module, state_dict, prefix, *rest) -> None:
    """A library's loader that passes ``strict=False`` (neuralforecast's, many trainers')
    would leave a checkpoint's values of the random weights out, and the model would predict
    from prior draws, silently. (torch hands every module ``strict=True``, whatever the call
    said: a strict load is told too, before torch names the keys as unexpected.)"""
    if any(prefix + name in state_dict for name in module.__dict__.get("_pyro_samples", {})):
        warnings.warn(
            "load_state_dict leaves out the checkpoint's values of random weights, which are drawn "
            "from their priors instead: load a deterministic checkpoint with "
            "bayesify.runtime.load_deterministic, which returns those values to start a guide",
            stacklevel=user_stacklevel(),
        )


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller of the function calling this one whose code is
    none of :data:`LIBRARY_FOLDERS` (``load_state_dict`` calls a module's hooks through
    several of its own frames, a prior is drawn through Pyro's): the line a warning names,
    the user's, or that of a library their code called (a trainer's loop)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(LIBRARY_FOLDERS):
        frame, level = frame.f_back, level + 1
    return level


#: The folders of torch, Pyro and this runtime: code that is not the user's.
LIBRARY_FOLDERS = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (torch, pyro, sys.modules[__name__])
)
