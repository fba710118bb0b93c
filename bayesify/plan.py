"""Match spec selectors to parameter sites: what becomes random, constrained, or stays put.

The planner answers one question for the rewriters, "which entry selects this parameter?",
and records every answer, so the same run that rewrites can also report the plan
(``bayesify plan``) and the entries that selected nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .diagnostics import Diagnostic
from .index import ClassRecord
from .sites import SiteKind
from .spec import Entry, Prior, Spec


@dataclass(frozen=True)
class PlannedSite:
    """One parameter found in the source, and what the spec makes of it."""

    path: str
    line: Optional[int]
    module: str
    class_name: str
    #: The class's place in its file (see ``ClassRecord.order``).
    class_order: int
    attr_path: tuple[str, ...]
    kind: SiteKind
    shape: Optional[str]
    entry: Optional[Entry]
    #: Later entries that select the same parameter; the first entry wins over them.
    shadowed: tuple[Entry, ...] = ()

    @property
    def outcome(self) -> str:
        if self.entry is None:
            return "random (generated, no longer selected)" if self.kind is SiteKind.GENERATED else "deterministic"
        return "random" if isinstance(self.entry.action, Prior) else "constrained"

    @property
    def name(self) -> str:
        return ".".join((self.class_name, *self.attr_path))


@dataclass
class Planner:
    spec: Spec
    sites: list[PlannedSite] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def select(
        self,
        path: str,
        record: ClassRecord,
        attr_path: tuple[str, ...],
        kind: SiteKind,
        shape: Optional[str],
    ) -> Optional[Entry]:
        """The entry that decides the site ``attr_path`` of ``record``, recorded in the plan."""
        entries = self.spec.select(record.module, record.name, attr_path)
        self._add(path, record, attr_path, kind, shape, entries)
        return entries[0] if entries else None

    def record(
        self, path: str, record: ClassRecord, attr_path: tuple[str, ...], kind: SiteKind, entry: Entry
    ) -> None:
        """Record a site that ``entry`` selects below a held module (decided at run time)."""
        self._add(path, record, attr_path, kind, None, [entry])

    def _add(
        self,
        path: str,
        record: ClassRecord,
        attr_path: tuple[str, ...],
        kind: SiteKind,
        shape: Optional[str],
        entries: list[Entry],
    ) -> None:
        self.sites.append(
            PlannedSite(
                path=path,
                line=record.attr_lines.get(attr_path[0]),
                module=record.module,
                class_name=record.name,
                class_order=record.order,
                attr_path=attr_path,
                kind=kind,
                shape=shape,
                entry=entries[0] if entries else None,
                shadowed=tuple(entries[1:]),
            )
        )

    def warn(self, code: str, path: str, line: Optional[int], message: str) -> None:
        self.warnings.append(Diagnostic.of(code, message, path, line))

    def random_attrs(self, record: ClassRecord) -> set[str]:
        """Attributes of ``record`` that a prior selects, judged from the index alone: used for
        classes in other files, whose sites this worker does not see."""
        random = set()
        for attr in record.attr_lines:
            entries = self.spec.select(record.module, record.name, (attr,))
            if entries and isinstance(entries[0].action, Prior):
                random.add(attr)
        return random


def unmatched_entries(spec: Spec, sites: list[PlannedSite]) -> list[Entry]:
    """Entries that select no parameter at all: each would leave a network deterministic."""
    matched = {entry.line for site in sites for entry in (site.entry, *site.shadowed) if entry}
    return [entry for entry in spec.entries if entry.line not in matched]


def shadowed_only_entries(spec: Spec, sites: list[PlannedSite]) -> list[Entry]:
    """Entries that select parameters, but always after an earlier entry that wins."""
    winners = {site.entry.line for site in sites if site.entry}
    shadowed = {entry.line for site in sites for entry in site.shadowed}
    return [e for e in spec.entries if e.line in shadowed and e.line not in winners]

