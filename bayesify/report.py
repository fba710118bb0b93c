"""What a run tells the user: the summary line, the diagnostics, the plan, a starter spec,
the machine-readable forms of a run (JSON, GitHub workflow annotations), and the exit code.

Diagnostics are :class:`~bayesify.diagnostics.Diagnostic` records; :class:`Report` gathers a
run's, selects them (``--strict``, ``--error-on``, ``--ignore``) and owns the exit code.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Optional

from .config import shown
from .diagnostics import WARNING, Diagnostic, Selection, annotation
from .engine import FileResult
from .plan import PlannedSite
from .runner import RunResult
from .selectors import CLASS
from .sites import SiteKind
from .spec import EMPTY_SPEC, Entry, Prior

# -- the summary line and file statuses ------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(result: RunResult, check: bool, into: Optional[str] = None) -> str:
    """``bayesify: 1 file rewritten, 2 unchanged, 0 failed; 2 sites made random, 0 constrained``."""
    changed = result.changed
    verb = "would be rewritten" if check else f"rewritten into {into}" if into else "rewritten"
    unchanged = len(result.results) - len(changed) - len(result.failed)
    line = (
        f"bayesify: {_plural(len(changed), 'file')} {verb}, {unchanged} unchanged, "
        f"{len(result.failed)} failed; {_site_counts([site for r in changed for site in r.sites])}"
    )
    at_build = [entry for entry in result.spec.entries if entry.selector.kind != CLASS]
    if at_build:
        # Their sites are known only in a built model: counting the ones the source shows
        # would read as if they did nothing ("0 sites made random").
        entries = "1 entry selects" if len(at_build) == 1 else f"{len(at_build)} entries select"
        line += f"; {entries} by layer type or depth when the model is built (`bayesify plan --build` lists those sites)"
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


# -- the diagnostics of a run, and its exit code ----------------------------------------------

EXIT_OK, EXIT_WORK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 123
#: Codes whose errors stop a run before anything is written (exit 2): the spec, the options.
_USAGE_CODES = ("BAY205", "BAY3")


def unmatched_diagnostics(result: RunResult, allowed: bool) -> list[Diagnostic]:
    """Spec entries that select nothing: errors, or warnings under ``--allow-unmatched``."""
    hint = "check the class and attribute names with `bayesify plan`"
    return [
        Diagnostic.of(
            "BAY205",
            f"{entry.section} entry {entry.selector.text!r} selects no parameter, which would leave "
            f"the network deterministic{result.hints.get(entry.line, '')} ({hint}{'' if allowed else ', or pass --allow-unmatched'})",
            shown(result.spec.path),
            entry.line,
            severity=WARNING if allowed else None,
        )
        for entry in result.unmatched
    ]


@dataclass
class Report:
    """Everything a command has to say, and the one place that decides its exit code (as
    black's ``Report.return_code``): 2 for an error in the spec or the options (nothing is
    written), 123 when a file could not be processed, 1 when ``--check`` found work or an
    error was selected (``--strict``, ``--error-on``), else 0."""

    selection: Selection = field(default_factory=Selection)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    #: ``--check`` (or a dry run) found a file to rewrite.
    work_found: bool = False

    def add(self, *diagnostics: Diagnostic) -> None:
        self.diagnostics += self.selection.apply(list(diagnostics))

    def add_run(self, result: RunResult, allow_unmatched: bool) -> None:
        """A run's diagnostics, in the order a reader acts on them."""
        self.add(
            *unmatched_diagnostics(result, allow_unmatched),
            *(failed.error for failed in result.failed),
            *result.warnings,
            *result.lints,
        )

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def return_code(self) -> int:
        codes = [d.code for d in self.errors]
        if any(code.startswith(_USAGE_CODES) for code in codes):
            return EXIT_USAGE
        if any(code.startswith("BAY0") for code in codes):
            return EXIT_FAILED
        if self.work_found or codes:
            return EXIT_WORK
        return EXIT_OK

    def shown(self, quiet: bool) -> list[Diagnostic]:
        """What the text format prints: everything, or under ``-q`` the errors only."""
        return self.errors if quiet else self.diagnostics


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


def github_annotations(result: RunResult, check: bool, diagnostics: list[Diagnostic]) -> list[str]:
    """Annotations for a ``rewrite`` run: a file that would change is an error (the tree is
    not rewritten), one that was rewritten a notice; every diagnostic at its place, errors first."""
    lines = [diagnostic.github() for diagnostic in diagnostics if diagnostic.is_error]
    for changed in sorted(result.changed, key=lambda r: r.path):
        sites = _site_counts(changed.sites)
        text = f"{'would be rewritten' if check else 'rewritten'} by bayesify ({sites})"
        if check:
            text += "; run `bayesify rewrite` on it and commit the result"
        lines.append(
            annotation("error" if check else "notice", text, changed.path, first_changed_line(changed))
        )
    return lines + [diagnostic.github() for diagnostic in diagnostics if not diagnostic.is_error]


def _site_counts(sites: list[PlannedSite]) -> str:
    """Sites inside a module the source cannot see into count too ("random where built")."""
    chosen = [site.entry.action for site in sites if site.entry is not None]
    random = sum(1 for action in chosen if isinstance(action, Prior))
    constrained = len(chosen) - random
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


def _rows(diagnostics: list[Diagnostic]) -> list[dict]:
    return [diagnostic.as_dict() for diagnostic in diagnostics]


def _spec_shown(result: RunResult) -> Optional[str]:
    return None if result.spec is EMPTY_SPEC else shown(result.spec.path)


def rewrite_json(
    result: RunResult, check: bool, diffs: Optional[dict[str, str]], diagnostics: list[Diagnostic]
) -> str:
    """A ``rewrite`` run as JSON: every file with its status (and diff, under ``--diff``),
    the paths that changed (or would), every site, and every diagnostic, by kind: errors of
    files that could not be processed, lints (BAY1…), and the rest as warnings."""
    spec_path = result.spec.path
    files = []
    for file in result.results:
        row = {
            "path": file.path,
            "status": status(file, check),
            "error": file.error.as_dict() if file.error else None,
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
        **_by_kind(diagnostics),
        "summary": summary(result, check).removeprefix("bayesify: "),
    }
    return json.dumps(document, indent=2)


def _by_kind(diagnostics: list[Diagnostic]) -> dict[str, list[dict]]:
    """``warnings``, ``lints`` and ``errors`` (files that failed, and the spec's entries that
    select nothing), each diagnostic with its severity and code."""
    lints = [d for d in diagnostics if d.code.startswith("BAY1")]
    errors = [d for d in diagnostics if d.code.startswith("BAY0")]
    # An entry that selects nothing is listed under "unmatched"; as a warning (some files
    # failed, or --allow-unmatched) it is a warning like the others.
    unmatched = [d for d in diagnostics if d.code == "BAY205" and d.is_error]
    rest = [d for d in diagnostics if d not in lints and d not in errors and d not in unmatched]
    return {"warnings": _rows(rest), "lints": _rows(lints), "errors": _rows(errors)}


# -- the plan --------------------------------------------------------------------------------


def plan_json(result: RunResult, sites: list[PlannedSite], diagnostics: list[Diagnostic]) -> str:
    spec_path = result.spec.path
    return json.dumps(
        {
            "spec": _spec_shown(result),
            "sites": [_site_row(site, spec_path) for site in sites],
            "unmatched": [_entry_row(entry, spec_path) for entry in result.unmatched],
            **_by_kind(diagnostics),
        },
        indent=2,
    )


def plan_sites(
    result: RunResult, selected_only: bool = False, class_name: Optional[str] = None
) -> list[PlannedSite]:
    """The sites ``plan`` shows, in source order: all, or those an entry selects, or one class's."""
    return [
        site
        for site in _in_source_order(result)
        if (not selected_only or site.entry is not None)
        and (class_name is None or site.class_name == class_name)
    ]


def _becomes(site: PlannedSite) -> str:
    if site.entry is None:
        return site.outcome
    return f"{site.outcome}: {site.entry.action}"


def columns(rows: list[tuple[str, ...]]) -> list[str]:
    """``rows`` as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


#: The narrowest a plan column is cut to, so that a cut cell still says something.
MIN_COLUMN = 8
#: The order plan columns give up width in: the place and the entry first (their ends say
#: the most), the parameter's name last.
_CUT_ORDER = (0, 3, 4, 2, 1)


def terminal_width() -> Optional[int]:
    """The width the plan must fit on a terminal (``$COLUMNS`` wins, as in ``ls``); None for a
    pipe or a file, which get whole rows (for ``grep``)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def plan_table(result: RunResult, sites: list[PlannedSite], width: Optional[int] = None) -> str:
    """One row a parameter: where it is defined, its name (the selector that selects exactly
    it), its shape, the entry that selects it and what it becomes. Entries that select
    nothing are errors, said on standard error. Rows wider than ``width`` are cut, with ``…``
    where text is left out (at the front of a path, where it matters least)."""
    spec_path = shown(result.spec.path)
    rows = [("WHERE", "PARAMETER", "SHAPE", "SELECTED BY", "BECOMES")]
    for site in sites:
        where = f"{site.path}:{site.line}" if site.line else site.path
        entry = f"{spec_path}:{site.entry.line}" if site.entry else "-"
        # An initializer written over several lines is one line of the table.
        shape = " ".join(site.shape.split()) if site.shape else "when built"
        rows.append((where, site.name, shape, entry, _becomes(site)))
    widths = _fit([max(len(row[i]) for row in rows) for i in range(len(rows[0]))], width)
    lines = [
        "  ".join(
            _cut(cell, width, from_front=column in (0, 3)).ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _fit(widths: list[int], limit: Optional[int]) -> list[int]:
    """Column widths whose sum (with two spaces between columns) is at most ``limit``, the
    columns narrowed in :data:`_CUT_ORDER`, none below :data:`MIN_COLUMN`."""
    widths = list(widths)
    excess = 0 if limit is None else sum(widths) + 2 * (len(widths) - 1) - limit
    for column in _CUT_ORDER:
        if excess <= 0:
            break
        cut = min(excess, max(0, widths[column] - MIN_COLUMN))
        widths[column] -= cut
        excess -= cut
    return widths


def _cut(cell: str, width: int, from_front: bool) -> str:
    if len(cell) <= width:
        return cell
    return "…" + cell[len(cell) - width + 1 :] if from_front else cell[: width - 1] + "…"


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
SCALE_WORDS = frozenset(
    {"scale", "scales", "std", "stddev", "sigma", "var", "variance", "precision", "temperature", "tau"}
)


def default_prior(name: str) -> str:
    """A weakly informative default, by what the parameter's name says it is: a scale must be
    positive; the logarithm of one (``log_scale``), a weight or a bias can take any sign."""
    words = [word for word in re.split(r"[^a-z]+", name.lower()) if word]
    if words and words[0].startswith("log"):
        return "Normal(0, 1)"
    if SCALE_WORDS.intersection(words):
        return "LogNormal(0, 1)"
    return "Normal(0, 1)"
