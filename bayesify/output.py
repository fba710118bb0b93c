"""Write, diff or mirror the results of a run; never leave a file half-written.

A file is replaced atomically (a temporary file in the same folder, then ``os.replace``),
keeping its mode; and only if it still holds the bytes that were rewritten, so an edit made
while bayesify ran is never clobbered. Only files whose bytes change are touched.
"""

from __future__ import annotations

import difflib
import io
import os
import shutil
import tempfile
import tokenize
from pathlib import Path
from typing import Optional

from .engine import FileResult


class WriteError(Exception):
    pass


def write_atomically(path: Path, data: bytes, expected: Optional[bytes] = None) -> None:
    """Replace ``path`` with ``data``; if ``expected`` is given, only while ``path`` holds it."""
    if expected is not None:
        try:
            current = path.read_bytes()
        except OSError as error:
            raise WriteError(f"{path}: cannot read back: {error.strerror or error}") from None
        if current != expected:
            raise WriteError(f"{path}: changed while bayesify was rewriting it; left as it is now")
    try:
        mode = path.stat().st_mode if path.exists() else None
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".bayesify", dir=path.parent)
    except OSError as error:
        raise WriteError(f"{path}: cannot write: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        if mode is not None:
            os.chmod(temporary, mode & 0o7777)
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise WriteError(f"{path}: cannot write: {error.strerror or error}") from None
        raise


def decode(source: bytes) -> str:
    """Text of a Python source file, in the encoding it declares (PEP 263)."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    return source.decode(encoding)


def unified_diff(result: FileResult, label: str) -> str:
    """A diff that ``patch -p0`` and ``git apply`` apply from the folder bayesify ran in."""
    before = decode(result.original).splitlines(keepends=True)
    after = decode(result.rewritten or result.original).splitlines(keepends=True)
    lines = []
    for line in difflib.unified_diff(before, after, fromfile=label, tofile=label):
        lines.append(line)
        if not line.endswith(("\n", "\r")):
            lines.append("\n\\ No newline at end of file\n")
    return "".join(lines)


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
        target.parent.mkdir(parents=True, exist_ok=True)
        written.add(target.resolve())
        if result.changed:
            old = target.read_bytes() if target.exists() else None
            if old != result.rewritten:
                write_atomically(target, result.rewritten)
        elif not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)
    return sorted(
        path for path in out.rglob("*.py*") if path.is_file() and path.resolve() not in written
    )
