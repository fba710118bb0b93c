#!/usr/bin/env python
"""bayesify's speed benchmark: the speed goals of the product (issue 6).

Every figure is a ratio of two medians measured side by side in the same run, so it holds on
any machine; each one is printed with its goal:

==========  ==========================================  =====================================  =======
figure      ours                                        baseline                               goal
==========  ==========================================  =====================================  =======
startup     ``bayesify rewrite small.py --check``       ``python -c "import libcst, click,     ≤ 1.5×
                                                        yaml"``
throughput  ``bayesify rewrite --check`` over the       bare ``libcst.parse_module(...).code``  ≤ 1.0×
            ``transformers`` package (cold cache)       of the same files, one process
cache       the same run again, same cache folder       its cold run                           ≤ 0.1×
SVI step    a model that bayesify rewrote               the same model hand-written in Pyro    ≤ 1.05×
forward     (same)                                      (same)                                 ≤ 1.05×
==========  ==========================================  =====================================  =======

plus a check that the CLI imports neither torch nor pyro, the peak memory of each side, and
the machine the figures come from. It is a script, not a test: it exits 0 whatever the
figures say, unless ``--strict``.

    python bench/bench.py                  # everything; downloads transformers once (~10 MB)
    python bench/bench.py --quick          # without the transformers tree
    python bench/bench.py --json bench.json --strict
    python bench/bench.py --profile 200    # where the time goes, in-process, on 200 files

The transformers wheel is downloaded with pip and unpacked under ``~/.cache/bayesify-bench``
(``--cache-dir``); nothing of it is ever stored in the repository.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

REPOSITORY = Path(__file__).resolve().parent.parent

#: The last 4.x release: 2,214 source files, 52 MB. Pinned, so figures compare across runs.
TRANSFORMERS_VERSION = "4.57.6"

#: The layer that the throughput spec makes Bayesian: the query projection of Llama's
#: attention (``self.q_proj = nn.Linear(...)`` in ``LlamaAttention``), a real layer that
#: exists in this version, so the spec matches without ``--allow-unmatched`` and the run is a
#: genuine rewrite of the tree.
TRANSFORMERS_PRIORS = "version: 1\npriors:\n  LlamaAttention.q_proj.weight: Normal(0, 0.02)\n"

#: Marks the unpacked tree as a project root, so that bayesify never climbs into the folders
#: above it (a dotfiles repository in ``~`` with its own ``.gitignore`` would change the files).
ROOT_MARKER = "# Marks the benchmark tree as a project root for bayesify.\n"

SMALL_MODULE = """\
import torch
import torch.nn as nn


class TinyRegressor(nn.Module):
    def __init__(self, in_size=4, out_size=1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_size, out_size))
        self.bias = nn.Parameter(torch.zeros(out_size))

    def forward(self, x):
        return x @ self.weight + self.bias
"""
SMALL_PRIORS = "version: 1\npriors:\n  TinyRegressor.weight: Normal(0, 1)\n"
#: How a pre-commit user configures bayesify: the spec named in pyproject.toml.
SMALL_PYPROJECT = '[tool.bayesify]\npriors = "priors.yaml"\n'

#: The runtime figure's model: a small deterministic MLP with raw parameters. bayesify
#: rewrites it; :func:`hand_written_mlp_class` is the same model written directly in Pyro.
MLP_SIZES = {"in_size": 8, "hidden": 32, "out_size": 1}
MLP_MODULE = """\
import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, in_size, hidden, out_size):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(in_size, hidden))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.randn(hidden, hidden))
        self.b2 = nn.Parameter(torch.zeros(hidden))
        self.w3 = nn.Parameter(torch.randn(hidden, out_size))
        self.b3 = nn.Parameter(torch.zeros(out_size))

    def forward(self, x):
        h = torch.tanh(x @ self.w1 + self.b1)
        h = torch.tanh(h @ self.w2 + self.b2)
        return (h @ self.w3 + self.b3).squeeze(-1)
"""
MLP_PRIORS = 'version: 1\npriors:\n  "MLP.*": Normal(0, 1)\n'
DATA_SIZE = 128
SVI_STEPS_PER_BLOCK = 25
FORWARD_CALLS_PER_BLOCK = 200
#: Timed blocks of each model per ``--repeat``: many short interleaved blocks, so that a
#: burst of noise on the machine hits both models alike and the median ignores it.
BLOCKS_PER_REPEAT = 8

#: The baseline of the throughput figure: what libcst alone costs for the same files.
LIBCST_BASELINE = """\
import sys
import libcst

failed = 0
for path in open(sys.argv[1], encoding="utf-8").read().splitlines():
    with open(path, "rb") as source:
        try:
            libcst.parse_module(source.read()).code
        except libcst.ParserSyntaxError:
            failed += 1
print(f"libcst could not parse {failed} files")
"""

SUMMARY_LINE = re.compile(r"(\d+) files? (?:would be )?rewritten, (\d+) unchanged, (\d+) failed")
HEAVY_MODULES = ("torch", "pyro")
EXIT_CHECK_FOUND_WORK = 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurement


@dataclass
class Sample:
    """One child process: its wall time, CPU time and peak memory."""

    wall_s: float
    cpu_s: float
    #: The largest resident set of the child or of any descendant it waited for (a pool
    #: worker): Linux folds the descendants' peak into the child's rusage when it is reaped.
    peak_rss_kib: int
    returncode: int
    stdout: str
    stderr: str


#: Starts one measured command and reports its wall time and ``wait4`` resource use (that
#: child's alone: ``getrusage(RUSAGE_CHILDREN)`` would mix in every earlier child). It is a
#: process of its own, started with ``-I -S`` to stay smaller than any command it measures,
#: because Linux carries the RSS high-water mark of the process that forks across ``exec``
#: into the child's ``ru_maxrss``: started straight from this script, which by then holds
#: torch, every command would report this script's peak as its own.
MEASURING_LAUNCHER = """\
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as out:
    cpu = usage.ru_utime + usage.ru_stime
    out.write(f"{wall} {cpu} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_process(argv: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[dict] = None) -> Sample:
    """Run ``argv`` to the end through :data:`MEASURING_LAUNCHER` and measure it."""
    with tempfile.TemporaryDirectory(prefix="bayesify-bench-run-") as name:
        report = Path(name) / "rusage"
        with open(Path(name) / "stdout", "w+b") as out, open(Path(name) / "stderr", "w+b") as err:
            subprocess.run(
                [sys.executable, "-I", "-S", "-c", MEASURING_LAUNCHER, str(report), *argv],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        if not report.exists():
            raise RuntimeError(f"could not measure {argv}: {_tail(stderr)}")
        wall, cpu, peak, returncode = report.read_text().split()
    return Sample(float(wall), float(cpu), int(peak), int(returncode), stdout, stderr)


@dataclass
class Figure:
    """One row of the table: ours against the baseline, as a ratio of medians."""

    name: str
    goal: float
    unit: str = "s"
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    ours_peak_kib: Optional[int] = None
    baseline_peak_kib: Optional[int] = None
    peak_kind: str = "RSS"
    #: Why the numbers do not measure what they should (a run failed, a spec did not match).
    invalid: Optional[str] = None
    skipped: Optional[str] = None

    @property
    def ratio(self) -> Optional[float]:
        if not self.ours or not self.baseline:
            return None
        return statistics.median(self.ours) / statistics.median(self.baseline)

    @property
    def status(self) -> str:
        if self.skipped:
            return "SKIP"
        if self.invalid:
            return "INVALID"
        ratio = self.ratio
        return "PASS" if ratio is not None and ratio <= self.goal else "FAIL"

    def cells(self) -> list[str]:
        ratio = self.ratio
        return [
            self.name,
            _median_text(self.ours, self.unit),
            _median_text(self.baseline, self.unit),
            "-" if ratio is None else f"{ratio:.2f}×",
            f"≤ {self.goal}×",
            self.status,
            _memory_text(self.ours_peak_kib, self.peak_kind),
            _memory_text(self.baseline_peak_kib, self.peak_kind),
        ]

    def as_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "status": self.status}


@dataclass
class Check:
    """A yes/no row of the table (no ratio)."""

    name: str
    detail: str
    passed: bool
    skipped: Optional[str] = None

    @property
    def status(self) -> str:
        if self.skipped:
            return "SKIP"
        return "PASS" if self.passed else "FAIL"

    def cells(self) -> list[str]:
        return [self.name, self.detail, "-", "-", "none", self.status, "-", "-"]

    def as_json(self) -> dict:
        return {**asdict(self), "status": self.status}


def _median_text(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    value = statistics.median(values)
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    if unit == "ms":
        return f"{value:.3f} ms"
    return f"{value:g} {unit}"


def _memory_text(kib: Optional[int], kind: str) -> str:
    if kib is None:
        return "-"
    if kind == "RSS":
        return f"{kib / 1024:.0f} MiB"
    return f"{kib:.0f} KiB {kind}"


def _tail(text: str, lines: int = 6) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- the machine


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for package in ("bayesify", "libcst", "click", "PyYAML", "torch", "pyro-ppl"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory": _total_memory(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "commit": _git_commit(),
        "load_average": _load_average(),
    }


def _load_average() -> str:
    """Other work on the machine skews every wall-clock figure: say how busy it was."""
    try:
        return " / ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def _total_memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + (" (with uncommitted changes)" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- the commands


def bayesify_command() -> list[str]:
    """The installed console script, next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("bayesify")
    if script.is_file():
        return [str(script)]
    found = shutil.which("bayesify")
    if found:
        return [found]
    return [sys.executable, "-c", "from bayesify.cli import main; main()"]


def fresh_cache_env(cache_folder: Path) -> dict:
    """The environment of a CLI run whose result cache lives in ``cache_folder``. The user's
    cache folder is redirected too, so no earlier run's cache can make a cold run warm."""
    env = dict(os.environ)
    env["BAYESIFY_CACHE_DIR"] = str(cache_folder)
    env["XDG_CACHE_HOME"] = str(cache_folder / "xdg")
    return env


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- startup


def measure_startup(repeat: int) -> list:
    command = bayesify_command()
    figure = Figure("startup", goal=1.5)
    with tempfile.TemporaryDirectory(prefix="bayesify-bench-small-") as name:
        project = Path(name)
        write_files(
            project,
            {"small.py": SMALL_MODULE, "priors.yaml": SMALL_PRIORS, "pyproject.toml": SMALL_PYPROJECT},
        )
        ours_argv = [*command, "rewrite", "small.py", "--check"]
        baseline_argv = [sys.executable, "-c", "import libcst, click, yaml"]

        def ours() -> Sample:
            # A fresh cache each time: a commit that touches small.py finds no cached result.
            with tempfile.TemporaryDirectory(prefix="bayesify-bench-cache-") as cache:
                return run_process(ours_argv, cwd=project, env=fresh_cache_env(Path(cache)))

        def baseline() -> Sample:
            return run_process(baseline_argv, cwd=project)

        # Untimed warm-up: byte-compile, fill the page cache.
        ours(), baseline()
        peaks: dict[str, list[int]] = {"ours": [], "baseline": []}
        for round_ in range(repeat):
            log(f"startup: round {round_ + 1}/{repeat}")
            order = [("ours", ours), ("baseline", baseline)]
            for side, run in order if round_ % 2 == 0 else reversed(order):
                sample = run()
                if side == "ours" and sample.returncode != EXIT_CHECK_FOUND_WORK:
                    figure.invalid = (
                        f"`bayesify rewrite small.py --check` exited {sample.returncode}, expected "
                        f"{EXIT_CHECK_FOUND_WORK} (work found): {_tail(sample.stderr)}"
                    )
                (figure.ours if side == "ours" else figure.baseline).append(sample.wall_s)
                peaks[side].append(sample.peak_rss_kib)
        figure.ours_peak_kib, figure.baseline_peak_kib = max(peaks["ours"]), max(peaks["baseline"])
        check = check_no_heavy_imports(project, ours_argv)
    return [figure, check]


def check_no_heavy_imports(project: Path, cli_argv: list[str]) -> Check:
    """``-X importtime`` lists every module imported; the CLI must list neither torch nor pyro,
    neither on import nor in a whole run."""
    probes = {
        "import bayesify.cli": [sys.executable, "-X", "importtime", "-c", "import bayesify.cli"],
        "rewrite small.py --check": with_interpreter_option(cli_argv, "-X", "importtime"),
    }
    findings = []
    passed = True
    for label, argv in probes.items():
        with tempfile.TemporaryDirectory(prefix="bayesify-bench-cache-") as cache:
            sample = run_process(argv, cwd=project, env=fresh_cache_env(Path(cache)))
        heavy = sorted(imported_top_level_modules(sample.stderr) & set(HEAVY_MODULES))
        passed = passed and not heavy
        findings.append(f"{label}: {', '.join(heavy) if heavy else 'neither'}")
    return Check("no torch/pyro at startup", "; ".join(findings), passed)


def with_interpreter_option(argv: list[str], *options: str) -> list[str]:
    """``argv`` run by this interpreter with ``options``; the console script is a Python file."""
    if argv[0] == sys.executable:
        return [sys.executable, *options, *argv[1:]]
    return [sys.executable, *options, *argv]


def imported_top_level_modules(importtime_log: str) -> set[str]:
    modules = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and not name.startswith("imported package"):
                modules.add(name.split(".")[0])
    return modules


# --------------------------------------------------------------------------- throughput


def cache_root(option: Optional[str]) -> Path:
    if option:
        return Path(option).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bayesify-bench"


def transformers_tree(version: str, root: Path) -> Path:
    """The ``transformers`` package folder of ``version``: downloaded once with pip, its
    ``.py`` files unpacked once; later runs reuse both."""
    tree = root / f"transformers-{version}"
    package = tree / "transformers"
    complete = tree / ".complete"
    if complete.exists():
        return package
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = next(wheels.glob(f"transformers-{version}-*.whl"), None)
    if wheel is None:
        log(f"downloading transformers=={version} into {wheels}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"transformers=={version}",
                "-d",
                str(wheels),
            ],
            check=True,
        )
        wheel = next(wheels.glob(f"transformers-{version}-*.whl"))
    # Unpacked beside the final folder, then renamed: an interrupted run leaves no half tree.
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=root))
    with zipfile.ZipFile(wheel) as archive:
        sources = [
            name for name in archive.namelist() if name.startswith("transformers/") and name.endswith(".py")
        ]
        archive.extractall(staging, sources)
    (staging / "pyproject.toml").write_text(ROOT_MARKER, encoding="utf-8")
    if tree.exists():
        shutil.rmtree(tree)
    staging.rename(tree)
    complete.touch()
    return package


@dataclass
class TreeStats:
    files: int
    megabytes: float
    skipped_by_prefilter: Optional[int]
    rewritten: Optional[int] = None
    unchanged: Optional[int] = None
    failed: Optional[int] = None

    def describe(self) -> str:
        text = f"{self.files} files, {self.megabytes:.1f} MB"
        if self.skipped_by_prefilter is not None:
            text += f"; {self.skipped_by_prefilter} skipped by the text prefilter"
        if self.rewritten is not None:
            indexed = self.files - (self.skipped_by_prefilter or 0)
            text += (
                f"; {indexed} indexed with ast, {self.rewritten} of them would be rewritten "
                f"(parsed with libcst), {self.failed} failed"
            )
        return text


def tree_stats(files: list[Path]) -> TreeStats:
    try:
        from bayesify.runner import might_hold_a_class
    except ImportError:  # the prefilter moved or was renamed: count nothing rather than guess
        might_hold_a_class = None
    sources = [path.read_bytes() for path in files]
    skipped = None if might_hold_a_class is None else sum(not might_hold_a_class(s) for s in sources)
    return TreeStats(len(files), sum(map(len, sources)) / 1e6, skipped)


def measure_tree(version: str, root: Path, repeat: int, jobs: Optional[int]) -> tuple[list, dict]:
    try:
        package = transformers_tree(version, root)
    except (OSError, subprocess.CalledProcessError, StopIteration, zipfile.BadZipFile) as error:
        reason = f"transformers {version} unavailable: {error}"
        return [Figure("throughput", goal=1.0, skipped=reason), Figure("cache", goal=0.1, skipped=reason)], {}
    files = sorted(package.rglob("*.py"))
    stats = tree_stats(files)
    throughput = Figure("throughput", goal=1.0)
    cache = Figure("cache", goal=0.1)
    ours_peaks, baseline_peaks, warm_peaks, cpu = [], [], [], {"cold": [], "warm": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="bayesify-bench-tree-") as name:
        work = Path(name)
        spec = work / "priors.yaml"
        spec.write_text(TRANSFORMERS_PRIORS, encoding="utf-8")
        file_list = work / "files.txt"
        file_list.write_text("".join(f"{path}\n" for path in files), encoding="utf-8")
        cli_argv = [*bayesify_command(), "rewrite", str(package), "--check", "--priors", str(spec)]
        if jobs:
            cli_argv += ["--jobs", str(jobs)]
        baseline_argv = [sys.executable, "-c", LIBCST_BASELINE, str(file_list)]

        def cold_then_warm() -> None:
            # Run 1 of a fresh cache folder is cold; run 2, same folder, is what the cache saves.
            cache_folder = work / f"cache-{len(throughput.ours)}"
            cache_folder.mkdir()
            env = fresh_cache_env(cache_folder)
            cold = run_process(cli_argv, env=env)
            warm = run_process(cli_argv, env=env)
            shutil.rmtree(cache_folder, ignore_errors=True)
            for label, sample in (("cold", cold), ("warm", warm)):
                if sample.returncode != EXIT_CHECK_FOUND_WORK:
                    reason = f"the {label} run exited {sample.returncode}, expected {EXIT_CHECK_FOUND_WORK}: {_tail(sample.stderr)}"
                    throughput.invalid = throughput.invalid or reason
                    cache.invalid = cache.invalid or reason
            summary = SUMMARY_LINE.search(cold.stderr)
            if summary:
                stats.rewritten, stats.unchanged, stats.failed = map(int, summary.groups())
            throughput.ours.append(cold.wall_s)
            cache.ours.append(warm.wall_s)
            cache.baseline.append(cold.wall_s)
            ours_peaks.append(cold.peak_rss_kib)
            warm_peaks.append(warm.peak_rss_kib)
            cpu["cold"].append(cold.cpu_s)
            cpu["warm"].append(warm.cpu_s)

        def baseline() -> None:
            sample = run_process(baseline_argv)
            if sample.returncode != 0:
                throughput.invalid = f"the libcst baseline exited {sample.returncode}: {_tail(sample.stderr)}"
            throughput.baseline.append(sample.wall_s)
            baseline_peaks.append(sample.peak_rss_kib)
            cpu["baseline"].append(sample.cpu_s)

        for round_ in range(repeat):
            log(
                f"throughput and cache: round {round_ + 1}/{repeat} ({len(files)} files; a round takes minutes)"
            )
            order = [cold_then_warm, baseline]
            for step in order if round_ % 2 == 0 else reversed(order):
                step()
    throughput.ours_peak_kib, throughput.baseline_peak_kib = max(ours_peaks), max(baseline_peaks)
    cache.ours_peak_kib, cache.baseline_peak_kib = max(warm_peaks), max(ours_peaks)
    details = {
        "tree": f"transformers {version}: {stats.describe()}",
        # CPU time moves less than wall time when other work shares the machine: a check on
        # the wall-clock ratio. On N idle cores bayesify's wall time is about its CPU time / N.
        "cpu_seconds": {side: round(statistics.median(values), 2) for side, values in cpu.items()},
        "jobs": jobs or "all cores",
        "priors": TRANSFORMERS_PRIORS.splitlines()[-1].strip(),
    }
    if stats.failed:
        details["warning"] = (
            f"bayesify failed on {stats.failed} files; see `bayesify rewrite {package} --check`"
        )
    return [throughput, cache], details


# --------------------------------------------------------------------------- runtime


def hand_written_mlp_class():
    """The twin of :data:`MLP_MODULE`, written the way the Pyro tutorial writes it."""
    import pyro.distributions as dist
    import torch
    from pyro.nn import PyroModule, PyroSample

    def prior(*shape: int):
        return PyroSample(dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))

    class HandWrittenMLP(PyroModule):
        def __init__(self, in_size, hidden, out_size):
            super().__init__()
            self.w1 = prior(in_size, hidden)
            self.b1 = prior(hidden)
            self.w2 = prior(hidden, hidden)
            self.b2 = prior(hidden)
            self.w3 = prior(hidden, out_size)
            self.b3 = prior(out_size)

        def forward(self, x):
            h = torch.tanh(x @ self.w1 + self.b1)
            h = torch.tanh(h @ self.w2 + self.b2)
            return (h @ self.w3 + self.b3).squeeze(-1)

    return HandWrittenMLP


def rewritten_mlp_class():
    """:data:`MLP_MODULE` after ``bayesify rewrite``, imported from its rewritten file."""
    with tempfile.TemporaryDirectory(prefix="bayesify-bench-mlp-") as name:
        project = Path(name)
        write_files(
            project, {"mlp.py": MLP_MODULE, "priors.yaml": MLP_PRIORS, "pyproject.toml": SMALL_PYPROJECT}
        )
        with tempfile.TemporaryDirectory(prefix="bayesify-bench-cache-") as cache:
            sample = run_process(
                [*bayesify_command(), "rewrite", "mlp.py"], cwd=project, env=fresh_cache_env(Path(cache))
            )
        if sample.returncode != 0:
            raise RuntimeError(
                f"`bayesify rewrite mlp.py` exited {sample.returncode}: {_tail(sample.stderr)}"
            )
        spec = importlib.util.spec_from_file_location("bayesify_bench_rewritten_mlp", project / "mlp.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.MLP


def measure_runtime(repeat: int) -> tuple[list, dict]:
    try:
        import pyro
        import pyro.distributions as dist
        import torch
        from pyro.infer import SVI, Trace_ELBO
        from pyro.infer.autoguide import AutoNormal
        from pyro.optim import Adam
    except ImportError as error:
        reason = f"needs the runtime extra (torch, pyro-ppl): {error}"
        return [
            Figure("SVI step", goal=1.05, skipped=reason),
            Figure("forward", goal=1.05, skipped=reason),
        ], {}

    svi_figure = Figure("SVI step", goal=1.05, unit="ms", peak_kind="py heap")
    forward_figure = Figure("forward", goal=1.05, unit="ms", peak_kind="py heap")
    try:
        rewritten_class = rewritten_mlp_class()
    except RuntimeError as error:
        svi_figure.invalid = forward_figure.invalid = str(error)
        return [svi_figure, forward_figure], {}
    hand_class = hand_written_mlp_class()
    # One thread: on 2 cores, intra-op threads on tensors this small only add scheduling noise.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    inputs = torch.randn(DATA_SIZE, MLP_SIZES["in_size"])
    targets = torch.sin(inputs.sum(-1))

    def regression(net):
        def model(x, y):
            mean = net(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("obs", dist.Normal(mean, 0.1), obs=y)

        return model

    def make_svi(net_class, guide_name: str):
        net = net_class(**MLP_SIZES)
        model = regression(net)
        # A guide class of its own per model: AutoNormal names its parameters after its class,
        # so both guides live in one param store without clashing.
        guide = type(guide_name, (AutoNormal,), {})(model)
        return net, SVI(model, guide, Adam({"lr": 1e-3}), Trace_ELBO())

    details = {"model": f"MLP {MLP_SIZES}, {DATA_SIZE} data points, AutoNormal, Trace_ELBO, Adam"}
    details["same_losses_as_hand_written"] = _same_losses(
        make_svi, rewritten_class, hand_class, inputs, targets
    )
    pyro.clear_param_store()
    variants = {
        "ours": make_svi(rewritten_class, "RewrittenGuide"),
        "baseline": make_svi(hand_class, "HandWrittenGuide"),
    }
    if not isinstance(variants["ours"][0], pyro.nn.PyroModule):
        svi_figure.invalid = forward_figure.invalid = "the rewritten MLP is not a PyroModule"

    def svi_block(side: str) -> float:
        svi = variants[side][1]
        start = time.perf_counter()
        for _ in range(SVI_STEPS_PER_BLOCK):
            svi.step(inputs, targets)
        return (time.perf_counter() - start) / SVI_STEPS_PER_BLOCK * 1000

    def forward_block(side: str) -> float:
        net = variants[side][0]
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(FORWARD_CALLS_PER_BLOCK):
                net(inputs)
            return (time.perf_counter() - start) / FORWARD_CALLS_PER_BLOCK * 1000

    for block, figure in ((svi_block, svi_figure), (forward_block, forward_figure)):
        for side in variants:  # warm-up: AutoNormal builds itself on its first step
            block(side)
        blocks = BLOCKS_PER_REPEAT * repeat
        for index in range(blocks):
            if index % BLOCKS_PER_REPEAT == 0:
                log(f"runtime {figure.name}: blocks {index + 1}-{index + BLOCKS_PER_REPEAT} of {blocks}")
            sides = ["ours", "baseline"] if index % 2 == 0 else ["baseline", "ours"]
            for side in sides:
                gc.collect()
                (figure.ours if side == "ours" else figure.baseline).append(block(side))
        figure.ours_peak_kib = _python_heap_peak_kib(functools.partial(block, "ours"))
        figure.baseline_peak_kib = _python_heap_peak_kib(functools.partial(block, "baseline"))
    details["steps_per_model"] = SVI_STEPS_PER_BLOCK * BLOCKS_PER_REPEAT * repeat
    return [svi_figure, forward_figure], details


def _same_losses(make_svi, rewritten_class, hand_class, inputs, targets, steps: int = 5) -> bool:
    """The spec promises the same SVI losses from the same seed: a check that the two models
    compared are really the same model."""
    import pyro

    losses = []
    for net_class in (rewritten_class, hand_class):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        _, svi = make_svi(net_class, "EquivalenceGuide")
        losses.append([svi.step(inputs, targets) for _ in range(steps)])
    pyro.clear_param_store()
    return all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(*losses))


def _python_heap_peak_kib(work: Callable[[], object]) -> int:
    """Peak Python-heap growth during ``work``, by tracemalloc: torch's tensor storage is not
    on the Python heap, but the per-step Python objects (traces, distributions) are. Measured
    apart from the timed blocks, which tracemalloc would slow down."""
    gc.collect()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - baseline) // 1024


# --------------------------------------------------------------------------- profile


def profile_sample(version: str, root: Path, size: int) -> None:
    """Where one worker's time goes on ``size`` files of the tree, in one process.

    Two views of the same run: the CPU time of the pipeline's stages, from clocks wrapped
    around their functions (exact, no profiler overhead), and cProfile's busiest functions
    (cProfile slows Python code far more than the native parsers, so it only ranks).
    """
    from bayesify.runner import run
    from bayesify.spec import load_spec

    package = transformers_tree(version, root)
    files = sorted(package.rglob("*.py"))
    # Every n-th file keeps the tree's mix: files without classes, TF and Flax files that are
    # indexed only, PyTorch modeling files that are rewritten. A class whose base lives in a
    # file outside the sample (PreTrainedModel) does not convert, so a sample under-counts the
    # rewriters' share; N at least the tree's size profiles the whole tree (minutes).
    stride = max(1, len(files) // size)
    sample = files[::stride][:size]
    with tempfile.TemporaryDirectory(prefix="bayesify-bench-profile-") as name:
        spec_path = Path(name) / "priors.yaml"
        spec_path.write_text(TRANSFORMERS_PRIORS, encoding="utf-8")
        spec = load_spec(str(spec_path))
        run(sample, spec, jobs=1)  # warm-up: imports, caches of libcst's own

        clock = StageClock()
        clock.install()
        try:
            start = time.process_time()
            result = run(sample, spec, jobs=1)
            total = time.process_time() - start
        finally:
            clock.uninstall()

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        run(sample, spec, jobs=1)
        profiler.disable()

    prefiltered = sum(not _prefilter()(path.read_bytes()) for path in sample)
    baseline = bare_libcst_cpu_seconds(sample)
    print(
        f"\n{len(sample)} files of transformers {version} (every {stride}th), one process: "
        f"{prefiltered} skipped by the prefilter, {sum(r.changed for r in result.results)} rewritten, "
        f"{len(result.failed)} failed\n"
    )
    print(f"CPU time by stage (clocks around the stages' functions, no profiler): run() {total:.2f} s\n")
    for label, seconds in clock.stages(total):
        print(f"  {label:<52} {seconds:7.2f} s  {seconds / total:6.1%}")
    print(
        f"\n  the throughput baseline on the same files, in one process: {baseline:.2f} s "
        f"(run() / baseline = {total / baseline:.2f}× CPU, before sharing the work over cores)"
    )
    print("\n  every clock, by function and caller:")
    for key, seconds in sorted(clock.seconds.items(), key=lambda item: -item[1]):
        print(f"    {key:<60} {seconds:7.2f} s  {clock.calls[key]:6d} calls")
    print("\ncProfile, busiest functions by own time (profiled CPU time, inflated for Python code):\n")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def bare_libcst_cpu_seconds(files: list[Path]) -> float:
    """The throughput figure's baseline, in this process: libcst parse and codegen of every file."""
    import libcst

    start = time.process_time()
    for path in files:
        try:
            _ = libcst.parse_module(path.read_bytes()).code  # the code, printed as a rewrite prints it
        except libcst.ParserSyntaxError:
            pass
    return time.process_time() - start


class StageClock:
    """CPU time spent in the pipeline's stage functions, each keyed by the function and its
    caller (``ast.parse`` is called by the index pass, the lints and the verification alike).
    The functions are found by name, so a renamed one reads as 0 rather than failing; a
    function that re-enters itself (``Module.bytes`` calls ``Module.code``) is timed once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._active: set[str] = set()
        self._undo: list[tuple[object, str, object]] = []

    def install(self) -> None:
        import ast

        import libcst

        import bayesify.engine
        import bayesify.runner

        self.wrap(ast, "parse", "ast.parse")
        self.wrap(libcst, "parse_module", "libcst.parse_module")
        self.wrap(libcst.Module, "bytes", "libcst codegen")
        self.wrap(libcst.Module, "code", "libcst codegen")
        self.wrap(bayesify.runner, "_index_source", "index pass")
        self.wrap(bayesify.engine, "_rewrite_module", "rewriters")
        self.wrap(bayesify.engine, "lint", "lints")

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return
        function = original.fget if isinstance(original, property) else original

        def timed(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_name
            if label in self._active:  # nested in itself: the outer call is already timed
                return function(*args, **kwargs)
            key = f"{label} from {caller}"
            self._active.add(label)
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self._active.discard(label)
                self.seconds[key] = self.seconds.get(key, 0.0) + time.process_time() - start
                self.calls[key] = self.calls.get(key, 0) + 1

        setattr(owner, name, property(timed) if isinstance(original, property) else timed)
        self._undo.append((owner, name, original))

    def stages(self, total: float) -> list[tuple[str, float]]:
        def clocked(prefix: str, caller: Optional[str] = None) -> float:
            return sum(
                seconds
                for key, seconds in self.seconds.items()
                if key.startswith(prefix + " from ") and (caller is None or key.endswith(" from " + caller))
            )

        index_parse = clocked("ast.parse", "_index_source")
        stages = [
            ("ast parse, index pass", index_parse),
            ("index walk (ast -> class records)", clocked("index pass") - index_parse),
            ("libcst parse", clocked("libcst.parse_module", "rewrite_source")),
            ("our rewriters (incl. imports)", clocked("rewriters")),
            ("libcst codegen", clocked("libcst codegen", "rewrite_source")),
            # rewrite_source parses with ast twice: the source for the lints, the output to verify.
            ("ast parse in rewrite_source (lints' input + verify)", clocked("ast.parse", "rewrite_source")),
            ("lints (their walks)", clocked("lints")),
        ]
        stages.append(("other (planning, reading, results, warnings)", total - sum(s for _, s in stages)))
        return stages


def _prefilter() -> Callable[[bytes], bool]:
    try:
        from bayesify.runner import might_hold_a_class

        return might_hold_a_class
    except ImportError:
        return lambda source: True


# --------------------------------------------------------------------------- report


HEADER = ["figure", "ours", "baseline", "ratio", "goal", "pass", "peak mem ours", "peak mem baseline"]


def markdown_table(rows: list) -> str:
    cells = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADER))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths)) + " |"

    return "\n".join([line(cells[0]), line(["-" * width for width in widths]), *map(line, cells[1:])])


def report(rows: list, machine: dict, details: dict, command: str) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    lines = [
        markdown_table(rows),
        "",
        "Ratios are ours / baseline of the medians; rows and their baselines ran interleaved in this run.",
        "Peak memory: RSS of the largest process (a pool worker counts), or the Python-heap peak",
        "of one timed block (tracemalloc) for the runtime rows.",
        "",
        f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['memory']}, {machine['platform']}",
        f"python:  {machine['python']}; {versions}",
        f"commit:  {machine['commit']}",
        f"load:    {machine['load_average_before']} before, {machine['load_average']} after",
        f"command: {command}",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"{row.name}: skipped: {row.skipped}")
        elif getattr(row, "invalid", None):
            lines.append(f"{row.name}: INVALID: {row.invalid}")
    for section, values in details.items():
        for key, value in values.items():
            lines.append(f"{section} {key}: {str(value).strip()}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the transformers tree (no download)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each fast figure (default 5)")
    parser.add_argument(
        "--tree-repeat", type=int, default=3, help="runs over the transformers tree (default 3)"
    )
    parser.add_argument("--jobs", type=int, help="pass --jobs N to the CLI (default: its own, all cores)")
    parser.add_argument("--transformers-version", default=TRANSFORMERS_VERSION)
    parser.add_argument(
        "--cache-dir", help="where the wheel and the unpacked tree are kept (default ~/.cache/bayesify-bench)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures, samples and machine to FILE")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a figure fails its goal or is invalid"
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead of the figures: profile one process on N files of the tree",
    )
    options = parser.parse_args(argv)
    command = "python bench/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)

    if options.profile:
        profile_sample(options.transformers_version, cache_root(options.cache_dir), options.profile)
        return 0

    load_before = _load_average()
    rows: list = []
    details: dict = {}
    rows += measure_startup(options.repeat)
    runtime_rows, details["runtime"] = measure_runtime(options.repeat)
    rows += runtime_rows
    if options.quick:
        reason = "--quick"
        rows += [Figure("throughput", goal=1.0, skipped=reason), Figure("cache", goal=0.1, skipped=reason)]
    else:
        tree_rows, details["throughput"] = measure_tree(
            options.transformers_version, cache_root(options.cache_dir), options.tree_repeat, options.jobs
        )
        rows += tree_rows
    order = ["startup", "no torch/pyro at startup", "throughput", "cache", "SVI step", "forward"]
    rows.sort(key=lambda row: order.index(row.name) if row.name in order else len(order))

    machine = {**machine_info(), "load_average_before": load_before}
    print(report(rows, machine, details, command))
    if options.json:
        payload = {
            "machine": machine,
            "command": command,
            "figures": [row.as_json() for row in rows],
            "details": details,
        }
        Path(options.json).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    failed = [row.name for row in rows if row.status in ("FAIL", "INVALID")]
    return 1 if options.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
