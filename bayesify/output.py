"""Write, diff or mirror the results of a run; never leave a file half-written.

A file is replaced atomically (a temporary file in the same folder, then ``os.replace``),
keeping its mode; and only if it still holds the bytes that were rewritten, so an edit made
while bayesify ran is never clobbered. Only files whose bytes change are touched.
"""

from __future__ import annotations

import difflib
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Optional

from .engine import FileResult


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
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".bayesify", dir=target.parent
        )
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
        raise WriteError(path, "changed while bayesify was rewriting it; left as it is now")


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


def mirror(results: list[FileResult], root: Path, out: Path) -> list[Path]:
    """Write every processed file into ``out`` at its place relative to ``root``: rewritten
    files rewritten, the rest copied. Returns files in ``out`` that no longer have a source."""
    written = set()
    for result in results:
        if result.error:
            continue
        source = Path(result.path)
        target = out / source.resolve().relative_to(root.resolve())
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = stat.S_IMODE(source.stat().st_mode)
            data = result.rewritten if result.changed else source.read_bytes()
            old = target.read_bytes() if target.exists() else None
        except OSError as error:
            raise WriteError(target, f"cannot write: {error.strerror or error}") from None
        written.add(target.resolve())
        if old != data:
            write_atomically(target, data, mode=mode)
    # Python sources only: "*.py*" would also match the .pyc files of an imported mirror.
    return sorted(
        path
        for path in out.rglob("*")
        if path.suffix in (".py", ".pyi") and path.is_file() and path.resolve() not in written
    )
