"""Every example in the user guide (``docs/*.md``) and the README runs, as a reader runs it.

Each page gets a fresh project folder, a git repository holding the bundled example
(``src/model.py`` and ``priors.yaml`` from ``examples/regression``; the README's is the
tutorial's ``src/linear.py``), and its fenced blocks run in order:

- ``console``: each ``$ command`` runs in bash in the project folder; the lines after it are
  its output (standard output and error together), compared line by line, trailing blanks
  ignored; a line ``...`` stands for any number of lines. ``$ echo $?`` shows the exit
  status of the command before it.
- ``python``, ``yaml``, ``toml`` whose first line is a comment naming a file (``# src/a.py``,
  ``# pyproject.toml``): the block is that file's content; it is written into the project
  (after a syntax check), for the commands after it. A CI file is also checked by
  :func:`test_ci_snippets`.
- other ``python`` blocks are executed, in one namespace a page, in the project folder;
  ``yaml`` and ``toml`` blocks are parsed (a ``yaml`` block with ``version:`` as a spec).
- ``bash`` (README only): each command runs and must succeed; ``pip install`` lines are
  checked against the extras pyproject.toml declares instead of being run.

Any other fence is an error: an example nobody runs is an example that rots.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bayesify.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLE = ROOT / "examples" / "regression"
TUTORIAL_LINEAR = ROOT / "tests" / "fixtures" / "tutorial_linear" / "input" / "linear.py"
#: Pages whose examples another test owns: the real-packages survey downloads from PyPI.
OWNED_ELSEWHERE = {"real-packages.md"}
#: The README's set-up commands install torch and run this suite: CI runs them itself.
README_SETUP_BLOCKS = 1
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name not in OWNED_ELSEWHERE) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
FILE_HEADER = re.compile(r"#\s*(?P<path>[\w./-]+\.(?:py|pyi|ya?ml|toml))\s*$")
MARKER = "<<<bayesify-docs-end-of-command>>>"


@dataclass
class Block:
    page: Path
    line: int
    language: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file(self) -> str | None:
        """The project file the block is the content of, if its first line names one."""
        first = self.body.split("\n", 1)[0]
        match = FILE_HEADER.fullmatch(first)
        return match["path"] if match else None


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, match.start()) + 1, match["lang"], match["body"])
        for match in FENCE.finditer(text)
    ]


def make_project(base: Path, page: Path) -> Path:
    project = base / "project"
    (project / "src").mkdir(parents=True)
    if page.name == "README.md":
        # The README shows the tutorial's Linear alone, without the fixture's docstring.
        source = TUTORIAL_LINEAR.read_text().split("\n", 1)[1]
        (project / "src" / "linear.py").write_text(source)
    else:
        shutil.copy(EXAMPLE / "model.py", project / "src" / "model.py")
        shutil.copy(EXAMPLE / "priors.yaml", project / "priors.yaml")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    return project


def environment(base: Path) -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "FORCE_COLOR")}
    identity = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "bayesify docs"), ("EMAIL", "docs@bayesify.invalid"))
    }
    return {
        **env,
        **identity,
        "PATH": path,
        "PYTHONUNBUFFERED": "1",
        "BAYESIFY_CACHE_DIR": str(base / "cache"),
        "COLUMNS": "100",
    }


# -- console blocks ----------------------------------------------------------------------------


def commands(body: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` for each ``$ `` line of a console block."""
    parsed: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and index < len(lines):
                command = command[:-1] + "\n" + lines[index]
                index += 1
            parsed.append((command, []))
        elif parsed:
            parsed[-1][1].append(line)
        else:
            raise AssertionError(f"console block output before any `$ ` command: {line!r}")
    return parsed


def run_console(body: str, project: Path, env: dict[str, str]) -> list[tuple[str, list[str], list[str]]]:
    """Run the block's commands in one bash, each with the previous one's status as ``$?``;
    return ``(command, expected, actual)`` for each."""
    parsed = commands(body)
    script = ["status=0"]
    for command, _ in parsed:
        script.append(f"(exit $status); {{ {command}\n}} 2>&1; status=$?; printf '\\n%s\\n' '{MARKER}'")
    completed = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    chunks = completed.stdout.split(f"{MARKER}\n")[: len(parsed)]
    assert len(chunks) == len(parsed), completed.stdout + completed.stderr
    return [
        (command, expected, chunk[:-1].splitlines())  # the newline printed before the marker
        for (command, expected), chunk in zip(parsed, chunks)
    ]


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, trailing blanks ignored; ``...`` matches any number of lines."""
    expected = [line.rstrip() for line in expected]
    actual = [line.rstrip() for line in actual]
    if "..." not in expected:
        return expected == actual
    pattern = "".join(r"(?:[^\n]*\n)*?" if line == "..." else re.escape(line + "\n") for line in expected)
    return re.fullmatch(pattern, "".join(line + "\n" for line in actual)) is not None


# -- bash blocks (README) ------------------------------------------------------------------------


def declared_extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project.get("optional-dependencies", {}))


def check_pip_install(command: str, where: str) -> None:
    project_name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    for word in shlex.split(command, comments=True):
        match = re.fullmatch(r"(?P<name>[\w.-]+)(?:\[(?P<extras>[\w,]+)\])?", word)
        if match and match["name"] == project_name:
            unknown = set((match["extras"] or "").split(",")) - {""} - declared_extras()
            assert not unknown, f"{where}: {command!r} names extras pyproject.toml lacks: {unknown}"
            return
    raise AssertionError(f"{where}: {command!r} does not install {project_name}")


def run_bash(block: Block, project: Path, env: dict[str, str]) -> None:
    for line in block.body.splitlines():
        command = line.split("  #", 1)[0].strip()
        if not command or command.startswith("#"):
            continue
        if re.match(r"(python -m )?pip install ", command):
            check_pip_install(command, block.where)
            continue
        completed = subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True
        )
        assert (
            completed.returncode == 0
        ), f"{block.where}: `{command}` failed:\n{completed.stdout}{completed.stderr}"


# -- one page ------------------------------------------------------------------------------------


def write_file(block: Block, project: Path) -> None:
    target = project / block.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.body)
    # Whether a spec is a valid one is for the commands that read it to say: some are not.
    if block.language == "yaml":
        yaml.safe_load(block.body)
    elif block.language == "toml":
        tomllib.loads(block.body)


def run_page(page: Path, base: Path) -> None:
    project = make_project(base, page)
    try:
        run_blocks(page, project, base)
    finally:
        # The page imported its project's modules (``src.model``); the next page has its own.
        for name, module in list(sys.modules.items()):
            if any(place.startswith(str(project)) for place in loaded_from(module)):
                del sys.modules[name]


def loaded_from(module) -> list[str]:
    """The file and, for a package, the folders a module was imported from."""
    spec = getattr(module, "__spec__", None)
    if spec is None:
        return []
    return [str(place) for place in (spec.origin, *(spec.submodule_search_locations or ())) if place]


def run_blocks(page: Path, project: Path, base: Path) -> None:
    env = environment(base)
    namespace: dict = {"__name__": "__docs__"}
    page_blocks = blocks(page)
    assert page_blocks, f"{page}: no examples"
    for number, block in enumerate(page_blocks):
        if block.file:
            write_file(block, project)
        elif block.language == "console":
            for command, expected, actual in run_console(block.body, project, env):
                assert matches(expected, actual), (
                    f"{block.where}: `$ {command}` printed\n"
                    + "\n".join(actual)
                    + "\n\nbut the page says\n"
                    + "\n".join(expected)
                )
        elif block.language == "python":
            run_python(block, project, namespace)
        elif block.language == "yaml":
            document = yaml.safe_load(block.body)
            if isinstance(document, dict) and "version" in document:
                parse_spec(block.body, block.where)
        elif block.language == "toml":
            tomllib.loads(block.body)
        elif block.language == "bash" and page.name == "README.md":
            if number >= README_SETUP_BLOCKS:
                run_bash(block, project, env)
        else:
            raise AssertionError(f"{block.where}: a ```{block.language} block that no test runs")


def run_python(block: Block, project: Path, namespace: dict) -> None:
    cwd = os.getcwd()
    sys.path.insert(0, str(project))
    os.chdir(project)
    try:
        exec(compile(block.body, block.where, "exec"), namespace)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(project))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


# -- the CI snippets -----------------------------------------------------------------------------


def ci_steps(block: Block) -> list[str]:
    """The shell commands of a GitHub Actions workflow or a GitLab CI file."""
    document = yaml.safe_load(block.body)
    if block.file.startswith(".github/workflows/"):
        assert "on" in document or True in document, f"{block.where}: a workflow needs `on:`"
        steps = [step for job in document["jobs"].values() for step in job["steps"]]
        assert any(step.get("uses", "").startswith("actions/checkout@") for step in steps), block.where
        return [line for step in steps if "run" in step for line in step["run"].splitlines()]
    assert block.file == ".gitlab-ci.yml", f"{block.where}: what CI is {block.file}?"
    jobs = [job for name, job in document.items() if isinstance(job, dict) and "script" in job]
    assert jobs, f"{block.where}: no job with a script"
    return [line for job in jobs for line in job.get("before_script", []) + job["script"]]


def ci_blocks() -> list[Block]:
    return [
        block
        for page in PAGES
        for block in blocks(page)
        if block.file and (block.file.startswith(".github/workflows/") or block.file == ".gitlab-ci.yml")
    ]


@pytest.mark.parametrize("block", ci_blocks(), ids=lambda block: block.file)
def test_ci_snippets(block: Block, tmp_path: Path) -> None:
    """A CI job fails on the deterministic example (the tree is not rewritten) and passes once
    it is; its pip lines install this package."""
    project = make_project(tmp_path, DOCS / "workflows.md")
    env = environment(tmp_path)
    bayesify_lines = []
    for command in ci_steps(block):
        if re.match(r"(python -m )?pip install ", command):
            check_pip_install(command, block.where)
        elif command.startswith("bayesify "):
            bayesify_lines.append(command)
        else:
            raise AssertionError(f"{block.where}: a CI command this test cannot check: {command!r}")
    assert bayesify_lines, f"{block.where}: the job never runs bayesify"
    for command in bayesify_lines:
        failing = subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True
        )
        assert failing.returncode == 1, f"{block.where}: `{command}` should fail the job:\n{failing.stderr}"
    subprocess.run(["bayesify", "rewrite", "src/"], cwd=project, env=env, check=True, capture_output=True)
    for command in bayesify_lines:
        passing = subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True
        )
        assert passing.returncode == 0, f"{block.where}: `{command}` should pass:\n{passing.stderr}"


def test_every_page_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text()
    for page in DOCS.glob("*.md"):
        if page.name != "index.md" and page.name not in OWNED_ELSEWHERE:
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_between_pages_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text())
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]+))?\)", text):
        linked = (page.parent / target).resolve() if target else page
        assert linked.exists(), f"{page.name}: a link to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", FENCE.sub("", linked.read_text()), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: no heading #{anchor} in {target}"


def test_the_cli_reference_names_every_option() -> None:
    from bayesify.cli import main

    reference = (DOCS / "cli.md").read_text()
    for name, command in main.commands.items():
        for param in command.params:
            for option in param.opts + param.secondary_opts:
                if option.startswith("--"):
                    mentioned = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", reference)
                    assert mentioned, f"docs/cli.md does not describe `bayesify {name} {option}`"
