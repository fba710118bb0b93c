#!/usr/bin/env python
"""``predict`` on the zoo's real networks: one vectorised pass, equal to one sample at a time.

Issue 10's ``predict`` draws its weight samples in one pass through the network. Real networks
are written for one batch dimension (``BatchNorm2d``, ``x.view(x.size(0), -1)``, transposed
convolutions in every UNet), which is what this checks, on the model builders of
``bench/zoo_models.py`` that take tensors (one, or several, passed by name as a dict) and
return tensors (of several, in a tuple or a dict, the first is checked: ``supervised``'s
``output``). For
each package (monai and kornia by default), in the zoo's environment (``bench/zoo.py``
installs it), the script rewrites the whole package under the zoo's ``type`` spec (every
Linear and Conv weight) and, for each model built from the mirror, in eval mode:

- starts a :class:`~bayesify.runtime.CheckpointNormal` guide at a draw of the prior, with a
  spread of 10% of each weight (so that the samples differ);
- runs ``predict(model, guide, x, num_samples=3, samples_per_pass=3)`` and notes whether it
  fell back to one sample per pass (its warning);
- draws the same three weight samples again (the same seed: once the guide is set up, it is
  predict's only random draw) and runs the network on each alone; the largest difference
  between those outputs and predict's, relative to the outputs' size, must be below 1e-9 (in
  double precision; 1e-2 in single, for a network that makes float tensors of its own).

::

    python bench/zoo_predict.py                   # monai and kornia
    python bench/zoo_predict.py --only monai --models 'dynunet*'

Exit status 0 when every checked model predicts in one pass and equals its samples run alone.
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import zoo
from zoo_models import MODELS

PACKAGES = ("monai", "kornia")
MARKER = "ZOO-PREDICT-RESULT "
#: The largest relative difference allowed, in double precision and (for a network that makes
#: float tensors of its own) in single: through fifty layers of a ResNeXt, single precision's
#: rounding of the same sums in another order grows to 1e-2 of the output.
TOLERANCE = {True: 1e-9, False: 1e-2}


def first_tensor(output):
    """The first tensor of a network's output: itself, or the first of a tuple's or a dict's."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    parts = (
        output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    )
    return next((found for found in map(first_tensor, parts) if found is not None), None)


def check(build, double: bool) -> dict:
    """One model, built from the mirror: skipped, or whether predict took one pass and its error."""
    import pyro
    import torch
    from pyro import poutine

    from bayesify.runtime import CheckpointNormal, Normal, predict, supervised

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    net, args, kwargs = build()
    try:  # the inputs by the forward's parameter names, keyword or positional
        bound = inspect.signature(net.forward).bind(*args, **kwargs)
    except TypeError:
        return {"skipped": "inputs not the forward's"}
    inputs = dict(bound.arguments)
    if not all(isinstance(input, torch.Tensor) for input in inputs.values()):
        return {"skipped": "inputs not tensors"}
    net.eval()
    if double:
        net = net.double()
        inputs = {
            name: input.double() if input.is_floating_point() else input for name, input in inputs.items()
        }
    x = inputs if len(inputs) > 1 else next(iter(inputs.values()))  # what predict and the model take
    with torch.no_grad():
        drawn = poutine.trace(net).get_trace(**inputs)
    if first_tensor(drawn.nodes["_RETURN"]["value"]) is None:
        return {"skipped": "no output tensor"}
    values = {name: site["value"] for name, site in drawn.iter_stochastic_nodes()}
    with torch.no_grad():  # a VAE's latent draw, a masked autoencoder's random mask
        again = first_tensor(poutine.condition(net, values)(**inputs))
    if not torch.equal(again, first_tensor(drawn.nodes["_RETURN"]["value"])):
        return {"skipped": "draws random numbers of its own in eval mode"}
    model = supervised(net, Normal(), output=first_tensor)  # of several outputs, the first
    guide = CheckpointNormal(model, values, delta=0.1)
    with torch.no_grad():
        guide(x)  # sets the guide up, which runs the model: its draws come before predict's
    pyro.set_rng_seed(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prediction = predict(model, guide, x, num_samples=3, samples_per_pass=3)
    fell_back = [str(w.message) for w in caught if "did not take a batch" in str(w.message)]
    pyro.set_rng_seed(1)
    with torch.no_grad(), pyro.plate("predictive_samples", 3, dim=-2):
        weights = poutine.trace(guide).get_trace(x)
    error = 0.0
    for i, sampled in enumerate(prediction.outputs):
        one = {name: weights.nodes[name]["value"][i, 0] for name in values}
        with torch.no_grad():
            alone = first_tensor(poutine.condition(net, one)(**inputs))
        error = max(error, float((sampled - alone).abs().max() / alone.abs().max().clamp_min(1e-6)))
    return {
        "sites": len(values),
        "one_pass": not fell_back,
        "fell_back": fell_back[:1],
        "error": error,
        "tolerance": TOLERANCE[double],
    }


def probe(package: str, names: list[str]) -> None:
    warnings.filterwarnings("ignore")
    for model in (m for m in MODELS if m.package == package and m.name in names):
        try:
            try:
                result = check(model.build, double=True)
            except RuntimeError as error:
                if "Double" not in str(error) and "double" not in str(error):
                    raise
                result = check(model.build, double=False)  # a network that makes float tensors itself
        except Exception as error:  # noqa: BLE001 - the model's failure, reported
            result = {"failed": f"{type(error).__name__}: {str(error).strip()[:300]}"}
        print(MARKER + json.dumps({"model": model.name, **result}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=PACKAGES, help="only this package (repeatable)")
    parser.add_argument(
        "--models", metavar="GLOB", help="only the models matching these comma-separated globs"
    )
    parser.add_argument("--cache-dir", type=Path, default=zoo.DEFAULT_CACHE, help="the zoo's environment")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.probe:
        probe(options.probe, options.names.split(","))
        return 0

    python = zoo.environment(options.cache_dir)
    globs = options.models.split(",") if options.models else ["*"]
    work = Path(tempfile.mkdtemp(prefix="bayesify-zoo-predict-"))
    results, started = [], time.perf_counter()
    for package in options.only or PACKAGES:
        names = [
            m.name for m in MODELS if m.package == package and any(fnmatch.fnmatch(m.name, g) for g in globs)
        ]
        spec_file = work / f"{package}.yaml"
        spec_file.write_text(zoo.spec_text(package, "type", [m for m in MODELS if m.package == package]))
        mirror = work / package
        zoo.rewrite(zoo.package_folder(python, package), spec_file, mirror)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mirror), str(zoo.ROOT), str(zoo.HERE)])}
        done = subprocess.run(
            [str(python), __file__, "--probe", package, "--names", ",".join(names)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        found = [
            json.loads(line[len(MARKER) :]) for line in done.stdout.splitlines() if line.startswith(MARKER)
        ]
        if len(found) < len(names):
            print(f"{package}: the probe stopped early: {done.stderr.strip()[-500:]}", file=sys.stderr)
        results += [{"package": package, **result} for result in found]

    checked = [r for r in results if "skipped" not in r]
    good = [r for r in checked if r.get("one_pass") and r.get("error", 1.0) < r.get("tolerance", 0.0)]
    for result in results:
        name = f"{result['package']}.{result['model']}"
        if "skipped" in result:
            print(f"{name}: skipped ({result['skipped']})")
        elif "failed" in result:
            print(f"{name}: FAILED {result['failed']}")
        else:
            passes = "one pass" if result["one_pass"] else f"fell back: {result['fell_back'][0][:160]}"
            print(
                f"{name}: {result['sites']} random sites, {passes}, largest difference {result['error']:.1e}"
                + ("" if result["tolerance"] == TOLERANCE[True] else " (single precision)")
            )
    print(
        f"\n{len(good)} of {len(checked)} networks predicted in one pass, equal to each sample alone; "
        f"{len(results) - len(checked)} skipped; {time.perf_counter() - started:.0f} s"
    )
    return 0 if len(good) == len(checked) else 1


if __name__ == "__main__":
    sys.exit(main())
