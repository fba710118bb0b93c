#!/usr/bin/env python
"""What selecting by layer type costs when a model is built (issue 9, "Speed").

A ResNet-50 (25.6 M parameters, written out below in the usual bottleneck form) is rewritten
by bayesify with the spec "every Linear and Conv weight" (``nn.Linear.weight``,
``nn.Conv*.weight``), and built and run from the rewritten source; the baseline is the same
intent done at run time on the deterministic model: pyro's ``to_pyro_module_`` and a
``PyroSample`` on every ``nn.Linear``/``nn.Conv2d`` weight. Both sides are timed side by side,
alternating, in one run: one repeat is a build (construction, selection included) and one
forward pass inside ``poutine.trace`` (which samples all 54 weights). The figure is the ratio
of the medians; the goal is at most 1.1. Each side is timed in CPU seconds of this process,
with torch on one thread, so other work on the machine does not fall on one side::

    python bench/selection_speed.py             # 7 repeats a side
    python bench/selection_speed.py --repeat 15

It also checks that both sides have the same sample sites, with the same shapes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.1

RESNET = '''\
"""ResNet-50, deterministic, as a model zoo writes it."""
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        for _ in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
'''
SPEC = 'version: 1\npriors:\n  "nn.Linear.weight": Normal(0, 0.1)\n  "nn.Conv*.weight": Normal(0, 0.1)\n'


def rewrite(folder: Path) -> tuple[Path, Path]:
    """The deterministic source in ``folder/plain``, its rewrite in ``folder/bayesian``."""
    (folder / "plain").mkdir()
    (folder / "plain" / "resnet.py").write_text(RESNET)
    (folder / "priors.yaml").write_text(SPEC)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesify",
            "rewrite",
            str(folder / "plain"),
            "--out",
            str(folder / "bayesian"),
            "--priors",
            str(folder / "priors.yaml"),
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode:
        sys.exit(f"the rewrite failed:\n{done.stderr}")
    return folder / "plain" / "resnet.py", folder / "bayesian" / "resnet.py"


def load(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def by_hand(net):
    """The run-time baseline: pyro's to_pyro_module_ and a PyroSample on every Linear/Conv2d weight."""
    import pyro.distributions as dist
    from pyro.nn import PyroSample
    from pyro.nn.module import to_pyro_module_
    from torch import nn

    to_pyro_module_(net)
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            shape = module.weight.shape
            module.weight = PyroSample(dist.Normal(0.0, 0.1).expand(shape).to_event(len(shape)))
    return net


def build_and_run(make, image) -> tuple[float, dict]:
    import pyro
    import torch
    from pyro import poutine

    pyro.clear_param_store()
    start = time.process_time()
    net = make()
    with torch.no_grad():
        trace = poutine.trace(net).get_trace(image)
    seconds = time.process_time() - start
    return seconds, {
        name: tuple(site["value"].shape) for name, site in trace.nodes.items() if site["type"] == "sample"
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="builds a side (default: %(default)s)")
    parser.add_argument(
        "--size", type=int, default=64, help="input image side, pixels (default: %(default)s)"
    )
    options = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # CPU seconds of one thread: what other processes do is not counted
    with tempfile.TemporaryDirectory() as folder:
        plain_path, bayesian_path = rewrite(Path(folder))
        plain = load(plain_path, "resnet_plain")
        bayesian = load(bayesian_path, "resnet_bayesian")
        image = torch.randn(1, 3, options.size, options.size)
        sides = {"bayesify": bayesian.ResNet, "baseline": lambda: by_hand(plain.ResNet())}
        times: dict[str, list[float]] = {side: [] for side in sides}
        sites = {}
        for side, make in sides.items():  # a warm-up each, not timed
            _, sites[side] = build_and_run(make, image)
        if sites["bayesify"] != sites["baseline"]:
            missing = sorted(set(sites["baseline"]) - set(sites["bayesify"]))[:5]
            extra = sorted(set(sites["bayesify"]) - set(sites["baseline"]))[:5]
            print(f"the sample sites differ: missing {missing}, extra {extra}", file=sys.stderr)
            return 1
        for _ in range(options.repeat):
            for side, make in sides.items():
                times[side].append(build_and_run(make, image)[0])
    medians = {side: statistics.median(values) for side, values in times.items()}
    ratio = medians["bayesify"] / medians["baseline"]
    parameters = sum(shape.numel() for shape in plain.ResNet().parameters())
    print(
        f"ResNet-50 ({parameters / 1e6:.1f} M parameters, {len(sites['baseline'])} sample sites), "
        f"build + traced forward of a {options.size}x{options.size} image, CPU time, median of {options.repeat}:"
    )
    print(
        f"  bayesify (rewritten, nn.Linear.weight + nn.Conv*.weight)   {medians['bayesify'] * 1000:8.0f} ms"
    )
    print(
        f"  baseline (to_pyro_module_ + PyroSample by hand)             {medians['baseline'] * 1000:8.0f} ms"
    )
    print(f"  ratio {ratio:.3f} (goal <= {GOAL}): {'pass' if ratio <= GOAL else 'FAIL'}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
