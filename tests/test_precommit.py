"""The pre-commit hook, run by the real ``pre-commit`` as a user's repository runs it.

pre-commit installs a hook from a git repository at a commit. The working tree under test
may be ahead of this repository's HEAD, so the test commits a snapshot of it (the files git
would commit: tracked and untracked-but-not-ignored) to a throwaway repository, and the
user's ``.pre-commit-config.yaml`` points there.

Installing the hook makes a virtualenv and pip-installs bayesify's dependencies (libcst,
click, PyYAML) from the configured index; only if that index cannot be reached is the test
skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "regression"
#: What pip prints when it cannot reach the package index; any other failure is a failure.
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found for libcst",
    "No matching distribution found for click",
    "No matching distribution found for PyYAML",
)

pytest.importorskip("pre_commit", reason="pre-commit is a test dependency: pip install -e '.[test]'")


def git(cwd: Path, *args: str) -> str:
    completed = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return completed.stdout.strip()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private pre-commit cache, and a git identity for the commits the test makes."""
    identity = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "bayesify tests"), ("EMAIL", "tests@bayesify.invalid"))
    }
    return {
        **os.environ,
        **identity,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PRE_COMMIT_COLOR": "never",
    }


@pytest.fixture
def hook_repository(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    """A git repository holding a snapshot of the working tree; its path and commit."""
    try:
        listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the hook is installed from a git repository, and this tree is not one")
    snapshot = tmp_path / "bayesify-hook"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not part of it
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, snapshot / name)
    subprocess.run(["git", "init", "-q", str(snapshot)], check=True, env=env)
    git(snapshot, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", "snapshot"], cwd=snapshot, check=True, env=env)
    return snapshot, git(snapshot, "rev-parse", "HEAD")


@pytest.fixture
def project(tmp_path: Path, hook_repository: tuple[Path, str], env: dict[str, str]) -> Path:
    """A user's repository: the example model, its spec, and the hook in its config."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    shutil.copy(EXAMPLE / "model.py", project / "src" / "model.py")
    shutil.copy(EXAMPLE / "priors.yaml", project / "priors.yaml")
    repository, commit = hook_repository
    config = {"repos": [{"repo": str(repository), "rev": commit, "hooks": [{"id": "bayesify"}]}]}
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    subprocess.run(["git", "init", "-q", str(project)], check=True, env=env)
    git(project, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", "deterministic model"], cwd=project, check=True, env=env)
    return project


def pre_commit(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def hook_environment_python(env: dict[str, str]) -> Path:
    found = sorted(Path(env["PRE_COMMIT_HOME"]).glob("repo*/py_env-*/bin/python"))
    assert len(found) == 1, found
    return found[0]


def test_hook_definition_is_what_pre_commit_expects():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "bayesify"
    assert hook["entry"] == "bayesify rewrite"
    assert hook["language"] == "python"
    assert hook["types_or"] == ["python", "pyi"]
    assert hook["require_serial"] is True


def test_first_run_rewrites_and_fails_second_passes(project: Path, env: dict[str, str]):
    model = project / "src" / "model.py"
    deterministic = model.read_bytes()

    first = pre_commit(project, env)
    log = first.stdout + first.stderr
    if first.returncode != 1 and any(sign in log for sign in OFFLINE_SIGNS):
        pytest.skip(f"the package index cannot be reached to install the hook's dependencies:\n{log}")
    assert first.returncode == 1, log
    assert "files were modified by this hook" in log
    rewritten = model.read_bytes()
    assert rewritten != deterministic
    assert b"class Linear(PyroModule):" in rewritten
    assert b'PyroSample(Prior(self, "Normal", 0, 1, shape=(in_size, out_size)))' in rewritten

    second = pre_commit(project, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert model.read_bytes() == rewritten

    installed = subprocess.run(
        [str(hook_environment_python(env)), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    packages = {package["name"].lower() for package in json.loads(installed.stdout)}
    assert {"bayesify", "libcst", "click", "pyyaml"} <= packages
    assert not packages & {"torch", "pyro-ppl"}, "the hook must not pull in the runtime"


#: The offline recipe of docs/workflows.md: the bayesify installed where pre-commit runs.
LOCAL_HOOK = {
    "repo": "local",
    "hooks": [
        {
            "id": "bayesify",
            "name": "bayesify",
            "entry": "bayesify rewrite --allow-unmatched",
            "language": "system",
            "types_or": ["python", "pyi"],
            "require_serial": True,
        }
    ],
}


def test_a_local_hook_needs_no_package_index(tmp_path: Path, env: dict[str, str]):
    """The recipe for a user without the published package: nothing is downloaded."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    shutil.copy(EXAMPLE / "model.py", project / "src" / "model.py")
    shutil.copy(EXAMPLE / "priors.yaml", project / "priors.yaml")
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [LOCAL_HOOK]}))
    subprocess.run(["git", "init", "-q", str(project)], check=True, env=env)
    git(project, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", "deterministic model"], cwd=project, check=True, env=env)
    # The hook runs the `bayesify` of this environment, made from this tree.
    local = {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    first = pre_commit(project, local)
    assert first.returncode == 1, first.stdout + first.stderr
    assert b"class Linear(PyroModule):" in (project / "src" / "model.py").read_bytes()
    second = pre_commit(project, local)
    assert second.returncode == 0, second.stdout + second.stderr
    page = (ROOT / "docs" / "workflows.md").read_text()
    blocks = [yaml.safe_load(block.split("```")[0]) for block in page.split("```yaml\n")[1:]]
    assert {"repos": [LOCAL_HOOK]} in blocks, "docs/workflows.md shows the recipe this test runs"
