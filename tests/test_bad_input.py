"""Bad input, hostile input and faults, the way a user meets them: through the CLI.

Every case of docs/bad-input.md: the exit code, a message naming the file and line, no
Python traceback for a user's mistake, and nothing lost: every file that should not be
written keeps its bytes, and no temporary file is left behind. The CLI runs as a real
process (the console script); the faults that need timing (a file edited while bayesify
runs, Ctrl-C, a crash inside the rewrite) are simulated in-process.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from click.testing import CliRunner

import bayesify.engine
import bayesify.output
import bayesify.runner
from bayesify.cli import main
from bayesify.output import WriteError, write_atomically
from bayesify.spec import parse_spec

SCRIPT = Path(sys.executable).parent / "bayesify"
COMMAND = (
    [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", "from bayesify.cli import main; main()"]
)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def model(name: str = "Lin", shape: str = "2, 3", newline: str = "\n") -> str:
    return newline.join(
        [
            "import torch",
            "import torch.nn as nn",
            "",
            "",
            f"class {name}(nn.Module):",
            "    def __init__(self):",
            "        super().__init__()",
            f"        self.w = nn.Parameter(torch.randn({shape}))",
            "",
            "    def forward(self, x):",
            "        return x @ self.w",
            "",
        ]
    )


def prior_line(shape: str = "(2, 3)") -> re.Pattern[bytes]:
    """The line a selected ``self.w = nn.Parameter(torch.randn(2, 3))`` becomes."""
    return re.compile(
        rb"self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=" + re.escape(shape.encode()) + rb"\)\)"
    )


def spec(*classes: str) -> str:
    return "version: 1\npriors:\n" + "".join(f"  {name}.w: Normal(0, 1)\n" for name in classes)


def is_rewritten(data: bytes, name: str = "Lin", shape: str = "(2, 3)") -> bool:
    return f"class {name}(PyroModule):".encode() in data and bool(prior_line(shape).search(data))


class Run:
    def __init__(self, completed: subprocess.CompletedProcess[bytes]) -> None:
        self.code = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stderr\n{self.stderr}"


def cli(cwd: Path, *args: str, stdin: Optional[bytes] = None) -> Run:
    completed = subprocess.run([*COMMAND, *args], cwd=cwd, input=stdin, capture_output=True, timeout=120)
    return Run(completed)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_clean(run: Run, root: Path) -> None:
    """No traceback for a user's mistake, and no temporary file left behind."""
    assert "Traceback" not in run.stderr, run
    assert not [p for p in root.rglob("*") if p.name.endswith(".bayesify")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root (it has a pyproject.toml) with a spec selecting ``Lin.w``."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "priors.yaml").write_text(spec("Lin"))
    return tmp_path


# --- Source files that cannot be processed ------------------------------------------------


def test_a_file_that_does_not_parse_fails_alone(project: Path) -> None:
    (project / "priors.yaml").write_text(spec("A", "C"))
    (project / "a.py").write_text(model("A"))
    broken = model("B").replace("    def forward(self, x):", "    def forward(self, x:")
    (project / "b.py").write_text(broken)
    (project / "c.py").write_text(model("C"))

    run = cli(project, "rewrite", ".", "--priors", "priors.yaml")

    assert run.code == 123, run
    assert re.search(r"^b\.py:10:\d+: error BAY001: cannot parse", run.stderr, re.M), run
    assert "2 files rewritten, 0 unchanged, 1 failed" in run.stderr
    assert (project / "b.py").read_text() == broken
    assert is_rewritten((project / "a.py").read_bytes(), "A")
    assert is_rewritten((project / "c.py").read_bytes(), "C")
    assert_clean(run, project)


def test_a_file_that_does_not_parse_does_not_stop_the_others_its_spec_entries_included(
    project: Path,
) -> None:
    (project / "priors.yaml").write_text(spec("A", "B"))
    (project / "a.py").write_text(model("A"))
    (project / "b.py").write_text(model("B") + "def broken(:\n")

    run = cli(project, "rewrite", ".", "--priors", "priors.yaml")

    assert run.code == 123, run
    assert "b.py:12:" in run.stderr
    assert is_rewritten((project / "a.py").read_bytes(), "A")


def test_check_and_diff_report_a_file_that_does_not_parse(project: Path) -> None:
    (project / "a.py").write_text(model() + "x = (\n")
    before = snapshot(project)
    for mode in ("--check", "--diff"):
        run = cli(project, "rewrite", "a.py", "--priors", "priors.yaml", "--allow-unmatched", mode)
        assert run.code == 123, run
        assert "a.py:12:" in run.stderr
        assert run.stdout == b""
        assert snapshot(project) == before
        assert_clean(run, project)


@pytest.mark.parametrize("expression", ["1 + " * 20_000 + "1", "-" * 100_000 + "1"])
def test_a_file_too_deep_to_parse_fails_alone(project: Path, expression: str) -> None:
    (project / "priors.yaml").write_text(spec("A"))
    (project / "a.py").write_text(model("A"))
    deep = model("B") + f"x = {expression}\n"
    (project / "deep.py").write_text(deep)

    run = cli(project, "rewrite", ".", "--priors", "priors.yaml")

    assert run.code == 123, run
    assert "deep.py" in run.stderr
    assert (project / "deep.py").read_text() == deep
    assert is_rewritten((project / "a.py").read_bytes(), "A")
    assert_clean(run, project)


def test_standard_input_that_does_not_parse_is_given_back_unchanged(project: Path) -> None:
    source = (model() + "def broken(:\n").encode()
    run = cli(project, "rewrite", "-", "--priors", "priors.yaml", "--allow-unmatched", stdin=source)
    assert run.code == 123, run
    assert run.stdout == source
    assert "-:12:" in run.stderr
    assert_clean(run, project)


# --- Encodings --------------------------------------------------------------------------

LATIN_1 = (
    "# -*- coding: latin-1 -*-\n"
    + model().replace("class Lin(nn.Module):\n", 'class Lin(nn.Module):\n    """Café crème."""\n')
    + "# fin: déjà vu\n"
)


def test_a_latin1_file_with_a_coding_cookie_is_rewritten_and_stays_latin1(project: Path) -> None:
    path = project / "latin.py"
    path.write_bytes(LATIN_1.encode("latin-1"))

    run = cli(project, "rewrite", "latin.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    data = path.read_bytes()
    assert data.startswith(b"# -*- coding: latin-1 -*-\n")
    assert b'"""Caf\xe9 cr\xe8me."""' in data and data.endswith(b"# fin: d\xe9j\xe0 vu\n")
    assert is_rewritten(data)
    ast.parse(data)  # the declared encoding still reads it
    assert_clean(run, project)


def test_a_non_ascii_sibling_name_fits_a_latin1_file(project: Path) -> None:
    (project / "priors.yaml").write_text("version: 1\npriors:\n  Lin.w: Normal(λ, 1)\n", encoding="utf-8")
    path = project / "latin.py"
    path.write_bytes(LATIN_1.encode("latin-1"))

    run = cli(project, "rewrite", "latin.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    data = path.read_bytes()
    assert b'PyroSample(Prior(self, "Normal", "\\u03bb", 1, shape=(2, 3)))' in data
    ast.parse(data)  # read in its declared latin-1, which has no λ


def test_a_file_that_is_not_utf8_and_declares_nothing_fails_alone(project: Path) -> None:
    (project / "priors.yaml").write_text(spec("Lin", "A"))
    undeclared = LATIN_1.split("\n", 1)[1].encode("latin-1")  # the same, without its cookie
    (project / "undeclared.py").write_bytes(undeclared)
    (project / "a.py").write_text(model("A"))

    run = cli(project, "rewrite", ".", "--priors", "priors.yaml", "--allow-unmatched")

    assert run.code == 123, run
    assert re.search(r"^undeclared\.py:6:\d+: error BAY001: .*utf-8", run.stderr, re.M | re.I), run
    assert (project / "undeclared.py").read_bytes() == undeclared
    assert is_rewritten((project / "a.py").read_bytes(), "A")
    assert_clean(run, project)


def test_a_byte_order_mark_is_kept(project: Path) -> None:
    path = project / "bom.py"
    path.write_bytes(b"\xef\xbb\xbf" + model().encode())

    run = cli(project, "rewrite", "bom.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfimport torch\n") and data.count(b"\xef\xbb\xbf") == 1
    assert is_rewritten(data)


# --- Line endings -----------------------------------------------------------------------


def lines(data: bytes) -> list[bytes]:
    """Lines with their endings, split where Python splits them (\\r\\n, \\n or \\r)."""
    return re.findall(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", data)


def assert_kept_outside_rewritten_lines(before: bytes, after: bytes) -> None:
    """Every line of ``before`` that is not rewritten is in ``after``, byte for byte, in order."""
    rewritten = (b"class Lin(nn.Module):", b"self.w = nn.Parameter(")
    kept = [line for line in lines(before) if not any(mark in line for mark in rewritten)]
    remaining = iter(lines(after))
    missing = [line for line in kept if not any(line == other for other in remaining)]
    assert not missing, missing


def test_crlf_line_endings_are_kept_and_used_for_new_lines(project: Path) -> None:
    original = model(newline="\r\n").encode()
    path = project / "crlf.py"
    path.write_bytes(original)

    run = cli(project, "rewrite", "crlf.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    data = path.read_bytes()
    assert is_rewritten(data)
    assert all(line.endswith(b"\r\n") for line in lines(data))
    assert_kept_outside_rewritten_lines(original, data)


@pytest.mark.parametrize(
    "endings",
    [
        ["\r\n"] * 3 + ["\n"] * 9,  # a CRLF file edited by a tool that writes LF
        ["\n"] * 3 + ["\r\n"] * 9,
        ["\n", "\r\n"] * 6,
    ],
    ids=["crlf-then-lf", "lf-then-crlf", "alternating"],
)
def test_mixed_line_endings_are_kept_line_by_line(project: Path, endings: list[str]) -> None:
    original = "".join(line + ending for line, ending in zip(model().split("\n"), endings)).encode()
    path = project / "mixed.py"
    path.write_bytes(original)

    run = cli(project, "rewrite", "mixed.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    data = path.read_bytes()
    assert is_rewritten(data)
    ast.parse(data)
    assert_kept_outside_rewritten_lines(original, data)


def test_old_mac_line_endings_are_kept(project: Path) -> None:
    original = model(newline="\r").encode()
    path = project / "mac.py"
    path.write_bytes(original)

    run = cli(project, "rewrite", "mac.py", "--priors", "priors.yaml")

    data = path.read_bytes()
    if run.code == 0:
        assert is_rewritten(data) and data.endswith(b"\r") and b"\n" not in data
    else:
        assert data == original, run


# --- Writing: read-only files and folders, modes, links, owners ------------------------------


def test_a_read_only_file_is_left_alone_and_reported(project: Path) -> None:
    path = project / "ro.py"
    path.write_text(model())
    path.chmod(0o444)
    (project / "priors.yaml").write_text(spec("Lin", "A"))
    (project / "a.py").write_text(model("A"))
    try:
        run = cli(project, "rewrite", ".", "--priors", "priors.yaml")
        assert run.code == 123, run
        assert re.search(r"^ro\.py: error BAY002: .*read-only", run.stderr, re.M), run
        assert "1 file rewritten, 0 unchanged, 1 failed" in run.stderr
        assert path.read_text() == model()
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert is_rewritten((project / "a.py").read_bytes(), "A")
        assert_clean(run, project)
    finally:
        path.chmod(0o644)


def test_a_file_in_a_read_only_folder_is_left_alone_and_reported(project: Path) -> None:
    folder = project / "locked"
    folder.mkdir()
    (folder / "m.py").write_text(model())
    folder.chmod(0o555)
    try:
        run = cli(project, "rewrite", "locked", "--priors", "priors.yaml")
        assert run.code == 123, run
        assert re.search(r"^locked/m\.py: error BAY002: .*read-only", run.stderr, re.M), run
        assert (folder / "m.py").read_text() == model()
        assert sorted(p.name for p in folder.iterdir()) == ["m.py"]
        assert "Traceback" not in run.stderr
    finally:
        folder.chmod(0o755)


def test_mode_is_kept_and_a_symlinked_file_is_rewritten_through_its_link(project: Path) -> None:
    real = project / "real.py"
    real.write_text(model())
    real.chmod(0o751)
    (project / "link.py").symlink_to("real.py")

    run = cli(project, "rewrite", "link.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    assert (project / "link.py").is_symlink()
    assert is_rewritten(real.read_bytes())
    assert stat.S_IMODE(real.stat().st_mode) == 0o751


def umask_022() -> None:
    os.umask(0o022)


def test_the_out_mirror_keeps_each_files_mode(project: Path) -> None:
    (project / "src").mkdir()
    (project / "src" / "m.py").write_text(model())
    (project / "src" / "plain.py").write_text("x = 1\n")
    (project / "src" / "m.py").chmod(0o755)
    (project / "src" / "plain.py").chmod(0o640)
    before = snapshot(project / "src")

    completed = subprocess.run(
        [*COMMAND, "rewrite", "src", "--priors", "priors.yaml", "--out", "out"],
        cwd=project,
        capture_output=True,
        timeout=120,
        preexec_fn=umask_022,
    )

    assert completed.returncode == 0, completed.stderr.decode()
    assert snapshot(project / "src") == before
    assert is_rewritten((project / "out" / "m.py").read_bytes())
    assert stat.S_IMODE((project / "out" / "m.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((project / "out" / "plain.py").stat().st_mode) == 0o640


def test_a_new_file_follows_the_umask(tmp_path: Path) -> None:
    """mkstemp makes its files 0600; a starter spec or a mirrored file must not stay so."""
    previous = os.umask(0o027)
    try:
        write_atomically(tmp_path / "priors.yaml", b"version: 1\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "priors.yaml").stat().st_mode) == 0o640


def test_a_new_file_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="the folder .*missing does not exist"):
        write_atomically(tmp_path / "missing" / "priors.yaml", b"version: 1\n")


@pytest.mark.skipif(not IS_ROOT, reason="only root can give a file to another user")
def test_root_rewriting_a_users_file_keeps_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(b"old\n")
    os.chown(path, 65534, 65534)
    write_atomically(path, b"new\n", expected=b"old\n")
    assert path.read_bytes() == b"new\n"
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


# --- Symbolic link loops --------------------------------------------------------------------


def test_a_folder_symlink_loop_is_walked_once(project: Path) -> None:
    (project / "pkg" / "sub").mkdir(parents=True)
    (project / "pkg" / "sub" / "m.py").write_text(model())
    (project / "pkg" / "sub" / "up").symlink_to("..")
    (project / "pkg" / "self").symlink_to(".")

    run = cli(project, "rewrite", "pkg", "--priors", "priors.yaml")

    assert run.code == 0, run
    assert "1 file rewritten, 0 unchanged, 0 failed" in run.stderr
    assert is_rewritten((project / "pkg" / "sub" / "m.py").read_bytes())


def test_a_file_symlink_loop_named_on_the_command_line_is_a_usage_error(project: Path) -> None:
    (project / "a.py").symlink_to("b.py")
    (project / "b.py").symlink_to("a.py")
    (project / "m.py").write_text(model())
    before = snapshot(project)

    run = cli(project, "rewrite", "a.py", "m.py", "--priors", "priors.yaml")

    assert run.code == 2, run
    assert re.search(r"^a\.py: error BAY302: ", run.stderr, re.M), run
    assert snapshot(project) == before
    assert_clean(run, project)


def test_a_file_symlink_loop_is_called_a_loop(project: Path) -> None:
    (project / "a.py").symlink_to("a.py")
    run = cli(project, "rewrite", "a.py", "--priors", "priors.yaml")
    assert run.code == 2 and re.search(r"a\.py: .*(symbolic link|symlink)", run.stderr), run


def test_a_file_symlink_loop_in_a_folder_is_reported(project: Path) -> None:
    (project / "src").mkdir()
    (project / "src" / "m.py").write_text(model())
    (project / "src" / "loop.py").symlink_to("loop.py")

    run = cli(project, "rewrite", "src", "--priors", "priors.yaml")

    assert is_rewritten((project / "src" / "m.py").read_bytes())
    assert "src/loop.py" in run.stderr, run


# --- A file edited while bayesify runs; Ctrl-C; a crash ---------------------------------------


def test_a_file_edited_during_the_run_is_not_clobbered(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user saves the file in an editor after bayesify read it, before it writes it."""
    path = project / "m.py"
    path.write_text(model())
    edited = model().replace("return x @ self.w", "return (x @ self.w).relu()")
    rewrite_source = bayesify.runner.rewrite_source

    def rewrite_while_the_user_saves(source, job, spec):
        result = rewrite_source(source, job, spec)
        path.write_text(edited)
        return result

    monkeypatch.setattr(bayesify.runner, "rewrite_source", rewrite_while_the_user_saves)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["rewrite", "m.py", "--priors", "priors.yaml"])

    assert result.exit_code == 123, result.output
    assert "m.py: error BAY002: changed while bayesify was rewriting it; left as it is now" in result.output
    assert path.read_text() == edited
    assert not list(project.glob(".m.py.*"))


def test_write_atomically_compares_before_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(b"edited by the user\n")
    with pytest.raises(WriteError, match="changed while bayesify was rewriting it"):
        write_atomically(path, b"rewritten\n", expected=b"what bayesify read\n")
    assert path.read_bytes() == b"edited by the user\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]


def test_ctrl_c_while_writing_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(b"old\n")

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bayesify.output.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, b"new\n", expected=b"old\n")
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]


def test_a_crash_in_one_file_is_reported_and_the_others_are_rewritten(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "priors.yaml").write_text(spec("A", "B"))
    (project / "a.py").write_text(model("A"))
    (project / "b.py").write_text(model("B"))
    rewrite_source = bayesify.runner.rewrite_source

    def crash_on_b(source, job, spec):
        if job.path.endswith("b.py"):
            raise AssertionError("an internal invariant broke")
        return rewrite_source(source, job, spec)

    monkeypatch.setattr(bayesify.runner, "rewrite_source", crash_on_b)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["rewrite", ".", "--priors", "priors.yaml", "--allow-unmatched"])

    assert result.exit_code == 123, result.output
    assert re.search(
        r"b\.py: error BAY009: AssertionError: an internal invariant broke; .*report", result.output
    )
    assert (project / "b.py").read_text() == model("B")
    assert is_rewritten((project / "a.py").read_bytes(), "A")


def test_output_that_does_not_parse_is_never_written(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like black's safe mode: the rewritten code is parsed before it is written."""
    (project / "m.py").write_text(model())
    parse = ast.parse

    def parse_rejecting_rewrites(source, *args, **kwargs):
        if isinstance(source, bytes) and b"PyroSample" in source:  # the whole rewritten file
            raise SyntaxError("simulated", ("m.py", 8, 1, ""))
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(bayesify.engine.ast, "parse", parse_rejecting_rewrites)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["rewrite", "m.py", "--priors", "priors.yaml", "--allow-unmatched"])

    assert result.exit_code == 123, result.output
    assert "m.py:8: error BAY009: the rewritten code does not parse" in result.output
    assert "bug in bayesify" in result.output
    assert (project / "m.py").read_text() == model()


# --- Empty and huge files ---------------------------------------------------------------


def test_an_empty_file_stays_empty(project: Path) -> None:
    (project / "empty.py").write_bytes(b"")
    (project / "m.py").write_text(model())

    run = cli(project, "rewrite", ".", "--priors", "priors.yaml")

    assert run.code == 0, run
    assert (project / "empty.py").read_bytes() == b""
    assert "1 file rewritten, 1 unchanged, 0 failed" in run.stderr


def test_a_file_with_only_a_module_class_header_and_no_newline(project: Path) -> None:
    (project / "tiny.py").write_bytes(b"import torch.nn as nn\nclass Tiny(nn.Module): pass")
    run = cli(project, "rewrite", "tiny.py", "--priors", "priors.yaml", "--allow-unmatched")
    assert run.code == 0, run
    data = (project / "tiny.py").read_bytes()
    assert data.endswith(b"\nclass Tiny(PyroModule): pass")
    ast.parse(data)


def test_a_huge_file_is_rewritten_whole(project: Path) -> None:
    filler = "".join(f"# filler line {i:06d} {'.' * 60}\n" for i in range(40_000))
    table = "".join(f"TABLE_{i} = {i}\n" for i in range(20_000))
    original = (model() + filler + "\n\n" + model("Tail").split("\n\n\n", 1)[1] + table).encode()
    assert len(original) > 3_000_000
    (project / "priors.yaml").write_text(spec("Lin", "Tail"))
    path = project / "huge.py"
    path.write_bytes(original)

    run = cli(project, "rewrite", "huge.py", "--priors", "priors.yaml")

    assert run.code == 0, run
    data = path.read_bytes()
    assert is_rewritten(data) and is_rewritten(data, "Tail")
    assert data.endswith(table.encode()) and filler.encode() in data
    assert len(data) - len(original) < 300


# --- Specs that cannot be used ------------------------------------------------------------

SPEC_ERRORS = {
    "not-yaml": ("version: 1\npriors:\n  Lin.w: Normal(0, 1)\n  - oops\n", 4, "not valid YAML"),
    "list-at-top": ("- version: 1\n", 1, "must be a mapping"),
    "no-version": ("priors:\n  Lin.w: Normal(0, 1)\n", 1, "version: 1"),
    "version-2": ("version: 2\npriors:\n  Lin.w: Normal(0, 1)\n", 1, "version: 1"),
    "unknown-key": ("version: 1\nprior:\n  Lin.w: Normal(0, 1)\n", 2, "did you mean 'priors'?"),
    "unknown-distribution": ("version: 1\npriors:\n  Lin.w: Gausian(0, 1)\n", 3, "did you mean"),
    "unknown-constraint": ("version: 1\nconstraints:\n  Lin.w: postive\n", 3, "did you mean 'positive'?"),
    "wrong-arity": ("version: 1\npriors:\n  Lin.w: Normal(0)\n", 3, "Normal needs scale"),
    "non-literal": ("version: 1\npriors:\n  Lin.w: Normal(__import__('os').getcwd(), 1)\n", 3, "not allowed"),
    "python-tag": ("version: 1\npriors:\n  Lin.w: !!python/object/apply:os.getcwd []\n", 3, "tag"),
    "duplicate": ("version: 1\npriors:\n  Lin.w: Normal(0, 1)\n  Lin.w: Normal(0, 2)\n", 4, "given twice"),
    "bad-selector": ("version: 1\npriors:\n  Lin: Normal(0, 1)\n", 3, "Class.attr"),
    "empty": ("", 1, "empty"),
    "not-utf8": (b"version: 1\npriors:\n  Lin.w: Normal(0, 1)  # \xff\n", 3, "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(SPEC_ERRORS))
def test_a_spec_that_cannot_be_used_stops_everything(project: Path, case: str) -> None:
    text, line, expected = SPEC_ERRORS[case]
    (project / "priors.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    (project / "m.py").write_text(model())
    before = snapshot(project)

    run = cli(project, "rewrite", "m.py", "--priors", "priors.yaml")

    assert run.code == 2, run
    assert re.search(rf"^priors\.yaml:{line}: error BAY301: .*{re.escape(expected)}", run.stderr, re.M), run
    assert snapshot(project) == before
    assert_clean(run, project)


def test_a_missing_spec_is_named(project: Path) -> None:
    (project / "m.py").write_text(model())
    before = snapshot(project)
    run = cli(project, "rewrite", "m.py", "--priors", "missing.yaml")
    assert run.code == 2, run
    assert "missing.yaml: error BAY301: cannot read the spec: No such file or directory" in run.stderr
    assert snapshot(project) == before
    assert_clean(run, project)


def test_plan_and_init_report_spec_errors_the_same_way(project: Path) -> None:
    (project / "priors.yaml").write_text("version: 1\npriors:\n  Lin.w: Normal(0, 1, 2)\n")
    (project / "m.py").write_text(model())
    before = snapshot(project)
    run = cli(project, "plan", "m.py", "--priors", "priors.yaml")
    assert run.code == 2, run
    assert (
        "priors.yaml:3: error BAY301: priors: Lin.w: Normal takes at most 2 positional arguments"
        in run.stderr
    )
    assert not run.stdout, "plan says its errors where every command does: on standard error"
    assert snapshot(project) == before
    assert_clean(run, project)


def test_a_selector_that_matches_nothing_stops_everything(project: Path) -> None:
    (project / "priors.yaml").write_text(spec("Lin") + "  Lni.w: Normal(0, 1)\n")
    (project / "m.py").write_text(model())
    before = snapshot(project)

    run = cli(project, "rewrite", "m.py", "--priors", "priors.yaml")

    assert run.code == 2, run
    assert re.search(
        r"^priors\.yaml:4: error BAY205: priors entry 'Lni\.w' selects no parameter", run.stderr, re.M
    )
    assert "--allow-unmatched" in run.stderr
    assert snapshot(project) == before
    assert_clean(run, project)

    run = cli(project, "rewrite", "m.py", "--priors", "priors.yaml", "--allow-unmatched")
    assert run.code == 0, run
    assert is_rewritten((project / "m.py").read_bytes())


# --- Unusual but valid constructs -------------------------------------------------------------

UNUSUAL = {
    "match_statement": (
        """\
import torch
import torch.nn as nn


class Matcher(nn.Module):
    def __init__(self, mode="wide"):
        super().__init__()
        match mode:
            case "wide":
                self.w = nn.Parameter(torch.randn(4, 8))
            case _:
                self.w = nn.Parameter(torch.randn(4, 2))

    def forward(self, x):
        match x.dim():
            case 1:
                return self.w.sum()
            case _:
                return x @ self.w
""",
        "Matcher",
        [
            r"^class Matcher\(PyroModule\):$",
            r"^                self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=\(4, 8\)\)\)$",
            r"^                self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=\(4, 2\)\)\)$",
            r"^        match x\.dim\(\):$",
        ],
    ),
    "decorated_class": (
        """\
import functools

import torch
from torch import nn


def registered(cls):
    return cls


@registered
@functools.wraps(registered, updated=())
class Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))
""",
        "Decorated",
        [
            r"^@registered$",
            r"^@functools\.wraps\(registered, updated=\(\)\)$",
            r"^class Decorated\(PyroModule\):$",
        ],
    ),
    "nested_classes": (
        """\
import torch
import torch.nn as nn


class Outer(nn.Module):
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4))

    def __init__(self):
        super().__init__()
        self.inner = Outer.Inner()


def factory():
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(5))

    return Local()
""",
        "Inner",
        [
            r"^class Outer\(PyroModule\):$",
            r"^    class Inner\(PyroModule\):$",
            r"^            self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=4\)\)$",
            r"^    class Local\(PyroModule\):$",
        ],
    ),
    "conditional_classes": (
        """\
import torch
import torch.nn as nn

if torch.cuda.is_available():
    class Cond(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(5))
else:
    class Cond(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(6))
""",
        "Cond",
        [
            r"^    class Cond\(PyroModule\):$",
            r"^            self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=5\)\)$",
            r"^            self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=6\)\)$",
        ],
    ),
    "old_style_super": (
        """\
import torch
import torch.nn as nn


class OldSuper(nn.Module):
    def __init__(self):
        super(OldSuper, self).__init__()
        self.w = nn.Parameter(torch.randn(2, 3))
""",
        "OldSuper",
        [r"^class OldSuper\(PyroModule\):$", r"^        super\(OldSuper, self\)\.__init__\(\)$"],
    ),
    "metaclass": (
        """\
import abc

import torch
import torch.nn as nn


class WithMeta(nn.Module, metaclass=abc.ABCMeta):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(7))

    @abc.abstractmethod
    def describe(self):
        ...


class Concrete(WithMeta):
    def describe(self):
        return "concrete"
""",
        "WithMeta",
        [
            r"^class WithMeta\(PyroModule, metaclass=pyro_metaclass\(abc\.ABCMeta\)\):$",
            r"^class Concrete\(WithMeta\):$",
        ],
    ),
    "dataclass": (
        """\
import dataclasses

import torch
import torch.nn as nn


@dataclasses.dataclass(eq=False)
class DC(nn.Module):
    n: int = 3

    def __post_init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(self.n))
""",
        "DC",
        [
            r"^@dataclasses\.dataclass\(eq=False\)$",
            r"^class DC\(PyroModule\):$",
            r"^    n: int = 3$",
            r"^        self\.w = PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=self\.n\)\)$",
        ],
    ),
    "typing_generic": (
        """\
from typing import Generic, TypeVar

import torch
import torch.nn as nn

T = TypeVar("T")


class Gen(nn.Module, Generic[T]):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8))
""",
        "Gen",
        [
            r"^class Gen\(PyroModule, Generic\[T\], metaclass=pyro_metaclass_of\(PyroModule, Generic\[T\]\)\):$"
        ],
    ),
    "annotated_assignment": (
        """\
import torch
import torch.nn as nn


class Annotated(nn.Module):
    w: nn.Parameter

    def __init__(self):
        super().__init__()
        self.w: nn.Parameter = nn.Parameter(torch.randn(2, 3))
""",
        "Annotated",
        [
            r"^    w: nn\.Parameter$",
            r"^        self\.w: .*= PyroSample\(Prior\(self, \"Normal\", 0, 1, shape=\(2, 3\)\)\)$",
        ],
    ),
}


@pytest.fixture(scope="module")
def unusual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    """All the unusual files rewritten in one run, then a second run over the result."""
    root = tmp_path_factory.mktemp("unusual")
    (root / "pyproject.toml").write_text("")
    (root / "priors.yaml").write_text(spec(*(name for _, name, _ in UNUSUAL.values())))
    for case, (source, _, _) in UNUSUAL.items():
        (root / f"{case}.py").write_text(source)
    first = cli(root, "rewrite", ".", "--priors", "priors.yaml")
    rewritten = snapshot(root)
    second = cli(root, "rewrite", ".", "--priors", "priors.yaml", "--check")
    assert snapshot(root) == rewritten
    return root, first, second


def test_unusual_constructs_are_all_rewritten_in_one_run(unusual: tuple[Path, Run, Run]) -> None:
    _, first, second = unusual
    assert first.code == 0, first
    assert f"{len(UNUSUAL)} files rewritten, 0 unchanged, 0 failed" in first.stderr
    assert "Traceback" not in first.stderr
    assert second.code == 0, second  # idempotent: a second run finds nothing to do
    assert f"0 files would be rewritten, {len(UNUSUAL)} unchanged" in second.stderr


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_an_unusual_construct_is_rewritten_correctly(unusual: tuple[Path, Run, Run], case: str) -> None:
    root = unusual[0]
    _, name, expected = UNUSUAL[case]
    output = (root / f"{case}.py").read_text()
    ast.parse(output)
    for pattern in expected:
        assert re.search(pattern, output, re.M), f"{pattern!r} not in:\n{output}"
    assert re.search(r"^from pyro\.nn import .*\bPyroModule\b", output, re.M)
    assert re.search(rf"^(    )*class {name}\b.*PyroModule", output, re.M)
    assert "PyroSample(Prior(self" in output


def _import(path: Path):
    module_spec = importlib.util.spec_from_file_location(f"unusual_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _sampled_w(module) -> tuple[str, tuple[int, ...]]:
    import pyro
    import pyro.poutine as poutine
    from pyro.nn import pyro_method

    pyro.clear_param_store()
    trace = poutine.trace(pyro_method(lambda self: self.w)).get_trace(module)
    (name,) = [n for n, site in trace.nodes.items() if site["type"] == "sample"]
    return name, tuple(trace.nodes[name]["value"].shape)


@pytest.mark.parametrize(
    "case, build, shape",
    [
        ("match_statement", lambda m: m.Matcher("narrow"), (4, 2)),
        ("decorated_class", lambda m: m.Decorated(), (2, 3)),
        ("nested_classes", lambda m: m.Outer.Inner(), (4,)),
        ("conditional_classes", lambda m: m.Cond(), (6,)),
        ("old_style_super", lambda m: m.OldSuper(), (2, 3)),
        ("dataclass", lambda m: m.DC(n=4), (4,)),
        ("typing_generic", lambda m: m.Gen[int](), (8,)),  # parametrised as typing does
        ("annotated_assignment", lambda m: m.Annotated(), (2, 3)),
    ],
)
def test_an_unusual_construct_runs_as_a_pyro_module(
    unusual: tuple[Path, Run, Run], case: str, build, shape: tuple[int, ...]
) -> None:
    pytest.importorskip("pyro")
    module = build(_import(unusual[0] / f"{case}.py"))
    assert _sampled_w(module) == ("w", shape)


def test_a_module_with_a_metaclass_still_imports(unusual: tuple[Path, Run, Run]) -> None:
    pytest.importorskip("pyro")
    module = _import(unusual[0] / "metaclass.py")
    assert _sampled_w(module.Concrete()) == ("w", (7,))


PEP_695 = """\
import torch
import torch.nn as nn


class Typed[T](nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))
"""


@pytest.mark.xfail(
    sys.version_info < (3, 12),
    strict=True,
    reason="the class index and the output check use the running Python's ast, which cannot "
    "parse PEP 695 generics before 3.12 (libcst can): the file fails with 'invalid syntax'",
)
def test_pep_695_generics_are_rewritten(project: Path) -> None:
    (project / "priors.yaml").write_text(spec("Typed"))
    (project / "typed.py").write_text(PEP_695)

    run = cli(project, "rewrite", "typed.py", "--priors", "priors.yaml")

    assert "Traceback" not in run.stderr
    assert run.code == 0, run
    data = (project / "typed.py").read_bytes()
    assert b"class Typed[T](PyroModule):" in data and prior_line().search(data)
    second = cli(project, "rewrite", "typed.py", "--priors", "priors.yaml", "--check")
    assert second.code == 0, second


def test_pep_695_generics_fail_clearly_where_python_cannot_read_them(project: Path) -> None:
    """Whatever the Python, the file is never damaged and any failure names its line."""
    (project / "priors.yaml").write_text(spec("Typed"))
    (project / "typed.py").write_text(PEP_695)
    run = cli(project, "rewrite", "typed.py", "--priors", "priors.yaml", "--allow-unmatched")
    assert "Traceback" not in run.stderr, run
    if run.code != 0:
        assert run.code == 123 and "typed.py:5:" in run.stderr, run
        assert (project / "typed.py").read_text() == PEP_695
    assert_clean(run, project)


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs patch")
def test_diff_of_unusual_bytes_applies_with_patch(project: Path, tmp_path_factory) -> None:
    """--diff speaks bytes: BOM, latin-1, CRLF, form feeds and a missing final newline apply."""
    files = {
        "bom.py": b"\xef\xbb\xbf" + model().encode(),
        "latin.py": LATIN_1.encode("latin-1"),
        "crlf.py": model(newline="\r\n").encode(),
        "formfeed.py": model().replace("\n\n\nclass", "\n\x0c\n# a\x0cb\x1cc \u2028 d\n\nclass").encode(),
        "noeol.py": model().rstrip("\n").encode(),
    }
    for name, data in files.items():
        (project / name).write_bytes(data)
    copy = tmp_path_factory.mktemp("patched")
    shutil.copytree(project, copy, dirs_exist_ok=True)

    diff = cli(project, "rewrite", *files, "--priors", "priors.yaml", "--diff")
    assert diff.code in (0, 1), diff
    assert snapshot(project) == snapshot(copy)  # --diff writes nothing
    inplace = cli(project, "rewrite", *files, "--priors", "priors.yaml")
    assert inplace.code == 0, inplace

    patched = subprocess.run(["patch", "-p0", "--quiet"], cwd=copy, input=diff.stdout, capture_output=True)
    assert patched.returncode == 0, patched.stdout + patched.stderr
    for name in files:
        assert (copy / name).read_bytes() == (project / name).read_bytes(), name


def test_a_worker_that_dies_fails_its_file_alone(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The native parser can overflow its stack and kill a worker process: that file fails,
    with a message, and the run goes on with the others in processes of their own."""
    for number in range(10):  # enough files for a process pool
        (project / f"m{number}.py").write_text(model())
    real = bayesify.runner.rewrite_source

    def dies_on_m3(source, job, spec):
        if job.path.endswith("m3.py"):
            os._exit(70)  # as a segfault would: no exception, no cleanup
        return real(source, job, spec)

    monkeypatch.setattr(bayesify.runner, "rewrite_source", dies_on_m3)
    files = sorted(project.glob("m*.py"))
    result = bayesify.runner.run(files, parse_spec(spec("Lin"), "priors.yaml"), jobs=2)
    failed = {Path(r.path).name: r.error for r in result.failed}
    assert list(failed) == ["m3.py"] and "crashed its worker process" in failed["m3.py"].message
    assert len(result.changed) == 9
