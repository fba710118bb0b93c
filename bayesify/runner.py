"""Run the pipeline over many files: prefilter, index, plan and rewrite, in parallel.

Two passes over the files. The index pass reads every file that might hold a class and
records its classes with :mod:`ast`; then the class index decides which classes convert,
across files. The rewrite pass parses with libcst only the files that hold a converting class.
Both passes run in a process pool when there are many files, in-process when there are few.
"""

from __future__ import annotations

import ast
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import libcst as cst

from .cache import Cache, digest, job_fingerprint
from .diagnostics import WARNING, Diagnostic
from .engine import BUG_HINT, FileJob, FileResult, rewrite_source
from .index import TYING_NAMES, ClassIndex, ClassRecord, FileIndex, index_source, module_of
from .plan import PlannedSite, Planner, did_you_mean, shadowed_only_entries, unmatched_entries
from .spec import Entry, Spec

#: Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = 8


@dataclass
class RunResult:
    results: list[FileResult]
    spec: Spec
    unmatched: list[Entry] = field(default_factory=list)
    #: A did-you-mean for each unmatched entry, by its line ("" when none is close).
    hints: dict[int, str] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    #: Pitfalls of the tutorial found in the rewritten code: warnings, or errors under ``--strict``.
    lints: list[Diagnostic] = field(default_factory=list)

    @property
    def sites(self) -> list[PlannedSite]:
        return [site for result in self.results for site in result.sites]

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.error]

    @property
    def changed(self) -> list[FileResult]:
        return [r for r in self.results if r.changed and not r.error]


def might_hold_a_class(source: bytes) -> bool:
    """The cheap text prefilter: a file without the word ``class`` defines no module."""
    return b"class" in source


def _index_file(path: str) -> tuple[str, Optional[FileIndex], Optional[Diagnostic]]:
    try:
        source = Path(path).read_bytes()
    except OSError as error:
        return path, None, Diagnostic.of("BAY001", f"cannot read: {error.strerror or error}", path)
    module, is_package = module_of(Path(path))
    return _index_source(source, path, module, is_package)


def _index_source(
    source: bytes, path: str, module: str, is_package: bool
) -> tuple[str, Optional[FileIndex], Optional[Diagnostic]]:
    if not might_hold_a_class(source):
        return path, None, None
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as error:
        message = f"cannot parse: {error.msg}{_newer_syntax_hint(source)}"
        return path, None, Diagnostic.of("BAY001", message, path, error.lineno, error.offset)
    except (UnicodeDecodeError, ValueError) as error:
        return path, None, Diagnostic.of("BAY001", f"cannot decode: {error}", path)
    except (RecursionError, MemoryError):
        message = "too deeply nested for Python's parser (a very long expression?)"
        return path, None, Diagnostic.of("BAY001", message, path)
    ties_weights = any(name.encode() in source for name in TYING_NAMES)
    return path, index_source(tree, path, module, is_package, ties_weights), None


def _newer_syntax_hint(source: bytes) -> str:
    """Python's own parser is the index's; libcst may read syntax of newer Pythons."""
    try:
        cst.parse_module(source)
    except Exception:  # any failure means: not newer syntax, just a syntax error
        return ""
    return f" (syntax newer than Python {sys.version_info.major}.{sys.version_info.minor}; run bayesify with a newer Python)"


_worker_spec: Optional[Spec] = None


def _init_worker(spec: Spec) -> None:
    global _worker_spec
    _worker_spec = spec


def _rewrite_file(job: FileJob) -> FileResult:
    spec = _worker_spec
    try:
        source = Path(job.path).read_bytes()
    except OSError as error:
        return FileResult(job.path, error=Diagnostic.of("BAY001", f"cannot read: {error.strerror or error}", job.path))
    try:
        return rewrite_source(source, job, spec)
    except RecursionError:
        return FileResult(job.path, source, error=Diagnostic.of("BAY001", "too deeply nested to rewrite", job.path))
    except Exception as error:  # one file's bug must not stop the others
        message = f"{type(error).__name__}: {error}; {BUG_HINT}"
        return FileResult(job.path, source, error=Diagnostic.of("BAY009", message, job.path))


def _map(function: Callable, items: Sequence, jobs: int, spec: Spec, done: Callable = lambda item: None) -> list:
    """``function`` over ``items``, in order; ``done(item)`` is called as each one finishes."""
    results = []
    if jobs <= 1 or len(items) < POOL_THRESHOLD:
        _init_worker(spec)
        for item in items:
            results.append(function(item))
            done(item)
        return results
    chunksize = max(1, len(items) // (jobs * 8))
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(spec,)) as pool:
        for item, result in zip(items, pool.map(function, items, chunksize=chunksize)):
            results.append(result)
            done(item)
    return results


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run(
    paths: Iterable[Path],
    spec: Spec,
    jobs: Optional[int] = None,
    context: Iterable[Path] = (),
    cache: Optional[Cache] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> RunResult:
    """Plan and rewrite ``paths`` in memory; nothing is written here. ``context`` files are
    read for their classes only (the bases of classes in ``paths``), never rewritten. With a
    ``cache``, files whose bytes (and whose job) are unchanged since a run are not redone.
    ``progress(steps)`` is called as work finishes: ``2 * len(paths)`` steps in all (each
    path is indexed, then rewritten or skipped); context files count for nothing."""
    jobs = jobs or default_jobs()
    names = [str(path) for path in paths]
    context_names = sorted({str(path) for path in context} - set(names))
    step = progress or (lambda steps: None)
    run_files = set(names)
    sources = _read_all(names + context_names) if cache else {}
    digests = {name: digest(source) for name, source in sources.items()}
    indexed = dict(_cached_indexes(cache, digests))
    missing = [name for name in names + context_names if name not in indexed]
    step(len(run_files.intersection(indexed)))
    for path, index, error in _map(_index_file, missing, jobs, spec, lambda name: step(int(name in run_files))):
        indexed[path] = (index, error)
        if cache and not error and path in digests:
            cache.store_index(path, digests[path], index)
    failures = {name: FileResult(name, error=indexed[name][1]) for name in names if indexed[name][1]}
    indexes = [indexed[name][0] for name in names if indexed[name][0] is not None]
    context_indexes = [indexed[n][0] for n in context_names if indexed[n][0] is not None]
    class_index = ClassIndex(indexes, spec.exclude, context_indexes, spec.external)
    results: dict[str, FileResult] = {}
    pending = []
    for file_index in indexes:
        job = _job_for(file_index, class_index, spec)
        if not any(kind.is_pyro for kind in job.conversions.values()):
            continue
        path = job.path
        hit = cache and path in digests and cache.result(path, digests[path], job_fingerprint(job), sources[path])
        if hit:
            results[path] = hit
        else:
            pending.append(job)
    step(len(names) - len(pending))
    try:
        done = _map(_rewrite_file, pending, jobs, spec, lambda job: step(1))
    except BrokenProcessPool:
        done = [_rewrite_alone(job, spec) for job in pending]
    for job, result in zip(pending, done):
        results[job.path] = result
        if cache and job.path in digests:
            cache.store_result(digests[job.path], job_fingerprint(job), result)
    if cache:
        cache.save()
    ordered = [failures.get(name) or results.get(name) or FileResult(name) for name in names]
    classes = [record for file_index in indexes for record in file_index.classes]
    return _finish(ordered, spec, _unseen_base_warnings(indexes, class_index), classes)


def _read_all(names: list[str]) -> dict[str, bytes]:
    sources = {}
    for name in names:
        try:
            sources[name] = Path(name).read_bytes()
        except OSError:
            pass  # the index pass reports it
    return sources


def _cached_indexes(cache: Optional[Cache], digests: dict[str, str]):
    if cache is None:
        return
    for path, file_digest in digests.items():
        hit, index = cache.index(path, file_digest)
        if hit:
            yield path, (index, None)


def run_source(source: bytes, spec: Spec, path: str = "-", context: Iterable[Path] = ()) -> RunResult:
    """Plan and rewrite one in-memory source (standard input). Named ``-``, it is a module of
    its own; named by its place (``--stdin-filename``), it is the module found there.
    ``context`` files are read for their classes, the bases of the source's classes."""
    module, is_package = ("__main__", False) if path == "-" else module_of(Path(path))
    _, file_index, error = _index_source(source, path, module, is_package)
    if error:
        return _finish([FileResult(path, source, error=error)], spec)
    if file_index is None:
        return _finish([FileResult(path, source)], spec)
    context_indexes = [index for _, index, _ in map(_index_file, sorted({str(p) for p in context} - {path})) if index]
    class_index = ClassIndex([file_index], spec.exclude, context_indexes, spec.external)
    job = _job_for(file_index, class_index, spec)
    return _finish([rewrite_source(source, job, spec)], spec, classes=file_index.classes)


def _unseen_base_warnings(indexes: list[FileIndex], class_index: ClassIndex) -> list[Diagnostic]:
    return [
        Diagnostic.of(
            "BAY201",
            f"{record.name} derives from {base}, which bayesify cannot see, so it is left as it "
            "is; if that is an nn.Module, name its source with --context (or `modules: context:` "
            "in the spec), or list it under `modules: external:`",
            file_index.path,
            record.line,
        )
        for file_index in indexes
        for record in file_index.classes
        for base in class_index.unseen_bases(record)
    ]


def _finish(
    results: list[FileResult], spec: Spec, warnings: Sequence[Diagnostic] = (), classes: Sequence[ClassRecord] = ()
) -> RunResult:
    outcome = RunResult(results=results, spec=spec)
    outcome.lints = [finding for result in results for finding in result.lints]
    outcome.warnings = [*warnings, *(w for r in results for w in r.warnings)] + [
        Diagnostic.of(
            "BAY204",
            f"{entry.selector.text} only selects parameters that an earlier entry already decides; "
            "it has no effect",
            spec.path,
            entry.line,
        )
        for entry in shadowed_only_entries(spec, outcome.sites)
    ]
    unmatched = unmatched_entries(spec, outcome.sites)
    if outcome.failed:
        # The classes of the files that failed are unknown: an entry may well select them, and
        # the files that could be read must still be rewritten.
        outcome.warnings += [
            Diagnostic.of(
                "BAY205", f"{entry.selector.text} selects nothing in the files that could be read",
                spec.path, entry.line, severity=WARNING,
            )
            for entry in unmatched
        ]
    else:
        outcome.unmatched = unmatched
        outcome.hints = {entry.line: did_you_mean(entry.selector, list(classes)) for entry in unmatched}
    return outcome


def _job_for(file_index: FileIndex, class_index: ClassIndex, spec: Spec) -> FileJob:
    planner = Planner(spec)
    conversions = {}
    base_kinds = {}
    inherited: dict[int, set[str]] = {}
    for record in file_index.classes:
        conversions[record.order] = class_index.conversion(record)
        base_kinds[record.order] = tuple(class_index.base_kinds(record))
        for ancestor in class_index.ancestors(record)[1:]:
            if ancestor.module != file_index.module:
                attrs = planner.random_attrs(ancestor)
                if attrs:
                    inherited.setdefault(record.order, set()).update(attrs)
    imported_pyro = frozenset(
        target
        for target in file_index.imports.bound.values()
        if target in class_index.classes and class_index.conversion(class_index.classes[target]).is_pyro
    )
    return FileJob(file_index, conversions, base_kinds, inherited, imported_pyro)


def _rewrite_alone(job: FileJob, spec: Spec) -> FileResult:
    """After a worker died, retry each file in a pool of its own, so only the file that
    kills a worker (the native parser can overflow its stack) fails."""
    try:
        with ProcessPoolExecutor(1, initializer=_init_worker, initargs=(spec,)) as pool:
            return pool.submit(_rewrite_file, job).result()
    except BrokenProcessPool:
        message = f"the rewrite crashed its worker process; {BUG_HINT}"
        return FileResult(job.path, error=Diagnostic.of("BAY009", message, job.path))

