"""Rewrite the bundled example with bayesify and train the result with SVI.

    python examples/run.py

1. ``bayesify rewrite examples/regression --out <tmp>`` writes the Bayesian twin of the
   deterministic model into a temporary folder (the example itself is left alone) and the
   diff is shown;
2. the rewritten ``Linear`` is imported and trained in the regression model of Pyro's
   "Modules in Pyro" tutorial; the losses are the tutorial's.
"""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from pyro.optim import Adam

EXAMPLE = Path(__file__).parent / "regression"


def rewrite(out: Path) -> None:
    command = ["bayesify", "rewrite", str(EXAMPLE), "--priors", str(EXAMPLE / "priors.yaml")]
    subprocess.run([*command, "--diff"], check=True)
    subprocess.run([*command, "--out", str(out)], check=True)


def import_file(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Model(PyroModule):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear
        self.obs_scale = PyroSample(dist.LogNormal(0, 1))

    def forward(self, input, output=None):
        obs_loc = self.linear(input)
        obs_scale = self.obs_scale  # sampled outside the plate: one scale, not one per row
        with pyro.plate("instances", len(input)):
            return pyro.sample("obs", dist.Normal(obs_loc, obs_scale).to_event(1), obs=output)


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        rewrite(Path(out))
        rewritten = import_file(Path(out) / "model.py")
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    model = Model(rewritten.Linear(5, 2))
    x = torch.randn(100, 5)
    y = model(x)
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    for step in range(501):
        loss = svi.step(x, y) / y.numel()
        if step % 100 == 0:
            print(f"step {step} loss = {loss:0.4g}")


if __name__ == "__main__":
    sys.exit(main())
