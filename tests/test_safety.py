"""What bayesify promises an unlucky user and an attacker (SPEC.md, "Bad input", security).

A file saved during a run, two runs at once, a kill at any moment, a hostile ``--out``
folder, a damaged or planted cache, a file too deep for the parsers, a named pipe: each is
tried the way it happens, mostly through the real command in a process of its own, and the
test checks the promise: every file ends original, cleanly rewritten or reported; nothing is
written outside the tree; no temporary file stays; nothing read back runs code.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_input import COMMAND, cli, is_rewritten, model, snapshot

import bayesify.cache
import bayesify.runner
from bayesify.cache import NO_CACHE, Cache, cache_folder
from bayesify.cli import main
from bayesify.spec import parse_spec

LINUX = sys.platform.startswith("linux")
PRIORS = 'version: 1\npriors:\n  "*.w": Normal(0, 1)\n'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with a spec that selects ``w`` of every class, and a cache of its own."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("")
    (root / "priors.yaml").write_text(PRIORS)
    monkeypatch.setenv("BAYESIFY_CACHE_DIR", str(tmp_path / "cache"))
    return root


def models(root: Path, count: int) -> dict[str, bytes]:
    for number in range(count):
        (root / f"m{number}.py").write_text(model(f"M{number}"))
    return {f"m{number}.py": model(f"M{number}").encode() for number in range(count)}


def temporaries(*folders: Path) -> list[Path]:
    return [
        path
        for folder in folders
        if folder.exists()
        for path in folder.rglob("*")
        if path.name.endswith(".bayesify") or path.name.startswith(".cache-")
    ]


def clean_rewrites(sources: dict[str, bytes], spec_text: str) -> dict[bytes, bytes]:
    """Each source's rewrite, made in-process on a fresh copy: the only rewrite allowed."""
    spec_ = parse_spec(spec_text, "priors.yaml")
    rewrites = {}
    for source in set(sources.values()):
        result = bayesify.runner.run_source(source, spec_)
        rewrites[source] = result.results[0].rewritten or source
    return rewrites


# --- A file that changes between planning and writing (item 2) --------------------------------


def test_a_file_saved_after_planning_is_reported_left_alone_and_never_cached(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 11: a class inserted above another while bayesify plans used to give the new
    class the other's prior, exit 0, and a cache entry that wrote the mangled file back."""
    path = project / "m.py"
    original = model("Lin")
    path.write_text(original)
    edited = original.replace(
        "class Lin(nn.Module):", "class New(nn.Module):\n    pass\n\n\nclass Lin(nn.Module):"
    )
    index_file = bayesify.runner._index_file

    def index_then_the_user_saves(name: str):
        answer = index_file(name)
        path.write_text(edited)
        return answer

    monkeypatch.setattr(bayesify.runner, "_index_file", index_then_the_user_saves)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["rewrite", "m.py"])

    assert result.exit_code == 123, result.output
    assert "m.py: error BAY002: changed while bayesify was rewriting it; left as it is now" in result.output
    assert path.read_text() == edited
    monkeypatch.setattr(bayesify.runner, "_index_file", index_file)
    path.write_text(original)  # `git checkout m.py`: the cached run must not bring back anything stale
    again = cli(project, "rewrite", "m.py")
    assert again.code == 0, again
    assert path.read_bytes() == clean_rewrites({"m.py": original.encode()}, PRIORS)[original.encode()]


def test_two_runs_and_a_racing_editor_leave_every_file_original_rewritten_or_reported(project: Path) -> None:
    sources = models(project, 16)
    edits = {
        name: data.replace(b"class M", b"class Added(nn.Module):\n    pass\n\n\nclass M", 1)
        for name, data in sources.items()
    }
    stop = threading.Event()
    edited: set[str] = set()

    def editor() -> None:
        chooser = random.Random(11)
        while not stop.is_set():
            name = chooser.choice(sorted(sources))
            if name not in edited:
                temporary = project / f".{name}.editor"
                temporary.write_bytes(edits[name])
                os.replace(temporary, project / name)  # as editors save: atomically
                edited.add(name)
            time.sleep(chooser.uniform(0.01, 0.15))

    thread = threading.Thread(target=editor)
    runs = [
        subprocess.Popen([*COMMAND, "rewrite", ".", "-j", "2"], cwd=project, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    thread.start()
    try:
        outputs = [run.communicate(timeout=120)[1].decode() for run in runs]
    finally:
        stop.set()
        thread.join()

    allowed_rewrites = clean_rewrites({**sources, **{f"+{n}": e for n, e in edits.items()}}, PRIORS)
    for run, stderr in zip(runs, outputs):
        assert run.returncode in (0, 123) and "Traceback" not in stderr, stderr
        assert all(
            "changed while bayesify was rewriting it" in line
            for line in stderr.splitlines()
            if "error" in line
        )
    for name, original in sources.items():
        data = (project / name).read_bytes()
        versions = [original] + ([edits[name]] if name in edited else [])
        assert data in versions or data in [allowed_rewrites[v] for v in versions], name
    assert not temporaries(project)


# --- Kills at any moment (items 5 and 7) ------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not LINUX, reason="needs /proc to find the workers")
@pytest.mark.parametrize("number", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_main_process_ends_its_workers_and_closes_the_pipes(project: Path, number: int) -> None:
    """`bayesify … | tee` and CI steps wait for standard output to close: no orphan may hold it."""
    models(project, 40)
    run = subprocess.Popen(
        [*COMMAND, "rewrite", ".", "-j", "2", "--no-cache"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not children_of(run.pid) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = children_of(run.pid)
    if not workers:
        pytest.skip("the run ended before its workers could be seen")
    run.send_signal(number)
    run.communicate(timeout=20)  # both pipes closed: no worker holds them
    deadline = time.monotonic() + 10
    while any(alive(worker) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(worker) for worker in workers)


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


@pytest.mark.parametrize(
    "number", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"]
)
def test_a_kill_at_any_moment_leaves_whole_files_and_a_rerun_finishes_the_job(
    project: Path, number: int, tmp_path: Path
) -> None:
    sources = models(project, 12)
    rewrites = clean_rewrites(sources, PRIORS)
    chooser = random.Random(number)
    for _ in range(2):
        run = subprocess.Popen([*COMMAND, "rewrite", ".", "-j", "2"], cwd=project, stderr=subprocess.PIPE)
        time.sleep(chooser.uniform(0.1, 2.0))
        run.send_signal(number)
        _, stderr = run.communicate(timeout=60)
        assert "Traceback" not in stderr.decode(), stderr.decode()
        if run.returncode == 130:
            assert stderr.decode().strip().endswith("bayesify: interrupted")
        for name, original in sources.items():
            assert (project / name).read_bytes() in (original, rewrites[original]), name
        if number != signal.SIGKILL:
            assert not temporaries(project, tmp_path / "cache")
    # What a SIGKILL at the worst moment leaves: temporary files of a process that is gone.
    stale = [
        project / f".m0.py.{dead_pid()}-0badc0de.bayesify",
        tmp_path / "cache" / f".cache-{dead_pid()}-0badc0de.tmp",
    ]
    stale[1].parent.mkdir(exist_ok=True)
    for path in stale:
        path.write_bytes(b"half")
    (project / "m0.py").write_bytes(sources["m0.py"])  # so that the re-run writes into the folder
    again = cli(project, "rewrite", ".")
    assert again.code == 0, again
    assert all((project / name).read_bytes() == rewrites[original] for name, original in sources.items())
    assert not temporaries(project, tmp_path / "cache")


def test_early_ctrl_c_is_one_line_and_exit_130(project: Path) -> None:
    models(project, 12)
    for delay in (0.2, 0.3, 0.45):
        run = subprocess.Popen([*COMMAND, "rewrite", ".", "--check"], cwd=project, stderr=subprocess.PIPE)
        time.sleep(delay)
        run.send_signal(signal.SIGINT)
        stderr = run.communicate(timeout=60)[1].decode()
        if "init_import_site" in stderr:
            continue  # Python's own start-up, before any code of bayesify runs: out of its reach
        assert "Traceback" not in stderr, stderr
        if run.returncode == 130:
            assert stderr == "bayesify: interrupted\n"


def test_an_interrupted_pool_has_ended_its_thread_without_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a pooled pass: the pool's own thread must be gone before the interrupt
    goes on, and must end cleanly. Otherwise Python's exit hook races it (a traceback about a
    bad file descriptor) or it fails on cancelled work (a thread's traceback), printed after
    "bayesify: interrupted". A kill at a random moment shows these only now and then."""
    errors: list = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    before = set(threading.enumerate())

    def interrupt(item: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bayesify.runner._map(time.sleep, [0.02] * 64, 2, parse_spec(PRIORS, "p"), print, interrupt)
    assert set(threading.enumerate()) == before
    assert not errors


# --- --out never writes through a symbolic link (item 3) --------------------------------------


@pytest.fixture
def source_and_elsewhere(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    (project / "src" / "sub").mkdir(parents=True)
    (project / "src" / "m.py").write_text(model("M"))
    (project / "src" / "sub" / "s.py").write_text(model("S"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.py").write_text("precious = True\n")
    return project / "src", elsewhere


def test_out_refuses_a_linked_file_a_linked_folder_or_a_link_to_the_sources(
    project: Path, source_and_elsewhere
) -> None:
    src, elsewhere = source_and_elsewhere
    before = {**snapshot(src), **{f"elsewhere/{k}": v for k, v in snapshot(elsewhere).items()}}
    (project / "out").mkdir()
    (project / "out" / "m.py").symlink_to(elsewhere / "keep.py")
    (project / "out2").mkdir()
    (project / "out2" / "sub").symlink_to(elsewhere)
    (project / "twin").symlink_to("src")
    cases = {
        "out": "out/m.py: error BAY002: a symbolic link",
        "out2": "out2/sub: error BAY002: a symbolic link",
        "twin": "twin: error BAY002: a symbolic link",
    }
    for out, message in cases.items():
        run = cli(project, "rewrite", "src", "--out", out)
        assert run.code == 123, run
        assert message in run.stderr and "Traceback" not in run.stderr, run
        assert {**snapshot(src), **{f"elsewhere/{k}": v for k, v in snapshot(elsewhere).items()}} == before
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.py"]


def test_a_link_on_the_command_line_to_outside_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.py").write_text(model("M"))
    (project / "link.py").symlink_to(outside / "m.py")
    (project / "linked").symlink_to(outside)
    for name in ("link.py", "linked"):
        run = cli(project, "rewrite", name)
        assert run.code == 2, run
        assert re.search(
            rf"^{name}: error BAY302: a symbolic link to .*outside the project root", run.stderr, re.M
        ), run
    assert (outside / "m.py").read_text() == model("M")


# --- Parsers and odd files (items 4 and 9) -----------------------------------------------------

DEEP = (
    "import torch.nn as nn\n\n\nclass D(nn.Module):\n    pass\n\n\nx = "
    + "(" * 5000
    + "1"
    + ")" * 5000
    + "\n"
)


@pytest.mark.parametrize("jobs, good", [(1, 1), (2, 12)])
def test_deep_nesting_fails_its_file_alone(project: Path, jobs: int, good: int) -> None:
    sources = models(project, good)
    (project / "deep.py").write_text(DEEP)
    run = cli(project, "rewrite", ".", "-j", str(jobs))
    assert run.code == 123, run
    assert re.search(
        r"^deep\.py:\d+:\d+: error BAY001: cannot parse: too many nested parentheses$", run.stderr, re.M
    ), run
    assert "Traceback" not in run.stderr
    assert (project / "deep.py").read_text() == DEEP
    assert all(is_rewritten((project / name).read_bytes(), f"M{name[1:-3]}") for name in sources)


def test_a_named_pipe_is_skipped_not_waited_on(project: Path) -> None:
    models(project, 1)
    os.mkfifo(project / "pipe.py")
    run = cli(project, "rewrite", ".")
    assert run.code == 0, run
    assert re.search(r"^(\./)?pipe\.py: warning BAY208: not a regular file", run.stderr, re.M), run
    assert is_rewritten((project / "m0.py").read_bytes(), "M0")
    named = cli(project, "rewrite", "pipe.py")
    assert named.code == 2 and "pipe.py: error BAY302: not a regular file" in named.stderr, named


def test_an_invalid_byte_in_a_comment_is_not_utf8_on_its_line(project: Path) -> None:
    source = model("M").encode().replace(b"\n\n\nclass", b"\n# caf\xe9\n\nclass")
    (project / "m.py").write_bytes(source)
    run = cli(project, "rewrite", "m.py")
    assert run.code == 123, run
    assert "m.py:3: error BAY001: not UTF-8 (byte 0xe9" in run.stderr and "bug" not in run.stderr, run
    assert (project / "m.py").read_bytes() == source


# --- The cache (items 6 and 7) ----------------------------------------------------------------

CACHE_SPEC = PRIORS


@pytest.fixture(scope="module")
def cached_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, dict]:
    """A tree, a cache file made by a real run over it, and what a run without cache gives."""
    root = tmp_path_factory.mktemp("cached")
    (root / "base.py").write_text(model("Base"))
    (root / "child.py").write_text(
        "from base import Base\n\n\nclass Child(Base):\n    def show(self):\n        return self.w\n"
    )
    files = sorted(root.glob("*.py"))
    spec_ = parse_spec(CACHE_SPEC, "priors.yaml")
    cache = Cache(root / "cache.json")
    bayesify.runner.run(files, spec_, jobs=1, cache=cache)
    return root, (root / "cache.json").read_bytes(), outcome(bayesify.runner.run(files, spec_, jobs=1))


def outcome(result) -> dict:
    return {
        "rewritten": [r.rewritten for r in result.results],
        "errors": [r.error for r in result.results],
        "sites": [(s.path, s.line, s.name, s.outcome) for s in result.sites],
        "warnings": result.warnings,
    }


def run_with_cache_file(root: Path, data: bytes, path: Path) -> dict:
    path.write_bytes(data)
    spec_ = parse_spec(CACHE_SPEC, "priors.yaml")
    return outcome(bayesify.runner.run(sorted(root.glob("*.py")), spec_, jobs=1, cache=Cache(path)))


def test_the_cache_is_json_with_a_checksum(cached_tree) -> None:
    _, data, _ = cached_tree
    header, body = data.split(b"\n", 1)
    assert json.loads(header) == {"format": bayesify.cache.FORMAT, "sha256": bayesify.cache.digest(body)}
    root = cached_tree[0]
    assert set(json.loads(body)) == {str(root / "base.py"), str(root / "child.py"), "run"}


def planted(data: bytes, seed: int, value) -> bytes:
    """The cache with ``value`` planted somewhere in its entries, and a checksum that fits."""
    body = json.dumps(_mutate(json.loads(data.split(b"\n", 1)[1]), random.Random(seed), value)).encode()
    return (
        json.dumps({"format": bayesify.cache.FORMAT, "sha256": bayesify.cache.digest(body)}).encode()
        + b"\n"
        + body
    )


def test_a_planted_pickle_runs_nothing(cached_tree, tmp_path: Path) -> None:
    root, _, expected = cached_tree
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    assert run_with_cache_file(root, pickle.dumps(Payload()), tmp_path / "cache.json") == expected
    assert not marker.exists()


def _mutate(value, chooser: random.Random, replacement):
    """``value`` with one place somewhere inside it replaced."""
    if isinstance(value, dict) and value and chooser.random() < 0.8:
        key = chooser.choice(sorted(value))
        return {**value, key: _mutate(value[key], chooser, replacement)}
    if isinstance(value, list) and value and chooser.random() < 0.8:
        position = chooser.randrange(len(value))
        return [*value[:position], _mutate(value[position], chooser, replacement), *value[position + 1 :]]
    return replacement


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    damage=st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(0, 7)),
        st.tuples(st.just("cut"), st.integers(0, 10**9), st.just(0)),
        st.tuples(st.just("plant"), st.integers(0, 10**9), JSON_VALUES),
    )
)
def test_any_damage_to_the_cache_is_a_miss(cached_tree, tmp_path: Path, damage) -> None:
    """Flipped bits, a cut file, a planted value of any shape anywhere: the run gives what a
    run without cache gives, and never raises."""
    root, data, expected = cached_tree
    kind, where, detail = damage
    if kind == "flip":
        position = where % len(data)
        damaged = data[:position] + bytes([data[position] ^ (1 << detail)]) + data[position + 1 :]
    elif kind == "cut":
        damaged = data[: where % len(data)]
    else:  # a value planted by hand, the checksum left as it was
        damaged = data.split(b"\n", 1)[0] + b"\n" + planted(data, where, detail).split(b"\n", 1)[1]
    assert run_with_cache_file(root, damaged, tmp_path / "cache.json") == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 10**9), value=JSON_VALUES)
def test_a_planted_cache_with_a_valid_checksum_never_breaks_a_run(
    cached_tree, tmp_path: Path, seed: int, value
) -> None:
    """Someone who can write the cache folder can make its answers wrong (as they could edit
    the sources), never make bayesify raise or run anything: each record is checked."""
    root, data, _ = cached_tree
    result = run_with_cache_file(root, planted(data, seed, value), tmp_path / "cache.json")
    assert len(result["errors"]) == 2


SOURCE_LINES = st.lists(
    st.sampled_from([b"x = 1\n", b"class A(nn.Module):\r\n", b"\xff\xfe caf\xe9\r", b"", b"    pass", b"\n"]),
    max_size=12,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(original=SOURCE_LINES, rewritten=SOURCE_LINES)
def test_a_cached_rewrite_comes_back_byte_for_byte(original: bytes, rewritten: bytes) -> None:
    """The cache keeps a rewrite as the lines it changes; any bytes (line endings of every
    kind, text that is not UTF-8) come back the same through the JSON file."""
    stored = json.loads(json.dumps(bayesify.cache._edits(original, rewritten)))
    assert bayesify.cache._edited(original, stored) == rewritten


def test_adding_an_init_file_invalidates_the_cached_module_names(project: Path) -> None:
    (project / "pkg").mkdir()
    (project / "pkg" / "m.py").write_text(model("Lin"))
    (project / "priors.yaml").write_text("version: 1\npriors:\n  pkg.m:Lin.w: Normal(0, 1)\n")
    assert cli(project, "plan", "pkg").code == 2  # no package: the module is "m"
    (project / "pkg" / "__init__.py").write_text("")
    cached, uncached = cli(project, "plan", "pkg"), cli(project, "plan", "pkg", "--no-cache")
    assert (cached.code, cached.stdout) == (0, uncached.stdout) and uncached.code == 0, cached


def test_no_usable_home_means_no_cache_and_no_crash(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    import pwd

    for variable in ("BAYESIFY_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(variable, raising=False)

    def no_entry(uid: int):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert cache_folder()[0] is None
    assert type(Cache.for_spec("x")) is type(NO_CACHE)
    for home in ("", "relative/home"):
        monkeypatch.setenv("HOME", home)
        monkeypatch.setenv("XDG_CACHE_HOME", "also/relative")
        assert cache_folder()[0] is None
    monkeypatch.setenv("HOME", "")
    models(project, 1)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["rewrite", "."])
    assert result.exit_code == 0, result.output
    assert is_rewritten((project / "m0.py").read_bytes(), "M0")


def test_a_cache_that_cannot_be_saved_leaves_no_temporary_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_open = open

    class FullDisk:
        def __init__(self, path, mode):
            self.stream = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def write(self, data):
            self.stream.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(
        bayesify.cache,
        "open",
        lambda path, mode="r": FullDisk(path, mode) if "x" in mode else real_open(path, mode),
        raising=False,
    )
    models(project, 2)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["rewrite", "."])
    assert result.exit_code == 0, result.output
    assert not temporaries(tmp_path / "cache") and (tmp_path / "cache").is_dir()


def test_without_a_process_pool_the_work_is_done_in_process(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /dev/shm, no semaphores, a sandbox without fork: the run still rewrites everything."""

    def no_pool(*args, **kwargs):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(bayesify.runner, "ProcessPoolExecutor", no_pool)
    sources = models(project, 10)
    result = bayesify.runner.run(sorted(project.glob("m*.py")), parse_spec(PRIORS, "priors.yaml"), jobs=2)
    assert len(result.changed) == len(sources) and not result.failed


def test_the_cache_keeps_every_field_of_what_it_stores(cached_tree) -> None:
    """A field added to a record the cache stores must be added to its JSON shape too (and
    FORMAT bumped); until then this fails, rather than cached runs silently losing it."""
    import dataclasses

    from bayesify.engine import FileJob
    from bayesify.index import BaseRef, ClassRecord, FileIndex
    from bayesify.plan import PlannedSite

    stored = {
        # The plan a run replays keeps every file's job (but its index, which is the file's own).
        FileJob: {
            "index",
            "conversions",
            "base_kinds",
            "inherited_random",
            "built_by_unread_base",
            "imported_pyro_classes",
            "inherited_attrs",
        },
        FileIndex: {"path", "imports", "classes", "ties_weights"},
        ClassRecord: {
            "module",
            "qualname",
            "name",
            "order",
            "line",
            "bases",
            "top",
            "attr_lines",
            "method_reads",
            "init_reads",
            "decorators",
            "plain_attrs",
        },
        BaseRef: {"resolved", "subscripted", "argument"},
        PlannedSite: {
            "path",
            "line",
            "module",
            "class_name",
            "class_order",
            "attr_path",
            "kind",
            "shape",
            "entry",
            "shadowed",
            "if_built",
        },
    }
    for kind, fields in stored.items():
        assert {field.name for field in dataclasses.fields(kind)} == fields, kind.__name__
    root, data, expected = cached_tree
    assert run_with_cache_file(root, data, root / "again.json") == expected
