"""Which files `bayesify rewrite PATH...` processes: black's discovery rules."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from bayesify.discover import DiscoveryError, discover, find_project_root


def make_tree(base: Path, *files: str, gitignore: str | None = None) -> None:
    """Create ``files`` (POSIX paths relative to ``base``) and, if given, ``base/.gitignore``."""
    for name in files:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    if gitignore is not None:
        (base / ".gitignore").write_text(gitignore)


def found(*paths: str, **options) -> list[str]:
    """Discovered files, relative to the current folder, as POSIX strings."""
    return [path.as_posix() for path in discover(list(paths or ["."]), **options)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project root (it has a pyproject.toml), also the current folder."""
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_walks_folders_for_py_and_pyi_files_sorted(project: Path) -> None:
    make_tree(
        project,
        "z.py",
        "a.py",
        "pkg/__init__.py",
        "pkg/sub/deep.py",
        "pkg/stubs.pyi",
        "notes.txt",
        "pkg/compiled.pyc",
        "pkg/ext.pyx",
        "pkg/py",
        "pkg/old.py.bak",
    )
    assert found() == ["a.py", "pkg/__init__.py", "pkg/stubs.pyi", "pkg/sub/deep.py", "z.py"]


def test_paths_keep_the_form_they_were_given_in(project: Path) -> None:
    make_tree(project, "src/pkg/a.py")
    assert found("src") == ["src/pkg/a.py"]
    assert discover([project / "src"]) == [project / "src/pkg/a.py"]


def test_default_excludes_skip_tool_and_build_folders(project: Path) -> None:
    make_tree(
        project,
        ".venv/lib/site.py",
        "venv/lib/site.py",
        ".git/hooks/hook.py",
        "build/lib/pkg.py",
        "dist/pkg.py",
        "node_modules/x.py",
        ".tox/py311/x.py",
        "pkg/build/generated.py",
        "builder/keep.py",
        "build.py",
        "pkg/dist_utils.py",
    )
    assert found() == ["build.py", "builder/keep.py", "pkg/dist_utils.py"]


@pytest.mark.parametrize(
    ("gitignore", "files", "expected"),
    [
        pytest.param(
            "# a comment: a.py\n\n   \n",
            ["a.py", "# a comment: a.py"],
            ["# a comment: a.py", "a.py"],
            id="comments and blank lines ignore nothing",
        ),
        pytest.param(
            "gen_*.py\n",
            ["gen_a.py", "pkg/gen_b.py", "pkg/real.py"],
            ["pkg/real.py"],
            id="star, unanchored pattern matches at any depth",
        ),
        pytest.param(
            "?.py\n",
            ["a.py", "pkg/b.py", "ab.py"],
            ["ab.py"],
            id="question mark is exactly one character",
        ),
        pytest.param(
            "[ab].py\nnum[0-9].py\nx[]].py\ny[\\]].py\n",
            ["a.py", "b.py", "c.py", "num7.py", "numx.py", "x].py", "xy.py", "y].py"],
            ["c.py", "numx.py", "xy.py"],
            id="bracket set, range and leading ]",
        ),
        pytest.param(
            "[!a].py\n",
            ["a.py", "b.py", "c.py"],
            ["a.py"],
            id="negated bracket",
        ),
        pytest.param(
            "/top.py\n",
            ["top.py", "pkg/top.py"],
            ["pkg/top.py"],
            id="leading slash anchors to the gitignore folder",
        ),
        pytest.param(
            "pkg/gen.py\n",
            ["pkg/gen.py", "other/pkg/gen.py", "pkg/keep.py"],
            ["other/pkg/gen.py", "pkg/keep.py"],
            id="inner slash anchors too",
        ),
        pytest.param(
            "tmp.py/\n",
            ["pkg/tmp.py", "tmp.py/inner.py", "lib/tmp.py/inner.py", "lib/ok.py"],
            ["lib/ok.py", "pkg/tmp.py"],
            id="trailing slash matches folders only",
        ),
        pytest.param(
            "**/migrations\n",
            ["migrations/m1.py", "app/migrations/m2.py", "app/models.py"],
            ["app/models.py"],
            id="leading double star",
        ),
        pytest.param(
            "legacy/**\n",
            ["legacy/a.py", "legacy/sub/b.py", "legacy.py", "src/legacy/c.py"],
            ["legacy.py", "src/legacy/c.py"],
            id="trailing double star",
        ),
        pytest.param(
            "docs/**/conf.py\n",
            ["docs/conf.py", "docs/a/b/conf.py", "other/conf.py", "docs/a/index.py"],
            ["docs/a/index.py", "other/conf.py"],
            id="inner double star matches zero or more folders",
        ),
        pytest.param(
            "*.py\n!keep.py\n",
            ["drop.py", "keep.py", "pkg/keep.py", "pkg/drop.py"],
            ["keep.py", "pkg/keep.py"],
            id="negation re-includes",
        ),
        pytest.param(
            "!keep.py\n*.py\n",
            ["keep.py", "drop.py"],
            [],
            id="the last matching rule wins",
        ),
        pytest.param(
            "vendor/\n!vendor/ok.py\n",
            ["vendor/ok.py", "ok.py"],
            ["ok.py"],
            id="a file in an ignored folder cannot be re-included",
        ),
        pytest.param(
            "\\#hash.py\n\\!bang.py\n",
            ["#hash.py", "!bang.py", "bang.py"],
            ["bang.py"],
            id="escaped hash and bang are literal",
        ),
        pytest.param(
            "a.py   \nspaced\\ \n",
            ["a.py", "spaced /x.py", "spaced/y.py"],
            ["spaced/y.py"],
            id="trailing spaces dropped unless escaped",
        ),
        pytest.param(
            "*.PY\n[.py\n",
            ["a.py", "[.py"],
            ["a.py"],
            id="case sensitive; an unclosed bracket is literal",
        ),
    ],
)
def test_gitignore_rules(project: Path, gitignore: str, files: list[str], expected: list[str]) -> None:
    make_tree(project, *files, gitignore=gitignore)
    assert found() == expected


def test_nested_gitignore_applies_to_its_subtree_and_overrides_parents(project: Path) -> None:
    make_tree(
        project,
        "x_gen.py",
        "local.py",
        "pkg/x_gen.py",
        "pkg/keep_gen.py",
        "pkg/local.py",
        "pkg/sub/local.py",
        "pkg/sub/y_gen.py",
        gitignore="*_gen.py\n",
    )
    (project / "pkg/.gitignore").write_text("!keep_gen.py\n/local.py\n")
    assert found() == ["local.py", "pkg/keep_gen.py", "pkg/sub/local.py"]


def test_parent_gitignore_applies_when_a_subfolder_is_given(project: Path) -> None:
    make_tree(project, "pkg/gen.py", "pkg/sub/gen_2.py", "pkg/real.py", gitignore="pkg/gen.py\n")
    (project / "pkg/.gitignore").write_text("sub/gen_*.py\n")
    assert found("pkg/sub") == []
    assert found("pkg") == ["pkg/real.py"]


def test_extend_exclude_adds_to_the_defaults(project: Path) -> None:
    make_tree(project, ".venv/x.py", "ignored.py", "legacy/old.py", "api_pb2.py", "app.py")
    (project / ".gitignore").write_text("ignored.py\n")
    assert found(extend_exclude=r"/legacy/|_pb2\.py$") == ["app.py"]


def test_exclude_replaces_the_defaults_and_gitignore_like_black(project: Path) -> None:
    make_tree(project, ".venv/x.py", "ignored.py", "legacy/old.py", "app.py", gitignore="ignored.py\n")
    assert found(exclude="/legacy/") == [".venv/x.py", "app.py", "ignored.py"]
    assert found(exclude="") == [".venv/x.py", "app.py", "ignored.py", "legacy/old.py"]


def test_excludes_see_folders_with_a_trailing_slash_relative_to_root(project: Path) -> None:
    make_tree(project, "generated/a.py", "pkg/generated/b.py", "generated.py")
    assert found(extend_exclude="^/generated/$") == ["generated.py", "pkg/generated/b.py"]


def test_excludes_are_relative_to_the_project_root_not_the_current_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(project, "src/gen/a.py", "src/app.py")
    monkeypatch.chdir(project / "src")
    assert found(extend_exclude="^/src/gen/") == ["app.py"]


def test_explicit_files_bypass_excludes_gitignore_and_include(project: Path) -> None:
    make_tree(project, ".venv/x.py", "build/y.py", "ignored.py", "script", gitignore="ignored.py\n")
    explicit = [".venv/x.py", "build/y.py", "ignored.py", "script"]
    assert found(*explicit, extend_exclude="script") == sorted(explicit)


def test_force_exclude_applies_to_explicit_files_and_walked_ones(project: Path) -> None:
    make_tree(project, "migrations/0001.py", "app.py", "pkg/migrations/0002.py")
    assert found("migrations/0001.py", "app.py", force_exclude="/migrations/") == ["app.py"]
    assert found(force_exclude="/migrations/") == ["app.py"]


def test_a_symlink_loop_terminates_and_lists_each_file_once(project: Path) -> None:
    make_tree(project, "a.py", "pkg/b.py")
    (project / "pkg/loop").symlink_to("..")
    (project / "self").symlink_to(".")
    assert found() == ["a.py", "pkg/b.py"]
    assert found("pkg") == ["pkg/b.py", "pkg/loop/a.py"]


def test_symlinks_are_followed_only_inside_the_root(project: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    make_tree(outside, "ext.py", "extpkg/e.py")
    make_tree(project, "common/shared.py", "vendor/lib/v.py", "src/app.py")
    (project / "src/shared.py").symlink_to("../common/shared.py")
    (project / "src/lib").symlink_to("../vendor/lib")
    (project / "src/ext.py").symlink_to(outside / "ext.py")
    (project / "src/extpkg").symlink_to(outside / "extpkg")
    (project / "src/dangling.py").symlink_to("../nowhere.py")
    assert found("src") == ["src/app.py", "src/lib/v.py", "src/shared.py"]


def test_a_file_reached_through_a_symlink_is_listed_under_its_own_path(project: Path) -> None:
    make_tree(project, "pkg/x.py")
    (project / "a_link").symlink_to("pkg")
    (project / "a_x.py").symlink_to("pkg/x.py")
    assert found() == ["pkg/x.py"]


def test_the_same_file_named_several_ways_is_listed_once(project: Path) -> None:
    make_tree(project, "pkg/a.py", "pkg/b.py")
    assert found(".", "pkg", "pkg/a.py", "./pkg/a.py") == ["pkg/a.py", "pkg/b.py"]
    assert len(found("pkg/b.py", str(project / "pkg/b.py"))) == 1


def test_a_missing_path_is_an_error_naming_it(project: Path) -> None:
    make_tree(project, "a.py")
    with pytest.raises(DiscoveryError, match=re.escape("no_such_dir/x.py")):
        discover(["a.py", "no_such_dir/x.py"])


def test_a_path_outside_the_given_root_is_an_error(project: Path) -> None:
    make_tree(project, "a/x.py", "b/y.py")
    with pytest.raises(DiscoveryError, match=r"b.*not inside the project root"):
        discover(["b"], root=project / "a")


def test_an_invalid_regex_is_an_error_naming_the_option(project: Path) -> None:
    with pytest.raises(DiscoveryError, match=r"--extend-exclude.*invalid regular expression"):
        discover(["."], extend_exclude="(unclosed")


def test_an_unreadable_folder_is_an_error_naming_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(project, "locked/a.py", "open/b.py")
    real_scandir = os.scandir

    def scandir_denying_locked(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    # chmod cannot lock root out, and tests may run as root.
    monkeypatch.setattr(os, "scandir", scandir_denying_locked)
    with pytest.raises(DiscoveryError, match=r"locked.*Permission denied"):
        discover(["."])


@pytest.mark.parametrize("marker", [".git", "pyproject.toml"])
def test_project_root_is_the_nearest_folder_with_a_marker(tmp_path: Path, marker: str) -> None:
    proj = tmp_path / "proj"
    make_tree(proj, "src/pkg/a.py", "tests/t.py", "src/pyproject.txt")
    if marker == ".git":
        (proj / ".git").mkdir()
    else:
        make_tree(proj, marker)
    assert find_project_root([proj / "src/pkg/a.py", proj / "tests"]) == proj
    assert find_project_root([proj / "src/pkg"]) == proj


def test_project_root_without_a_marker_is_the_common_folder(tmp_path: Path) -> None:
    make_tree(tmp_path, "a/x/1.py", "a/y/2.py")
    assert find_project_root([tmp_path / "a/x/1.py", tmp_path / "a/y"]) == tmp_path / "a"


def test_project_root_of_no_paths_starts_at_the_current_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    assert find_project_root([]) == project


def test_a_tree_of_3000_files_is_discovered_quickly(project: Path) -> None:
    gitignore = "".join(f"pattern_{index}_*.py\n" for index in range(100)) + "/site\n**/gen/**\n"
    make_tree(project, gitignore=gitignore)
    for package in range(30):
        folder = project / f"pkg{package}" / "sub"
        folder.mkdir(parents=True)
        (folder / ".gitignore").write_text("*_tmp.py\n")
        for module in range(100):
            (folder / f"mod{module}.py").touch()
    started = time.perf_counter()
    files = discover(["."])
    elapsed = time.perf_counter() - started
    assert len(files) == 3000
    # About 0.05 s on a laptop; the bound only catches per-file re-reading or quadratic work.
    assert elapsed < 2.0
