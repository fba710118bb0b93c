"""Run the pipeline over many files: prefilter, index, plan and rewrite, in parallel.

Two passes over the files. The index pass reads every file that might hold a class and
records its classes with :mod:`ast`; then the class index decides which classes convert,
across files. The rewrite pass parses with libcst only the files that hold a converting class.
Both passes run in a process pool when there are many files, in-process when there are few
(or when no pool can be made). The cache (:mod:`bayesify.cache`) is a layer around each
pass: it answers what it can, the pass does the rest, the cache keeps the new answers.

Plan and rewrite see the same bytes: the index pass records the digest of what it read, and
the rewrite pass fails a file whose bytes are no longer those ("changed while bayesify was
rewriting it") instead of rewriting it from a plan made for other bytes.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import libcst as cst

from .cache import NO_CACHE, Indexed, NoCache, digest, job_row
from .diagnostics import WARNING, Diagnostic
from .discover import read_source
from .engine import BUG_HINT, FileJob, FileResult, Plan, rewrite_source
from .index import TYING_NAMES, ClassIndex, ClassRecord, FileIndex, index_source, module_of
from .output import CHANGED_DURING_RUN
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


def _index_file(path: str) -> Indexed:
    try:
        source = read_source(path)
    except OSError as error:
        return Indexed(path, error=Diagnostic.of("BAY001", f"cannot read: {error.strerror or error}", path))
    module, is_package = module_of(Path(path))
    _, index, error = _index_source(source, path, module, is_package)
    return Indexed(path, digest(source), index, error)


def _index_source(
    source: bytes, path: str, module: str, is_package: bool
) -> tuple[str, Optional[FileIndex], Optional[Diagnostic]]:
    # A package's __init__ is indexed even without a class: its imports re-export classes
    # (``from .base import Flow``) that other files name through the package.
    if not might_hold_a_class(source) and not is_package:
        return path, None, None
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as error:
        message = f"cannot parse: {error.msg}{_newer_syntax_hint(source, error)}"
        return path, None, Diagnostic.of("BAY001", message, path, error.lineno, error.offset)
    except (UnicodeDecodeError, ValueError) as error:
        return path, None, Diagnostic.of("BAY001", f"cannot decode: {error}", path)
    except (RecursionError, MemoryError):
        message = "too deeply nested for Python's parser (a very long expression?)"
        return path, None, Diagnostic.of("BAY001", message, path)
    ties_weights = any(name.encode() in source for name in TYING_NAMES)
    return path, index_source(tree, path, module, is_package, ties_weights), None


def _newer_syntax_hint(source: bytes, error: SyntaxError) -> str:
    """Python's own parser is the index's; libcst may read syntax of newer Pythons. Never
    for a source Python finds too deep ("too many nested parentheses", "too many levels of
    indentation"): libcst's native parser would overflow its stack on it and kill the process."""
    if error.msg.startswith("too many"):
        return ""
    try:
        cst.parse_module(source)
    except Exception:  # any failure means: not newer syntax, just a syntax error
        return ""
    return f" (syntax newer than Python {sys.version_info.major}.{sys.version_info.minor}; run bayesify with a newer Python)"


_worker_spec: Optional[Spec] = None
#: Set by the main process when it is interrupted: a worker then ends its chunk early.
_worker_stop: Optional[EventType] = None


def _init_worker(spec: Spec, parent: Optional[int] = None, stop: Optional[EventType] = None) -> None:
    """Runs first in every worker process (``parent``: the main process's id)."""
    global _worker_spec, _worker_stop
    _worker_spec, _worker_stop = spec, stop
    if parent is None:
        return
    # Ctrl-C is the main process's to handle: it stops the workers. A worker must not print
    # a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with(parent)
    # A forked worker starts with the main process's whole heap, which every full collection
    # here would walk again: on the transformers tree, a quarter of a rewrite worker's time.
    # Those objects are the main process's to free. And libcst makes millions of short-lived
    # objects with few cycles among them: collecting less often costs little memory.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _die_with(parent: int) -> None:
    """Make the kernel kill this worker when the main process dies, even by SIGKILL: an
    orphaned worker would hold standard output open, and ``bayesify … | tee`` would hang."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the main process died before the line above took effect
        os._exit(1)


def _rewrite_file(item: tuple[FileJob, str]) -> FileResult:
    """Rewrite one file from its bytes, if they are still the ones its plan was made for."""
    job, planned_digest = item
    spec = _worker_spec
    try:
        source = read_source(job.path)
    except OSError as error:
        return FileResult(
            job.path, error=Diagnostic.of("BAY001", f"cannot read: {error.strerror or error}", job.path)
        )
    if digest(source) != planned_digest:
        return FileResult(job.path, source, error=Diagnostic.of("BAY002", CHANGED_DURING_RUN, job.path))
    try:
        return rewrite_source(source, job, spec)
    except RecursionError:
        return FileResult(
            job.path, source, error=Diagnostic.of("BAY001", "too deeply nested to rewrite", job.path)
        )
    except UnicodeDecodeError as error:
        return FileResult(job.path, source, error=_not_decodable(job.path, error))
    except Exception as error:  # one file's bug must not stop the others
        message = f"{type(error).__name__}: {error}; {BUG_HINT}"
        return FileResult(job.path, source, error=Diagnostic.of("BAY009", message, job.path))


def _not_decodable(path: str, error: UnicodeDecodeError) -> Diagnostic:
    """Python's parser skips the bytes of comments; libcst decodes the whole file."""
    data = error.object if isinstance(error.object, bytes) else b""
    line = data.count(b"\n", 0, error.start) + 1
    byte = data[error.start : error.start + 1].hex() or "?"
    message = (
        f"not {error.encoding.upper()} (byte 0x{byte}: {error.reason}); save the file as UTF-8 or "
        "declare its encoding (# -*- coding: ... -*-)"
    )
    return Diagnostic.of("BAY001", message, path, line)


def _map(
    function: Callable,
    items: Sequence,
    jobs: int,
    spec: Spec,
    crashed: Callable,
    done: Callable = lambda item: None,
) -> list:
    """``function`` over ``items``, in order; ``done(item)`` is called as each one finishes.
    An item whose worker process dies gets ``crashed(item)``; the others are still done."""
    if jobs > 1 and len(items) >= POOL_THRESHOLD:
        try:
            return _map_in_pools(function, items, jobs, spec, crashed, done)
        except _NoPool:
            pass  # no process pool on this system (no /dev/shm, no fork): do the work here
    _init_worker(spec)
    results = []
    for item in items:
        results.append(function(item))
        done(item)
    return results


class _NoPool(Exception):
    pass


def _map_in_pools(
    function: Callable, items: Sequence, jobs: int, spec: Spec, crashed: Callable, done: Callable
) -> list:
    """When a worker dies (the native parser may overflow its stack), the first item not yet
    answered is redone in a process of its own, which tells whether it is the culprit, and
    the rest go on in a fresh pool."""
    results: list = []
    while len(results) < len(items):
        rest = items[len(results) :]
        size = max(1, len(rest) // (jobs * 8))
        chunks = [rest[start : start + size] for start in range(0, len(rest), size)]
        try:
            with _pool(jobs, spec) as pool:
                # Chunks are submitted by hand, not with pool.map, whose iterator cancels the
                # futures left when it stops (interrupted, or a worker died) while the pool's
                # thread may be marking them broken: that thread then fails with a traceback.
                with _sigint_blocked():  # the workers start here: no Ctrl-C before they ignore it
                    answers = [pool.submit(_each, function, chunk) for chunk in chunks]
                for chunk, answer in zip(chunks, answers):
                    for item, result in zip(chunk, answer.result()):
                        results.append(result)
                        done(item)
        except BrokenProcessPool:
            item = items[len(results)]
            results.append(_alone(function, item, spec, crashed))
            done(item)
    return results


def _each(function: Callable, chunk: Sequence) -> list:
    answers = []
    for item in chunk:
        if _worker_stop is not None and _worker_stop.is_set():
            break
        answers.append(function(item))
    return answers


@contextlib.contextmanager
def _pool(jobs: int, spec: Spec):
    """A process pool that, when the main process is interrupted, stops its workers after
    the file each one has in hand, instead of after the work still queued. Workers are told,
    not killed: a worker killed while it sends an answer leaves half a message that the
    pool's own thread then waits on for ever. Either way that thread has ended when this
    returns, so nothing of the pool is left to run (and race) as Python exits."""
    try:
        stop = multiprocessing.Event()
        pool = ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(spec, os.getpid(), stop))
    except (OSError, NotImplementedError, ImportError) as error:
        raise _NoPool from error
    try:
        yield pool
    except BaseException:
        stop.set()
        pool.shutdown(cancel_futures=True)
        raise
    pool.shutdown()


@contextlib.contextmanager
def _sigint_blocked():
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _alone(function: Callable, item, spec: Spec, crashed: Callable):
    try:
        with _pool(1, spec) as pool:
            return pool.submit(function, item).result()
    except (BrokenProcessPool, _NoPool):
        return crashed(item)


def _index_crashed(path: str) -> Indexed:
    message = f"reading its classes crashed a worker process; {BUG_HINT}"
    return Indexed(path, error=Diagnostic.of("BAY009", message, path))


def _rewrite_crashed(item: tuple[FileJob, str]) -> FileResult:
    path = item[0].path
    return FileResult(
        path, error=Diagnostic.of("BAY009", f"the rewrite crashed its worker process; {BUG_HINT}", path)
    )


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run(
    paths: Iterable[Path],
    spec: Spec,
    jobs: Optional[int] = None,
    context: Iterable[Path] = (),
    cache: Optional[NoCache] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> RunResult:
    """Plan and rewrite ``paths`` in memory; nothing is written here. ``context`` files are
    read for their classes only (the bases of classes in ``paths``), never rewritten. With a
    ``cache``, files whose bytes (and whose job) are unchanged since a run are not redone.
    ``progress(steps)`` is called as work finishes: ``2 * len(paths)`` steps in all (each
    path is indexed, then rewritten or skipped); context files count for nothing."""
    jobs = jobs or default_jobs()
    cache = cache or NO_CACHE
    names = [str(path) for path in paths]
    context_names = sorted({str(path) for path in context} - set(names))
    step = progress or (lambda steps: None)
    run_files = set(names)

    known = cache.known(names + context_names)
    step(len(run_files & known))
    missing = [name for name in names + context_names if name not in known]
    fresh = {
        answer.path: answer
        for answer in _map(
            _index_file, missing, jobs, spec, _index_crashed, lambda n: step(int(n in run_files))
        )
    }
    cache.store_indexes(fresh.values())

    plan = cache.replay(names, context_names, spec, fresh) or _plan(
        names, context_names, known, fresh, spec, cache, jobs
    )
    step(len(names) - len(plan.pending))
    done = _map(_rewrite_file, plan.pending, jobs, spec, _rewrite_crashed, lambda item: step(1))
    cache.store_results(
        ((job, file_digest, result) for (job, file_digest), result in zip(plan.pending, done)), spec
    )
    results = {**plan.results, **{result.path: result for result in done}}
    ordered = [plan.failures.get(name) or results.get(name) or FileResult(name) for name in names]
    outcome = _finish(ordered, spec, plan.warnings, plan.classes)
    if not outcome.failed and not outcome.unmatched:  # replayed, those would need the index
        cache.store_run(names, context_names, plan.rows, plan.warnings)
    cache.save()
    return outcome


def _plan(
    names: list[str],
    context_names: list[str],
    known: set[str],
    fresh: dict[str, Indexed],
    spec: Spec,
    cache: NoCache,
    jobs: int,
) -> Plan:
    """Plans the run from every file's index: the cached records of ``known`` files (those
    found damaged are indexed again), and ``fresh`` ones."""
    indexed = cache.indexes(name for name in names + context_names if name in known)
    again = _map(_index_file, [name for name in known if name not in indexed], jobs, spec, _index_crashed)
    cache.store_indexes(again)
    indexed.update((answer.path, answer) for answer in again)
    indexed.update(fresh)

    failures = {name: FileResult(name, error=indexed[name].error) for name in names if indexed[name].error}
    indexes = [indexed[name].index for name in names if indexed[name].index is not None]
    context_indexes = [indexed[n].index for n in context_names if indexed[n].index is not None]
    class_index = ClassIndex(indexes, spec.exclude, context_indexes, spec.external)
    random_attrs = _random_attrs_once(spec)
    planned = [
        (_job_for(file_index, class_index, random_attrs), indexed[file_index.path].digest)
        for file_index in indexes
        if any(class_index.conversion(record).is_pyro for record in file_index.classes)
    ]
    results = cache.results(planned, spec)
    return Plan(
        failures,
        results,
        [item for item in planned if item[0].path not in results],
        _unseen_base_warnings(indexes, class_index),
        [job_row(job) for job, _ in planned],
        [record for file_index in indexes for record in file_index.classes],
    )


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
    context_indexes = [
        index for _, index, _ in map(_index_file, sorted({str(p) for p in context} - {path})) if index
    ]
    class_index = ClassIndex([file_index], spec.exclude, context_indexes, spec.external)
    job = _job_for(file_index, class_index, Planner(spec).random_attrs)
    return _finish([rewrite_source(source, job, spec)], spec, classes=file_index.classes)


def _unseen_base_warnings(indexes: list[FileIndex], class_index: ClassIndex) -> list[Diagnostic]:
    return [
        Diagnostic.of(
            "BAY201",
            f"{record.name} derives from {base}{'' if through is record else f' (through {through.name})'}, "
            "which bayesify cannot see, so it is left as it is; if that is an nn.Module, name its "
            "source with --context (or `modules: context:` in the spec), or list it under "
            "`modules: external:`",
            file_index.path,
            record.line,
        )
        for file_index in indexes
        for record in file_index.classes
        for base, through in class_index.unseen_bases(record)
    ]


def _finish(
    results: list[FileResult],
    spec: Spec,
    warnings: Sequence[Diagnostic] = (),
    classes: Sequence[ClassRecord] = (),
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
                "BAY205",
                f"{entry.selector.text} selects nothing in the files that could be read",
                spec.path,
                entry.line,
                severity=WARNING,
            )
            for entry in unmatched
        ]
    else:
        outcome.unmatched = unmatched
        outcome.hints = {entry.line: did_you_mean(entry.selector, list(classes)) for entry in unmatched}
    return outcome


def _random_attrs_once(spec: Spec) -> Callable[[ClassRecord], set[str]]:
    """:meth:`Planner.random_attrs`, worked out once a class for the whole run: the job of
    every file asks it of the same few bases (a large tree's shared layers) again and again."""
    planner = Planner(spec)
    #: By the record's identity: the run's ClassIndex keeps every record alive meanwhile.
    known: dict[int, set[str]] = {}

    def random_attrs(record: ClassRecord) -> set[str]:
        attrs = known.get(id(record))
        if attrs is None:
            attrs = known[id(record)] = planner.random_attrs(record)
        return attrs

    return random_attrs


def _job_for(
    file_index: FileIndex, class_index: ClassIndex, random_attrs: Callable[[ClassRecord], set[str]]
) -> FileJob:
    """What the run decided for one file; ``random_attrs`` is :meth:`Planner.random_attrs`."""
    conversions = {}
    base_kinds = {}
    inherited: dict[int, set[str]] = {}
    inherited_attrs: dict[int, frozenset[str]] = {}
    for record in file_index.classes:
        conversions[record.order] = class_index.conversion(record)
        base_kinds[record.order] = class_index.base_kinds(record)
        ancestors = class_index.ancestors(record)[1:]
        for ancestor in ancestors:
            if ancestor.module != file_index.module:
                attrs = random_attrs(ancestor)
                if attrs:
                    inherited.setdefault(record.order, set()).update(attrs)
        own = record.attr_lines
        attrs = frozenset(
            attr
            for ancestor in ancestors
            for attr in ancestor.attr_lines
            if attr not in own and attr not in ancestor.plain_attrs
        )
        if attrs:
            inherited_attrs[record.order] = attrs
    imported_pyro = frozenset(
        target
        for target, record in ((t, class_index.lookup(t)) for t in file_index.imports.bound.values())
        if record is not None and class_index.conversion(record).is_pyro
    )
    built_elsewhere = frozenset(
        record.order for record in file_index.classes if class_index.built_by_unread_base(record)
    )
    return FileJob(
        file_index, conversions, base_kinds, inherited, imported_pyro, inherited_attrs, built_elsewhere
    )
