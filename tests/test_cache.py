"""Re-runs skip unchanged files, and nothing a file depends on goes unnoticed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import bayesify.runner as runner
from bayesify.cache import Cache, _index_from_json, _index_to_json
from bayesify.spec import parse_spec

FIXTURES = Path(__file__).parent / "fixtures"

SPEC = parse_spec("version: 1\npriors:\n  Base.w: Normal(0, 1)\n  Child.v: Normal(0, 1)\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "base.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Base(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.w = nn.Parameter(torch.zeros(2))\n"
    )
    (tmp_path / "child.py").write_text(
        "import torch\nfrom torch import nn\nfrom base import Base\n\n\nclass Child(Base):\n"
        "    def __init__(self):\n        super().__init__()\n        self.v = nn.Parameter(torch.zeros(2))\n\n"
        "    def show(self):\n        return self.w\n"
    )
    return tmp_path


@pytest.fixture
def rewrites(monkeypatch) -> list[str]:
    """The files that were really rewritten (not served from the cache)."""
    seen: list[str] = []
    real = runner.rewrite_source

    def counting(source, job, spec):
        seen.append(Path(job.path).name)
        return real(source, job, spec)

    monkeypatch.setattr(runner, "rewrite_source", counting)
    return seen


def run(tree: Path, cache: Cache, spec=SPEC):
    return runner.run(sorted(tree.glob("*.py")), spec, jobs=1, cache=cache)


def outputs(result) -> dict[str, bytes]:
    return {Path(r.path).name: r.rewritten for r in result.results}


def test_a_second_run_redoes_nothing_and_gives_the_same_result(tree, tmp_path, rewrites):
    path = tmp_path / "cache.pickle"
    first = run(tree, Cache(path))
    assert sorted(rewrites) == ["base.py", "child.py"]
    rewrites.clear()
    second = run(tree, Cache(path))
    assert rewrites == []
    assert outputs(second) == outputs(first)
    assert [s.name for s in second.sites] == [s.name for s in first.sites]


ODD = "from elsewhere import Unknown\n\n\nclass Odd(Unknown):\n    def forward(self, x):\n        return x\n"


def no_planning(*args):
    raise AssertionError("the plan was made again")


def answer(result) -> tuple:
    """All a run says: outputs, sites with their lines, warnings and failures."""
    return (
        outputs(result),
        [(s.path, s.line, s.name, s.outcome) for s in result.sites],
        result.warnings,
        [r.error for r in result.results],
    )


def test_a_run_over_the_same_files_replays_the_last_plan(tree, tmp_path, monkeypatch, rewrites):
    """Nothing changed since the last run: its plan holds, so neither the index nor the jobs
    are made again, and the answer (warnings included) is the one a run without cache gives."""
    (tree / "other.py").write_text(ODD)
    path = tmp_path / "cache.json"
    run(tree, Cache(path))
    rewrites.clear()
    with monkeypatch.context() as patched:
        patched.setattr(runner, "_job_for", no_planning)
        replayed = run(tree, Cache(path))
    assert rewrites == []
    assert answer(replayed) == answer(run(tree, None))
    assert [w.code for w in replayed.warnings] == ["BAY201"]


def test_an_edit_that_keeps_the_classes_as_they_were_rewrites_that_file_only(
    tree, tmp_path, monkeypatch, rewrites
):
    """Lines added above a class and a method's body changed: every other file's plan holds,
    and the edited file is rewritten from the job it had, its sites at their new lines."""
    path = tmp_path / "cache.json"
    run(tree, Cache(path))
    rewrites.clear()
    child = tree / "child.py"
    child.write_text("# a comment\n\n" + child.read_text().replace("return self.w", "return self.w * 2"))
    with monkeypatch.context() as patched:
        patched.setattr(runner, "_job_for", no_planning)
        edited = run(tree, Cache(path))
    assert rewrites == ["child.py"]
    assert answer(edited) == answer(run(tree, None))


@pytest.mark.parametrize(
    "edit",
    [
        ("base.py", "class Base(nn.Module)", "class Base(object)"),  # a base another file's class reads
        ("child.py", "self.v = nn.Parameter", "self.u = nn.Parameter"),  # an attribute's name
        ("other.py", "class Odd(Unknown)", "class Odd(nn.Module)"),  # a warning's own file
    ],
)
def test_an_edit_to_the_classes_plans_the_run_again(tree, tmp_path, edit):
    (tree / "other.py").write_text(ODD.replace("from elsewhere", "from torch import nn\nfrom elsewhere"))
    path = tmp_path / "cache.json"
    run(tree, Cache(path))
    name, old, new = edit
    (tree / name).write_text((tree / name).read_text().replace(old, new))
    assert answer(run(tree, Cache(path))) == answer(run(tree, None))


def test_a_plan_is_never_replayed_over_records_made_after_it(tree, tmp_path):
    """A run that fails keeps no plan, but keeps the records of the files it indexed: the
    next run must not replay the older plan over a class that changed meanwhile."""
    other = tree / "other.py"
    other.write_text(ODD.replace("from elsewhere", "from torch import nn\nfrom elsewhere"))
    path = tmp_path / "cache.json"
    run(tree, Cache(path))
    other.write_text(other.read_text().replace("class Odd(Unknown)", "class Odd(nn.Module)"))
    (tree / "broken.py").write_text("class (:\n")
    assert run(tree, Cache(path)).failed
    (tree / "broken.py").unlink()
    again = run(tree, Cache(path))
    assert answer(again) == answer(run(tree, None)) and "other.py" in {
        Path(r.path).name for r in again.changed
    }


def test_editing_a_base_class_redoes_its_subclasses(tree, tmp_path, rewrites):
    path = tmp_path / "cache.pickle"
    run(tree, Cache(path))
    rewrites.clear()
    base = tree / "base.py"
    base.write_text(base.read_text().replace("class Base(nn.Module)", "class Base(object)"))
    result = run(tree, Cache(path), parse_spec("version: 1\npriors: {}\n"))
    assert sorted(rewrites) == []  # nothing converts any more: no file needs a rewrite
    assert not result.changed
    rewrites.clear()
    base.write_text(base.read_text().replace("class Base(object)", "class Base(nn.Module)"))
    run(tree, Cache(path))
    assert sorted(rewrites) == ["base.py"], "child.py's job is what it was in the first run"


def test_a_damaged_cache_is_an_empty_one(tree, tmp_path, rewrites):
    path = tmp_path / "cache.pickle"
    path.write_bytes(b"not a pickle")
    result = run(tree, Cache(path))
    assert not result.failed and len(result.changed) == 2
    assert sorted(rewrites) == ["base.py", "child.py"]


def test_each_spec_has_its_own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BAYESIFY_CACHE_DIR", str(tmp_path))
    other = parse_spec("version: 1\npriors:\n  Base.w: Normal(0, 2)\n")
    assert Cache.for_spec(SPEC.fingerprint).path != Cache.for_spec(other.fingerprint).path
    assert Cache.for_spec(SPEC.fingerprint).path.parent == tmp_path


def test_a_file_named_another_way_is_reported_under_its_new_name(tree, tmp_path, monkeypatch):
    path = tmp_path / "cache.pickle"
    run(tree, Cache(path))
    monkeypatch.chdir(tree)
    again = runner.run([Path("child.py"), Path("base.py")], SPEC, jobs=1, cache=Cache(path))
    assert [r.path for r in again.results] == ["child.py", "base.py"]
    assert {site.path for site in again.sites} == {"child.py", "base.py"}
    assert len(again.changed) == 2 and not again.unmatched


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("*/input/**/*.py")), ids=lambda path: str(path.relative_to(FIXTURES))
)
def test_an_index_record_read_back_from_the_cache_is_the_files_own(path):
    """Every file the fixtures hold: a field the cache does not keep (a star import's source)
    is lost on every run that plans again with the record read back."""
    fresh = runner._index_file(str(path)).index
    if fresh is None:
        pytest.skip("no classes, no record")
    cached = _index_from_json(json.loads(json.dumps(_index_to_json(fresh))), str(path))
    assert vars(cached.imports) == vars(fresh.imports)
    assert (cached.classes, cached.ties_weights) == (fresh.classes, fresh.ties_weights)


def test_a_base_re_exported_by_a_star_import_converts_on_a_cached_run(tmp_path):
    """schnetpack's packages re-export their modules with ``from .x import *``: after an edit
    elsewhere, a cached run read the package without its star imports, and their subclasses
    were left unconverted (a metaclass conflict at import), exit code 0."""
    fixture = FIXTURES / "reexported_base"
    tree = tmp_path / "tree"
    shutil.copytree(fixture / "input", tree)
    spec = parse_spec((fixture / "priors.yaml").read_text())
    files = sorted(str(path) for path in tree.rglob("*.py"))
    path = tmp_path / "cache.json"
    runner.run(files, spec, jobs=1, cache=Cache(path))
    model = tree / "flowlib" / "model.py"
    model.write_text(model.read_text() + "\n\nclass Added(nn.Module):\n    pass\n")
    cached = runner.run(files, spec, jobs=1, cache=Cache(path))
    assert answer(cached) == answer(runner.run(files, spec, jobs=1, cache=None))
    assert b'self.shift = PyroSample(Prior(self, "Normal", 0, 1, shape=dim))' in outputs(cached)["model.py"]
