"""``bayesify plan --build``: build a model from the rewritten code and list its real sites.

What the source cannot show (layers a factory makes, a head that is ``nn.Identity()`` under a
flag, a layer shared or tied), a build can. The run's rewritten files are written to a
temporary mirror (with the rest of their packages), and a subprocess that has the runtime
imports the call the user names from there, builds the model and reports every parameter of
it: a random site with its shape and the entry behind it, a constrained one, or one left
deterministic. This process never imports torch: the subprocess does.

The call is ``module:callable`` or ``module:callable(args)``, with literal arguments only::

    bayesify plan src/ --build 'models.resnet:resnet18(num_classes=10)'
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .index import module_of
from .names import dotted_from_ast
from .report import columns
from .runner import RunResult
from .spec import Entry

#: How long a build may take before it is given up, in seconds.
BUILD_TIMEOUT = 600


class BuildError(Exception):
    """The call is malformed, or building the model failed; the message says how."""


@dataclass(frozen=True)
class Call:
    module: str
    attribute: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


def parse_call(text: str) -> Call:
    """``pkg.models:Net(4, depth=2)`` -> ``Call("pkg.models", "Net", (4,), (("depth", 2),))``;
    arguments are Python literals, read with :func:`ast.literal_eval`, never run."""
    module, colon, rest = text.partition(":")
    usage = f"--build {text!r} is not of the form module:callable or module:callable(literal args)"
    if not colon or not module.strip():
        raise BuildError(usage)
    try:
        node = ast.parse(rest.strip(), mode="eval").body
    except SyntaxError:
        raise BuildError(usage) from None
    call = node if isinstance(node, ast.Call) else None
    attribute = dotted_from_ast(call.func if call else node)
    if attribute is None:
        raise BuildError(usage)
    try:
        args = tuple(ast.literal_eval(arg) for arg in call.args) if call else ()
        kwargs = tuple((k.arg, ast.literal_eval(k.value)) for k in call.keywords) if call else ()
    except ValueError:
        raise BuildError(f"{usage}: the arguments must be literals (numbers, strings, lists, …)") from None
    if any(name is None for name, _ in kwargs):
        raise BuildError(f"{usage}: ** arguments are not allowed")
    return Call(module.strip(), attribute, args, kwargs)


def build(result: RunResult, call: Call) -> dict:
    """Build ``call`` from the rewritten code of ``result`` in a subprocess; its report."""
    with tempfile.TemporaryDirectory(prefix="bayesify-build-") as mirror:
        write_mirror(result, Path(mirror))
        environment = dict(os.environ)
        # The current folder stays importable after the mirror (the run's files may import
        # modules beside them that the run does not hold).
        environment["PYTHONPATH"] = os.pathsep.join(
            [mirror, *filter(None, [environment.get("PYTHONPATH", "")]), os.getcwd()]
        )
        request = json.dumps(
            {
                "module": call.module,
                "attribute": call.attribute,
                "mirror": mirror,
                "args": list(call.args),
                "kwargs": dict(call.kwargs),
            }
        )
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "bayesify.runtime.built", request],
                # In the mirror: Python puts the current folder first, before PYTHONPATH, and
                # the original package there must not shadow the rewritten one.
                cwd=mirror,
                env=environment,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise BuildError(f"building {call.module}:{call.attribute} took over {BUILD_TIMEOUT} s") from None
    if completed.returncode != 0:
        hint = ""
        if "ModuleNotFoundError" in completed.stderr:
            hint = (
                f"\nThe model was built by {sys.executable}, the Python that runs bayesify: where the "
                "project's dependencies are in another environment, run bayesify with its Python "
                "(`<environment>/bin/python -m bayesify plan --build ...`)"
            )
        raise BuildError(
            f"building {call.module}:{call.attribute} failed:\n{completed.stderr.rstrip()}{hint}"
        )
    return json.loads(completed.stdout)


def write_mirror(result: RunResult, mirror: Path) -> None:
    """The run's files as rewritten, below ``mirror`` where an import finds them: at their place
    relative to the current folder (``src/net.py`` as ``src.net``) and where their module name
    puts them (``net``, or ``pkg.net`` inside a package), each with the rest of the top-level
    folder or package it belongs to, so that its sibling imports resolve."""
    here = Path.cwd().resolve()
    placed = []
    for file_result in result.results:
        path = Path(file_result.path).resolve()
        module, is_package = module_of(path)
        roots = [path.parents[module.count(".") + (1 if is_package else 0)]]
        if path.is_relative_to(here) and path.parent != here:
            roots.append(here)
        for root in roots:
            relative = path.relative_to(root)
            top = root / relative.parts[0]
            if top.is_dir() and not (mirror / top.name).exists():
                shutil.copytree(top, mirror / top.name, ignore=shutil.ignore_patterns("__pycache__", ".*"))
            placed.append((mirror / relative, file_result))
    for target, file_result in placed:
        target.parent.mkdir(parents=True, exist_ok=True)
        source = (
            file_result.rewritten
            if file_result.rewritten is not None
            else Path(file_result.path).read_bytes()
        )
        target.write_bytes(source)


def built_table(report: dict, result: RunResult) -> str:
    """One row a parameter of the built model, and a line for each entry that selects nothing
    in it: what the static plan cannot promise, the build shows."""
    entries = {entry.selector.text: entry for entry in result.spec.entries}
    spec_path = result.spec.path
    static = {(site.class_name, site.attr_path): site.entry for site in result.sites if site.entry}
    rows = [("SITE", "SHAPE", "SELECTED BY", "BECOMES")]
    used = set()
    for site in report["parameters"]:
        selector = site["selector"]
        if selector is None and site["becomes"] != "deterministic":
            # A class's own parameter, made random in the rewritten source: the plan knows why.
            keys = [(cls, (site["attribute"],)) for cls in site["classes"]]
            found = next((static[key] for key in keys if key in static), None)
            selector = found.selector.text if found else None
        entry = entries.get(selector) if selector else None
        if entry is not None:
            used.add(entry.line)
        where = f"{spec_path}:{entry.line} ({entry.selector.text})" if entry else "-"
        if site.get("tied_to"):
            becomes = f"tied: reads {site['tied_to']}"
        else:
            becomes = f"{site['becomes']}: {entry.action}" if entry else site["becomes"]
        rows.append((site["name"], site["shape"], where, becomes))
    lines = [
        f"built {report['built']}: {report['random']} random, {report['constrained']} constrained, "
        f"{report['deterministic']} deterministic",
        *columns(rows),
    ]
    shadowed = _shadowed(report, result)
    for entry in result.spec.entries:
        if entry.line in used:
            continue
        if entry.line in shadowed:
            path, first = shadowed[entry.line]
            lines.append(
                f"{spec_path}:{entry.line}: {entry.selector.text}: selects only what an earlier entry "
                f"decides ({path} by {spec_path}:{first.line}); it has no effect"
            )
        else:
            lines.append(
                f"{spec_path}:{entry.line}: {entry.selector.text}: selects nothing in the built model"
            )
    lines += _namesakes(report["parameters"], result.spec.entries, spec_path)
    return "\n".join(lines)


def _shadowed(report: dict, result: RunResult) -> dict[int, tuple[str, Entry]]:
    """For each entry that decides nothing but selects a parameter, that parameter and the
    earlier entry that decides it: as the rewrite planned it (which then leaves the entry
    out), or as the built model's runtime found it."""
    entries = {entry.selector.text: entry for entry in result.spec.entries}
    found = {}
    for site in result.sites:
        for entry in site.shadowed:
            found.setdefault(entry.line, (".".join((site.class_name, *site.attr_path)), site.entry))
    for text, (path, first) in report["shadowed"].items():
        if text in entries and first in entries:
            found.setdefault(entries[text].line, (path, entries[first]))
    return found


def _namesakes(parameters: list[dict], entries, spec_path: str) -> list[str]:
    """A line for each torch layer-type entry and another library's layer of the same name that
    it leaves deterministic (PyTorch Geometric's ``Linear`` under ``nn.Linear.weight``): a
    layer type selects by class, and the library's class derives from no torch.nn layer."""
    lines = []
    for entry in entries:
        glob = entry.selector.torch_layer_glob
        if glob is None:
            continue
        missed = {
            row["layer"]: row["attribute"]
            for row in parameters
            if row["becomes"] == "deterministic"
            and not row["layer"].startswith("torch.nn.")
            and fnmatch.fnmatchcase(row["layer"].rpartition(".")[2], glob)
            and entry.selector.matches_path((row["attribute"],))
        }
        lines += [
            f"{spec_path}:{entry.line}: {entry.selector.text}: the model holds {layer}, which is no "
            f"torch.nn layer and stays deterministic; to select it, add '{layer}.{attribute}'"
            for layer, attribute in missed.items()
        ]
    return lines


def with_built_model(plan: str, result: RunResult, call: Call, output_format: str) -> str:
    """The static ``plan`` (a table or JSON) followed by what the built model holds."""
    built = build(result, call)
    if output_format == "json":
        return json.dumps({**json.loads(plan), "built": built}, indent=2)
    return f"{plan}\n\n{built_table(built, result)}"
