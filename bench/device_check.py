"""Prove that rewritten models sample their priors on the device and train there.

    python bench/device_check.py                 # on CUDA (the default); fails without a GPU
    python bench/device_check.py --device cpu    # the same checks on the CPU

It rewrites the bundled example and the held-layers fixture into a temporary folder with
``bayesify rewrite --out``, builds each model, moves it with ``.to(device)`` (and once with
``.double()``), and checks that every sample site is on the device with the module's dtype
(plain Pyro priors stay float32 on the CPU), that a forward pass runs, and that SVI steps with
AutoNormal lower the loss. CI has no GPU: this is a script to run where one is lent.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

ROOT = Path(__file__).resolve().parent.parent


def rewrite(source: Path, spec: Path, out: Path) -> None:
    command = [
        "bayesify",
        "rewrite",
        str(source),
        "--priors",
        str(spec),
        "--out",
        str(out),
        "-q",
        "--no-cache",
    ]
    subprocess.run(command, check=True)


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"checked_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(name: str, net: torch.nn.Module, make_input, device: torch.device, dtype: torch.dtype) -> None:
    net = net.to(device=device, dtype=dtype)
    x = make_input().to(device)
    x = x.to(dtype) if x.is_floating_point() else x

    def model(x, y=None):
        out = net(x).reshape(len(x), -1)
        with pyro.plate("rows", len(x)):
            return pyro.sample(
                "y", dist.Normal(out, torch.ones((), device=device, dtype=dtype)).to_event(1), obs=y
            )

    pyro.clear_param_store()
    trace = poutine.trace(model).get_trace(x)
    samples = {
        n: s["value"]
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and n != "rows"
    }
    wrong = [n for n, v in samples.items() if v.device.type != device.type or v.dtype != dtype]
    assert samples and not wrong, f"{name}: sites not on {device}/{dtype}: {wrong}"
    y = trace.nodes["y"]["value"].detach()
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(200)]
    assert losses[-1] < losses[0], f"{name}: SVI did not lower the loss ({losses[0]:.1f} -> {losses[-1]:.1f})"
    print(f"{name}: {len(samples)} sites on {device} as {dtype}; loss {losses[0]:.1f} -> {losses[-1]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args().device)
    pyro.set_rng_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        rewrite(
            ROOT / "examples" / "regression",
            ROOT / "examples" / "regression" / "priors.yaml",
            out / "regression",
        )
        fixture = ROOT / "tests" / "fixtures" / "held_layers"
        rewrite(fixture / "input", fixture / "priors.yaml", out / "held")
        regression = load(out / "regression" / "model.py")
        held = load(out / "held" / "net.py")
        for dtype in (torch.float32, torch.float64):
            check("Linear", regression.Linear(5, 2), lambda: torch.randn(64, 5), device, dtype)
            check("Net (held layers)", held.Net(), lambda: torch.randint(0, 10, (3, 5)), device, dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
