"""What a run tells the user: the summary line, messages, the plan table, a starter spec."""

from __future__ import annotations

import json
from typing import Optional

from .plan import PlannedSite
from .runner import RunResult
from .sites import SiteKind


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(result: RunResult, check: bool) -> str:
    changed = result.changed
    sites = [site for r in changed for site in r.sites]
    random = sum(1 for s in sites if s.outcome == "random")
    constrained = sum(1 for s in sites if s.outcome == "constrained")
    verb = "would be rewritten" if check else "rewritten"
    unchanged = len(result.results) - len(changed) - len(result.failed)
    return (
        f"bayesify: {_plural(len(changed), 'file')} {verb}, {unchanged} unchanged, "
        f"{len(result.failed)} failed; {_plural(random, 'site')} made random, {constrained} constrained"
    )


def _site_row(site: PlannedSite, spec_path: str) -> dict:
    return {
        "file": site.path,
        "line": site.line,
        "class": site.class_name,
        "module": site.module,
        "parameter": ".".join(site.attr_path),
        "kind": site.kind.value,
        "shape": site.shape or "from the built module",
        "entry": f"{spec_path}:{site.entry.line}" if site.entry else None,
        "selector": site.entry.selector.text if site.entry else None,
        "action": str(site.entry.action) if site.entry else None,
        "outcome": site.outcome,
    }


def plan_json(result: RunResult) -> str:
    spec = result.spec
    return json.dumps(
        {
            "spec": spec.path,
            "sites": [_site_row(site, spec.path) for site in result.sites],
            "unmatched": [
                {"entry": f"{spec.path}:{e.line}", "selector": e.selector.text, "action": str(e.action)}
                for e in result.unmatched
            ],
            "failed": [r.error for r in result.failed],
        },
        indent=2,
    )


def plan_table(result: RunResult) -> str:
    spec = result.spec
    rows = [("WHERE", "PARAMETER", "SHAPE", "ENTRY", "OUTCOME")]
    for site in result.sites:
        row = _site_row(site, spec.path)
        where = f"{row['file']}:{row['line']}" if row["line"] else row["file"]
        decided = f"{row['entry']} {row['action']}" if row["entry"] else "-"
        rows.append((where, f"{site.name}", row["shape"], decided, site.outcome))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for entry in result.unmatched:
        lines.append(f"{spec.path}:{entry.line}: {entry.selector.text}: {entry.action} selects no parameter")
    return "\n".join(lines)


def unmatched_message(result: RunResult) -> Optional[str]:
    if not result.unmatched:
        return None
    lines = [
        f"{result.spec.path}:{entry.line}: error: {entry.section} entry {entry.selector.text!r} "
        "selects no parameter, which would leave the network deterministic "
        "(check the class and attribute names with `bayesify plan`, or pass --allow-unmatched)"
        for entry in result.unmatched
    ]
    return "\n".join(lines)


def starter_spec(sites: list[PlannedSite]) -> str:
    """A ``priors.yaml`` that lists every parameter found, with a default prior for each."""
    lines = [
        "# Written by `bayesify init`: every parameter bayesify found, with a default prior.",
        "# Edit the priors, delete the lines of parameters that should stay deterministic,",
        "# or move them under `constraints:` to keep them learnable but constrained.",
        "version: 1",
        "priors:",
    ]
    seen = set()
    for site in sites:
        if site.kind is SiteKind.GENERATED or site.name in seen:
            continue
        seen.add(site.name)
        where = f"{site.path}:{site.line}" if site.line else site.path
        shape = site.shape or "shape from the built module"
        lines.append(f"  {site.name}: {default_prior(site.attr_path[-1])}  # {where}, shape {shape}")
    if len(lines) == 5:
        lines[-1] = "priors: {}"
    return "\n".join(lines) + "\n"


def default_prior(name: str) -> str:
    """A weakly informative default by what the parameter's name says it is."""
    lowered = name.lower()
    if any(word in lowered for word in ("scale", "std", "sigma", "var", "precision", "temperature")):
        return "LogNormal(0, 1)"
    if "bias" in lowered:
        return "Normal(0, 10)"  # offsets are less constrained than weights
    return "Normal(0, 1)"
