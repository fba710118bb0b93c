"""Build the model a command line names and report its parameters as JSON: the subprocess of
``bayesify plan --build`` (see :mod:`bayesify.build`), run where the rewritten code is importable::

    python -m bayesify.runtime.built '{"module": "models", "attribute": "Net", "args": [4], "kwargs": {}}'
"""

import contextlib
import importlib
import json
import os
import sys
from typing import Dict, List

import torch
from pyro.nn import PyroModule

from bayesify.runtime.held import DECIDED, SHADOWED, Tied, site_name
from bayesify.runtime.prior import Prior

_UNCONSTRAINED = "_unconstrained"


def parameters(model: torch.nn.Module) -> List[Dict]:
    """Every parameter of ``model``, once each (a shared layer too): its Pyro site name, shape,
    what it became, and the spec selector that decided it when the runtime did."""
    rows = []
    for prefix, module in model.named_modules():
        decided = module.__dict__.get(DECIDED, {})
        samples = getattr(module, "_pyro_samples", {})
        constrained = getattr(module, "_pyro_params", {})
        entries = []
        for name, prior in samples.items():
            if isinstance(prior, Tied):
                owner = prior.module
                entries.append(
                    (name, _shape(owner, prior.name), "tied", {"tied_to": site_name(owner, prior.name)})
                )
            else:
                entries.append((name, _shape(module, name), "random", {}))
        for name in constrained:
            entries.append((name, module._parameters[name + _UNCONSTRAINED].shape, "constrained", {}))
        for name, value in module._parameters.items():
            if value is not None and name.removesuffix(_UNCONSTRAINED) not in constrained:
                entries.append((name, value.shape, "deterministic", {}))
        pyro_name = getattr(module, "_pyro_name", prefix)
        for name, shape, becomes, extra in entries:
            rows.append(
                {
                    "name": f"{pyro_name}.{name}" if pyro_name else name,
                    "class": type(module).__name__,
                    # and its bases: a parameter a base class sets (e3nn's TensorProduct.weight,
                    # in a FullyConnectedTensorProduct) was made random by the base's entry
                    "classes": [
                        cls.__name__ for cls in type(module).__mro__ if issubclass(cls, torch.nn.Module)
                    ],
                    "layer": _layer_class(module),
                    "attribute": name,
                    "shape": str(tuple(shape)),
                    "becomes": becomes,
                    "selector": decided.get(name),
                    **extra,
                }
            )
    return rows


def _layer_class(module: torch.nn.Module) -> str:
    """The dotted name of the layer class behind a module (``torch.nn.modules.linear.Linear``
    for ``PyroModule[nn.Linear]``), as a layer-type selector names it."""
    layer = next(
        cls
        for cls in type(module).__mro__
        if issubclass(cls, torch.nn.Module) and not issubclass(cls, PyroModule)
    )
    return f"{layer.__module__}.{layer.__qualname__}"


def _shape(module: torch.nn.Module, name: str):
    prior = module._pyro_samples[name]
    if isinstance(prior, Prior):
        return prior.shape
    if isinstance(prior, Tied):
        return _shape(prior.module, prior.name)
    distribution = prior if hasattr(prior, "sample") else prior(module)
    return tuple(distribution.batch_shape) + tuple(distribution.event_shape)


def main(request: str) -> int:
    call = json.loads(request)
    # stdout carries the report alone: what the model prints as it is built goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        return _report(call)


def _report(call: dict) -> int:
    target = importlib.import_module(call["module"])
    if not os.path.realpath(getattr(target, "__file__", "") or "").startswith(
        os.path.realpath(call["mirror"])
    ):
        print(
            f"{call['module']} is imported from {target.__file__}, not from the files of the run: "
            "name the module as the run's files are imported (its path from here, or its package)",
            file=sys.stderr,
        )
        return 1
    for part in call["attribute"].split("."):
        target = getattr(target, part)
    model = target(*call["args"], **call["kwargs"])
    shown = f"{call['module']}:{call['attribute']}"
    if not isinstance(model, torch.nn.Module):
        print(f"{shown} returned a {type(model).__name__}, not an nn.Module", file=sys.stderr)
        return 1
    rows = parameters(model)
    counts = {
        kind: sum(row["becomes"] == kind for row in rows)
        for kind in ("random", "constrained", "deterministic")
    }
    shadowed = model.__dict__.get(SHADOWED, {})
    print(
        json.dumps(
            {"built": f"{shown} ({type(model).__name__})", "parameters": rows, "shadowed": shadowed, **counts}
        ),
        file=sys.__stdout__,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
