"""Skip unchanged files on re-runs: a layer around the work of a run, as black's cache is.

The runner asks the cache what it already knows (:meth:`Cache.indexes`, :meth:`Cache.results`),
does the rest, and hands the new answers back (:meth:`Cache.store_indexes`,
:meth:`Cache.store_results`); :data:`NO_CACHE` answers nothing and keeps nothing, so the run
is written once, for both.

One file per spec (and bayesify version, and bayesify's own sources, and ``--context`` files)
under the user's cache folder (:func:`cache_folder`). Each source file has an entry, keyed by
its absolute path, that is valid while everything its answers depend on is the same:

- its index record (classes, bases, imports) depends on its bytes (SHA-256) and its module
  name, which the ``__init__.py`` files of its folders decide;
- its rewrite result (rewritten bytes, sites, warnings, lints) depends on those and on the
  file's job: all the run's index decided for the file (which classes convert, what they
  inherit), so an edit to a base class in another file invalidates its subclasses' entries.

Beside them, the last run's plan: every file with the shape of its index (all that other
files' jobs read of it), and the job of each file it rewrote. A run over the same files whose
shapes are all as they were (nothing changed, or edits inside methods, comments, new lines)
takes that plan without indexing or planning anything again: the unchanged files keep their
results and the edited ones are rewritten from the jobs they had.

The file is JSON (a line with the format and the SHA-256 of the rest, then the entries):
nothing bayesify reads back can run code. Any damage (a truncated file, a flipped bit)
breaks the checksum and reads as an empty cache; a file planted with a valid checksum is
read record by record, and a record without exactly the expected types is a miss, never an
exception later.
Failures are never cached, and a result is stored only under the digest of the bytes it was
made from. The file is written atomically (a temporary file, then ``os.replace``); parallel
runs never see half a cache, the last one to finish wins, and the temporary files of a run
that was killed are removed by the next save.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Optional

from . import __version__
from .diagnostics import ERROR, WARNING, Diagnostic
from .discover import read_source
from .engine import FileJob, FileResult, Plan
from .index import BaseRef, ClassRecord, Conversion, FileIndex, module_of
from .names import ImportTable
from .output import remove_stale_temporaries, signals_held
from .plan import PlannedSite
from .sites import SiteKind
from .spec import Entry, Spec

#: Bumped whenever the layout of the file changes; an older file is then a miss.
FORMAT = 10


def cache_folder() -> tuple[Optional[Path], str]:
    """``(folder, why)``: ``$BAYESIFY_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesify``, else
    ``$HOME/.cache/bayesify`` (HOME, or the user's entry in the password database). A
    variable that is empty or relative is not used (as the XDG rules say); with no usable
    folder there is no cache, and ``why`` says so."""
    explicit = os.environ.get("BAYESIFY_CACHE_DIR")
    if explicit:
        return Path(explicit), ""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "bayesify", ""
    home = os.environ.get("HOME")
    if home is None:
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError, AttributeError):
            home = None
    if home and os.path.isabs(home):
        return Path(home) / ".cache" / "bayesify", ""
    return None, "no cache: HOME is unset or not an absolute path (set BAYESIFY_CACHE_DIR to use one)"


def _code_fingerprint() -> list[tuple[str, int, int]]:
    """bayesify's own sources, by size and time: a development install that changed since a
    run must not read that run's results (the version alone does not move)."""
    package = Path(__file__).parent
    sources = []
    for path in package.rglob("*.py"):
        stat = path.stat()
        sources.append((str(path.relative_to(package)), stat.st_size, stat.st_mtime_ns))
    return sorted(sources)


def digest(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def job_fingerprint(job: FileJob) -> str:
    """What the rest of the run decided for this file, as a stable string."""
    parts = (
        sorted((o, k.name) for o, k in job.conversions.items()),
        sorted((o, tuple(k.name for k in kinds)) for o, kinds in job.base_kinds.items()),
        sorted((o, sorted(attrs)) for o, attrs in job.inherited_random.items()),
        sorted(job.imported_pyro_classes),
        sorted((o, sorted(attrs)) for o, attrs in job.inherited_attrs.items()),
        sorted(job.built_by_unread_base),
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def job_row(job: FileJob) -> list:
    """``[path, fingerprint, job]``: a job of the run's plan, as :meth:`Cache.store_run` keeps it."""
    return [
        job.path,
        job_fingerprint(job),
        [
            [[order, kind.name] for order, kind in job.conversions.items()],
            [[order, [kind.name for kind in kinds]] for order, kinds in job.base_kinds.items()],
            [[order, sorted(attrs)] for order, attrs in job.inherited_random.items()],
            sorted(job.imported_pyro_classes),
            [[order, sorted(attrs)] for order, attrs in job.inherited_attrs.items()],
            sorted(job.built_by_unread_base),
        ],
    ]


def _job_from_json(value: Any, index: FileIndex) -> FileJob:
    """The job that :func:`job_row` stored, for the file's new ``index`` (of the same shape)."""
    conversions, base_kinds, inherited, imported, inherited_attrs, built_elsewhere = _list(value, 6)
    try:
        return FileJob(
            index,
            {_int(order): Conversion[_str(kind)] for order, kind in map(_list, conversions)},
            {
                _int(order): tuple(Conversion[_str(kind)] for kind in _list(kinds))
                for order, kinds in map(_list, base_kinds)
            },
            {_int(order): set(_strings(attrs)) for order, attrs in map(_list, inherited)},
            _strings(imported),
            {_int(order): _strings(attrs) for order, attrs in map(_list, inherited_attrs)},
            frozenset(map(_int, _list(built_elsewhere))),
        )
    except KeyError:  # not a Conversion's name
        raise _Damaged from None


def _shape(index: Optional[list]) -> str:
    """The digest of what other files' plans read of a file's index, as :func:`_index_to_json`
    wrote it: all but its lines, which only the file's own rewrite reads (from its own, new
    index)."""
    if index is None:
        return "none"
    *head, classes, ties_weights = index
    # A class's row: module, qualname, name, order, line, bases, top, attr_lines, then the rest.
    unplaced = [[*row[:4], 0, row[5], 0, dict.fromkeys(row[7], 0), *row[8:]] for row in classes]
    return digest(json.dumps([*head, unplaced, ties_weights]).encode())


@dataclass
class Indexed:
    """The index pass's answer for one file: the digest of the bytes it read, and the index
    record (None for a file without classes) or the error."""

    path: str
    digest: Optional[str] = None
    index: Optional[FileIndex] = None
    error: Optional[Diagnostic] = None


class NoCache:
    """Knows nothing, keeps nothing: ``--no-cache``, or no folder to keep a cache in."""

    note = ""

    def indexes(self, paths: Iterable[str]) -> dict[str, Indexed]:
        return {}

    def store_indexes(self, answers: Iterable[Indexed]) -> None:
        pass

    def results(self, jobs: Iterable[tuple[FileJob, str]], spec: Spec) -> dict[str, FileResult]:
        return {}

    def store_results(self, done: Iterable[tuple[FileJob, str, FileResult]], spec: Spec) -> None:
        pass

    def known(self, paths: Iterable[str]) -> set[str]:
        return set()

    def replay(
        self, names: list[str], context: list[str], spec: Spec, fresh: dict[str, Indexed]
    ) -> Optional[Plan]:
        return None

    def store_run(
        self, names: list[str], context: list[str], planned: list, warnings: list[Diagnostic]
    ) -> None:
        pass

    def save(self) -> None:
        pass


NO_CACHE = NoCache()


class _Damaged(Exception):
    """A record that is not of the shape this version writes."""


class Cache(NoCache):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict] = {}
        self._dirty = False
        #: What :meth:`indexes` read, by path: the bytes and their digest.
        self._sources: dict[str, tuple[bytes, str]] = {}
        #: The package each folder is (``""`` for none), by folder, and the module each file
        #: is, by path, for this run.
        self._packages: dict[str, str] = {}
        self._modules: dict[str, list] = {}
        try:
            with open(path, "rb") as stream:
                header, _, body = stream.read().partition(b"\n")
            # The checksum makes any accidental damage (a flipped bit in a line number) a
            # miss; the checks of each record make a planted file harmless.
            if json.loads(header) == {"format": FORMAT, "sha256": digest(body)}:
                loaded = json.loads(body)
                if isinstance(loaded, dict):
                    self._entries = loaded
        except (OSError, ValueError, RecursionError):  # ValueError: not JSON, not UTF-8
            self._entries = {}  # a missing, old or damaged cache is an empty one

    @classmethod
    def for_spec(cls, spec_fingerprint: str, context: tuple[str, ...] = ()) -> NoCache:
        folder, why = cache_folder()
        if folder is None:
            disabled = NoCache()
            disabled.note = why
            return disabled
        parts = (__version__, _code_fingerprint(), spec_fingerprint, sorted(context))
        key = hashlib.sha256(repr(parts).encode()).hexdigest()
        return cls(folder / f"cache-{__version__}-{key[:20]}.json")

    # -- the index pass ---------------------------------------------------------------------

    def known(self, paths: Iterable[str]) -> set[str]:
        """The paths whose index record is still valid. Every file is read here (once): its
        bytes are kept for :meth:`results`."""
        hits = set()
        for path in paths:
            try:
                source = read_source(path)
            except OSError:
                continue  # the index pass reads it again and reports why it cannot
            self._sources[path] = (source, digest(source))
            if self._entry(path, self._sources[path][1]) is not None:
                hits.add(path)
        return hits

    def indexes(self, paths: Iterable[str]) -> dict[str, Indexed]:
        """The index records of ``paths``, which :meth:`known` found valid, by path."""
        hits = {}
        for path in paths:
            file_digest = self._sources[path][1]
            try:
                index = _index_from_json(self._entry(path, file_digest).get("index", False), path)
            except _Damaged:  # False above: no record at all
                continue
            hits[path] = Indexed(path, file_digest, index)
        return hits

    def store_indexes(self, answers: Iterable[Indexed]) -> None:
        for answer in answers:
            if answer.error is None and answer.digest is not None:
                index = _index_to_json(answer.index)
                self._entries[os.path.abspath(answer.path)] = {
                    "digest": answer.digest,
                    "module": self._module_of(answer.path),
                    "index": index,
                    "shape": _shape(index),
                }
                self._dirty = True

    def _entry(self, path: str, file_digest: str) -> Optional[dict]:
        """The entry of ``path`` if it is of these bytes and of the module they are now."""
        entry = self._entries.get(os.path.abspath(path))
        if not isinstance(entry, dict) or entry.get("digest") != file_digest:
            return None
        if entry.get("module") != self._module_of(path):
            return None  # an __init__.py came or went: the module name changed
        return entry

    def _module_of(self, path: str) -> list:
        """``[module, is_package]``, as :func:`~bayesify.index.module_of` says, with the
        ``__init__.py`` lookups done once a folder: they would cost more than the rest of a
        run that the cache answers."""
        module = self._modules.get(path)
        if module is None:
            module = self._modules[path] = self._find_module(path)
        return module

    def _find_module(self, path: str) -> list:
        if os.path.islink(path):
            return list(module_of(Path(path)))
        folder, name = os.path.split(os.path.abspath(path))
        package = self._package(folder)
        if name in ("__init__.py", "__init__.pyi"):
            return [package, True]
        stem = os.path.splitext(name)[0]
        return [f"{package}.{stem}" if package else stem, False]

    def _package(self, folder: str) -> str:
        """The dotted package that ``folder`` is, ``""`` for none (module_of's rule: the
        folders holding ``__init__.py``, upward)."""
        package = self._packages.get(folder)
        if package is None:
            if os.path.exists(os.path.join(folder, "__init__.py")) or os.path.exists(
                os.path.join(folder, "__init__.pyi")
            ):
                real = os.path.realpath(folder)
                parent = self._package(os.path.dirname(real)) if os.path.dirname(real) != real else ""
                name = os.path.basename(real)
                package = f"{parent}.{name}" if parent else name
            else:
                package = ""
            self._packages[folder] = package
        return package

    # -- the rewrite pass -------------------------------------------------------------------

    def results(self, jobs: Iterable[tuple[FileJob, str]], spec: Spec) -> dict[str, FileResult]:
        """The rewrite results still valid, by path, for ``(job, digest of the indexed bytes)``."""
        hits = {}
        for job, file_digest in jobs:
            source, read_digest = self._sources.get(job.path, (b"", None))
            entry = self._entry(job.path, file_digest) if read_digest == file_digest else None
            if entry is None or entry.get("job") != job_fingerprint(job) or "result" not in entry:
                continue
            try:
                hits[job.path] = _result_from_json(entry["result"], job.path, source, spec.entries)
            except _Damaged:
                continue
        return hits

    def store_results(self, done: Iterable[tuple[FileJob, str, FileResult]], spec: Spec) -> None:
        """Keep each result that did not fail, under the digest of the bytes it was made from."""
        positions = {entry: position for position, entry in enumerate(spec.entries)}
        for job, file_digest, result in done:
            entry = self._entries.get(os.path.abspath(job.path))
            if result.error or not isinstance(entry, dict) or entry.get("digest") != file_digest:
                continue
            if digest(result.original) != file_digest:
                continue
            entry["job"] = job_fingerprint(job)
            entry["result"] = _result_to_json(result, positions)
            self._dirty = True

    # -- the whole run ----------------------------------------------------------------------
    #
    # A run's plan is a function of the shapes of its files' indexes (classes, bases, imports,
    # attribute names; not their lines) and of the spec and bayesify, which the cache file is
    # keyed on. Over the same files, whose shapes are as in the last run, the last run's plan
    # holds: its jobs are taken as they were, the files whose bytes did not change keep their
    # results, and only the edited ones are rewritten again, from the job they had.

    def replay(
        self, names: list[str], context: list[str], spec: Spec, fresh: dict[str, Indexed]
    ) -> Optional[Plan]:
        """The last run's plan, when it was over these very files and ``fresh`` (the files
        indexed anew: edited since) left every shape as it was; ``None`` otherwise."""
        stored = self._entries.get(_RUN)
        if not isinstance(stored, dict):
            return None
        try:
            files = _list(stored.get("files"))
            if [path for path, *_ in map(_list, files)] != names + context or stored.get("names") != len(
                names
            ):
                return None
            for path, file_digest, module, shape in files:
                entry, answer = self._entries[os.path.abspath(path)], fresh.get(path)
                if answer is None:  # its record is valid: it must be the one the plan was made from
                    if entry["digest"] != file_digest or entry["module"] != module:
                        return None
                elif answer.error or entry["digest"] != answer.digest or entry["shape"] != shape:
                    return None  # (the record store_indexes just made, or none)
            warnings = [_message_from_json(message, None) for message in _list(stored.get("warnings"))]
            if any(warning.path in fresh for warning in warnings):
                return None  # its line may have moved
            results, pending = {}, []
            for row in _list(stored.get("planned")):
                path, fingerprint, job = _list(row, 3)
                if _str(path) in fresh:
                    edited = _job_from_json(job, fresh[path].index)
                    if job_fingerprint(edited) != fingerprint:
                        return None
                    pending.append((edited, fresh[path].digest))
                    continue
                entry = self._entries.get(os.path.abspath(_str(path)))
                if not isinstance(entry, dict) or entry.get("job") != fingerprint or "result" not in entry:
                    return None
                results[path] = _result_from_json(entry["result"], path, self._sources[path][0], spec.entries)
        except (_Damaged, KeyError, ValueError):  # KeyError: a path not read; ValueError: a row's length
            return None
        return Plan({}, results, pending, warnings, stored["planned"])

    def store_run(
        self, names: list[str], context: list[str], planned: list, warnings: list[Diagnostic]
    ) -> None:
        """Keep this run's plan for :meth:`replay`: every file's shape, and the jobs of the
        files it rewrites (rows of :func:`job_row`)."""
        files = []
        for path in names + context:
            entry = self._entries.get(os.path.abspath(path))
            if path not in self._sources or not isinstance(entry, dict) or "shape" not in entry:
                return  # a file that could not be read or indexed: the next run must say so again
            files.append([path, entry["digest"], entry["module"], entry["shape"]])
        self._entries[_RUN] = {
            "files": files,
            "names": len(names),
            "planned": planned,
            "warnings": [_message_to_json(message, None) for message in warnings],
        }
        self._dirty = True

    # -- the file ---------------------------------------------------------------------------

    def save(self) -> None:
        if not self._dirty:
            return
        body = json.dumps(self._entries, separators=(",", ":"), check_circular=False).encode()
        data = json.dumps({"format": FORMAT, "sha256": digest(body)}).encode() + b"\n" + body
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path.parent, _TEMPORARY)
            temporary = self.path.parent / f".cache-{os.getpid()}-{os.urandom(4).hex()}.tmp"
            with signals_held():
                with open(temporary, "xb") as stream:
                    stream.write(data)
                os.replace(temporary, self.path)
                temporary = None
        except OSError:
            pass  # a cache that cannot be written costs time on the next run, nothing else
        finally:
            if temporary is not None:  # a full disk, or Ctrl-C: never leave the half file
                try:
                    os.unlink(temporary)
                except OSError:
                    pass


#: The key of the last run's plan among the entries (which are keyed by absolute paths).
_RUN = "run"

#: The name of a temporary file of :meth:`Cache.save`; the group is its process id.
_TEMPORARY = re.compile(r"\.cache-(\d+)-[0-9a-f]{8}\.tmp")


# -- the JSON shapes ----------------------------------------------------------------------------
#
# Lists rather than objects (the file stays small and quick to read), checked on the way in
# by the helpers below, which raise _Damaged for anything of another type.


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Damaged
    return value


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if type(value) is not int:
        raise _Damaged
    return value


def _opt_int(value: Any) -> Optional[int]:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Damaged
    return value


def _list(value: Any, length: Optional[int] = None) -> list:
    if type(value) is not list or (length is not None and len(value) != length):
        raise _Damaged
    return value


def _dict(value: Any) -> dict:
    if type(value) is not dict:
        raise _Damaged
    return value


def _str_map(value: Any) -> dict:
    """A JSON object whose values are all strings (its keys are strings in JSON)."""
    if type(value) is not dict or not _all_str(value.values()):
        raise _Damaged
    return value


def _strings(value: Any) -> frozenset[str]:
    if type(value) is not list or not _all_str(value):
        raise _Damaged
    return frozenset(value)


def _all_str(values: Iterable[Any]) -> bool:
    """Whether every item is a ``str``: ``str.join`` checks them in C, where
    ``all(type(v) is str for v in values)`` runs a Python frame per value (JSON makes no
    subclasses of ``str``)."""
    try:
        "".join(values)
    except TypeError:
        return False
    return True


def _types(values: Iterable[Any]) -> set[type]:
    """The types of ``values``, in one pass in C."""
    return set(map(type, values))


_INT = {int}
_LIST = {list}
_OPT_STR = {str, type(None)}
_OPT_INT = {int, type(None)}


def _index_to_json(index: Optional[FileIndex]) -> Optional[list]:
    if index is None:
        return None
    imports = index.imports
    classes = [
        [
            record.module,
            record.qualname,
            record.name,
            record.order,
            record.line,
            [[base.resolved, base.subscripted, base.argument] for base in record.bases],
            record.top,
            record.attr_lines,
            {method: sorted(reads) for method, reads in record.method_reads.items()},
            sorted(record.init_reads),
            record.decorators,
            sorted(record.plain_attrs),
        ]
        for record in index.classes
    ]
    return [imports.module, imports.package, imports.bound, imports.star_sources, classes, index.ties_weights]


def _index_from_json(value: Any, path: str) -> Optional[FileIndex]:
    if value is None:
        return None
    module, package, bound, star_sources, classes, ties_weights = _list(value, 6)
    imports = ImportTable(_str(module), is_package=False)
    imports.package = _str(package)
    imports.bound = _str_map(bound)
    if type(star_sources) is not list or not _all_str(star_sources):
        raise _Damaged
    imports.star_sources = star_sources
    records = []
    # The checks are written out here, not called per value: a cached run reads thousands.
    for row in _list(classes):
        (
            module,
            qualname,
            name,
            order,
            line,
            bases,
            top,
            attr_lines,
            reads,
            init_reads,
            decorators,
            plain,
        ) = _list(row, 12)
        if not (
            type(module) is type(qualname) is type(name) is str
            and type(order) is type(line) is type(top) is int
            and type(bases) is list
            and type(attr_lines) is type(reads) is dict
            and _types(attr_lines.values()) <= _INT
            and _types(reads.values()) <= _LIST
            and _all_str(chain.from_iterable(reads.values()))
            and type(decorators) is list
            and _all_str(decorators)
        ):
            raise _Damaged
        records.append(
            ClassRecord(
                module=module,
                qualname=qualname,
                name=name,
                order=order,
                line=line,
                bases=tuple(map(_base_from_json, bases)),
                top=top,
                attr_lines=attr_lines,
                method_reads={method: frozenset(names) for method, names in reads.items()},
                init_reads=_strings(init_reads),
                decorators=tuple(decorators),
                plain_attrs=_strings(plain),
            )
        )
    return FileIndex(path=path, imports=imports, classes=records, ties_weights=_bool(ties_weights))


#: The bases read so far, by their JSON values: most classes name the same few bases, and a
#: BaseRef is immutable, so one object serves them all.
_BASES: dict[tuple, BaseRef] = {}


def _base_from_json(value: Any) -> BaseRef:
    if type(value) is not list or len(value) != 3:
        raise _Damaged
    resolved, subscripted, argument = value
    if not (type(resolved) in _OPT_STR and type(subscripted) is bool and type(argument) in _OPT_STR):
        raise _Damaged
    key = (resolved, subscripted, argument)
    base = _BASES.get(key)
    if base is None:
        base = _BASES[key] = BaseRef(resolved, subscripted, argument)
    return base


def _result_to_json(result: FileResult, positions: dict[Entry, int]) -> dict:
    rewritten = result.rewritten
    return {
        "path": result.path,
        "rewritten": None if rewritten is None else _edits(result.original, rewritten),
        "sites": [_site_to_json(site, positions) for site in result.sites],
        "warnings": [_message_to_json(message, result.path) for message in result.warnings],
        "lints": [_message_to_json(message, result.path) for message in result.lints],
    }


def _result_from_json(value: Any, path: str, source: bytes, entries: tuple[Entry, ...]) -> FileResult:
    value = _dict(value)
    try:
        stored, sites, warnings, lints = value["rewritten"], value["sites"], value["warnings"], value["lints"]
    except KeyError:
        raise _Damaged from None
    rewritten = None if stored is None else _edited(source, stored)
    return FileResult(
        path=path,
        original=source,
        rewritten=rewritten,
        sites=[_site_from_json(site, path, entries) for site in _list(sites)],
        warnings=[_message_from_json(message, path) for message in _list(warnings)],
        lints=[_message_from_json(message, path) for message in _list(lints)],
    )


def _edits(original: bytes, rewritten: bytes) -> list:
    """``rewritten`` as the lines of ``original`` it replaces: ``[[start, end, text], ...]``.
    A rewrite changes a few lines of a file, and the run has the original at hand, so the
    cache keeps (and a cached run decodes) only those, not the whole file again.

    Made in one pass (difflib's search for the least change costs a cold run 1%): where the
    files part, the rewritten lines are taken until one of them starts :data:`_AGREEING`
    lines that the original has next, at the nearest such place. Any bytes come back the
    same; a poor match only makes the edits longer."""
    old, new = original.splitlines(keepends=True), rewritten.splitlines(keepends=True)
    places: dict[bytes, list[int]] = {}
    for place, line in enumerate(old):
        places.setdefault(line, []).append(place)
    edits = []
    done = taken = 0  # the lines of old and of new accounted for
    while taken < len(new):
        if done < len(old) and old[done] == new[taken]:
            done, taken = done + 1, taken + 1
            continue
        start, first = done, taken
        done = len(old)
        while taken < len(new) and (met := _meeting(old, new, taken, places, start)) is None:
            taken += 1
        if taken < len(new):
            done = met
        # surrogateescape: any bytes, UTF-8 or not, make a JSON string and come back the same.
        edits.append([start, done, b"".join(new[first:taken]).decode("utf-8", "surrogateescape")])
    if done < len(old):
        edits.append([done, len(old), ""])
    return edits


#: How many lines must agree where a rewritten file meets its original again.
_AGREEING = 3


def _meeting(old: list[bytes], new: list[bytes], taken: int, places: dict, start: int) -> Optional[int]:
    """The nearest place of ``old``, from ``start``, whose next lines are ``new``'s from ``taken``."""
    candidates = places.get(new[taken], ())
    for place in candidates[bisect.bisect_left(candidates, start) :]:
        if old[place : place + _AGREEING] == new[taken : taken + _AGREEING]:
            return place
    return None


def _edited(original: bytes, edits: Any) -> bytes:
    """The bytes that :func:`_edits` describes."""
    lines = original.splitlines(keepends=True)
    out = []
    done = 0
    for edit in _list(edits):
        start, end, text = _list(edit, 3)
        if not (type(start) is type(end) is int and type(text) is str and done <= start <= end <= len(lines)):
            raise _Damaged
        try:
            replacement = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no byte decoded to
            raise _Damaged from None
        out += lines[done:start]
        out.append(replacement)
        done = end
    out += lines[done:]
    return b"".join(out)


def _site_to_json(site: PlannedSite, positions: dict[Entry, int]) -> list:
    entry = None if site.entry is None else positions[site.entry]
    return [
        site.line,
        site.module,
        site.class_name,
        site.class_order,
        list(site.attr_path),
        site.kind.name,
        site.shape,
        entry,
        [positions[shadowed] for shadowed in site.shadowed],
        site.if_built,
    ]


def _site_from_json(value: Any, path: str, entries: tuple[Entry, ...]) -> PlannedSite:
    if type(value) is not list or len(value) != 10:
        raise _Damaged
    line, module, class_name, class_order, attr_path, kind, shape, entry, shadowed, if_built = value
    if not (
        type(line) in _OPT_INT
        and type(module) is type(class_name) is str
        and type(class_order) is int
        and type(attr_path) is list
        and _all_str(attr_path)
        and type(kind) is str
        and type(shape) in _OPT_STR
        and type(shadowed) is list
        and type(if_built) is bool
    ):
        raise _Damaged
    kind = _SITE_KINDS.get(kind)
    if kind is None:
        raise _Damaged
    return PlannedSite(
        path=path,
        line=line,
        module=module,
        class_name=class_name,
        class_order=class_order,
        attr_path=tuple(attr_path),
        kind=kind,
        shape=shape,
        entry=None if entry is None else _entry_at(entries, entry),
        shadowed=tuple(_entry_at(entries, position) for position in shadowed),
        if_built=if_built,
    )


_SITE_KINDS = {kind.name: kind for kind in SiteKind}


def _entry_at(entries: tuple[Entry, ...], position: Any) -> Entry:
    """A site's spec entry, by its place in the spec (the cache is the spec's own)."""
    position = _int(position)
    if not 0 <= position < len(entries):
        raise _Damaged
    return entries[position]


def _message_to_json(diagnostic: Diagnostic, path: Optional[str]) -> list:
    """A diagnostic, its path left out when it is the file's own, so that it follows the file
    when the file is named another way (``src/m.py``, then ``m.py`` from ``src``)."""
    own = diagnostic.path == path
    return [
        None if own else diagnostic.path,
        own,
        diagnostic.line,
        diagnostic.col,
        diagnostic.severity,
        diagnostic.code,
        diagnostic.message,
    ]


def _message_from_json(value: Any, path: Optional[str]) -> Diagnostic:
    where, own, line, col, severity, code, message = _list(value, 7)
    if _str(severity) not in (ERROR, WARNING):
        raise _Damaged
    return Diagnostic(
        path if _bool(own) else _opt_str(where),
        _opt_int(line),
        _opt_int(col),
        severity,
        _str(code),
        _str(message),
    )
