"""What a run tells the user: the summary line, messages, the plan, a starter spec, and the
machine-readable forms of a run (JSON, GitHub workflow annotations).

Messages from the library are ``path:line: message`` strings (``path:line:column: …`` for a
parse error, ``path: …`` when there is no line); :func:`locate` splits them for the formats
that want the parts.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Optional

from .config import shown
from .engine import FileResult
from .plan import PlannedSite
from .runner import RunResult
from .sites import SiteKind
from .spec import EMPTY_SPEC, Entry

# -- the summary line and file statuses ------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(result: RunResult, check: bool, into: Optional[str] = None) -> str:
    """``bayesify: 1 file rewritten, 2 unchanged, 0 failed; 2 sites made random, 0 constrained``."""
    changed = result.changed
    sites = [site for r in changed for site in r.sites]
    random = sum(1 for s in sites if s.outcome == "random")
    constrained = sum(1 for s in sites if s.outcome == "constrained")
    verb = "would be rewritten" if check else f"rewritten into {into}" if into else "rewritten"
    unchanged = len(result.results) - len(changed) - len(result.failed)
    line = (
        f"bayesify: {_plural(len(changed), 'file')} {verb}, {unchanged} unchanged, "
        f"{len(result.failed)} failed; {_plural(random, 'site')} made random, {constrained} constrained"
    )
    if result.lints:
        line += f"; {_plural(len(result.lints), 'lint')}"
    return line


def status(result: FileResult, check: bool) -> str:
    """What happened to one file, as ``-v`` lists it."""
    if result.error:
        return "failed"
    if result.changed:
        return "would rewrite" if check else "rewrote"
    return "unchanged"


# -- located messages -------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    file: Optional[str]
    line: Optional[int]
    column: Optional[int]
    message: str


_WITH_LINE = re.compile(r"(?P<file>[^\n]+?):(?P<line>\d+)(?::(?P<column>\d+))?: (?P<message>.*)", re.S)
_WITH_FILE = re.compile(r"(?P<file>[^\n:]+): (?P<message>.*)", re.S)


def locate(message: str) -> Located:
    """Split a library message into file, line, column and text."""
    match = _WITH_LINE.fullmatch(message)
    if match:
        column = match["column"]
        return Located(match["file"], int(match["line"]), int(column) if column else None, match["message"])
    match = _WITH_FILE.fullmatch(message)
    if match:
        return Located(match["file"], None, None, match["message"])
    return Located(None, None, None, message)


def unmatched_messages(result: RunResult) -> list[str]:
    return [
        f"{shown(result.spec.path)}:{entry.line}: {entry.section} entry {entry.selector.text!r} "
        f"selects no parameter, which would leave the network deterministic{result.hints.get(entry.line, '')} "
        "(check the class and attribute names with `bayesify plan`, or pass --allow-unmatched)"
        for entry in result.unmatched
    ]


def unmatched_message(result: RunResult) -> Optional[str]:
    """The error for spec entries that select nothing, one line each; None if there are none."""
    messages = unmatched_messages(result)
    return "\n".join(_error_line(m) for m in messages) if messages else None


def _error_line(message: str) -> str:
    located = locate(message)
    if located.line is None:
        return f"error: {message}"
    return f"{located.file}:{located.line}: error: {located.message}"


def first_changed_line(result: FileResult) -> int:
    """The first line (1-based) of the original that the rewrite changes."""
    before = result.original.splitlines()
    after = (result.rewritten or result.original).splitlines()
    for number, (old, new) in enumerate(zip(before, after), start=1):
        if old != new:
            return number
    return min(len(before), len(after)) + 1


# -- the diff, coloured -----------------------------------------------------------------------

_RESET = b"\x1b[0m"
_HEADER, _ADDED, _REMOVED, _HUNK = b"\x1b[1m", b"\x1b[32m", b"\x1b[31m", b"\x1b[36m"


def colour_diff(diff: bytes) -> bytes:
    """One file's unified diff with ANSI colours: headers bold, ``+`` green, ``-`` red,
    ``@@`` cyan. The codes close before each line ending, so the line endings are the file's."""
    coloured = []
    # Split at "\n" only, as the diff was made: a "\r" inside a line stays inside it.
    for number, line in enumerate(io.BytesIO(diff).readlines()):
        body = line.rstrip(b"\r\n")
        ending = line[len(body) :]
        # The first two lines are the ---/+++ headers; later "---" lines are removed "--" lines.
        if number < 2 and body[:4] in (b"--- ", b"+++ "):
            colour = _HEADER
        else:
            colour = {b"+": _ADDED, b"-": _REMOVED, b"@": _HUNK}.get(body[:1])
        coloured.append(colour + body + _RESET + ending if colour else line)
    return b"".join(coloured)


# -- GitHub workflow annotations --------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, file: Optional[str] = None, line: Optional[int] = None,
               column: Optional[int] = None) -> str:
    """``::error file=src/a.py,line=3,title=bayesify::message``, escaped as GitHub wants."""
    properties = [("file", file), ("line", line), ("col", column), ("title", "bayesify")]
    shown_properties = ",".join(f"{key}={_escape_property(str(value))}" for key, value in properties if value)
    return f"::{level} {shown_properties}::{_escape_data(message)}"


def _located_annotation(level: str, message: str) -> str:
    where = locate(message)
    return annotation(level, where.message, where.file, where.line, where.column)


def github_annotations(result: RunResult, check: bool, strict: bool, notes: list[str]) -> list[str]:
    """Annotations for a ``rewrite`` run: a file that would change is an error (the tree is
    not rewritten), one that was rewritten a notice; lints are errors under ``--strict``."""
    lines = [_located_annotation("error", message) for message in unmatched_messages(result)]
    lines += [_located_annotation("error", failed.error) for failed in result.failed]
    for changed in sorted(result.changed, key=lambda r: r.path):
        sites = _site_counts(changed.sites)
        text = f"{'would be rewritten' if check else 'rewritten'} by bayesify ({sites})"
        if check:
            text += "; run `bayesify rewrite` on it and commit the result"
        lines.append(annotation("error" if check else "notice", text, changed.path, first_changed_line(changed)))
    lines += [_located_annotation("error" if strict else "warning", lint) for lint in result.lints]
    lines += [_located_annotation("warning", message) for message in (*result.warnings, *notes)]
    return lines


def _site_counts(sites: list[PlannedSite]) -> str:
    random = sum(1 for s in sites if s.outcome == "random")
    constrained = sum(1 for s in sites if s.outcome == "constrained")
    return f"{_plural(random, 'site')} made random, {constrained} constrained"


# -- JSON ------------------------------------------------------------------------------------


def _entry_row(entry: Entry, spec_path: str) -> dict:
    return {
        "entry": f"{shown(spec_path)}:{entry.line}",
        "section": entry.section,
        "selector": entry.selector.text,
        "action": str(entry.action),
    }


def _site_row(site: PlannedSite, spec_path: str) -> dict:
    return {
        "file": site.path,
        "line": site.line,
        "class": site.class_name,
        "module": site.module,
        "parameter": ".".join(site.attr_path),
        "kind": site.kind.value,
        "shape": site.shape,
        "entry": f"{shown(spec_path)}:{site.entry.line}" if site.entry else None,
        "selector": site.entry.selector.text if site.entry else None,
        "action": str(site.entry.action) if site.entry else None,
        "outcome": site.outcome,
    }


def _in_source_order(result: RunResult) -> list[PlannedSite]:
    # The rewriters record a held layer's parameters at the end of __init__; readers expect
    # the order of the source. A parameter without a line (a base layer's) comes last.
    return sorted(result.sites, key=lambda site: (site.path, site.line or float("inf")))


def _messages(messages: list[str]) -> list[dict]:
    return [vars(locate(message)) for message in messages]


def _spec_shown(result: RunResult) -> Optional[str]:
    return None if result.spec is EMPTY_SPEC else shown(result.spec.path)


def rewrite_json(
    result: RunResult, check: bool, diffs: Optional[dict[str, str]], notes: list[str]
) -> str:
    """A ``rewrite`` run as JSON: every file with its status (and diff, under ``--diff``),
    the paths that changed (or would), every site, and the messages split into parts."""
    spec_path = result.spec.path
    files = []
    for file in result.results:
        row = {
            "path": file.path,
            "status": status(file, check),
            "error": file.error,
            "sites": [_site_row(site, spec_path) for site in file.sites],
        }
        if diffs is not None and file.path in diffs:
            row["diff"] = diffs[file.path]
        files.append(row)
    document = {
        "spec": _spec_shown(result),
        "check": check,
        "files": files,
        "changed": sorted(r.path for r in result.changed),
        "sites": [_site_row(site, spec_path) for site in _in_source_order(result)],
        "unmatched": [_entry_row(entry, spec_path) for entry in result.unmatched],
        "warnings": _messages([*result.warnings, *notes]),
        "lints": _messages(result.lints),
        "errors": _messages([r.error for r in result.failed]),
        "summary": summary(result, check).removeprefix("bayesify: "),
    }
    return json.dumps(document, indent=2)


# -- the plan --------------------------------------------------------------------------------


def plan_json(result: RunResult) -> str:
    spec_path = result.spec.path
    return json.dumps(
        {
            "spec": _spec_shown(result),
            "sites": [_site_row(site, spec_path) for site in _in_source_order(result)],
            "unmatched": [_entry_row(entry, spec_path) for entry in result.unmatched],
            "warnings": _messages(result.warnings),
            "lints": _messages(result.lints),
            "errors": _messages([r.error for r in result.failed]),
        },
        indent=2,
    )


def _becomes(site: PlannedSite) -> str:
    if site.entry is None:
        return site.outcome
    return f"{site.outcome}: {site.entry.action}"


def columns(rows: list[tuple[str, ...]]) -> list[str]:
    """``rows`` as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def plan_table(result: RunResult) -> str:
    """One row a parameter: where it is defined, its name (the selector that selects exactly
    it), its shape, the entry that selects it and what it becomes. Entries that select
    nothing follow, flagged."""
    spec_path = shown(result.spec.path)
    rows = [("WHERE", "PARAMETER", "SHAPE", "SELECTED BY", "BECOMES")]
    for site in _in_source_order(result):
        where = f"{site.path}:{site.line}" if site.line else site.path
        entry = f"{spec_path}:{site.entry.line}" if site.entry else "-"
        rows.append((where, site.name, site.shape or "when built", entry, _becomes(site)))
    lines = columns(rows)
    for entry in result.unmatched:
        lines.append(
            f"{spec_path}:{entry.line}: {entry.selector.text}: {entry.action}: selects no parameter"
            f"{result.hints.get(entry.line, '')}"
        )
    return "\n".join(lines)


# -- the starter spec ------------------------------------------------------------------------


def starter_spec(sites: list[PlannedSite]) -> str:
    """A ``priors.yaml`` that lists every parameter found, each with a default prior and a
    comment saying where it is defined; every entry selects exactly one parameter."""
    lines = [
        "# Written by `bayesify init`: every parameter bayesify found, with a default prior.",
        "# Edit the priors, delete the lines of parameters that should stay deterministic,",
        "# or move them under `constraints:` to keep them learnable but constrained.",
        "version: 1",
        "priors:",
    ]
    header = len(lines)
    for site in starter_sites(sites):
        where = f"{site.path}:{site.line}" if site.line else site.path
        shape = site.shape or "known when built"
        lines.append(f"  {site.name}: {default_prior(site.attr_path[-1])}  # {where}, shape {shape}")
    if len(lines) == header:
        lines[-1] = "priors: {}  # no parameters found"
    return "\n".join(lines) + "\n"


def starter_sites(sites: list[PlannedSite]) -> list[PlannedSite]:
    """The sites a starter spec lists: each parameter once, in source order. A generated
    prior is left out: its entry is in the spec that made it."""
    chosen: dict[str, PlannedSite] = {}
    for site in sorted(sites, key=lambda site: (site.path, site.line or 0)):
        if site.kind is not SiteKind.GENERATED:
            chosen.setdefault(site.name, site)
    return list(chosen.values())


#: Words that name a parameter that must be positive.
SCALE_WORDS = frozenset({"scale", "scales", "std", "stddev", "sigma", "var", "variance", "precision", "temperature", "tau"})


def default_prior(name: str) -> str:
    """A weakly informative default, by what the parameter's name says it is: a scale must be
    positive; the logarithm of one (``log_scale``), a weight or a bias can take any sign."""
    words = [word for word in re.split(r"[^a-z]+", name.lower()) if word]
    if words and words[0].startswith("log"):
        return "Normal(0, 1)"
    if SCALE_WORDS.intersection(words):
        return "LogNormal(0, 1)"
    return "Normal(0, 1)"
