"""Turn the PATH arguments into the sorted list of Python files to process.

The rules are black's, so a project configured for black behaves the same here:

* A folder is walked recursively and yields the files whose path matches ``include``
  (``.py`` and ``.pyi`` by default).
* ``exclude`` (default :data:`DEFAULT_EXCLUDES`), ``extend_exclude`` and ``force_exclude``
  are regular expressions searched in the path relative to ``root``, written in POSIX form
  with a leading ``/`` and, for a folder, a trailing ``/``: ``/src/pkg/`` or ``/src/pkg/a.py``.
  An empty ``exclude`` excludes nothing.
* ``.gitignore`` files are honoured, the one at ``root`` and those in sub-folders, unless
  ``exclude`` is given: as in black, an explicit ``exclude`` replaces both the default
  excludes and ``.gitignore`` (``extend_exclude`` adds to them instead).
* A file named on the command line is always processed (that is how pre-commit passes
  files), unless it matches ``force_exclude``. A folder named on the command line is walked
  even if it matches an exclude itself; what is inside it is filtered as usual.
* Symbolic links inside a walked folder are followed only when they resolve inside
  ``root``; a linked folder whose target was already walked (a loop such as
  ``ln -s .. loop``) is skipped. A file reachable by several paths is listed once, under a
  path without symlinks where there is one.

Paths keep the form they were given in: ``src`` yields ``src/pkg/a.py``, an absolute
folder yields absolute paths. ``-`` (stdin) is the caller's business, not this module's.

Example, for a project with ``src/model.py``, ``src/stubs.pyi``, ``.venv/lib/x.py`` and a
``.gitignore`` that says ``generated/``, with ``src/generated/out.py``::

    >>> discover(["."])                                  # doctest: +SKIP
    [PosixPath('src/model.py'), PosixPath('src/stubs.pyi')]
    >>> discover(["src/generated/out.py"])               # doctest: +SKIP
    [PosixPath('src/generated/out.py')]
    >>> discover(["src/generated/out.py"], force_exclude="/generated/")  # doctest: +SKIP
    []
"""

from __future__ import annotations

import os
import re
import stat as stat_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostic

DEFAULT_EXCLUDES = (
    r"/(\.direnv|\.eggs|\.git|\.hg|\.ipynb_checkpoints|\.mypy_cache|\.nox|\.pytest_cache"
    r"|\.ruff_cache|\.tox|\.svn|\.venv|venv|_build|buck-out|build|dist|__pypackages__"
    r"|node_modules|site-packages)/"
)
DEFAULT_INCLUDES = r"\.pyi?$"
PROJECT_ROOT_MARKERS = (".git", ".hg", "pyproject.toml")


class DiscoveryError(Exception):
    """A path or an option cannot be used: ``where`` names it, ``message`` says what is wrong."""

    def __init__(self, where: object, message: str) -> None:
        self.where, self.message = str(where), message
        super().__init__(f"{where}: {message}")


def find_project_root(paths: Sequence[str | Path]) -> Path:
    """The project root: the nearest folder holding ``.git``, ``.hg`` or ``pyproject.toml``.

    The search starts at the deepest folder that holds all ``paths`` (the current folder
    when there are none) and goes upward. Without any marker, that common folder is the
    root, so excludes never see folder names from outside the project.

        >>> find_project_root(["src/pkg/a.py", "tests"])  # doctest: +SKIP
        PosixPath('/home/me/project')
    """
    common = common_folder(paths)
    for folder in (common, *common.parents):
        if any((folder / marker).exists() for marker in PROJECT_ROOT_MARKERS):
            return folder
    return common


def common_folder(paths: Sequence[str | Path]) -> Path:
    """The deepest folder that holds all ``paths`` (the current folder when there are none)."""
    folders = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        folders.append(absolute if absolute.is_dir() else absolute.parent)
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def discover(
    paths: Sequence[str | Path],
    *,
    root: Path | None = None,
    exclude: str | None = None,
    extend_exclude: str | None = None,
    force_exclude: str | None = None,
    include: str = DEFAULT_INCLUDES,
    warnings: list[Diagnostic] | None = None,
    links_outside_root: bool = False,
) -> list[Path]:
    """The Python files that ``paths`` name, de-duplicated and sorted (see the module doc).

    Files that look like sources but cannot be read (a symbolic link that leads nowhere, a
    named pipe) are skipped and, when ``warnings`` is given, said there. A path named in
    ``paths`` that is a symbolic link (or goes through one) to a place outside the project
    root is an error, since the files found are written, unless ``links_outside_root`` (for
    files that are only read).
    """
    root = Path(os.path.abspath(root if root is not None else find_project_root(paths)))
    force_exclude_regex = _compile("--force-exclude", force_exclude) if force_exclude else None
    excludes = [
        _compile(option, pattern)
        for option, pattern in (
            ("--exclude", DEFAULT_EXCLUDES if exclude is None else exclude),
            ("--extend-exclude", extend_exclude),
        )
        if pattern
    ]
    if force_exclude_regex:
        excludes.append(force_exclude_regex)
    finder = _Finder(
        root=root,
        excludes=excludes,
        force_exclude=force_exclude_regex,
        include=_compile("--include", include),
        use_gitignore=exclude is None,
        links_outside_root=links_outside_root,
    )
    for path in paths:
        finder.add_argument(Path(path))
    if warnings is not None:
        warnings.extend(finder.warnings)
    return finder.result()


def _compile(option: str, pattern: str) -> re.Pattern[str]:
    # A multi-line pattern comes from a TOML multi-line string, written verbose as in black.
    try:
        return re.compile(pattern, re.VERBOSE if "\n" in pattern else 0)
    except re.error as error:
        raise DiscoveryError(option, f"invalid regular expression {pattern!r}: {error}") from None


@dataclass(frozen=True)
class _ScopedGitIgnore:
    """A .gitignore and the root-relative prefix (``"pkg/sub/"``) of the folder it governs."""

    prefix: str
    gitignore: GitIgnore


class _Finder:
    """One discovery run: the filters, the folders already walked and the files found."""

    def __init__(
        self,
        root: Path,
        excludes: list[re.Pattern[str]],
        force_exclude: re.Pattern[str] | None,
        include: re.Pattern[str],
        use_gitignore: bool,
        links_outside_root: bool = False,
    ) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.excludes = excludes
        self.force_exclude = force_exclude
        self.include = include
        self.use_gitignore = use_gitignore
        self.links_outside_root = links_outside_root
        # Folder identities (device, inode) walked so far: a linked folder found here again
        # is a loop or a second route to the same files, and is not walked twice.
        self.walked_folders: set[tuple[int, int]] = set()
        # File identity -> (reached through a symlinked entry?, path); the lowest pair wins,
        # so a file is listed once, preferably under its own name.
        self.files: dict[tuple[int, int], tuple[bool, Path]] = {}
        self.warnings: list[Diagnostic] = []

    def result(self) -> list[Path]:
        return sorted(path for _, path in self.files.values())

    def add_argument(self, path: Path) -> None:
        if not path.exists():
            if path.is_symlink():
                raise DiscoveryError(path, f"{_NOWHERE}")
            raise DiscoveryError(path, "no such file or folder")
        relative = self._relative_to_root(path)
        if not self.links_outside_root and not self._resolves_inside_root(str(path)):
            raise DiscoveryError(
                path,
                f"a symbolic link to {os.path.realpath(path)}, outside the project root {self.root}; "
                "bayesify writes only inside the project (name the target itself)",
            )
        if not path.is_dir():
            if not (self.force_exclude and self.force_exclude.search(f"/{relative}")):
                status = os.stat(path)
                if not stat_module.S_ISREG(status.st_mode):
                    raise DiscoveryError(path, _NOT_REGULAR)
                self._add_file(path, status, through_link=False)
            return
        self.walked_folders.add(_identity(os.stat(path)))
        self._walk(str(path), relative, self._gitignores_above(relative), through_link=False)

    def _relative_to_root(self, path: Path) -> str:
        """``path`` relative to root, POSIX form, ``""`` for root itself."""
        try:
            relative = Path(os.path.abspath(path)).relative_to(self.root).as_posix()
        except ValueError:
            raise DiscoveryError(path, f"not inside the project root {self.root}") from None
        return "" if relative == "." else relative

    def _gitignores_above(self, relative: str) -> tuple[_ScopedGitIgnore, ...]:
        """The .gitignore files of root and of every folder between root and ``relative``."""
        parts = relative.split("/") if relative else []
        scoped = (
            self._read_gitignore(os.path.join(self.root, *parts[:depth]), "/".join(parts[:depth]))
            for depth in range(len(parts))
        )
        return tuple(gitignore for gitignore in scoped if gitignore)

    def _read_gitignore(self, folder: str, relative: str) -> _ScopedGitIgnore | None:
        if not self.use_gitignore:
            return None
        path = os.path.join(folder, ".gitignore")
        try:
            # surrogateescape: file names from os.scandir carry undecodable bytes the same way.
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise DiscoveryError(path, f"cannot read ({error.strerror})") from None
        return _ScopedGitIgnore(f"{relative}/" if relative else "", GitIgnore(lines))

    def _walk(
        self,
        folder: str,
        relative: str,
        gitignores: tuple[_ScopedGitIgnore, ...],
        through_link: bool,
    ) -> None:
        own_gitignore = self._read_gitignore(folder, relative)
        if own_gitignore:
            gitignores = (*gitignores, own_gitignore)
        try:
            with os.scandir(folder) as scan:
                # Sorted, so that which route reaches a linked folder first is deterministic.
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            raise DiscoveryError(folder, f"cannot list folder ({error.strerror})") from None
        for entry in entries:
            entry_relative = f"{relative}/{entry.name}" if relative else entry.name
            is_link = entry.is_symlink()
            if is_link and not self._resolves_inside_root(entry.path):
                if not os.path.exists(entry.path) and self.include.search(f"/{entry_relative}"):
                    self.warnings.append(Diagnostic.of("BAY208", f"{_NOWHERE}; skipped", entry.path))
                continue
            is_dir = entry.is_dir()
            if self._is_excluded(entry_relative, is_dir, gitignores):
                continue
            if not is_dir:
                if self.include.search(f"/{entry_relative}"):
                    status = entry.stat()
                    if stat_module.S_ISREG(status.st_mode):
                        self._add_file(Path(entry.path), status, through_link or is_link)
                    else:
                        self.warnings.append(Diagnostic.of("BAY208", f"{_NOT_REGULAR}; skipped", entry.path))
                continue
            identity = _identity(entry.stat())
            # Real folders are always walked (they cannot form a loop), so a file inside one
            # is found under its own path even if a symlink reached it first.
            if is_link and identity in self.walked_folders:
                continue
            self.walked_folders.add(identity)
            self._walk(entry.path, entry_relative, gitignores, through_link or is_link)

    def _resolves_inside_root(self, link: str) -> bool:
        target = os.path.realpath(link)
        # A dangling link, or a link loop, resolves to something that does not exist.
        return os.path.exists(target) and os.path.commonpath([target, self.real_root]) == (self.real_root)

    def _is_excluded(self, relative: str, is_dir: bool, gitignores: tuple[_ScopedGitIgnore, ...]) -> bool:
        slashed = f"/{relative}/" if is_dir else f"/{relative}"
        if any(regex.search(slashed) for regex in self.excludes):
            return True
        # The deepest .gitignore with a rule about the path decides, as in git.
        for scoped in reversed(gitignores):
            verdict = scoped.gitignore.match(relative[len(scoped.prefix) :], is_dir)
            if verdict is not None:
                return verdict
        return False

    def _add_file(self, path: Path, stat: os.stat_result, through_link: bool) -> None:
        identity = _identity(stat)
        candidate = (through_link, path)
        self.files[identity] = min(self.files.get(identity, candidate), candidate)


_NOWHERE = "a symbolic link that leads nowhere (a loop, or its target is gone)"
_NOT_REGULAR = "not a regular file (a named pipe, a socket or a device)"


def read_source(path: str | Path) -> bytes:
    """The bytes of the source file ``path``, read once. A file that became something else
    than a regular file since it was found (a named pipe, which would block the run) is an
    ``OSError``, as an unreadable one is; so is a symbolic link loop."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(descriptor, "rb", closefd=True) as stream:
        if not stat_module.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(0, _NOT_REGULAR)
        return stream.read()


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return (stat.st_dev, stat.st_ino)


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


class GitIgnore:
    """The rules of one ``.gitignore`` file, for paths relative to the folder that holds it.

    Supported: comments, blank lines, ``!`` negation, trailing ``/`` (folders only), a
    leading or inner ``/`` (anchored to this folder), ``*``, ``?``, ``[...]`` and ``[!...]``,
    ``**/``, ``/**`` and ``/**/``, backslash escapes (``\\#``, ``\\!``, ``\\ ``). POSIX
    classes such as ``[[:digit:]]`` are not. As in git, a file inside an ignored folder
    cannot be re-included: the walk never enters that folder.

        >>> rules = GitIgnore(["*.log", "!keep.log", "/build/"])
        >>> rules.match("logs/a.log", is_dir=False), rules.match("keep.log", is_dir=False)
        (True, False)
        >>> rules.match("build", is_dir=True), rules.match("src/build", is_dir=True)
        (True, None)
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.rules = [rule for rule in map(_parse_rule, lines) if rule]
        # Most paths match no rule at all; one combined regex answers that in a single search.
        self.any_rule = (
            re.compile("|".join(f"(?:{rule.regex.pattern})" for rule in self.rules)) if self.rules else None
        )

    def match(self, path: str, is_dir: bool) -> bool | None:
        """True if ignored, False if re-included by a ``!`` rule, None if no rule applies."""
        if self.any_rule is None or not self.any_rule.match(path):
            return None
        for rule in reversed(self.rules):  # the last matching rule wins
            if (is_dir or not rule.dir_only) and rule.regex.match(path):
                return not rule.negated
        return None


def _parse_rule(line: str) -> _Rule | None:
    if not line or line.startswith("#"):
        return None
    pattern = line.rstrip(" ")
    if pattern.endswith("\\") and pattern != line:  # "foo\ " keeps its escaped space
        pattern += " "
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:]
    dir_only = pattern.endswith("/")
    if dir_only:
        pattern = pattern[:-1]
    # A slash anywhere but at the end anchors the pattern to the .gitignore's folder.
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    if not pattern:
        return None
    return _Rule(re.compile(_pattern_regex(pattern, anchored)), negated, dir_only)


def _pattern_regex(pattern: str, anchored: bool) -> str:
    """A regex, used with ``re.match``, for a gitignore pattern without its ``!``/``/`` ends."""
    segments = pattern.split("/")
    regex = [] if anchored else ["(?:.*/)?"]  # an unanchored pattern matches at any depth
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment == "**":
            regex.append(".*" if is_last else "(?:.*/)?")
        else:
            regex.append(_segment_regex(segment) + ("" if is_last else "/"))
    return "".join(regex) + r"\Z"


def _segment_regex(segment: str) -> str:
    """A regex for one path component of a pattern: wildcards never match ``/``."""
    regex = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "\\" and index + 1 < len(segment):
            regex.append(re.escape(segment[index + 1]))
            index += 2
            continue
        bracket_end = _bracket_end(segment, index) if char == "[" else -1
        if bracket_end != -1:
            regex.append(_bracket_regex(segment[index + 1 : bracket_end]))
            index = bracket_end + 1
            continue
        if char == "*":
            regex.append("[^/]*")
        elif char == "?":
            regex.append("[^/]")
        else:
            regex.append(re.escape(char))
        index += 1
    return "".join(regex)


def _bracket_end(segment: str, start: int) -> int:
    """The index of the ``]`` closing the ``[`` at ``start``, or -1 if it is a plain ``[``."""
    index = start + 1
    if index < len(segment) and segment[index] in "!^":
        index += 1
    if index < len(segment) and segment[index] == "]":  # "[]...]": a leading ] is literal
        index += 1
    while index < len(segment) and segment[index] != "]":
        index += 2 if segment[index] == "\\" else 1
    return index if index < len(segment) else -1


def _bracket_regex(content: str) -> str:
    negated = content[:1] in ("!", "^")
    if negated:
        content = content[1:]
    members = []
    index = 0
    while index < len(content):
        char = content[index]
        if char == "\\" and index + 1 < len(content):
            members.append(re.escape(content[index + 1]))
            index += 2
            continue
        members.append(char if char == "-" else re.escape(char))
        index += 1
    # (?!/): like every wildcard, a bracket never matches the separator, even in a range.
    return f"(?!/)[{'^' if negated else ''}{''.join(members)}]"
