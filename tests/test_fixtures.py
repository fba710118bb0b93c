"""Golden fixtures: one folder a rule, ``input/`` + ``priors.yaml`` -> ``expected/``.

Each case is run the way a user runs bayesify: in place, as a ``--check``, and as a
``--diff`` applied with the real ``patch``. The expected tree must be a fixed point.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bayesify.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(path.name for path in FIXTURES.iterdir() if (path / "input").is_dir())


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def rewrite(folder: Path, spec: Path, *options: str):
    return CliRunner().invoke(main, ["rewrite", str(folder), "--priors", str(spec), "-j", "1", *options])


@pytest.fixture(params=CASES)
def case(request, tmp_path) -> tuple[Path, Path, Path]:
    source = FIXTURES / request.param
    work = tmp_path / "work"
    shutil.copytree(source / "input", work)
    return work, source / "priors.yaml", source / "expected"


def test_rewrite_in_place_gives_the_expected_tree(case):
    work, spec, expected = case
    result = rewrite(work, spec)
    assert result.exit_code == 0, result.output
    assert tree_bytes(work) == tree_bytes(expected)


def test_expected_tree_is_a_fixed_point(case, tmp_path):
    _, spec, expected = case
    copy = tmp_path / "again"
    shutil.copytree(expected, copy)
    check = rewrite(copy, spec, "--check")
    assert check.exit_code == 0, check.output
    rewrite(copy, spec)
    assert tree_bytes(copy) == tree_bytes(expected)


def test_check_reports_work_and_writes_nothing(case):
    work, spec, expected = case
    before = tree_bytes(work)
    result = rewrite(work, spec, "--check")
    would_change = before != tree_bytes(expected)
    assert result.exit_code == (1 if would_change else 0), result.output
    assert tree_bytes(work) == before


@pytest.mark.parametrize("tool", ["patch", "git"])
def test_diff_applies_with_real_tools(case, tool, monkeypatch):
    work, spec, expected = case
    before = tree_bytes(work)
    monkeypatch.chdir(work)
    result = rewrite(Path("."), spec, "--diff")
    assert tree_bytes(work) == before, "--diff must write nothing"
    diff = result.stdout
    if not diff:
        assert before == tree_bytes(expected)
        return
    command = (
        ["patch", "-p0", "--quiet"] if tool == "patch" else ["git", "apply", "-p0", "--unsafe-paths", "-"]
    )
    subprocess.run(command, input=diff.encode(), cwd=work, check=True)
    assert tree_bytes(work) == tree_bytes(expected)


def test_every_case_has_a_spec_and_changes_something():
    """A fixture that rewrites nothing tests nothing."""
    for name in CASES:
        folder = FIXTURES / name
        assert (folder / "priors.yaml").is_file(), name
        comparison = filecmp.dircmp(folder / "input", folder / "expected")
        assert comparison.diff_files or comparison.subdirs, f"{name}: input and expected are identical"
