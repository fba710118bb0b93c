"""Rewrite one file: parse, run the rewriters on the classes that convert, verify, return.

Only the top-level statements that hold a converting class are handed to the rewriters;
the rest of the tree is never walked. The result is parsed again before it is returned (like
black's safe mode): output that does not parse is a bug, reported and never written.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

import libcst as cst

from .diagnostics import Diagnostic
from .index import ClassRecord, Conversion, FileIndex
from .lints import LintContext, lint
from .plan import PlannedSite, Planner
from .rewriters import registry
from .rewriters.compose import Walk
from .rewriters.imports import NameClashError, add_imports, missing_imports
from .spec import Spec

BUG_HINT = "this is a bug in bayesify: please report it with the file that triggers it"


@dataclass
class FileJob:
    """What one file's rewrite needs to know about the rest of the run."""

    index: FileIndex
    conversions: dict[int, Conversion]
    #: How each base of each class converts (ROOT, LAYER, EXTERNAL, ...), by class order.
    base_kinds: dict[int, tuple[Conversion, ...]] = field(default_factory=dict)
    #: Random attributes that classes of this file inherit from classes in other files.
    inherited_random: dict[int, set[str]] = field(default_factory=dict)
    #: Classes of the run that this file imports whose instances are PyroModules.
    imported_pyro_classes: frozenset[str] = frozenset()
    #: The attributes that each class's indexed ancestors assign, and the class does not:
    #: ``GlobalNet.output_block.fc.weight`` selects below a module its base class builds.
    inherited_attrs: dict[int, frozenset[str]] = field(default_factory=dict)
    #: Classes some of whose modules a base the run does not rewrite builds.
    built_by_unread_base: frozenset[int] = frozenset()

    @property
    def path(self) -> str:
        return self.index.path


@dataclass
class FileResult:
    path: str
    original: bytes = b""
    rewritten: Optional[bytes] = None
    sites: list[PlannedSite] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    lints: list[Diagnostic] = field(default_factory=list)
    error: Optional[Diagnostic] = None

    @property
    def changed(self) -> bool:
        return self.rewritten is not None and self.rewritten != self.original


@dataclass
class Plan:
    """What a run decided before rewriting: the files that failed to index, the results the
    cache still holds, the jobs left to do (each with the digest of the bytes it was planned
    from), the warnings about the class index, the jobs as the cache keeps them
    (:func:`~bayesify.cache.job_row`), and the run's classes (for did-you-means; none when
    the cache replays a plan, which it keeps only for runs that needed none)."""

    failures: dict[str, FileResult]
    results: dict[str, FileResult]
    pending: list[tuple[FileJob, str]]
    warnings: list[Diagnostic]
    rows: list
    classes: list[ClassRecord] = field(default_factory=list)


def rewrite_source(source: bytes, job: FileJob, spec: Spec) -> FileResult:
    result = FileResult(path=job.path, original=source)
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        result.error = Diagnostic.of(
            "BAY001", f"cannot parse: {error.message}", job.path, error.raw_line, error.raw_column + 1
        )
        return result
    planner = Planner(spec)
    try:
        rewritten = _rewrite_module(module, job, planner)
    except NameClashError as error:
        result.error = Diagnostic.of("BAY003", str(error), job.path)
        return result
    result.sites, result.warnings = planner.sites, planner.warnings
    # Lines in findings are the user's lines, so the lints read the source as it was.
    result.lints = lint(source, _lint_context(job, planner))
    if rewritten is module:
        return result
    output = rewritten.bytes
    if source.endswith(b"\r") and not output.endswith(b"\r"):
        output += b"\r"  # libcst drops a lone carriage return that ends a file
    try:
        ast.parse(output)
    except SyntaxError as error:
        result.error = Diagnostic.of(
            "BAY009", f"the rewritten code does not parse ({error.msg}); {BUG_HINT}", job.path, error.lineno
        )
        return result
    result.rewritten = output
    return result


def _lint_context(job: FileJob, planner: Planner) -> LintContext:
    classes = {record.order: record for record in job.index.classes}
    random: dict[int, set[str]] = {}
    for site in planner.sites:
        if site.outcome.startswith("random"):
            random.setdefault(site.class_order, set()).add(site.attr_path[0])
    _inherit_within_file(random, job.index.classes)
    local_pyro = {classes[o].key for o, kind in job.conversions.items() if kind.is_pyro}
    return LintContext(
        path=job.path,
        imports=job.index.imports,
        classes=classes,
        conversions=job.conversions,
        random=random,
        pyro_classes=frozenset(local_pyro) | job.imported_pyro_classes,
    )


def _rewrite_module(module: cst.Module, job: FileJob, planner: Planner) -> cst.Module:
    """The registered rules, pass by pass, over the top-level statements that hold a
    converting class; then the imports their output needs."""
    context = registry.RewriteContext(
        path=job.path,
        classes={record.order: record for record in job.index.classes},
        conversions=job.conversions,
        base_kinds=job.base_kinds,
        imports=job.index.imports,
        planner=planner,
        random={order: set(attrs) for order, attrs in job.inherited_random.items()},
        inherited_attrs=job.inherited_attrs,
        built_by_unread_base=job.built_by_unread_base,
        ties_weights=job.index.ties_weights,
    )
    tops = _converting_statements(job.index.classes, context.converting)
    if not tops:
        return module
    compound = [
        position for position, s in enumerate(module.body) if isinstance(s, cst.BaseCompoundStatement)
    ]
    body = list(module.body)
    for pass_ in registry.PASSES:
        if pass_ == registry.DECORATORS:
            # Decorators depend on every random attribute of a class, its bases' included, and
            # on whether a method runs the module or its parts: only those classes are walked again.
            _inherit_within_file(context.random, job.index.classes)
            classes = context.classes
            random_tops = {
                classes[order].top for order, attrs in context.random.items() if attrs and order in classes
            }
            if planner.spec.has_priors:
                random_tops |= {
                    record.top
                    for record in classes.values()
                    if any(map(record.runs_the_module, record.methods))
                }
            tops = {top: first for top, first in tops.items() if top in random_tops}
        rules, enter = registry.rules(pass_), registry.entered(pass_)
        for top, first_order in tops.items():
            walk = Walk(*(rule(context, first_order) for rule in rules), enter=enter)
            body[compound[top]] = body[compound[top]].visit(walk)
    if all(new is old for new, old in zip(body, module.body)):
        return module
    local_names = {record.name for record in job.index.classes if "." not in record.qualname}
    missing = missing_imports(context.needed, job.index.imports, local_names)
    return add_imports(module.with_changes(body=body), missing)


def _converting_statements(records: list[ClassRecord], converting: set[int]) -> dict[int, int]:
    """Top-level statement ordinal -> order of its first class, for statements that matter."""
    tops: dict[int, int] = {}
    for record in records:
        tops.setdefault(record.top, record.order)
    wanted = {record.top for record in records if record.order in converting}
    return {top: order for top, order in tops.items() if top in wanted}


def _inherit_within_file(random: dict[int, set[str]], records: list[ClassRecord]) -> None:
    """A subclass reads its bases' random attributes too (bases defined in this file)."""
    by_key = {record.key: record for record in records}
    for record in records:
        pending = [base.resolved for base in record.bases]
        seen: set[str] = set()
        while pending:
            key = pending.pop()
            base = by_key.get(key or "")
            if base is None or key in seen:
                continue
            seen.add(key)
            if base.order in random:
                random.setdefault(record.order, set()).update(random[base.order])
            pending.extend(b.resolved for b in base.bases)
