"""Properties of a rewrite, over generated module sources.

Hypothesis writes modules the way people do: classes of every kind (``nn.Module`` and
``nn.Linear`` subclasses, subclasses of those, plain classes, classes that hold layers),
``torch.nn`` imported every way, parameters assigned, registered and annotated, with comments,
blank lines, quotes, odd spacing and line breaks, LF or CRLF, UTF-8 (with or without a BOM)
or latin-1; and a spec selecting some of the parameters. Whatever it writes:

* the output parses, and rewriting it again changes nothing;
* every line that is not a rewrite site is kept byte for byte, and the only new lines are
  imports, ``@pyro_method`` decorators and the ``pyro_module(self)`` / ``set_prior`` block;
* each selected parameter is made random or constrained, and nothing else is;
* ``bayesify rewrite --diff``, applied with ``patch -p0``, gives exactly what
  ``bayesify rewrite`` writes in place.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesify.rewriters.imports import SOURCES
from bayesify.runner import run_source
from bayesify.spec import parse_spec

SCRIPT = Path(sys.executable).parent / "bayesify"
COMMAND = (
    [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", "from bayesify.cli import main; main()"]
)

#: How each import spelling names torch.nn's Module, Linear and Parameter.
SPELLINGS = {
    "import torch.nn as nn": (
        "import torch\nimport torch.nn as nn",
        "nn.Module",
        "nn.Linear",
        "nn.Parameter",
    ),
    "from torch import nn": ("import torch\nfrom torch import nn", "nn.Module", "nn.Linear", "nn.Parameter"),
    "import torch": ("import torch", "torch.nn.Module", "torch.nn.Linear", "torch.nn.Parameter"),
    "aliases": (
        "import torch\nfrom torch.nn import Linear, Module as M, Parameter as P",
        "M",
        "Linear",
        "P",
    ),
    "import torch.nn as tnn": (
        "import torch\nimport torch.nn as tnn",
        "tnn.Module",
        "tnn.Linear",
        "tnn.Parameter",
    ),
}
PRIORS = [
    "Normal(0, 1)",
    "LogNormal(0, 1)",
    "Laplace(0, 2.5)",
    "Uniform(-1, 1)",
    "dist.Cauchy(loc=0, scale=0.5)",
]
CONSTRAINTS = ["positive", "interval(0, 1)", "constraints.greater_than(-1)", "unit_interval"]

#: Kinds of a line of a generated source, for what a rewrite may do to it.
KEEP, HEADER, SITE, HELD = "keep", "header", "site", "held"


@dataclass
class Source:
    """A generated module: its lines (each tagged with what a rewrite may do to it), and
    the spec entries that select its parameters."""

    newline: str = "\n"
    encoding: str = "utf-8"
    bom: bool = False
    lines: list[tuple[str, str]] = field(default_factory=list)
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # section, selector, action

    def add(self, text: str, kind: str = KEEP) -> None:
        for line in text.split("\n"):
            self.lines.append((line, kind))

    @property
    def data(self) -> bytes:
        text = "".join(line + self.newline for line, _ in self.lines)
        return (b"\xef\xbb\xbf" if self.bom else b"") + text.encode(self.encoding)

    @property
    def may_change(self) -> set[int]:
        return {index for index, (_, kind) in enumerate(self.lines) if kind != KEEP}

    def spec(self) -> str:
        text = "version: 1\n"
        for section in ("priors", "constraints"):
            chosen = [(selector, action) for s, selector, action in self.entries if s == section]
            if chosen:
                text += f"{section}:\n" + "".join(f"  {sel}: {act}\n" for sel, act in chosen)
        return text

    def count(self, section: str) -> int:
        return sum(1 for s, _, _ in self.entries if s == section)


# --- The generator ---------------------------------------------------------------------

COMMENTS = st.sampled_from(
    [
        "# a comment",
        "#no space",
        "# TODO: tidy up",
        "# class Fake(nn.Module): not code",
        "#  'quotes' \"here\"",
    ]
)
DOCSTRINGS = st.sampled_from(
    ['"""A module."""', "'''A module.'''", '"A module."', "'A module.'", '"""\n    Multi.\n    """']
)
SHAPES = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(lambda dims: ", ".join(map(str, dims)))


@st.composite
def tensor(draw: st.DrawFn) -> str:
    shape = draw(SHAPES)
    factory = draw(st.sampled_from(["randn", "zeros", "ones", "rand"]))
    spaced = draw(st.booleans())
    call = f"torch.{factory}( {shape} )" if spaced else f"torch.{factory}({shape})"
    return draw(st.sampled_from([call, f"0.1 * {call}", f"{call}.mul(2)"]))


@st.composite
def parameter_lines(draw: st.DrawFn, attr: str, parameter: str) -> str:
    init = draw(tensor())
    style = draw(
        st.sampled_from(["assign", "assign", "register", "annotated", "multiline", "keyword", "conditional"])
    )
    trailing = f"  {draw(COMMENTS)}" if draw(st.booleans()) else ""
    if style == "register":
        quote = draw(st.sampled_from(['"', "'"]))
        return f"self.register_parameter({quote}{attr}{quote}, {parameter}({init})){trailing}"
    if style == "annotated":
        return f"self.{attr}: {parameter} = {parameter}({init}){trailing}"
    if style == "multiline":
        return f"self.{attr} = {parameter}(\n    {init},\n){trailing}"
    if style == "keyword":
        return f"self.{attr} = {parameter}({init}, requires_grad=True){trailing}"
    if style == "conditional":
        return f"self.{attr} = {parameter}({init}) if torch.is_grad_enabled() else None{trailing}"
    return f"self.{attr} = {parameter}({init}){trailing}"


def indent(text: str, level: int) -> str:
    return "\n".join(("    " * level + line) if line else line for line in text.split("\n"))


@st.composite
def sources(draw: st.DrawFn, prefix: str = "") -> Source:
    """A module; its classes are named ``{prefix}C0``, ``{prefix}C1``, …"""
    source = Source(
        newline=draw(st.sampled_from(["\n", "\n", "\r\n"])),
        encoding=draw(st.sampled_from(["utf-8", "utf-8", "latin-1"])),
    )
    source.bom = source.encoding == "utf-8" and draw(st.booleans())
    if source.encoding == "latin-1":
        source.add("# -*- coding: latin-1 -*-")
    if draw(st.booleans()):
        source.add('"""Generated models: déjà vu."""')
    imports, module, linear, parameter = SPELLINGS[draw(st.sampled_from(sorted(SPELLINGS)))]
    if draw(st.booleans()):
        source.add("import math")
    source.add(imports)
    modules: list[str] = []

    for number in range(draw(st.integers(1, 4))):
        name = f"{prefix}C{number}"
        kind = draw(
            st.sampled_from(["module", "module", "layer", "plain"] + (["subclass"] if modules else []))
        )
        source.add("\n" * draw(st.integers(1, 2)))
        if draw(st.booleans()):
            source.add(draw(COMMENTS))
        if kind == "plain":
            # A plain class: parameter-looking lines here are no parameters of a module.
            source.add(f"class {name}{draw(st.sampled_from(['', '()', '(object)']))}:")
            source.add(indent(f"def __init__(self):\n    self.p0 = {parameter}({draw(tensor())})", 1))
            continue
        base = (
            draw(st.sampled_from(modules))
            if kind == "subclass"
            else {"module": module, "layer": linear}[kind]
        )
        header = draw(
            st.sampled_from([f"class {name}({base}):", f"class {name}( {base} ):", f"class {name}({base},):"])
        )
        source.add(header, HEADER if kind in ("module", "layer") else KEEP)
        modules.append(name)
        if draw(st.booleans()):
            source.add(indent(draw(DOCSTRINGS), 1))
        source.add(indent("def __init__(self):", 1))
        if draw(st.booleans()):
            source.add(indent(draw(COMMENTS), 2))
        source.add(indent("super().__init__(3, 4)" if kind == "layer" else "super().__init__()", 2))
        attrs = [f"p{i}" for i in range(draw(st.integers(0 if kind == "layer" else 1, 3)))]
        for attr in attrs:
            lines = draw(parameter_lines(attr, parameter))
            choice = draw(st.sampled_from(["priors", "priors", "constraints", None]))
            if choice:
                action = draw(st.sampled_from(PRIORS if choice == "priors" else CONSTRAINTS))
                source.entries.append((choice, f"{name}.{attr}", action))
            source.add(indent(lines, 2), SITE if choice else KEEP)
            if draw(st.integers(0, 3)) == 0:
                source.add("")
        if draw(st.integers(0, 3)) == 0:
            source.add(indent(f"self.fc = {linear}(3, 4)", 2), HELD)
        if draw(st.booleans()):
            source.add(indent("self.scale = 2.0  # not a parameter", 2))
        source.add("\n" * draw(st.integers(0, 1)) + indent("def forward(self, x):", 1))
        reads = " + ".join(f"self.{attr}.sum()" for attr in attrs) or "0"
        source.add(indent(f"return x * ({reads})", 2))
        if attrs and draw(st.booleans()):
            source.add("")
            source.add(indent(f"def describe(self):\n    return {{'{attrs[0]}': self.{attrs[0]}}}", 1))

    if draw(st.booleans()):
        source.add(f"\n\nif __name__ == '__main__':\n    print({prefix}C0)")
    return source


# --- Checks ----------------------------------------------------------------------------

#: Import lines from the modules the rules generate names from, and the lines the rules add.
_SOURCES = "|".join(re.escape(module) for module in sorted(set(SOURCES.values()))).encode()
ADDED_LINE = re.compile(
    rb"^(from (" + _SOURCES + rb") import [\w, ]+|\s*@pyro_method"
    rb"|\s*pyro_module\(self\)|\s*set_(prior|constraint)\(self, .*\))\r?\n?$"
)


def rewrite(data: bytes, spec_text: str) -> bytes:
    result = run_source(data, parse_spec(spec_text, "priors.yaml"))
    assert not result.failed, result.failed[0].error
    assert not result.unmatched, [e.selector.text for e in result.unmatched]
    (file_result,) = result.results
    return file_result.rewritten if file_result.changed else data


def check_only_sites_changed(source: Source, before: bytes, after: bytes) -> None:
    """Lines that are not rewrite sites are kept byte for byte, in order; new lines are
    imports, ``@pyro_method`` decorators and the block that ends ``__init__``. Compared on
    raw lines, so endings and encoding count. (Not with difflib: on repeated classes it
    may pair lines across classes and see changes where there are none.)"""
    old = before.split(b"\n")
    new = [line for line in after.split(b"\n") if not ADDED_LINE.match(line + b"\n")]
    may_change = source.may_change
    at = 0  # the next line of `new` to account for
    number = 0
    while number < len(old):
        if number not in may_change:
            assert at < len(new) and new[at] == old[number], f"line {number + 1} changed: {old[number]!r}"
            number, at = number + 1, at + 1
            continue
        # A run of site lines (a statement may span several) becomes at most as many lines.
        end = number
        while end < len(old) and end in may_change:
            end += 1
        following = old[end] if end < len(old) else None
        taken = 0
        while at < len(new) and new[at] != following and taken < end - number:
            at, taken = at + 1, taken + 1
        number = end
    assert at == len(new), f"lines were added that are not imports, decorators or the block: {new[at:]}"


PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTIES
@given(source=sources())
def test_a_rewrite_parses_is_idempotent_and_touches_only_its_sites(source: Source) -> None:
    before = source.data
    spec_text = source.spec()
    after = rewrite(before, spec_text)

    ast.parse(after)
    assert rewrite(after, spec_text) == after, "rewriting the output changed it"
    check_only_sites_changed(source, before, after)
    assert after.startswith(b"\xef\xbb\xbf") == source.bom
    after.decode(source.encoding)  # still in its own encoding
    if source.newline == "\r\n":
        assert after.count(b"\n") == after.count(b"\r\n"), "a line lost its CRLF"
    else:
        assert b"\r" not in after

    text = after.decode(source.encoding)
    assert text.count("PyroSample(") == source.count("priors")
    assert text.count("PyroParam(") == source.count("constraints")
    if any(kind == HEADER for _, kind in source.lines):
        assert re.search(r"^from pyro\.nn import .*\bPyroModule\b", text, re.M)


@PROPERTIES
@given(source=sources(), respec=st.randoms(use_true_random=False))
def test_a_spec_change_updates_the_rewrite_in_place(source: Source, respec) -> None:
    """Rewriting an output with a changed spec gives what rewriting the original would."""
    first = rewrite(source.data, source.spec())
    changed = Source(
        entries=[(s, sel, respec.choice(PRIORS) if s == "priors" else act) for s, sel, act in source.entries]
    )
    assert rewrite(first, changed.spec()) == rewrite(source.data, changed.spec())


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs GNU patch")
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(files=st.integers(1, 3).flatmap(lambda n: st.tuples(*(sources(prefix=f"F{i}") for i in range(n)))))
def test_the_diff_applied_with_patch_gives_the_in_place_result(files: tuple[Source, ...]) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        inplace, patched = root / "inplace", root / "patched"
        entries = []
        for tree in (inplace, patched):
            (tree / "pkg").mkdir(parents=True)
            (tree / "pyproject.toml").write_text("")
        for number, source in enumerate(files):
            for tree in (inplace, patched):
                (tree / "pkg" / f"m{number}.py").write_bytes(source.data)
            entries += source.entries
        spec_text = Source(entries=entries).spec()
        for tree in (inplace, patched):
            (tree / "priors.yaml").write_text(spec_text)

        diff = subprocess.run(
            [*COMMAND, "rewrite", "pkg", "--priors", "priors.yaml", "--diff"],
            cwd=patched,
            capture_output=True,
            timeout=120,
        )
        assert diff.returncode in (0, 1), diff.stderr.decode()
        done = subprocess.run(
            [*COMMAND, "rewrite", "pkg", "--priors", "priors.yaml"],
            cwd=inplace,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        applied = subprocess.run(
            ["patch", "-p0", "--quiet", "--batch"],
            cwd=patched,
            input=diff.stdout,
            capture_output=True,
            timeout=60,
        )
        assert applied.returncode == 0, (applied.stdout + applied.stderr).decode()

        for number in range(len(files)):
            name = f"pkg/m{number}.py"
            assert (patched / name).read_bytes() == (inplace / name).read_bytes(), name
        leftovers = sorted(p.name for p in (patched / "pkg").iterdir() if not p.name.startswith("m"))
        assert not leftovers, leftovers  # no .orig or .rej: every hunk applied cleanly
