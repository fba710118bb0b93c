"""The tutorial's pitfalls are reported with file and line, and correct code is not."""

from __future__ import annotations

from pathlib import Path

from bayesify.runner import run
from bayesify.spec import parse_spec

SPEC = """\
version: 1
priors:
  NormalModel.loc: Normal(0, 1)
  Linear.weight: Normal(0, 1)
modules:
  exclude: [Container, Twins]
"""

SOURCE = '''\
import pyro
import pyro.distributions as dist
import torch
from torch import nn


class NormalModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(()))


class GlobalModel(NormalModel):
    def forward(self, data):
        loc = self.loc
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1), obs=data)


class LocalModel(NormalModel):
    def forward(self, data):
        with pyro.plate("data", len(data)):
            loc = self.loc
            pyro.sample("obs", dist.Normal(loc, 1), obs=data)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return x * self.weight


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = Linear()

    def forward(self, x, y):
        with pyro.plate("rows", len(x)):
            pyro.sample("y", dist.Normal(self.linear(x), 1).to_event(1), obs=y)


class Container(nn.Module):
    """The tutorial's serving container: holds a model and a guide it is given. Fine."""

    def __init__(self, model, guide):
        super().__init__()
        self.model = model
        self.guide = guide


class Twins(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = Linear()
        self.right = Linear()


def build():
    linear = Linear()
    linear(torch.zeros(2))
    outer = Container(None, None)
    outer.model = linear
    return outer
'''


def lints_of(tmp_path: Path) -> list[str]:
    source = tmp_path / "models.py"
    source.write_text(SOURCE)
    result = run([source], parse_spec(SPEC, "priors.yaml"), jobs=1)
    assert not result.failed
    return [
        f"models.py:{finding.line}: {finding.message}"
        for finding in result.lints
        if finding.path == str(source)
    ]


def line_of(text: str) -> int:
    return next(number for number, line in enumerate(SOURCE.splitlines(), 1) if text in line)


def test_first_read_inside_a_plate_is_reported_once_per_model(tmp_path):
    plate = [f for f in lints_of(tmp_path) if "plate" in f]
    assert [f.split(":")[1] for f in plate] == [
        str(line_of("            loc = self.loc")),
        str(line_of('pyro.sample("y", dist.Normal(self.linear(x)')),
    ]
    assert "LocalModel.forward" in plate[0] and "'loc'" in plate[0] and "pyro.plate('data')" in plate[0]
    assert "Regression.forward" in plate[1] and "'linear'" in plate[1]


def test_a_plain_module_building_two_pyro_modules_is_reported(tmp_path):
    roots = [f for f in lints_of(tmp_path) if "Pyro root" in f]
    assert len(roots) == 1
    assert roots[0].startswith(f"models.py:{line_of('self.right = Linear()')}: Twins")


def test_a_module_called_before_it_is_attached_is_reported(tmp_path):
    attached = [f for f in lints_of(tmp_path) if "called on its own" in f]
    assert attached == [
        f"models.py:{line_of('outer.model = linear')}: linear was called on its own before being "
        "attached to another module: its sites were named as a root and keep those names; "
        "attach it first, then call the outer module"
    ]


def test_correct_code_gets_no_lint(tmp_path):
    """The tutorial's GlobalModel reads loc before the plate; its Container holds a model and
    a guide it is given."""
    source = tmp_path / "clean.py"
    source.write_text(
        SOURCE.split("class LocalModel")[0]
        + SOURCE[SOURCE.index("class Container") : SOURCE.index("class Twins")]
    )
    spec = parse_spec(
        "version: 1\npriors:\n  NormalModel.loc: Normal(0, 1)\nmodules:\n  exclude: [Container]\n"
    )
    result = run([source], spec, jobs=1)
    assert not result.failed and result.changed
    assert result.lints == []
