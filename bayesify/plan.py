"""Match spec selectors to parameter sites: what becomes random, constrained, or stays put.

The planner answers one question for the rewriters, "which entry selects this parameter?",
and records every answer, so the same run that rewrites can also report the plan
(``bayesify plan``) and the entries that selected nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Optional

from . import catalog
from .diagnostics import Diagnostic
from .index import ClassRecord
from .selectors import ANY, ANY_DEPTH, TYPE, Selector, match_path
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
    #: Below a module the source cannot see into (a container, a factory's, another
    #: library's): the parameter is there, or not, only in the built model.
    if_built: bool = False

    @property
    def outcome(self) -> str:
        if self.entry is None:
            return (
                "random (generated, no longer selected)"
                if self.kind is SiteKind.GENERATED
                else "deterministic"
            )
        outcome = "random" if isinstance(self.entry.action, Prior) else "constrained"
        return f"{outcome} where built" if self.if_built else outcome

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
        layers: tuple[tuple[int, str], ...] = (),
    ) -> Optional[Entry]:
        """The entry that decides the site ``attr_path`` of ``record``, recorded in the plan;
        ``layers`` are the torch.nn layers known on its path (see :meth:`Spec.select`)."""
        entries = self.spec.select(record.module, record.name, attr_path, layers)
        self._add(path, record, attr_path, kind, shape, entries)
        return entries[0] if entries else None

    def record(
        self, path: str, record: ClassRecord, attr_path: tuple[str, ...], kind: SiteKind, entries: list[Entry]
    ) -> None:
        """Record a site that ``entries`` select below a held module the source cannot see into
        (decided at run time; the first one wins)."""
        self._add(path, record, attr_path, kind, None, entries, if_built=True)

    def _add(
        self,
        path: str,
        record: ClassRecord,
        attr_path: tuple[str, ...],
        kind: SiteKind,
        shape: Optional[str],
        entries: list[Entry],
        if_built: bool = False,
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
                if_built=if_built,
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
    """Entries that can select no parameter at all: each would leave a network deterministic.

    A layer-type entry selects wherever a model holds such a layer, however it was built, so
    the source cannot list its sites: it can select something if the layer type exists and has
    such a parameter (torch.nn's, by the catalog), or if it names another library's layer.
    An ``**.`` entry likewise selects at any depth of the built model: it can select something
    if it ends with the name of a torch.nn layer's parameter."""
    matched = {entry.line for site in sites for entry in (site.entry, *site.shadowed) if entry}
    return [entry for entry in spec.entries if entry.line not in matched and not _may_select(entry.selector)]


def _may_select(selector: Selector) -> bool:
    if selector.kind == TYPE:
        return _layer_parameters(selector)
    if selector.kind == ANY:
        last = selector.path[-1]
        return any(fnmatch.fnmatchcase(name, last) for name in _parameter_names()) or any(
            fnmatch.fnmatchcase(last, glob.rpartition(".")[2])
            for globs in catalog.NN_NUMBERED_PARAMETERS.values()
            for glob in globs
        )
    return False


def may_be_numbered_parameter(layer: str, path: tuple[str, ...]) -> bool:
    """Whether ``path`` (``weight_ih_l1``) names a parameter the torch.nn ``layer`` has when
    built with more layers, directions or cutoffs than the catalog's defaults."""
    globs = catalog.NN_NUMBERED_PARAMETERS.get(layer, ())
    return any(match_path(tuple(glob.split(".")), path) for glob in globs)


def layers_on_path(layer: str, depth: int, name: str) -> tuple[tuple[int, str], ...]:
    """The torch.nn layers on the way to parameter ``name`` of a ``layer`` held at ``depth``,
    as :meth:`Spec.select` takes them: the layer, and those a composite layer holds
    (``(depth + 2, "Linear")`` for MultiheadAttention's ``self_attn.out_proj.weight``)."""
    below = catalog.NN_SUBLAYERS.get(layer, {})
    return ((depth, layer),) + tuple(
        (depth + 1 + path.count("."), kind) for path, kind in below.items() if name.startswith(path + ".")
    )


def _parameter_names() -> set[str]:
    return {part for names in catalog.NN_LAYERS.values() for name in names for part in name.split(".")}


def _torch_layers(selector: Selector) -> list[str]:
    glob = selector.torch_layer_glob
    return [layer for layer in catalog.NN_LAYERS if layer != "Module" and fnmatch.fnmatchcase(layer, glob)]


def _layer_parameters(selector: Selector) -> bool:
    """Whether a layer-type entry can select a parameter: another library's layer always may."""
    if selector.torch_layer_glob is None:
        return True
    return any(
        selector.matches_path(tuple(name.split(".")))
        for layer in _torch_layers(selector)
        for name in catalog.NN_LAYERS[layer]
    ) or any(may_be_numbered_parameter(layer, selector.path) for layer in _torch_layers(selector))


def did_you_mean(selector: Selector, classes: list[ClassRecord]) -> str:
    """A hint for an entry that selects nothing: the closest class, layer, attribute or
    parameter name to the segment that matches nothing (``MLPP``, ``nett``, ``wieght``)."""
    parameter_names = _parameter_names()
    if selector.kind == TYPE:
        if selector.torch_layer_glob is None:
            return ""
        layers = _torch_layers(selector)
        if not layers:
            return _closest(
                selector.owner_name, [layer for layer in catalog.NN_LAYERS if layer != "Module"], "nn."
            )
        names = {part for layer in layers for name in catalog.NN_LAYERS[layer] for part in name.split(".")}
        return _closest_segment(selector.path, names)
    owners = [record for record in classes if selector.matches_class(record.module, record.name)]
    if (
        not owners
        and selector.module is None
        and selector.owner in catalog.NN_LAYERS
        and selector.owner != "Module"
    ):
        # `Linear.weight` names a class of the code's own; torch's layers are `nn.Linear`.
        return f"; did you mean {'nn.' + selector.text!r}, which selects every torch.nn.{selector.owner}?"
    if not owners:
        return _closest(selector.owner, sorted({record.name for record in classes}))
    attributes = {attr for record in owners for attr in record.attr_lines}
    if selector.path[0] != ANY_DEPTH and not any(
        fnmatch.fnmatchcase(a, selector.path[0]) for a in attributes
    ):
        return _closest(selector.path[0], sorted(attributes))
    return _closest_segment(selector.path[1:], parameter_names | {a for r in classes for a in r.attr_lines})


def _closest_segment(path: tuple[str, ...], names: set[str]) -> str:
    for segment in path:
        if segment != ANY_DEPTH and not any(fnmatch.fnmatchcase(name, segment) for name in names):
            return _closest(segment, sorted(names))
    return ""


def _closest(name: str, known: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


def shadowed_only_entries(spec: Spec, sites: list[PlannedSite]) -> list[Entry]:
    """Entries that select parameters, but always after an earlier entry that wins."""
    winners = {site.entry.line for site in sites if site.entry}
    shadowed = {entry.line for site in sites for entry in site.shadowed}
    return [e for e in spec.entries if e.line in shadowed and e.line not in winners]
