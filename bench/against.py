"""Throughput of this tree against another commit of bayesify, side by side in one run.

::

    python bench/against.py main                 # HEAD against main: cold and cached, 3 rounds
    python bench/against.py 9531969 --ours issue12 --rounds 5

Both sides run ``bayesify rewrite --check`` over the transformers tree of ``bench.py`` (the
same spec, files and jobs): a cold run in a fresh cache folder, then the same run again on
that cache, then once more after a comment was added to one file the spec rewrites (the
file is put back after). The sides alternate (A B, then B A) so that other work on the machine falls on
both; the figures are the ratios of the medians, ``--ours`` (default HEAD) over the other
commit, of the wall time and of the CPU time (user and system, of the run and its workers:
on a busy machine the CPU time moves less than the wall time). Each side's ``bayesify`` package is taken with ``git archive``, so edits to the
working tree during a run change neither; nothing is installed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import TRANSFORMERS_PRIORS, TRANSFORMERS_VERSION, transformers_tree  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("cold", "cached", "one edit")
#: The file of the tree that the "one edit" run finds changed (a comment added): one the spec
#: rewrites, so that run indexes, plans and rewrites it again, and takes the rest from the cache.
EDITED = Path("models/llama/modeling_llama.py")


def export(revision: str, into: Path) -> Path:
    """The ``bayesify`` package of ``revision``, unpacked in a folder of ``into``."""
    folder = Path(tempfile.mkdtemp(prefix="side-", dir=into))
    archive = folder / "bayesify.tar"
    with open(archive, "wb") as stream:
        subprocess.run(["git", "archive", revision, "bayesify"], cwd=ROOT, stdout=stream, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(package_root: Path, tree: Path, spec: Path, cache: Path, jobs: list[str]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of one run."""
    env = {
        "PYTHONPATH": str(package_root),
        "BAYESIFY_CACHE_DIR": str(cache),
        "PATH": "/usr/bin:/bin",
        "HOME": str(cache),
    }
    start, cpu_start = time.perf_counter(), cpu_of_children()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesify",
            "rewrite",
            "--check",
            "-q",
            "--priors",
            str(spec),
            *jobs,
            str(tree),
        ],
        env=env,
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed, cpu = time.perf_counter() - start, cpu_of_children() - cpu_start
    if completed.returncode != 1:  # --check finds the Llama attention to rewrite
        raise SystemExit(f"{package_root}: exit {completed.returncode}\n{completed.stderr[-2000:]}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("revision", help="the commit (or branch) to compare with")
    parser.add_argument("--ours", default="HEAD", help="the commit measured against it (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, help="pass --jobs N to both sides (default: all cores)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "bayesify-bench"))
    options = parser.parse_args()
    tree = transformers_tree(TRANSFORMERS_VERSION, Path(options.cache_dir))
    jobs = ["--jobs", str(options.jobs)] if options.jobs else []
    with tempfile.TemporaryDirectory(prefix="bayesify-against-") as scratch:
        scratch_path = Path(scratch)
        spec = scratch_path / "priors.yaml"
        spec.write_text(TRANSFORMERS_PRIORS)
        sides = {
            "ours": export(options.ours, scratch_path),
            options.revision: export(options.revision, scratch_path),
        }
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            name: {figure: [] for figure in FIGURES} for name in sides
        }
        for round_number in range(options.rounds):
            order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
            for name in order:
                cache = Path(tempfile.mkdtemp(prefix=f"cache-{round_number}-", dir=scratch))
                samples[name]["cold"].append(timed(sides[name], tree, spec, cache, jobs))
                samples[name]["cached"].append(timed(sides[name], tree, spec, cache, jobs))
                edited = tree / EDITED
                original = edited.read_bytes()
                try:
                    edited.write_bytes(original + b"\n# an edit\n")
                    samples[name]["one edit"].append(timed(sides[name], tree, spec, cache, jobs))
                finally:
                    edited.write_bytes(original)
                print(
                    f"round {round_number + 1} {name}: "
                    + ", ".join(
                        f"{figure} {samples[name][figure][-1][0]:.2f}s ({samples[name][figure][-1][1]:.2f}s CPU)"
                        for figure in FIGURES
                    ),
                    file=sys.stderr,
                )
    base = options.revision
    for figure in FIGURES:
        for measure, clock in ((0, "wall"), (1, "CPU")):
            ours = statistics.median(sample[measure] for sample in samples["ours"][figure])
            theirs = statistics.median(sample[measure] for sample in samples[base][figure])
            print(
                f"{figure:8} {clock:4}  ours {ours:7.2f}s  {base} {theirs:7.2f}s  ratio {ours / theirs:.3f}"
            )


if __name__ == "__main__":
    main()
