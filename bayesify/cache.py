"""Skip unchanged files on re-runs: a cache of index records and rewrite results.

One file per spec (and bayesify version) under the user's cache folder
(``$BAYESIFY_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesify``, else ``~/.cache/bayesify``). Each
source file has an entry keyed by its absolute path and the SHA-256 of its bytes:

- its index record (classes, bases, imports), valid while the bytes are the same;
- its rewrite result (rewritten bytes, sites, warnings, lints), valid while the bytes *and*
  the file's job are the same: the job holds all the run's index decided for the file
  (which classes convert, what they inherit), so an edit to a base class in another file
  invalidates its subclasses' entries too.

Failures are never cached. The cache is written atomically (a temporary file, then
``os.replace``): parallel runs never see half a cache; the last one to finish wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import __version__
from .diagnostics import Diagnostic
from .engine import FileJob, FileResult
from .index import FileIndex


def cache_folder() -> Path:
    explicit = os.environ.get("BAYESIFY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bayesify"


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
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _renamed(diagnostic: Diagnostic, old: str, new: str) -> Diagnostic:
    """A cached diagnostic about the file itself under the name the file has in this run."""
    return diagnostic.at(new) if diagnostic.path == old else diagnostic


@dataclass
class _Entry:
    digest: str
    index: Optional[FileIndex]
    job: Optional[str] = None
    #: The result without its source bytes; ``rewritten`` zlib-compressed.
    result: Optional[FileResult] = None


class Cache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, _Entry] = {}
        self._dirty = False
        try:
            with open(path, "rb") as stream:
                loaded = pickle.load(stream)
            if isinstance(loaded, dict):
                self._entries = loaded
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, TypeError, ValueError):
            self._entries = {}  # a missing, old or damaged cache is an empty one

    @classmethod
    def for_spec(cls, spec_fingerprint: str, context: tuple[str, ...] = ()) -> "Cache":
        parts = (__version__, _code_fingerprint(), spec_fingerprint, sorted(context))
        key = hashlib.sha256(repr(parts).encode()).hexdigest()
        return cls(cache_folder() / f"cache-{__version__}-{key[:20]}.pickle")

    def index(self, path: str, file_digest: str) -> tuple[bool, Optional[FileIndex]]:
        """``(hit, index record)``; a hit with no record is a file holding no class."""
        entry = self._entries.get(os.path.abspath(path))
        if entry is None or entry.digest != file_digest:
            return False, None
        # The same file may have been named another way (src/m.py, then m.py from src/).
        return True, entry.index and dataclasses.replace(entry.index, path=path)

    def store_index(self, path: str, file_digest: str, index: Optional[FileIndex]) -> None:
        self._entries[os.path.abspath(path)] = _Entry(file_digest, index)
        self._dirty = True

    def result(self, path: str, file_digest: str, job: str, source: bytes) -> Optional[FileResult]:
        entry = self._entries.get(os.path.abspath(path))
        if entry is None or entry.digest != file_digest or entry.job != job or entry.result is None:
            return None
        cached = entry.result
        rewritten = zlib.decompress(cached.rewritten) if cached.rewritten is not None else None
        return FileResult(
            path=path,
            original=source,
            rewritten=rewritten,
            sites=[dataclasses.replace(site, path=path) for site in cached.sites],
            # The same file may have been named another way: its diagnostics follow the name.
            warnings=[_renamed(message, cached.path, path) for message in cached.warnings],
            lints=[_renamed(message, cached.path, path) for message in cached.lints],
        )

    def store_result(self, file_digest: str, job: str, result: FileResult) -> None:
        entry = self._entries.get(os.path.abspath(result.path))
        if result.error or entry is None or entry.digest != file_digest:
            return
        entry.job = job
        entry.result = FileResult(
            path=result.path,
            rewritten=zlib.compress(result.rewritten, 1) if result.rewritten is not None else None,
            sites=result.sites,
            warnings=result.warnings,
            lints=result.lints,
        )
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".cache-", dir=self.path.parent)
            with os.fdopen(handle, "wb") as stream:
                pickle.dump(self._entries, stream, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, self.path)
        except OSError:
            pass  # a cache that cannot be written costs time on the next run, nothing else
