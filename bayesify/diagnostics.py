"""What bayesify has to say about a run, as data: where, how serious, which kind, and what.

Every message of a run, from a file that does not parse to a spec entry that selects nothing,
is a :class:`Diagnostic`. Its place is kept in fields and never written into the message, so
a path with a colon in it (``src/a:b.py``, ``C:\\src\\m.py``) is never misread; the one place
that turns a diagnostic into text is here:

>>> problem = Diagnostic("src/a:b.py", 3, None, "warning", "BAY201", "Model derives from Base, ...")
>>> problem.text()
'src/a:b.py:3: warning BAY201: Model derives from Base, ...'

Each kind of diagnostic has a stable code (:data:`CODES`); ``--strict``, ``--error-on`` and
``--ignore`` (and the same keys in ``[tool.bayesify]``) select them by code or code prefix,
as ruff's ``--select`` does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

ERROR, WARNING = "error", "warning"

#: Every code, its default severity and what it is about (docs/cli.md lists them too).
CODES: dict[str, tuple[str, str]] = {
    # Files that could not be processed: the run exits 123, the other files are still done.
    "BAY001": (ERROR, "a source file cannot be read, decoded or parsed"),
    "BAY002": (ERROR, "a source file cannot be written"),
    "BAY003": (ERROR, "a name the rewrite needs is already used for something else"),
    "BAY009": (ERROR, "a bug in bayesify (the rewrite crashed, or its output does not parse)"),
    "BAY010": (ERROR, "the model plan --build names cannot be built"),
    # The tutorial's pitfalls, found in the rewritten code (lints.py): errors under --strict.
    "BAY101": (WARNING, "a random attribute first read inside pyro.plate"),
    "BAY102": (WARNING, "a plain nn.Module builds two or more Pyro roots"),
    "BAY103": (WARNING, "a PyroModule called on its own, then attached to another"),
    "BAY104": (WARNING, "a function that computes again in the backward pass, around random weights"),
    # The spec against the source.
    "BAY201": (WARNING, "a base class bayesify cannot see"),
    "BAY202": (WARNING, "a generated prior that no spec entry selects any more"),
    "BAY203": (WARNING, "a constraint for a generated prior, which has no initial value"),
    "BAY204": (WARNING, "a spec entry that only selects what an earlier entry decides"),
    "BAY205": (ERROR, "a spec entry that selects no parameter (a warning under --allow-unmatched)"),
    "BAY206": (WARNING, "no spec found: every parameter stays deterministic"),
    "BAY207": (WARNING, "a file of the --out mirror whose source is gone"),
    "BAY208": (WARNING, "a path skipped while looking for files"),
    "BAY209": (WARNING, "a package of the --out mirror that an import here would load from elsewhere"),
    # Input errors: the run stops with exit 2 before any file is touched.
    "BAY301": (ERROR, "the spec cannot be read or is invalid"),
    "BAY302": (ERROR, "the paths or options cannot be used as given"),
}


@dataclass(frozen=True)
class Diagnostic:
    """One message, with its place: ``path`` (None for the run as a whole), ``line`` and
    ``col`` (1-based, None when not known), ``severity`` (``"error"`` or ``"warning"``)
    and ``code`` (a key of :data:`CODES`)."""

    path: Optional[str]
    line: Optional[int]
    col: Optional[int]
    severity: str
    code: str
    message: str

    @classmethod
    def of(
        cls,
        code: str,
        message: str,
        path: Optional[str] = None,
        line: Optional[int] = None,
        col: Optional[int] = None,
        severity: Optional[str] = None,
    ) -> Diagnostic:
        """A diagnostic of ``code``, by default with that code's default severity."""
        return cls(path, line or None, col or None, severity or CODES[code][0], code, message)

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def at(self, path: str) -> Diagnostic:
        """The same diagnostic for a file named another way (a cached result, a --stdin-filename)."""
        return dataclasses.replace(self, path=path)

    def where(self) -> str:
        """``PATH[:LINE[:COL]]``, or the empty string for a diagnostic of the run as a whole."""
        if self.path is None:
            return ""
        if self.line is None:
            return self.path
        return f"{self.path}:{self.line}" + (f":{self.col}" if self.col is not None else "")

    def text(self) -> str:
        """``PATH[:LINE[:COL]]: severity CODE: message``, as compilers, ruff and mypy write it."""
        where = self.where()
        return f"{where + ': ' if where else ''}{self.severity} {self.code}: {self.message}"

    def github(self) -> str:
        """A GitHub workflow annotation (``::warning file=…,line=…::message``)."""
        return annotation(self.severity, f"{self.code}: {self.message}", self.path, self.line, self.col)

    def as_dict(self) -> dict:
        return {
            "file": self.path,
            "line": self.line,
            "column": self.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, row: dict) -> Diagnostic:
        return cls(row["file"], row["line"], row["column"], row["severity"], row["code"], row["message"])


def annotation(
    level: str,
    message: str,
    file: Optional[str] = None,
    line: Optional[int] = None,
    column: Optional[int] = None,
) -> str:
    """``::error file=src/a.py,line=3,title=bayesify::message``, escaped as GitHub wants."""
    properties = [("file", file), ("line", line), ("col", column), ("title", "bayesify")]
    shown = ",".join(f"{key}={_escape_property(str(value))}" for key, value in properties if value)
    return f"::{level} {shown}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _selects(patterns: tuple[str, ...], code: str) -> bool:
    return any(code.startswith(pattern.upper()) for pattern in patterns)


@dataclass(frozen=True)
class Selection:
    """Which codes are raised to errors and which warnings are not shown: ``error_on`` and
    ``ignore`` hold codes or prefixes (``BAY1`` is every lint). An error is never ignored."""

    error_on: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def apply(self, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
        selected = []
        for diagnostic in diagnostics:
            if diagnostic.is_error:
                selected.append(diagnostic)
            elif _selects(self.error_on, diagnostic.code):
                selected.append(dataclasses.replace(diagnostic, severity=ERROR))
            elif not _selects(self.ignore, diagnostic.code):
                selected.append(diagnostic)
        return selected


def unknown_codes(patterns: tuple[str, ...]) -> list[str]:
    """The patterns that select no code (a typo would otherwise silently select nothing)."""
    return [p for p in patterns if not any(code.startswith(p.upper()) for code in CODES)]
