"""Write, diff or mirror the results of a run; never leave a file half-written.

A file is replaced atomically (a temporary file in the same folder, then ``os.replace``),
keeping its mode; and only if it still holds the bytes that were rewritten, so an edit made
while bayesify ran is never clobbered. Only files whose bytes change are touched.

Ctrl-C and SIGTERM wait for the file being written (a few milliseconds): then it is whole,
old or new, and its temporary file is gone. A temporary file is named
``.<name>.<pid>-<random>.bayesify``; one whose process is gone (killed with SIGKILL, or the
machine stopped) is removed by the next write into its folder.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import io
import os
import re
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Iterator, Optional

from .diagnostics import Diagnostic
from .engine import FileResult

#: What a file that changed between planning and writing is told (it is left as it is).
CHANGED_DURING_RUN = "changed while bayesify was rewriting it; left as it is now"


class WriteError(Exception):
    """A file cannot be written: ``path`` names it, ``message`` says why."""

    def __init__(self, path: object, message: str) -> None:
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")


def write_atomically(
    path: Path, data: bytes, expected: Optional[bytes] = None, mode: Optional[int] = None
) -> None:
    """Replace ``path`` with ``data``; if ``expected`` is given, only while ``path`` holds it.

    The bytes go to a temporary file in the same folder, which then replaces the file in one
    ``os.replace``: a reader, a crash or Ctrl-C sees the old file or the new one, never a
    part of either. ``expected`` is compared just before the replace, so an edit made while
    bayesify ran is kept. A symbolic link is followed: the file it points to is replaced and
    the link stays a link. The file keeps its owner where the system allows, and its mode
    unless ``mode`` is given; a new file without one gets what the umask allows.

    A read-only file, or a file in a read-only folder, is an error even for root, whom the
    system lets write anywhere: a read-only file is its owner saying "leave this alone".
    """
    path = Path(path)
    target = Path(os.path.realpath(path))
    existing = _stat(path, target)
    if existing is not None and not _writable(target, existing):
        raise WriteError(path, "the file is read-only; left as it is")
    folder = _stat(path, target.parent)
    if folder is None:
        raise WriteError(path, f"cannot write: the folder {target.parent} does not exist")
    if not _writable(target.parent, folder):
        raise WriteError(path, f"its folder {target.parent} is read-only; left as it is")
    if mode is None:
        mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask()
    remove_stale_temporaries(target.parent)
    with signals_held():
        _replace(path, target, data, expected, mode, existing)


def _replace(
    path: Path,
    target: Path,
    data: bytes,
    expected: Optional[bytes],
    mode: int,
    existing: Optional[os.stat_result],
) -> None:
    temporary = str(target.parent / f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}.bayesify")
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as error:
        raise WriteError(path, f"cannot write: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        if existing is not None:
            _keep_owner(temporary, existing)
        os.chmod(temporary, mode)
        if expected is not None:
            _check_unchanged(path, target, expected)
        os.replace(temporary, target)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise WriteError(path, f"cannot write: {error.strerror or error}") from None
        raise


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside wait until its end, then act as they would
    have (a KeyboardInterrupt, or the end of the process): what is written is never left
    half done. Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {
        number: signal.signal(number, lambda number, _frame: received.append(number)) for number in held
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])


#: The name of a temporary file of :func:`write_atomically`; the group is its process id.
TEMPORARY = re.compile(r"\..+\.(\d+)-[0-9a-f]{8}\.bayesify")
#: (folder, pattern) pairs already cleaned of stale temporary files by this process.
_cleaned: set[tuple[str, str]] = set()


def remove_stale_temporaries(folder: Path, pattern: re.Pattern[str] = TEMPORARY) -> None:
    """Remove bayesify's temporary files in ``folder`` (names matching ``pattern``, whose
    first group is a process id) whose process is gone, once a run."""
    key = (os.fspath(folder), pattern.pattern)
    if key in _cleaned:
        return
    _cleaned.add(key)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match and not process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # PermissionError: alive, another user's; the others: no such process
    return True


def _stat(shown: Path, path: Path) -> Optional[os.stat_result]:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise WriteError(shown, f"cannot write: {error.strerror or error}") from None


def _writable(path: Path, status: os.stat_result) -> bool:
    return os.access(path, os.W_OK) and bool(status.st_mode & 0o222)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _keep_owner(temporary: str, existing: os.stat_result) -> None:
    """Give the new file the old one's owner and group, where the system allows it."""
    if not hasattr(os, "chown"):
        return
    created = os.stat(temporary)
    if (created.st_uid, created.st_gid) == (existing.st_uid, existing.st_gid):
        return
    try:
        os.chown(temporary, existing.st_uid, existing.st_gid)
    except OSError:
        try:
            os.chown(temporary, -1, existing.st_gid)
        except OSError:
            pass


def _check_unchanged(path: Path, target: Path, expected: bytes) -> None:
    try:
        current = target.read_bytes()
    except OSError as error:
        raise WriteError(path, f"cannot read back: {error.strerror or error}") from None
    if current != expected:
        raise WriteError(path, CHANGED_DURING_RUN)


def unified_diff(result: FileResult, label: str) -> bytes:
    """A diff that ``patch -p0`` and ``git apply`` apply from the folder bayesify ran in.

    It is bytes, the file's own, as ``diff`` writes them: lines keep their encoding, byte
    order mark and line endings, and are split only at ``\\n``, as ``patch`` splits them
    (a form feed or a ``\\r`` inside a line stays inside it).
    """
    before = _lines(result.original)
    after = _lines(result.rewritten if result.rewritten is not None else result.original)
    name = os.fsencode(label)
    lines = []
    for line in difflib.diff_bytes(difflib.unified_diff, before, after, name, name):
        lines.append(line)
        if not line.endswith(b"\n"):
            lines.append(b"\n\\ No newline at end of file\n")
    return b"".join(lines)


def _lines(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def mirror_root(paths: list[str]) -> Path:
    """The folder that ``--out`` mirrors: the one folder given, or the common parent."""
    common = Path(os.path.commonpath([str(Path(p).resolve()) for p in paths]))
    return common if common.is_dir() else common.parent


def mirror(results: list[FileResult], root: Path, out: Path) -> tuple[list[Path], list[Diagnostic]]:
    """Write every processed file into ``out`` at its place relative to ``root``: rewritten
    files rewritten, the rest copied. Returns the files in ``out`` that no longer have a
    source, and the failures (sources that changed during the run).

    Nothing is written through a symbolic link: ``out`` itself, a folder inside it or a file
    in it that is a link is refused before anything is written (a link could lead back
    into the sources, or anywhere). A rewritten source that changed since it was read fails
    alone, as in place (``result.error``, and a failure returned)."""
    _check_mirror_folder(out, root)
    plan = []
    checked: set[Path] = set()
    for result in results:
        if result.error:
            continue
        source = Path(result.path)
        relative = source.resolve().relative_to(root.resolve())
        _refuse_links(out, relative, checked)
        plan.append((result, source, out / relative))
    written = set()
    failures = []
    for result, source, target in plan:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = stat.S_IMODE(source.stat().st_mode)
            current = source.read_bytes()
            old = target.read_bytes() if target.exists() else None
        except OSError as error:
            raise WriteError(target, f"cannot write: {error.strerror or error}") from None
        if result.changed and current != result.original:
            result.error = Diagnostic.of("BAY002", CHANGED_DURING_RUN, str(source))
            failures.append(result.error)
            continue
        data = result.rewritten if result.changed else current
        written.add(target.resolve())
        if old != data:
            write_atomically(target, data, mode=mode)
    # Python sources only: "*.py*" would also match the .pyc files of an imported mirror.
    orphans = sorted(
        path
        for path in out.rglob("*")
        if path.suffix in (".py", ".pyi") and path.is_file() and path.resolve() not in written
    )
    return orphans, failures


def _check_mirror_folder(out: Path, root: Path) -> None:
    if out.is_symlink():
        raise WriteError(
            out, f"a symbolic link (to {os.path.realpath(out)}); --out writes only into a real folder"
        )
    if os.path.realpath(out) == os.path.realpath(root):
        raise WriteError(out, "the folder being rewritten itself; --out needs another folder")


def _refuse_links(out: Path, relative: Path, checked: set[Path]) -> None:
    """Refuse when a folder or the file on the way from ``out`` to ``out/relative`` is a link."""
    place = out
    for part in relative.parts:
        place = place / part
        if place in checked:
            continue
        if place.is_symlink():
            raise WriteError(
                place,
                f"a symbolic link (to {os.path.realpath(place)}) inside the --out folder; "
                "bayesify never writes through one: remove it, or choose another folder",
            )
        checked.add(place)


# -- mirrors of packages -----------------------------------------------------------------------

#: What a package mirror never copies: Python's byte-code caches, rebuilt on import.
_NOT_COPIED_DIRS, _NOT_COPIED_SUFFIXES = frozenset({"__pycache__"}), frozenset({".pyc", ".pyo"})


def package_mirror_root(paths: list[str], results: list[FileResult]) -> Path:
    """The folder that ``--out`` mirrors, taken above any package that holds the paths, so
    the mirror holds each package under its own name: ``rewrite pkg/ --out out/`` writes
    ``out/pkg/``, and with ``out/`` first on ``sys.path`` the package's own absolute
    imports (``from pkg.x import Y``) load the rewritten code. A folder without
    ``__init__.py`` whose files import it by its name is a package too (a namespace package,
    as pytorch-tabnet's wheel ships): mirrored flat, those imports loaded the original."""
    root = mirror_root(paths)
    while _is_package(root, results) and root.parent != root:
        root = root.parent
    return root


def mirrored_packages(results: list[FileResult], root: Path) -> list[Path]:
    """The top-level packages under ``root`` that hold a file of the run, by their folders."""
    tops = {Path(result.path).resolve().relative_to(root.resolve()).parts[0] for result in results}
    return sorted(root / top for top in tops if _is_package(root / top, results))


def mirror_package_files(
    results: list[FileResult], packages: list[Path], root: Path, out: Path
) -> list[Path]:
    """Copy into ``out`` every file of ``packages`` that the run did not write: data tables,
    compiled extensions, ``py.typed``, and Python files outside the run, so that the mirrored
    package imports whole, never reaching for the original; never through a symbolic link,
    as :func:`mirror`. Returns the mirror's copies."""
    # A file of the run is the run's: written by mirror(), or left out where it failed.
    handled = {Path(result.path).resolve() for result in results}
    copies: list[Path] = []
    checked: set[Path] = set()
    for package in packages:
        for folder, folders, files in os.walk(package):
            folders[:] = sorted(name for name in folders if name not in _NOT_COPIED_DIRS)
            for name in sorted(files):
                source = Path(folder) / name
                if source.suffix in _NOT_COPIED_SUFFIXES or source.resolve() in handled:
                    continue
                relative = source.relative_to(root)
                _refuse_links(out, relative, checked)
                target = out / relative
                _copy_if_changed(source, target)
                copies.append(target.resolve())
    return copies


def _copy_if_changed(source: Path, target: Path) -> None:
    try:
        data = source.read_bytes()
        mode = stat.S_IMODE(source.stat().st_mode)
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.read_bytes() if target.exists() else None
    except OSError as error:
        raise WriteError(target, f"cannot copy {source}: {error.strerror or error}") from None
    if old != data:
        write_atomically(target, data, mode=mode)


def _is_package(folder: Path, results: list[FileResult]) -> bool:
    """Whether ``folder`` is a package: it has an ``__init__.py``, or it is a namespace package
    (:func:`_is_namespace_package`)."""
    return _has_init(folder) or _is_namespace_package(folder, results)


def _has_init(folder: Path) -> bool:
    return (folder / "__init__.py").is_file() or (folder / "__init__.pyi").is_file()


def _is_namespace_package(folder: Path, results: list[FileResult]) -> bool:
    """Whether ``folder``, without ``__init__.py``, is imported as a package by its own files:
    one of them imports a module of it by the folder's name (``from folder.x import Y``,
    ``import folder.x``, ``from folder import x``, where ``x`` is a file or folder in it), and
    no installed package of that name would be imported first."""
    name = folder.name
    if not folder.is_dir() or not name.isidentifier() or _installed_package(name, folder):
        return False
    inside = folder.resolve()

    def is_part(module: str) -> bool:
        return (folder / f"{module}.py").is_file() or (folder / module).is_dir()

    for result in results:
        if inside not in Path(result.path).resolve().parents:
            continue
        source = _source_of(result)
        if name.encode() not in source:  # most files: parsed by the index already, not again here
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
                if node.module == name:
                    modules += [f"{name}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(module.startswith(name + ".") and is_part(module.split(".")[1]) for module in modules):
                return True
    return False


def _installed_package(name: str, folder: Path) -> bool:
    """Whether ``import name`` loads a regular package other than ``folder`` (a folder named
    like an installed library, ``tqdm/``, whose files import the library)."""
    import importlib.machinery

    found = importlib.machinery.PathFinder.find_spec(name, sys.path)
    return bool(found and found.origin and Path(found.origin).resolve().parent != folder.resolve())


def _source_of(result: FileResult) -> bytes:
    """The bytes of a file of the run: a file that holds no class was only read for the
    index, and its result does not keep them."""
    if result.original:
        return result.original
    try:
        return Path(result.path).read_bytes()
    except OSError:
        return b""
