"""The ``bayesify`` command as users run it: config, discovery, the output formats, mirror
mode, ``plan`` and ``init``, exit codes, and which stream says what."""

from __future__ import annotations

import inspect
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bayesify import cli, runner
from bayesify.cli import main
from bayesify.diagnostics import Diagnostic
from bayesify.report import default_prior
from bayesify.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "regression"
HELPER = "def helper():\n    return 1\n"
SECOND_MODEL = """\
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.full((3,), 0.5))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled example as a project: ``src/model.py`` (two modules), ``src/util.py`` (no
    module), ``priors.yaml`` at the root (where rewrite finds it), an empty pyproject.toml.
    It is also the current folder."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    shutil.copy(EXAMPLE / "model.py", root / "src" / "model.py")
    (root / "src" / "util.py").write_text(HELPER)
    shutil.copy(EXAMPLE / "priors.yaml", root / "priors.yaml")
    (root / "pyproject.toml").write_text("[project]\nname = 'example'\n")
    monkeypatch.chdir(root)
    return root


def bayesify(*args: str, env: dict[str, str] | None = None, input: str | bytes | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def with_lints(monkeypatch: pytest.MonkeyPatch, *lints: Diagnostic) -> None:
    """Make every run report ``lints``, whatever the lint rules find."""
    real_run = runner.run

    def run(*args, **kwargs):
        result = real_run(*args, **kwargs)
        result.lints = list(lints)
        return result

    monkeypatch.setattr(cli, "run", run)


# -- rewrite: in place, --check, --diff, exit codes, streams -----------------------------------


def test_rewrite_in_place_says_what_it_did_on_stderr(project: Path):
    result = bayesify("rewrite", "src")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "bayesify: 1 file rewritten, 1 unchanged, 0 failed; 2 sites made random, 0 constrained"
    )
    assert b"class Linear(PyroModule):" in (project / "src" / "model.py").read_bytes()
    assert (project / "src" / "util.py").read_text() == HELPER
    again = bayesify("rewrite", "--check", "src")
    assert again.exit_code == 0, again.stderr


def test_the_summary_says_when_entries_select_only_in_the_built_model(project: Path):
    """A spec of type entries marks layers the source builds through factories and containers:
    the summary must not read as if it did nothing."""
    (project / "src" / "net.py").write_text(
        "from torch import nn\n\n\ndef conv(n):\n    return nn.Conv2d(n, n, 3)\n\n\n"
        "class Net(nn.Module):\n    def __init__(self, n):\n        super().__init__()\n"
        "        self.body = nn.Sequential(conv(n), nn.ReLU())\n\n    def forward(self, x):\n"
        "        return self.body(x)\n"
    )
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  nn.Conv2d.weight: Normal(0, 1)\n  '**.bias': Normal(0, 1)\n"
    )
    result = bayesify("rewrite", "--check", "src/net.py")
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "; 2 entries select by layer type or depth when the model is built "
            "(`bayesify plan --build` lists those sites)"
        )
    )


def test_check_exits_1_and_writes_nothing(project: Path):
    before = tree(project)
    result = bayesify("rewrite", "--check", "src")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "1 file would be rewritten" in result.stderr
    assert tree(project) == before


def test_diff_is_sorted_by_path_deterministic_and_applies_with_patch(project: Path):
    (project / "src" / "a_gate.py").write_text(SECOND_MODEL)
    (project / "priors.yaml").write_text(
        (project / "priors.yaml").read_text() + "constraints:\n  Gate.p: interval(0, 1)\n"
    )
    before = tree(project)
    serial = bayesify("rewrite", "--check", "--diff", "-j", "1", "src")
    parallel = bayesify(
        "rewrite", "--check", "--diff", "-j", "4", "src/model.py", "src/a_gate.py", "src/util.py"
    )
    assert serial.exit_code == parallel.exit_code == 1
    assert serial.stdout == parallel.stdout
    headers = [line for line in serial.stdout.splitlines() if line.startswith("--- ")]
    assert headers == ["--- src/a_gate.py", "--- src/model.py"]
    assert "\x1b[" not in serial.stdout
    assert tree(project) == before
    subprocess.run(["patch", "-p0", "--quiet"], input=serial.stdout.encode(), cwd=project, check=True)
    assert bayesify("rewrite", "--check", "src").exit_code == 0


def test_an_entry_that_selects_nothing_is_exit_2_and_writes_nothing(project: Path):
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  Linear.weight: Normal(0, 1)\n  Linear.wieght: Normal(0, 1)\n"
    )
    before = tree(project)
    result = bayesify("rewrite", "src")
    assert result.exit_code == 2
    assert "priors.yaml:4: error BAY205: priors entry 'Linear.wieght' selects no parameter" in result.stderr
    assert "rewritten" not in result.stderr, "no summary of work that was not done"
    assert tree(project) == before
    assert bayesify("rewrite", "--allow-unmatched", "src").exit_code == 0


def test_a_file_that_cannot_be_processed_is_123_and_the_others_are_rewritten(project: Path):
    (project / "src" / "broken.py").write_text("class Broken(nn.Module:\n    pass\n")
    result = bayesify("rewrite", "src")
    assert result.exit_code == 123
    assert "src/broken.py:1:23: error BAY001: cannot parse" in result.stderr
    assert "1 file rewritten, 1 unchanged, 1 failed" in result.stderr
    assert b"PyroModule" in (project / "src" / "model.py").read_bytes()


def test_standard_input_to_standard_output(project: Path):
    source = (project / "src" / "model.py").read_bytes()
    result = bayesify("rewrite", "-", input=source)
    assert result.exit_code == 0
    assert "class Linear(PyroModule):" in result.stdout
    check = bayesify("rewrite", "--check", "-", input=source)
    assert check.exit_code == 1 and check.stdout == ""
    diff = bayesify("rewrite", "--check", "--diff", "-", input=source)
    assert diff.exit_code == 1 and diff.stdout.startswith("--- -\n+++ -\n@@ ")
    assert bayesify("rewrite", "--diff", "-", input=source).exit_code == 0
    done = bayesify("rewrite", "--check", "-", input=result.stdout)
    assert done.exit_code == 0
    mixed = bayesify("rewrite", "-", "src")
    assert mixed.exit_code == 2 and "cannot be combined" in mixed.stderr
    plan = bayesify("plan", "-", input=source)
    assert plan.exit_code == 2 and "is for `bayesify rewrite` only" in plan.stderr


def test_usage_errors_are_exit_2(project: Path):
    assert bayesify("rewrite").exit_code == 2
    assert bayesify("rewrite", "missing/").exit_code == 2
    assert bayesify("rewrite", "--priors", "missing.yaml", "src").exit_code == 2
    (project / "bad.yaml").write_text("version: 1\npriors:\n  Linear.weight: Normall(0, 1)\n")
    result = bayesify("rewrite", "--priors", "bad.yaml", "src")
    assert result.exit_code == 2
    assert "bad.yaml:3" in result.stderr and "Normal" in result.stderr


def test_nothing_to_do_when_every_file_is_excluded(project: Path):
    result = bayesify("rewrite", "--force-exclude", "src/", "src/model.py")
    assert result.exit_code == 0
    assert "nothing to do" in result.stderr


def test_quiet_and_verbose(project: Path):
    assert bayesify("rewrite", "-q", "--check", "src").stderr == ""
    verbose = bayesify("rewrite", "-v", "--check", "src")
    assert "bayesify: spec priors.yaml, 2 entries" in verbose.stderr
    assert "would rewrite src/model.py" in verbose.stderr
    assert "unchanged src/util.py" in verbose.stderr


def test_python_dash_m_runs_the_command(project: Path):
    completed = subprocess.run(
        [sys.executable, "-m", "bayesify", "rewrite", "--check", "src"], capture_output=True, text=True
    )
    assert completed.returncode == 1
    assert "would be rewritten" in completed.stderr


def test_the_command_never_imports_torch_or_pyro(project: Path):
    code = (
        "import sys; from bayesify.cli import main\n"
        "try: main(['plan', 'src'])\n"
        "except SystemExit: pass\n"
        "assert not {'torch', 'pyro'} & set(sys.modules), 'the CLI imported the runtime'"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


# -- lints and --strict ------------------------------------------------------------------------


def test_lints_are_warnings_and_strict_makes_them_exit_1(project: Path, monkeypatch: pytest.MonkeyPatch):
    lint = Diagnostic.of("BAY101", "self.bias is first read inside pyro.plate", "src/model.py", 16)
    with_lints(monkeypatch, lint)
    result = bayesify("rewrite", "src")
    assert result.exit_code == 0
    assert "src/model.py:16: warning BAY101: self.bias is first read inside pyro.plate" in result.stderr
    assert result.stderr.strip().endswith("; 1 lint")
    assert bayesify("rewrite", "-q", "src").stderr == ""
    strict = bayesify("rewrite", "-q", "--strict", "src")
    assert strict.exit_code == 1
    assert (
        strict.stderr == "src/model.py:16: error BAY101: self.bias is first read inside pyro.plate\n"
    ), "under --strict a lint is an error, which -q keeps"
    github = bayesify("rewrite", "--strict", "--format", "github", "src")
    assert (
        "::error file=src/model.py,line=16,title=bayesify::BAY101: self.bias is first read inside pyro.plate"
        in github.stdout
    )
    # The same by code, from the command line or the config; or not shown at all.
    assert bayesify("rewrite", "-q", "--error-on", "BAY101", "src").exit_code == 1
    (project / "pyproject.toml").write_text('[tool.bayesify]\nerror-on = ["BAY1"]\n')
    assert bayesify("rewrite", "-q", "src").exit_code == 1
    (project / "pyproject.toml").write_text('[tool.bayesify]\nignore = ["BAY101"]\n')
    ignored = bayesify("rewrite", "src")
    assert ignored.exit_code == 0 and "BAY101" not in ignored.stderr
    unknown = bayesify("rewrite", "--ignore", "BAY9999", "src")
    assert unknown.exit_code == 2 and "no diagnostic code starts with 'BAY9999'" in unknown.stderr


# -- colour ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "env", "coloured"),
    [
        ((), {}, False),  # the test runner's stdout is no terminal
        (("--color",), {}, True),
        (("--no-color",), {"FORCE_COLOR": "1"}, False),
        ((), {"FORCE_COLOR": "1"}, True),
        ((), {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
        ((), {"NO_COLOR": ""}, False),
        (("--color",), {"NO_COLOR": "1"}, True),
    ],
)
def test_colour_only_on_a_terminal_or_when_asked(project: Path, options, env, coloured):
    environment = {"NO_COLOR": None, "FORCE_COLOR": None, **env}
    result = bayesify("rewrite", "--diff", *options, "src", env=environment)
    assert ("\x1b[" in result.stdout) is coloured
    if coloured:
        lines = result.stdout.splitlines()
        assert lines[0] == "\x1b[1m--- src/model.py\x1b[0m"
        assert "\x1b[32m+class Linear(PyroModule):\x1b[0m" in lines
        assert "\x1b[31m-class Linear(nn.Module):\x1b[0m" in lines
        assert any(line.startswith("\x1b[36m@@ ") for line in lines)


# -- --format github and json --------------------------------------------------------------------


def test_github_annotations_for_files_that_would_change_failures_and_warnings(project: Path):
    (project / "src" / "broken.py").write_text("class Broken(:\n")
    (project / "src" / "unseen.py").write_text(
        "import mysterylib\n\n\nclass Thing(mysterylib.Base):\n    def forward(self, x):\n        return x\n"
    )
    result = bayesify("rewrite", "--check", "--format", "github", "src")
    assert result.exit_code == 123
    lines = result.stdout.splitlines()
    assert (
        "::error file=src/model.py,line=7,title=bayesify::would be rewritten by bayesify "
        "(2 sites made random, 0 constrained); run `bayesify rewrite` on it and commit the result" in lines
    )
    assert any(line.startswith("::error file=src/broken.py,line=1,") for line in lines)
    assert any(
        line.startswith("::warning file=src/unseen.py,line=4,title=bayesify::BAY201: Thing derives from")
        for line in lines
    )
    assert "bayesify: 1 file would be rewritten" in result.stderr
    assert "warning:" not in result.stderr, "annotations replace the messages"


def test_github_annotations_follow_the_diff_and_rewritten_files_are_notices(project: Path):
    result = bayesify("rewrite", "--check", "--diff", "--format", "github", "src")
    assert result.stdout.startswith("--- src/model.py\n")
    assert result.stdout.splitlines()[-1].startswith("::error file=src/model.py,line=7,")
    in_place = bayesify("rewrite", "--format", "github", "src")
    assert in_place.exit_code == 0
    assert in_place.stdout.startswith(
        "::notice file=src/model.py,line=7,title=bayesify::rewritten by bayesify"
    )


def test_github_annotation_values_are_escaped():
    from bayesify.report import annotation

    assert (
        annotation("warning", "50%\nnext", "a,b:c.py", 3)
        == "::warning file=a%2Cb%3Ac.py,line=3,title=bayesify::50%25%0Anext"
    )


def test_unmatched_entries_are_annotated_at_their_line_in_the_spec(project: Path):
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  Linear.weight: Normal(0, 1)\n  Nothing.w: Normal(0, 1)\n"
    )
    result = bayesify("rewrite", "--check", "--format", "github", "src")
    assert result.exit_code == 2
    assert result.stdout.startswith(
        "::error file=priors.yaml,line=4,title=bayesify::BAY205: priors entry 'Nothing.w' selects no parameter"
    )
    as_json = json.loads(bayesify("rewrite", "--format", "json", "src").stdout)
    assert as_json["unmatched"][0]["selector"] == "Nothing.w"
    assert as_json["files"][0]["status"] == "would rewrite", "nothing was written"


def test_json_is_the_whole_run(project: Path):
    (project / "src" / "broken.py").write_text("class Broken(:\n")
    result = bayesify("rewrite", "--check", "--diff", "--format", "json", "src")
    assert result.exit_code == 123
    report = json.loads(result.stdout)
    assert report["changed"] == ["src/model.py"]
    assert report["spec"] == "priors.yaml"
    statuses = {file["path"]: file["status"] for file in report["files"]}
    assert statuses == {
        "src/broken.py": "failed",
        "src/model.py": "would rewrite",
        "src/util.py": "unchanged",
    }
    model = next(file for file in report["files"] if file["path"] == "src/model.py")
    assert model["diff"].startswith("--- src/model.py\n+++ src/model.py\n")
    assert [(s["class"], s["parameter"], s["outcome"]) for s in report["sites"]] == [
        ("Linear", "weight", "random"),
        ("Linear", "bias", "random"),
        ("Regressor", "log_scale", "deterministic"),
    ]
    assert report["sites"][0]["action"] == "Normal(0, 1)" and report["sites"][0]["entry"] == "priors.yaml:3"
    (error,) = report["errors"]
    assert error["file"] == "src/broken.py" and error["line"] == 1
    assert report["warnings"] == [] and report["lints"] == [] and report["unmatched"] == []
    assert report["summary"].startswith("1 file would be rewritten")


def test_json_without_diff_has_no_diffs_and_writes_in_place(project: Path):
    report = json.loads(bayesify("rewrite", "--format", "json", "src").stdout)
    assert report["changed"] == ["src/model.py"]
    assert all("diff" not in file for file in report["files"])
    assert b"PyroModule" in (project / "src" / "model.py").read_bytes()


def test_a_path_with_colons_keeps_its_place_in_every_format():
    problem = Diagnostic.of("BAY001", "cannot parse: x", "src/a:3:b.py", 3, 7)
    assert problem.text() == "src/a:3:b.py:3:7: error BAY001: cannot parse: x"
    assert (
        problem.github()
        == "::error file=src/a%3A3%3Ab.py,line=3,col=7,title=bayesify::BAY001: cannot parse: x"
    )
    assert Diagnostic.from_dict(problem.as_dict()) == problem
    assert problem.as_dict() == {
        "file": "src/a:3:b.py",
        "line": 3,
        "column": 7,
        "severity": "error",
        "code": "BAY001",
        "message": "cannot parse: x",
    }


# -- --out: the mirror ---------------------------------------------------------------------------


def test_mirror_writes_rewritten_copies_unchanged_and_leaves_the_source(project: Path):
    (project / "src" / "pkg").mkdir()
    (project / "src" / "pkg" / "gate.py").write_text(SECOND_MODEL)
    source_before = tree(project / "src")
    result = bayesify("rewrite", "src", "--out", "twin", "--allow-unmatched")
    assert result.exit_code == 0, result.stderr
    assert "rewritten into twin" in result.stderr
    assert tree(project / "src") == source_before
    mirrored = tree(project / "twin")
    assert sorted(mirrored) == ["model.py", "pkg/gate.py", "util.py"]
    assert mirrored["util.py"] == source_before["util.py"]
    assert mirrored["pkg/gate.py"] != source_before["pkg/gate.py"]  # converted, no parameter selected
    assert b'PyroSample(Prior(self, "Normal"' in mirrored["model.py"]

    stamps = {p: p.stat().st_mtime_ns for p in (project / "twin").rglob("*.py")}
    again = bayesify("rewrite", "src", "--out", "twin", "--allow-unmatched")
    assert again.exit_code == 0
    assert tree(project / "twin") == mirrored
    assert {
        p: p.stat().st_mtime_ns for p in (project / "twin").rglob("*.py")
    } == stamps, "re-run rewrote files"

    (project / "src" / "pkg" / "gate.py").unlink()
    stale = bayesify("rewrite", "src", "--out", "twin")
    assert stale.exit_code == 0
    assert "twin/pkg/gate.py: warning BAY207: in the mirror, but its source is gone" in stale.stderr


def test_a_mirror_inside_the_source_folder_is_never_rewritten_again(project: Path):
    assert bayesify("rewrite", ".", "--out", "src/twin").exit_code == 0
    assert bayesify("rewrite", ".", "--out", "src/twin").exit_code == 0
    assert not (project / "src" / "twin" / "src" / "twin").exists()
    assert (project / "src" / "twin" / "src" / "model.py").is_file()


def make_package(src: Path) -> Path:
    """A package as PyPI ships one: absolute imports of itself, a data table read at import,
    ``py.typed``, a compiled extension module, and a file with no class."""
    package = src / "netpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from netpkg.model import Net\n")
    (package / "model.py").write_text(
        "from pathlib import Path\n\nfrom torch import nn\n\nfrom netpkg.layers import Block\n\n"
        "WIDTH = int((Path(__file__).parent / 'data' / 'width.txt').read_text())\n\n\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.block = Block(WIDTH)\n        self.fc = nn.Linear(WIDTH, 1)\n\n"
        "    def forward(self, x):\n        return self.fc(self.block(x))\n"
    )
    (package / "layers.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Block(nn.Module):\n    def __init__(self, width):\n"
        "        super().__init__()\n        self.scale = nn.Parameter(torch.ones(width))\n\n"
        "    def forward(self, x):\n        return x * self.scale\n"
    )
    (package / "data").mkdir()
    (package / "data" / "width.txt").write_text("3\n")
    (package / "py.typed").write_text("")
    extension = next(
        (
            Path(module.__file__)
            for module in map(__import__, ("_csv", "_json", "_bisect"))
            if hasattr(module, "__file__")
        ),
        None,
    )
    if extension is not None:
        shutil.copy(extension, package / extension.name)
    return package


def test_a_package_mirror_imports_whole_under_its_own_name(project: Path):
    make_package(project / "src")
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  Block.scale: Normal(0, 1)\n  Net.fc.weight: Normal(0, 1)\n"
    )
    result = bayesify("rewrite", "src/netpkg", "--out", "twin")
    assert result.exit_code == 0, result.stderr
    mirrored = tree(project / "twin")
    source = {name: data for name, data in tree(project / "src").items() if name.startswith("netpkg/")}
    assert set(mirrored) == set(source), "the package, under its own name, with every file"
    assert mirrored["netpkg/data/width.txt"] == source["netpkg/data/width.txt"]
    assert mirrored["netpkg/layers.py"] != source["netpkg/layers.py"]
    extension = next((name for name in source if name.endswith((".so", ".pyd"))), None)
    check = (
        "import sys, torch, pyro.nn\nfrom pyro import poutine\nimport netpkg\n"
        "assert netpkg.__file__.startswith(sys.argv[1]), netpkg.__file__\n"
        "net = netpkg.Net()\nassert isinstance(net, pyro.nn.PyroModule)\n"
        "trace = poutine.trace(net).get_trace(torch.ones(2, 3))\n"
        "print(sorted(n for n, s in trace.nodes.items() if s['type'] == 'sample'))\n"
        + (f"import netpkg.{extension.split('/')[1].split('.')[0]}\n" if extension else "")
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "twin"), str(ROOT)])}
    ran = subprocess.run(
        [sys.executable, "-c", check, str(project / "twin")],
        cwd=project.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "['block.scale', 'fc.weight']"

    (project / "src" / "netpkg" / "data" / "width.txt").write_text("4\n")
    again = bayesify("rewrite", "src/netpkg", "--out", "twin")
    assert again.exit_code == 0 and "in the mirror, but its source is gone" not in again.stderr
    assert (project / "twin" / "netpkg" / "data" / "width.txt").read_text() == "4\n"


def test_a_package_mirror_warns_when_an_import_would_load_the_original(project: Path, monkeypatch):
    make_package(project / "src")
    quiet = bayesify("rewrite", "src/netpkg", "--out", "twin", "--allow-unmatched")
    assert "the original" not in quiet.stderr
    monkeypatch.syspath_prepend(str(project / "src"))  # the original is installed
    loud = bayesify("rewrite", "src/netpkg", "--out", "twin", "--allow-unmatched")
    assert loud.exit_code == 0
    assert (
        "twin/netpkg: warning BAY209: the rewritten netpkg; `import netpkg` here loads src/netpkg/, the original, "
        "unless twin comes before it on sys.path (PYTHONPATH=twin;"
    ) in loud.stderr


def test_a_namespace_package_that_imports_itself_by_name_is_mirrored_under_its_name(project: Path):
    """pytorch-tabnet's wheel has no __init__.py: mirrored flat, its files' imports by the
    package's name (``from netpkg.layers import Block``) loaded the original classes, silently."""
    package = make_package(project / "src")
    (package / "__init__.py").unlink()
    (package / "factory.py").write_text("from netpkg.model import Net\n\n\ndef make():\n    return Net()\n")
    (project / "priors.yaml").write_text("version: 1\npriors:\n  Block.scale: Normal(0, 1)\n")
    result = bayesify("rewrite", "src/netpkg", "--out", "twin")
    assert result.exit_code == 0, result.stderr
    assert {"netpkg/factory.py", "netpkg/model.py", "netpkg/data/width.txt"} <= set(tree(project / "twin"))
    check = (
        "import sys, pyro.nn\nimport netpkg.factory\n"
        "net = netpkg.factory.make()\nassert isinstance(net.block, pyro.nn.PyroModule)\n"
        "print(sys.modules[type(net.block).__module__].__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "twin"), str(ROOT)])}
    ran = subprocess.run(
        [sys.executable, "-c", check], cwd=project.parent, env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == str(project / "twin" / "netpkg" / "layers.py")

    # A folder named like an installed package, whose files import that package: `import yaml`
    # loads the installed one first, so the folder is no package, and its mirror stays flat.
    (project / "yaml").mkdir()
    (project / "yaml" / "loader.py").write_text("")
    (project / "yaml" / "model.py").write_text(
        "from yaml.loader import SafeLoader\n" + (project / "src" / "model.py").read_text()
    )
    flat = bayesify("rewrite", "yaml", "--out", "flat", "--allow-unmatched")
    assert flat.exit_code == 0, flat.stderr
    assert (project / "flat" / "model.py").is_file()


def test_mirror_with_check_or_diff_is_a_usage_error(project: Path):
    assert bayesify("rewrite", "src", "--out", "twin", "--check").exit_code == 2
    assert not (project / "twin").exists()


# -- discovery through the command ---------------------------------------------------------------


def make_models(project: Path, *names: str) -> None:
    for name in names:
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SECOND_MODEL)


def rewritten(project: Path, name: str) -> bool:
    return b"PyroModule" in (project / name).read_bytes()


def test_gitignore_and_default_excludes_are_honoured(project: Path):
    make_models(project, "src/generated/g.py", ".venv/lib/v.py", "build/b.py", "src/kept.py")
    (project / ".gitignore").write_text("generated/\n")
    assert bayesify("rewrite", ".", "--allow-unmatched").exit_code == 0
    assert rewritten(project, "src/kept.py")
    assert not any(
        rewritten(project, name) for name in ("src/generated/g.py", ".venv/lib/v.py", "build/b.py")
    )


def test_exclude_replaces_the_defaults_and_extend_exclude_adds(project: Path):
    make_models(project, "build/b.py", "src/skip_me.py")
    assert bayesify("rewrite", ".", "--allow-unmatched", "--extend-exclude", "skip_me").exit_code == 0
    assert not rewritten(project, "src/skip_me.py") and not rewritten(project, "build/b.py")
    assert bayesify("rewrite", ".", "--allow-unmatched", "--exclude", "skip_me").exit_code == 0
    assert rewritten(project, "build/b.py") and not rewritten(project, "src/skip_me.py")


def test_files_named_explicitly_are_processed_unless_force_excluded(project: Path):
    make_models(project, "build/b.py", "src/generated/g.py")
    assert bayesify("rewrite", "build/b.py", "--allow-unmatched").exit_code == 0
    assert rewritten(project, "build/b.py")
    result = bayesify("rewrite", "src/generated/g.py", "src/model.py", "--force-exclude", "/generated/")
    assert result.exit_code == 0
    assert rewritten(project, "src/model.py") and not rewritten(project, "src/generated/g.py")


# -- [tool.bayesify] ------------------------------------------------------------------------------


def test_config_is_found_from_the_paths_and_its_paths_are_relative_to_it(project: Path, monkeypatch):
    (project / "conf").mkdir()
    (project / "priors.yaml").rename(project / "conf" / "bayesian.yaml")
    (project / "pyproject.toml").write_text(
        '[tool.bayesify]\npriors = "conf/bayesian.yaml"\nextend-exclude = "util"\n'
    )
    monkeypatch.chdir(project / "conf")
    result = bayesify("rewrite", "--check", "-v", "../src")
    assert result.exit_code == 1, result.stderr
    assert "bayesify: config ../pyproject.toml" in result.stderr
    assert "bayesify: spec bayesian.yaml, 2 entries" in result.stderr
    assert "1 file would be rewritten, 0 unchanged" in result.stderr  # util.py is excluded


def test_config_keys_take_dashes_or_underscores_and_the_command_line_wins(project: Path):
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  Linear.weight: Normal(0, 1)\n  Nothing.w: Normal(0, 1)\n"
    )
    (project / "pyproject.toml").write_text(
        '[tool.bayesify]\nallow_unmatched = true\ncheck = true\nformat = "json"\n'
    )
    result = bayesify("rewrite", "src")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["changed"] == ["src/model.py"]
    assert bayesify("rewrite", "src", "--format", "text").stdout == ""
    (project / "pyproject.toml").write_text("[tool.bayesify]\nallow-unmatched = true\n")
    assert bayesify("rewrite", "src").exit_code == 0


def test_an_explicit_config_file_and_its_spec(project: Path, tmp_path: Path):
    elsewhere = tmp_path / "ci"
    elsewhere.mkdir()
    shutil.copy(project / "priors.yaml", elsewhere / "priors.yaml")
    (project / "priors.yaml").unlink()
    (elsewhere / "bayesify.toml").write_text('[tool.bayesify]\npriors = "priors.yaml"\nquiet = true\n')
    result = bayesify("rewrite", "--config", str(elsewhere / "bayesify.toml"), "--check", "src")
    assert result.exit_code == 1
    assert result.stderr == ""
    without = bayesify("rewrite", "--check", "src")
    assert "0 sites made random" in without.stderr, "without the config there is no spec"


def test_the_default_spec_is_beside_an_explicit_config(project: Path, tmp_path: Path):
    elsewhere = tmp_path / "ci"
    elsewhere.mkdir()
    shutil.move(project / "priors.yaml", elsewhere / "priors.yaml")
    (project / "priors.yaml").write_text("version: 1\npriors: {}\n")  # the root's, on the way up
    (elsewhere / "pyproject.toml").write_text("[tool.bayesify]\n")
    result = bayesify("rewrite", "--config", str(elsewhere / "pyproject.toml"), "--check", "src")
    assert result.exit_code == 1
    assert "2 sites made random" in result.stderr


def test_context_in_the_config_is_relative_to_it(project: Path):
    fixture = ROOT / "tests" / "fixtures" / "context_bases"
    shutil.copytree(fixture / "context", project / "vendor")
    shutil.copy(fixture / "input" / "model.py", project / "src" / "classifier.py")
    (project / "pyproject.toml").write_text('[tool.bayesify]\ncontext = "vendor"\nallow-unmatched = true\n')
    (project / "priors.yaml").write_text(
        (fixture / "priors.yaml").read_text().replace("  context: [context]\n", "")
    )
    result = bayesify("rewrite", "src/classifier.py")
    assert result.exit_code == 0, result.stderr
    assert (project / "src" / "classifier.py").read_bytes() == (
        fixture / "expected" / "model.py"
    ).read_bytes()


def test_a_base_a_package_reexports_is_seen_in_the_run_and_as_context(tmp_path: Path):
    """``from .base import Flow`` in ``flows/__init__.py``, used as ``flows.Flow``: the class
    is in the run (or in --context), so there is nothing to warn about."""
    fixture = ROOT / "tests" / "fixtures" / "reexported_base"
    shutil.copytree(fixture / "input", tmp_path / "src")
    package = tmp_path / "src" / "flowlib"
    whole = bayesify("rewrite", "--check", str(package), "--priors", str(fixture / "priors.yaml"))
    assert whole.exit_code == 1 and "cannot see" not in whole.stderr, whole.stderr
    alone = bayesify(
        "rewrite", "--check", str(package / "model.py"), "--priors", str(fixture / "priors.yaml")
    )
    assert "derives from flowlib.flows.Flow, which bayesify cannot see" in alone.stderr
    context = bayesify(
        "rewrite",
        "--check",
        str(package / "model.py"),
        "--context",
        str(package / "flows"),
        "--priors",
        str(fixture / "priors.yaml"),
    )
    assert context.exit_code == 1 and "cannot see" not in context.stderr, context.stderr
    assert "3 sites made random" in context.stderr


def test_what_a_context_base_only_sets_to_literals_is_no_place_for_parameters(tmp_path: Path):
    """Lightning's ``LightningModule.__init__`` sets nineteen attributes, most to ``None``,
    ``True`` or ``{}``: each was a row "random where built" under ``LitMLP.*.weight``, and the
    rewrite counted them as sites. A block the base builds still is one."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "base.py").write_text(
        "from torch import nn\n\n\nclass Base(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self._trainer = None\n        self._hparams = {}\n"
        "        self.automatic = True\n        self.block = make_block()\n"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text(
        "from torch import nn\nfrom lib.base import Base\n\n\nclass Lit(Base):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = nn.Linear(2, 2)\n"
    )
    (tmp_path / "priors.yaml").write_text('version: 1\npriors:\n  "Lit.*.weight": Normal(0, 1)\n')
    result = bayesify(
        "plan",
        str(tmp_path / "src"),
        "--priors",
        str(tmp_path / "priors.yaml"),
        "--context",
        str(tmp_path / "lib"),
    )
    assert result.exit_code == 0, result.stderr
    rows = [line.split()[1] for line in result.stdout.splitlines()[1:] if line.strip()]
    assert rows == ["Lit.fc.weight", "Lit.fc.bias", "Lit.block.weight"]


def test_a_package_binding_its_own_submodule_name_is_no_endless_reexport(tmp_path: Path):
    """``from .x import x`` in ``pkg/__init__.py`` would make ``pkg.x.Base`` ``pkg.x.x.Base``,
    ``pkg.x.x.x.Base``, …: following re-exports stops, and the base is reported unseen."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .x import x\n")
    (package / "x.py").write_text("x = 1\n")
    (package / "model.py").write_text(
        "import pkg\n\n\nclass Net(pkg.x.Base):\n    def forward(self, z):\n        return z\n"
    )
    result = bayesify("rewrite", "--check", str(package), "--allow-unmatched")
    assert result.exit_code == 0
    assert "Net derives from pkg.x.Base, which bayesify cannot see" in result.stderr


def test_an_unseen_base_of_an_ancestor_is_named_on_the_class_that_looks_like_a_module(tmp_path: Path):
    """A Hugging Face head derives from the model's ``XPreTrainedModel``, which has no
    ``forward`` and derives from the library's ``PreTrainedModel``: unseen, two levels up."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.py").write_text(
        "import mysterylib\n\n\nclass PreTrained(mysterylib.PreTrainedModel):\n    def init(self):\n"
        "        pass\n\n\nclass Head(PreTrained):\n    def forward(self, x):\n        return x\n"
    )
    result = bayesify("rewrite", "--check", str(package), "--allow-unmatched")
    assert result.exit_code == 0
    assert (
        "Head derives from mysterylib.PreTrainedModel (through PreTrained), which bayesify cannot see"
        in result.stderr
    )
    assert "PreTrained derives" not in result.stderr  # no forward: not reported on its own


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("alow-unmatched = true", "has no option 'alow-unmatched'; did you mean 'allow-unmatched'?"),
        ('jobs = "many"', "[tool.bayesify] jobs:"),
        ('format = "xml"', "[tool.bayesify] format:"),
        ("priors = 3", "[tool.bayesify] priors must be a path"),
        ("[tool.bayesify", "cannot read [tool.bayesify]"),
    ],
)
def test_a_bad_config_is_a_usage_error_naming_the_file(project: Path, table: str, message: str):
    (project / "pyproject.toml").write_text(f"[tool.bayesify]\n{table}\n" if "[" not in table else table)
    result = bayesify("rewrite", "--check", "src")
    assert result.exit_code == 2
    assert "pyproject.toml" in result.stderr and message in result.stderr


def test_a_key_of_another_command_is_left_to_it(project: Path):
    (project / "pyproject.toml").write_text('[tool.bayesify]\noutput = "spec/priors.yaml"\ncheck = true\n')
    assert bayesify("plan", "src").exit_code == 0
    assert bayesify("init", "src", "-o", "-").exit_code == 0


# -- plan ----------------------------------------------------------------------------------------


def test_plan_is_a_table_of_every_parameter(project: Path):
    result = bayesify("plan", "src")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "WHERE            PARAMETER            SHAPE                SELECTED BY    BECOMES",
        "src/model.py:12  Linear.weight        (in_size, out_size)  priors.yaml:3  random: Normal(0, 1)",
        "src/model.py:13  Linear.bias          out_size             priors.yaml:4  random: LogNormal(0, 1)",
        "src/model.py:25  Regressor.log_scale  ()                   -              deterministic",
    ]
    assert (project / "src" / "model.py").read_bytes() == (EXAMPLE / "model.py").read_bytes()


def test_plan_keeps_an_initializer_written_over_several_lines_on_its_row(project: Path):
    # neuralop writes its initializers over lines: each line broke the table.
    (project / "src" / "gate.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Gate(nn.Module):\n    def __init__(self, n, std):\n"
        "        super().__init__()\n        self.bias = nn.Parameter(\n            std\n"
        "            * torch.randn(n, 1)\n        )\n"
    )
    result = bayesify("plan", "src/gate.py", "--allow-unmatched")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].split() == [
        "src/gate.py:8",
        "Gate.bias",
        "(std",
        "*",
        "torch.randn(n,",
        "1)).shape",
        "-",
        "deterministic",
    ]


def test_plan_flags_entries_that_select_nothing(project: Path):
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  Linear.weight: Normal(0, 1)\nconstraints:\n  Nothing.w: positive\n"
    )
    result = bayesify("plan", "src")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "priors.yaml:5: error BAY205: constraints entry 'Nothing.w' selects no parameter"
    )
    assert "Nothing.w" not in result.stdout, "the table is data; the error goes where errors go"
    allowed = bayesify("plan", "--allow-unmatched", "src")
    assert allowed.exit_code == 0
    assert "priors.yaml:5: warning BAY205" in allowed.stderr
    assert bayesify("plan", "-q", "--allow-unmatched", "src").stderr == "", "-q: nothing but errors"


def test_plan_filters_selected_parameters_and_one_class(project: Path):
    selected = bayesify("plan", "--selected", "src").stdout.splitlines()
    assert [line.split()[1] for line in selected[1:]] == ["Linear.weight", "Linear.bias"]
    regressor = bayesify("plan", "--class", "Regressor", "src").stdout.splitlines()
    assert [line.split()[1] for line in regressor[1:]] == ["Regressor.log_scale"]
    as_json = json.loads(bayesify("plan", "--format", "json", "--class", "Linear", "src").stdout)
    assert {site["class"] for site in as_json["sites"]} == {"Linear"}


def test_plan_fits_the_terminal_width(project: Path):
    from bayesify import report
    from bayesify.runner import run

    result = run([Path("src/model.py")], load_spec("priors.yaml"), jobs=1)
    sites = report.plan_sites(result)
    whole = report.plan_table(result, sites, None).splitlines()
    assert max(map(len, whole)) > 60
    cut = report.plan_table(result, sites, 60).splitlines()
    assert max(map(len, cut)) <= 60
    assert len(cut) == len(whole), "one row a parameter, still"
    assert any("…" in line for line in cut)
    assert cut[1].split()[1] == "Linear.weight", "the parameter's name is kept whole while it fits"


def test_plan_as_json(project: Path):
    (project / "src" / "broken.py").write_text("class Broken(:\n")
    result = bayesify("plan", "--format", "json", "src")
    assert result.exit_code == 123
    plan = json.loads(result.stdout)
    assert [site["outcome"] for site in plan["sites"]] == ["random", "random", "deterministic"]
    assert plan["sites"][2] | {"module": None} == {
        "file": "src/model.py",
        "line": 25,
        "class": "Regressor",
        "module": None,
        "parameter": "log_scale",
        "kind": "nn.Parameter",
        "shape": "()",
        "entry": None,
        "selector": None,
        "action": None,
        "outcome": "deterministic",
    }
    assert plan["errors"][0]["file"] == "src/broken.py"


# -- init ----------------------------------------------------------------------------------------


def test_init_writes_a_spec_that_rewrite_accepts_and_applies(project: Path):
    (project / "priors.yaml").unlink()
    (project / "src" / "gate.py").write_text(SECOND_MODEL)
    result = bayesify("init", "src")
    assert result.exit_code == 0, result.stderr
    assert "bayesify: wrote priors.yaml with 4 parameters" in result.stderr
    text = (project / "priors.yaml").read_text()
    assert "  Linear.weight: Normal(0, 1)  # src/model.py:12, shape (in_size, out_size)\n" in text
    assert "  Regressor.log_scale: Normal(0, 1)  # src/model.py:25, shape ()\n" in text
    assert "  Gate.p: Normal(0, 1)  # src/gate.py:8, shape (3,)\n" in text
    assert len(load_spec(project / "priors.yaml").entries) == 4

    rewrite = bayesify("rewrite", "src")  # finds the spec where init wrote it
    assert rewrite.exit_code == 0, rewrite.stderr
    assert "2 files rewritten, 1 unchanged, 0 failed; 4 sites made random" in rewrite.stderr
    plan = json.loads(bayesify("plan", "--format", "json", "src").stdout)
    assert {site["outcome"] for site in plan["sites"]} == {"random"}


def test_init_refuses_to_overwrite_without_force(project: Path):
    spec = (project / "priors.yaml").read_text()
    refused = bayesify("init", "src")
    assert refused.exit_code == 2
    assert (
        "priors.yaml: error BAY302: the spec already exists; pass --force to overwrite it" in refused.stderr
    )
    assert (project / "priors.yaml").read_text() == spec
    assert bayesify("init", "--force", "src").exit_code == 0
    assert (project / "priors.yaml").read_text() != spec


def test_init_to_standard_output_or_where_the_config_says(project: Path):
    printed = bayesify("init", "src", "-o", "-")
    assert printed.stdout.startswith("# Written by `bayesify init`")
    assert not (project / "-").exists()
    (project / "pyproject.toml").write_text('[tool.bayesify]\npriors = "model/priors.yaml"\n')
    (project / "model").mkdir()
    assert bayesify("init", "src").exit_code == 0
    assert (project / "model" / "priors.yaml").is_file()


def test_init_without_parameters_writes_an_empty_spec(project: Path):
    (project / "priors.yaml").unlink()
    assert bayesify("init", "src/util.py").exit_code == 0
    assert load_spec(project / "priors.yaml").entries == ()


@pytest.mark.parametrize(
    ("name", "prior"),
    [
        ("weight", "Normal(0, 1)"),
        ("bias", "Normal(0, 1)"),
        ("obs_scale", "LogNormal(0, 1)"),
        ("sigma", "LogNormal(0, 1)"),
        ("log_scale", "Normal(0, 1)"),
        ("logvar", "Normal(0, 1)"),
        ("temperature", "LogNormal(0, 1)"),
        ("weight_ih_l0", "Normal(0, 1)"),
    ],
)
def test_default_priors_by_name(name: str, prior: str):
    assert default_prior(name) == prior


# -- the progress bar ----------------------------------------------------------------------------


def test_no_progress_bar_outside_a_terminal(project: Path):
    for index in range(cli.PROGRESS_THRESHOLD):
        (project / "src" / f"extra_{index}.py").write_text(HELPER)
    result = bayesify("rewrite", "--check", "src")
    assert "\r" not in result.stderr and "%" not in result.stderr


@pytest.mark.skipif(
    "progress" not in inspect.signature(runner.run).parameters,
    reason="runner.run has no progress callback yet",
)
def test_progress_bar_on_a_terminal_for_long_runs(project: Path):
    for index in range(cli.PROGRESS_THRESHOLD):
        (project / "src" / f"extra_{index}.py").write_text(SECOND_MODEL.replace("Gate", f"Gate{index}"))

    def run_on_a_terminal(*options: str) -> bytes:
        terminal, stderr = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "bayesify", "rewrite", "--check", *options, "src"],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        os.close(stderr)
        shown = b""
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            shown += chunk
        process.communicate()
        os.close(terminal)
        return shown

    shown = run_on_a_terminal()
    assert b"100%" in shown and b"bayesify  [" in shown
    assert b"51 files would be rewritten" in shown
    assert b"%" not in run_on_a_terminal("-q")


# -- manners: what a newcomer meets first ------------------------------------------------------


def test_quiet_says_nothing_when_the_run_passes_even_with_unmatched_entries_allowed(project: Path):
    """What the pre-commit hook runs on a partial commit: entries about other files' classes."""
    (project / "priors.yaml").write_text(
        "version: 1\npriors:\n  Linear.weight: Normal(0, 1)\n  Other.w: Normal(0, 1)\n"
    )
    quiet = bayesify("rewrite", "-q", "--allow-unmatched", "src")
    assert (quiet.exit_code, quiet.stderr) == (0, "")
    loud = bayesify("rewrite", "--check", "--allow-unmatched", "src")
    assert "priors.yaml:4: warning BAY205: priors entry 'Other.w' selects no parameter" in loud.stderr


def test_a_subprojects_spec_beside_its_code_is_found_below_the_repository_root(project: Path):
    # A spec beside the code in a folder of a larger repository was not read (the root's
    # was looked for): nothing was made random, and -q hid the warning that said so.
    subproject = project / "packages" / "model"
    subproject.mkdir(parents=True)
    shutil.move(project / "src", subproject / "src")
    shutil.move(project / "priors.yaml", subproject / "priors.yaml")
    (project / ".git").mkdir()
    result = bayesify("rewrite", "-q", "packages/model/src")
    assert (result.exit_code, result.stderr) == (0, "")
    assert b"PyroSample(Prior(self" in (subproject / "src" / "model.py").read_bytes()


def test_no_spec_found_is_a_warning_by_default(project: Path):
    (project / "priors.yaml").unlink()
    result = bayesify("rewrite", "--check", "src")
    assert result.stderr.startswith(
        "warning BAY206: no spec found (no --priors, and no priors.yaml): every parameter stays deterministic"
    )
    assert bayesify("rewrite", "--check", "--ignore", "BAY206", "src").stderr.startswith("bayesify: ")
    assert bayesify("rewrite", "--check", "-q", "src").stderr == ""


def test_config_options_are_per_command(project: Path):
    (project / "pyproject.toml").write_text('[tool.bayesify]\nformat = "github"\n')
    assert bayesify("plan", "src").stdout.startswith(
        "WHERE"
    ), "plan has no github format: the key is rewrite's"
    assert bayesify("rewrite", "--check", "src").stdout.startswith("::error file=src/model.py")
    (project / "pyproject.toml").write_text(
        '[tool.bayesify]\nformat = "github"\n[tool.bayesify.plan]\nformat = "json"\n'
    )
    assert json.loads(bayesify("plan", "src").stdout)["sites"]
    (project / "pyproject.toml").write_text('[tool.bayesify.plan]\nformat = "github"\n')
    refused = bayesify("plan", "src")
    assert refused.exit_code == 2 and "[tool.bayesify.plan] format" in refused.stderr


def test_stdin_filename_places_standard_input(project: Path):
    source = (project / "src" / "model.py").read_text()
    (project / "src" / "model.py").write_text("class Broken(:\n")  # only standard input is read
    placed = bayesify("rewrite", "-", "--stdin-filename", "src/model.py", input=source)
    assert placed.exit_code == 0
    assert "PyroSample(Prior(self" in placed.stdout, "the spec at the project root of the named file applies"
    broken = bayesify("rewrite", "-", "--stdin-filename", "src/model.py", input="class Broken(:\n")
    assert broken.exit_code == 123
    assert broken.stderr.startswith("src/model.py:1:14: error BAY001: cannot parse")
    assert bayesify("rewrite", "src", "--stdin-filename", "x.py").exit_code == 2
    excluded = bayesify(
        "rewrite", "-", "--stdin-filename", "src/model.py", "--force-exclude", "^/src/", input=source
    )
    assert (excluded.exit_code, excluded.stdout) == (0, source), "force-excluded: passed through as it is"


def test_version_help_examples_and_completion(project: Path):
    assert (
        bayesify("-V").stdout == bayesify("--version").stdout == f"bayesify, version {bayesify_version()}\n"
    )
    assert "Examples:" in bayesify("--help").stdout
    for command in ("rewrite", "plan", "init"):
        assert "Examples:" in bayesify(command, "--help").stdout
    completion = subprocess.run(
        [sys.executable, "-c", "from bayesify.cli import main; main(prog_name='bayesify')"],
        env={**os.environ, "_BAYESIFY_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
    )
    assert "_bayesify_completion" in completion.stdout


def bayesify_version() -> str:
    from bayesify import __version__

    return __version__


def test_out_onto_the_source_folder_says_why_not(project: Path):
    result = bayesify("rewrite", "src", "--out", "src")
    assert result.exit_code == 2
    assert "error BAY302: --out src is where the rewrite of src would go" in result.stderr
    assert "leave out --out" in result.stderr
    assert b"PyroModule" not in (project / "src" / "model.py").read_bytes()
