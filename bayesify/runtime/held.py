"""Priors and constraints on parameters of modules a model holds, applied once it is built.

The shape of ``self.fc.weight`` or of every weight in ``self.layers`` is known only when the
model is constructed, so the rewriter ends ``__init__`` with calls that select parameters by
their spec selector and replace them there::

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)
            self.layers = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
            pyro_module(self)
            set_prior(self, "Model.fc.weight", "Normal", 0, 1)
            set_prior(self, "Model.layers.*.weight", "Normal", 0, 1)
            set_constraint(self, "Model.layers.*.bias", constraints.positive)

Each selector is the spec entry itself, so a selector that finds nothing at run time fails
construction with a message that names the entry.
"""

from fnmatch import fnmatchcase
from typing import Iterator, Tuple, Union

import torch
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.nn.module import to_pyro_module_
from torch.distributions.constraints import Constraint

from bayesify.runtime.prior import Prior

_UNCONSTRAINED = "_unconstrained"


def pyro_module(module: torch.nn.Module) -> torch.nn.Module:
    """
    Makes every module inside ``module``, and ``module`` itself, a
    :class:`~pyro.nn.module.PyroModule`, in place, and returns it.

    Rewritten classes end ``__init__`` with ``pyro_module(self)``, so that what
    they hold is Pyro whatever built it: a layer, a container filled by
    ``append``, a conditional expression, a module passed in, another library's.
    Its parameters are then Pyro parameters named by their module path
    (``layers.0.weight``), and none of its modules is a second Pyro root. Empty
    slots (``nn.ModuleList([layer, None])``) stay empty. A value that is not an
    :class:`torch.nn.Module` is returned as it is.
    """
    if not isinstance(module, torch.nn.Module):
        return module
    for child in module.children():
        pyro_module(child)
    if not isinstance(module, PyroModule):
        # Children first: the parent then re-registers them as the PyroModules they are.
        to_pyro_module_(module, recurse=False)
    return module


def set_prior(
    module: torch.nn.Module,
    selector: str,
    family: str,
    *args: Union[float, str],
    **kwargs: Union[float, str, bool],
) -> None:
    """
    Replaces each parameter of ``module`` that ``selector`` selects by a
    :class:`~pyro.nn.module.PyroSample` with ``Prior(owner, family, *args,
    shape=parameter.shape, **kwargs)``.

    :param str selector: a spec selector, ``Class.attr[.attr…]``; its first
        segment names ``module``'s class and the rest is matched, segment by
        segment with fnmatch, against parameter paths (``fc.weight``,
        ``layers.0.bias``). Parameters an earlier call already made random or
        constrained are skipped: the first spec entry wins.
    :raises LookupError: if the selector matches no parameter of an attribute the
        module has. An attribute the module lacks (a layer built only under some
        ``if``) is no error: its parameters simply do not exist this time.
    """
    for owner, name, parameter in _plain_parameters(module, selector):
        setattr(owner, name, PyroSample(Prior(owner, family, *args, shape=parameter.shape, **kwargs)))


def set_constraint(module: torch.nn.Module, selector: str, constraint: Constraint) -> None:
    """
    Replaces each parameter that ``selector`` selects by a
    :class:`~pyro.nn.module.PyroParam` with ``constraint``, starting from its
    current value (which must lie in the constraint's support). See
    :func:`set_prior` for ``selector``.
    """
    for owner, name, parameter in _plain_parameters(module, selector):
        value = parameter.detach().clone()
        if value.device.type != "meta" and not bool(constraint.check(value).all()):
            # Pyro would start from the inverse transform of a value outside the support: NaN.
            raise ValueError(
                f"the spec entry {selector!r} constrains {type(owner).__name__}.{name} to "
                f"{constraint}, but its initial value is not inside it; initialise it inside "
                "the support, or choose another constraint"
            )
        setattr(owner, name, PyroParam(value, constraint=constraint))


def _plain_parameters(
    module: torch.nn.Module, selector: str
) -> Iterator[Tuple[PyroModule, str, torch.nn.Parameter]]:
    pattern = selector.rpartition(":")[2].split(".")[1:]
    matched = [
        (owner, name)
        for path, owner, name in _parameter_paths(module)
        if len(path) == len(pattern) and all(map(fnmatchcase, path, pattern))
    ]
    if not matched:
        if not _has_attribute(module, pattern[0]):
            return  # built conditionally (``if expand: self.expand = ...``), and not this time
        known = ", ".join(".".join(path) for path, _, _ in _parameter_paths(module)) or "none"
        raise LookupError(
            f"the spec entry {selector!r} selects no parameter of this "
            f"{type(module).__name__}; its parameters are: {known}"
        )
    if any(not isinstance(owner, PyroModule) for owner, _ in matched):
        pyro_module(module)
    for owner, name in matched:
        parameter = owner._parameters.get(name)
        if parameter is not None:  # not made random or constrained by an earlier entry
            yield owner, name, parameter


def _has_attribute(module: torch.nn.Module, glob: str) -> bool:
    """Whether ``module`` has an attribute (a module, a parameter, a random or constrained
    one) whose name ``glob`` matches."""
    names = [
        *(name for name, child in module._modules.items() if child is not None),
        *(name for name, value in module._parameters.items() if value is not None),
        *getattr(module, "_pyro_samples", {}),
        *getattr(module, "_pyro_params", {}),
    ]
    return any(fnmatchcase(name, glob) for name in names)


def _parameter_paths(module: torch.nn.Module) -> Iterator[Tuple[Tuple[str, ...], torch.nn.Module, str]]:
    """Every parameter slot of ``module``: plain parameters, and the PyroSample and
    PyroParam attributes that replaced one, with the path of each."""
    for prefix, owner in module.named_modules():
        constrained = getattr(owner, "_pyro_params", {})
        names = [
            name
            for name, value in owner._parameters.items()
            if value is not None and name.removesuffix(_UNCONSTRAINED) not in constrained
        ]
        names += [*getattr(owner, "_pyro_samples", {}), *constrained]
        base = tuple(prefix.split(".")) if prefix else ()
        for name in names:
            yield (*base, name), owner, name
