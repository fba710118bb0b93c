"""The priors spec is data, never code: validated, never evaluated, every error located.

A spec may arrive in a pull request from anyone. Whatever it holds, bayesify either refuses
it with a message naming the spec file and line, or puts into the rewritten source nothing
but a call of a whitelisted distribution or constraint with number literals (and, for
priors, string literals that name sibling attributes).
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesify import catalog, codegen
from bayesify.runner import run_source
from bayesify.spec import Constraint, Prior, SpecError, load_spec, parse_spec

SPEC = "priors.yaml"


def spec_with(section: str, value: str, selector: str = "Lin.w") -> str:
    """A spec whose line 3 is ``selector: value`` under ``section``; ``value`` is quoted
    as a YAML double-quoted scalar (JSON's), so any text reaches the spec parser intact."""
    return f"version: 1\n{section}:\n  {selector}: {json.dumps(value)}\n"


def rendered(prior: Prior) -> str:
    """The distribution call a prior is written as: ``Family(<arguments>)``."""
    args, kwargs = prior.arguments()
    return codegen.code(codegen.call(prior.family, *args, **kwargs))


def refused(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, SPEC)
    return caught.value


def assert_located(error: SpecError, line: int) -> None:
    """The message is a compiler-style ``file:line: message``."""
    assert error.path == SPEC and error.line == line
    assert str(error).startswith(f"{SPEC}:{line}: ")


# --- What a valid spec gives --------------------------------------------------------------


def test_a_valid_spec_gives_its_entries_in_file_order_with_their_lines() -> None:
    spec = parse_spec(
        "version: 1\n"
        "priors:\n"
        "  Linear.weight: Normal(0, 1)\n"
        "  Hier.x: dist.Normal(loc=loc, scale=0.5)\n"
        "constraints:\n"
        "  Linear.bias: positive\n"
        "  Gate.p: constraints.interval(0, 1)\n"
        "modules:\n"
        "  exclude: [Container, '*Guide']\n",
        SPEC,
    )
    assert [(e.selector.text, e.line, e.section) for e in spec.entries] == [
        ("Linear.weight", 3, "priors"),
        ("Hier.x", 4, "priors"),
        ("Linear.bias", 6, "constraints"),
        ("Gate.p", 7, "constraints"),
    ]
    weight, hier, bias, gate = (entry.action for entry in spec.entries)
    assert (weight.family, weight.arguments()) == ("Normal", ([0, 1], {}))
    assert (hier.family, hier.arguments(), hier.siblings()) == (
        "Normal",
        ([], {"loc": "loc", "scale": 0.5}),
        ["loc"],
    )
    assert codegen.code(bias.node()) == "constraints.positive"
    assert codegen.code(gate.node()) == "constraints.interval(0, 1)"
    assert spec.exclude == ("Container", "*Guide")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / SPEC
    path.write_bytes(b"\xef\xbb\xbfversion: 1\npriors:\n  Lin.w: Normal(0, 1)\n")
    assert [e.selector.text for e in load_spec(path).entries] == ["Lin.w"]


def test_a_quoted_version_is_the_same_version() -> None:
    assert parse_spec('version: "1"\n', SPEC).entries == ()


# --- YAML tags: no Python object is ever built ---------------------------------------------


@pytest.mark.parametrize(
    "text, line",
    [
        ('version: 1\npriors:\n  Lin.w: !!python/object/apply:os.mkdir ["{marker}"]\n', 3),
        ('version: 1\npriors:\n  Lin.w: !!python/object/new:os.mkdir ["{marker}"]\n', 3),
        ("version: 1\npriors:\n  Lin.w: !!python/name:os.system\n", 3),
        ('--- !!python/object/apply:os.mkdir ["{marker}"]\n', 1),
        ('version: !!python/object/apply:os.mkdir ["{marker}"]\n', 1),
        ('version: 1\n!!python/object/apply:os.mkdir ["{marker}"]: x\n', 2),
        ("version: 1\nmodules:\n  exclude:\n    - !!python/object/apply:os.getcwd []\n", 4),
        ("version: 1\npriors:\n  Lin.w: !!binary aGVsbG8=\n", 3),
        ("version: 1\npriors:\n  Lin.w: !custom Normal(0, 1)\n", 3),
    ],
)
def test_yaml_tags_are_refused_and_never_run(tmp_path: Path, text: str, line: int) -> None:
    marker = tmp_path / "created-by-the-spec"
    error = refused(text.format(marker=marker.as_posix()))
    assert_located(error, line)
    assert "tag" in error.message
    assert not marker.exists()


# --- Unknown names, with the closest valid one -------------------------------------------


@pytest.mark.parametrize(
    "section, value, unknown, suggestion",
    [
        ("priors", "Normall(0, 1)", "Normall", "Normal"),
        ("priors", "normal(0, 1)", "normal", "Normal"),
        ("priors", "HalfNorml(1)", "HalfNorml", "HalfNormal"),
        ("priors", "dist.LogNormall(0, 1)", "LogNormall", "LogNormal"),
        ("constraints", "positve", "positve", "positive"),
        ("constraints", "Interval(0, 1)", "Interval", "interval"),
        ("constraints", "constraints.unit_intervall", "unit_intervall", "unit_interval"),
    ],
)
def test_an_unknown_distribution_or_constraint_suggests_the_closest(
    section: str, value: str, unknown: str, suggestion: str
) -> None:
    error = refused(spec_with(section, value))
    assert_located(error, 3)
    assert f"unknown {'distribution' if section == 'priors' else 'constraint'} {unknown!r}" in (error.message)
    assert f"did you mean {suggestion!r}?" in error.message


def test_an_unknown_name_far_from_any_suggests_nothing() -> None:
    error = refused(spec_with("priors", "Zzzzzzzzzzz(0, 1)"))
    assert_located(error, 3)
    assert "unknown distribution 'Zzzzzzzzzzz'" in error.message
    assert "did you mean" not in error.message


@pytest.mark.parametrize(
    "value",
    [
        "torch.distributions.Normal(0, 1)",  # torch's, not pyro's
        "numpy.random.normal(0, 1)",
        "x.dist.Normal(0, 1)",
    ],
)
def test_a_distribution_from_elsewhere_is_refused(value: str) -> None:
    error = refused(spec_with("priors", value))
    assert_located(error, 3)
    assert "is not a distribution call like Normal(0, 1)" in error.message


def test_a_misspelt_keyword_suggests_the_parameter() -> None:
    error = refused(spec_with("priors", "Normal(0, scal=1)"))
    assert_located(error, 3)
    assert "Normal has no argument 'scal'; did you mean 'scale'?" in error.message
    assert "(it takes loc, scale)" in error.message


# --- Arity and keywords -----------------------------------------------------------------


@pytest.mark.parametrize(
    "section, value, expected",
    [
        ("priors", "Normal(0)", "Normal needs scale (it takes loc, scale)"),
        ("priors", "Normal()", "Normal needs loc, scale"),
        ("priors", "Normal(0, 1, 2)", "Normal takes at most 2 positional arguments (loc, scale), 3 given"),
        ("priors", "Normal(0, 1, sigma=2)", "Normal has no argument 'sigma'"),
        ("priors", "Normal(0, 1, validate_args=1)", "Normal has no argument 'validate_args'"),
        ("priors", "Normal(0, scale=1, loc=2)", "argument 'loc' is given twice"),
        ("priors", "Normal", "is not a distribution call"),
        ("priors", "Normal(*args)", "* and ** arguments are not allowed"),
        ("priors", "Normal(**kwargs)", "* and ** arguments are not allowed"),
        ("priors", "ZeroInflatedPoisson(1, 0.5)", "takes at most 1 positional arguments (rate)"),
        ("constraints", "interval(0)", "interval needs upper_bound"),
        ("constraints", "interval", "interval needs arguments (lower_bound, upper_bound)"),
        ("constraints", "positive(0)", "positive takes no arguments; write `positive`"),
        ("constraints", "greater_than(0, 1)", "greater_than takes at most 1 positional"),
        ("constraints", "greater_than(bound=0)", "greater_than has no argument 'bound'"),
    ],
)
def test_wrong_arity_or_keywords_are_refused(section: str, value: str, expected: str) -> None:
    error = refused(spec_with(section, value))
    assert_located(error, 3)
    assert expected in error.message
    assert f"{section}: Lin.w: " in error.message  # names the entry


# --- Arguments: numbers and sibling names only ---------------------------------------------


@pytest.mark.parametrize(
    "argument",
    [
        "float(1)",  # a call
        "os.system('touch x')",
        "__import__('os').getcwd()",
        "self.loc",  # attribute access
        "torch.ones(3)",
        "lambda: 0",
        "(lambda s: s)(1)",
        "f'{0}'",
        "'loc'",  # a string is not a sibling name: a bare name is
        "b'1'",
        "x[0]",  # subscript
        "[1, 2]",
        "(1, 2)",
        "{'a': 1}",
        "[i for i in range(3)]",
        "1 + 1",
        "2 ** 10",
        "-x",
        "--1",
        "not 0",
        "(y := 1)",
        "1 if x else 2",
        "True",
        "None",
        "...",
        "1j",
        "__class__",  # Python's own attributes are never sibling parameters
        "__dict__",
        "__",  # found by the fuzz: starts and ends with a double underscore
    ],
)
def test_non_literal_prior_arguments_are_refused(argument: str) -> None:
    error = refused(spec_with("priors", f"Normal({argument}, 1)"))
    assert_located(error, 3)
    assert "is not allowed; arguments are finite numbers, names of sibling attributes, or radford()" in (
        error.message
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("1e999", "'1e999' is not a finite number"),
        ("-1e999", "'1e999' is not a finite number"),
        ("0x" + "f" * 300, "is not a finite number"),  # beyond any float
        ("inf", "'inf' is not a finite number"),
        ("-inf", "'inf' is not a finite number"),
        ("nan", "'nan' is not a number"),
        ("NaN", "'NaN' is not a number"),
        ("self", "'self' is the module itself"),
        ("1e-400", "'1e-400' is too small for a float and would be 0"),
    ],
)
def test_arguments_that_read_as_no_finite_number_are_refused_by_name(argument: str, message: str) -> None:
    """``inf`` and ``nan`` would otherwise be taken for sibling attributes, and ``1e-400``
    silently become 0."""
    error = refused(spec_with("priors", f"Normal({argument}, 1)"))
    assert_located(error, 3)
    assert message in error.message


def test_an_exact_zero_is_still_a_number() -> None:
    prior = parse_spec(spec_with("priors", "Normal(0.0e-5, 1)"), SPEC).entries[0].action
    assert prior.arguments() == ([0.0, 1], {})


@pytest.mark.parametrize("argument", ["loc", "0.5 if x else 1", "'1'", "float(1)", "one()"])
def test_constraint_arguments_are_numbers_only(argument: str) -> None:
    error = refused(spec_with("constraints", f"interval({argument}, 1)"))
    assert_located(error, 3)
    assert "arguments are finite numbers" in error.message


@pytest.mark.parametrize(
    "value",
    [
        "__import__('os').system('echo pwned')",
        "os.system('echo pwned')",
        "exec('import os')",
        "eval('1')",
        "lambda: Normal(0, 1)",
        "Normal(0, 1).expand([3])",
        "Normal(0, 1)[0]",
        "[Normal(0, 1)]",
        "Normal(0, 1); import os",
        "Normal(0, 1)\nimport os",
        "f'Normal(0, 1)'",
        "'Normal(0, 1)'",
        "",
        "   ",
        "(",
    ],
)
def test_a_prior_that_is_not_a_plain_distribution_call_is_refused(value: str) -> None:
    error = refused(spec_with("priors", value))
    assert_located(error, 3)
    assert re.search(r"is not a distribution call like Normal\(0, 1\)|unknown distribution", error.message)


def test_numbers_are_written_as_python_reads_them() -> None:
    prior = parse_spec(spec_with("priors", "Normal(-0.5, 1_000)"), SPEC).entries[0].action
    assert rendered(prior) == "Normal(-0.5, 1000)"
    prior = parse_spec(spec_with("priors", "Uniform(low=0x10, high=+2.5e3)"), SPEC).entries[0].action
    assert rendered(prior) == "Uniform(low=16, high=2500.0)"


def test_a_non_ascii_sibling_name_is_written_in_ascii() -> None:
    """So the generated line fits a source file in any encoding (latin-1 has no α)."""
    prior = parse_spec(spec_with("priors", "Normal(α, 1)"), SPEC).entries[0].action
    call = ast.parse(rendered(prior), mode="eval").body
    assert rendered(prior).isascii()
    assert ast.literal_eval(call.args[0]) == "α"


def test_an_overlong_or_overdeep_expression_is_refused_briefly() -> None:
    for value in (
        "Normal(" + "-" * 100_000 + "1, 1)",
        "Normal(" + "a." * 50_000 + "b, 1)",
        "Normal(" + "(" * 900 + "1" + ")" * 900 + ", 1)",
    ):
        error = refused(spec_with("priors", value))
        assert_located(error, 3)
        assert len(str(error)) < 300  # the message quotes the entry, cut short


# --- Selectors --------------------------------------------------------------------------


def test_a_selector_given_twice_in_a_section_is_refused() -> None:
    error = refused(
        "version: 1\npriors:\n  Lin.w: Normal(0, 1)\n  Lin.b: Normal(0, 1)\n  Lin.w: Normal(0, 2)\n"
    )
    assert_located(error, 5)
    assert "'Lin.w' is given twice (first on line 3" in error.message


def test_a_selector_given_twice_with_different_quoting_is_refused() -> None:
    error = refused("version: 1\npriors:\n  Lin.w: Normal(0, 1)\n  'Lin.w': Normal(0, 2)\n")
    assert_located(error, 4)
    assert "given twice" in error.message


def test_a_selector_both_random_and_constrained_is_refused() -> None:
    error = refused(
        "version: 1\npriors:\n  Lin.w: Normal(0, 1)\nconstraints:\n  Lin.b: positive\n  Lin.w: positive\n"
    )
    assert_located(error, 6)
    assert "'Lin.w' is given twice (first on line 3, under `priors`)" in error.message


@pytest.mark.parametrize(
    "selector",
    ["Lin", "Lin.", ".w", "Lin..w", "'Lin.w x'", "':Lin.w'", "'Lin.w()'", "Lin/w", "'Lin.w;x'", "'*'"],
)
def test_a_malformed_selector_is_refused(selector: str) -> None:
    error = refused(f"version: 1\npriors:\n  {selector}: Normal(0, 1)\n")
    assert_located(error, 3)
    assert "is not of the form Class.attr[.attr…]" in error.message


def test_a_selector_with_a_module_and_globs_is_accepted() -> None:
    spec = parse_spec("version: 1\npriors:\n  'pkg.models:MLP.layers.*.weight': Normal(0, 1)\n", SPEC)
    (entry,) = spec.entries
    assert entry.selector.module == "pkg.models"
    assert (entry.selector.owner, entry.selector.path) == ("MLP", ("layers", "*", "weight"))


# --- Not YAML, wrong schema -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line",
    [
        ("{{{", 1),
        ("version: 1\npriors: [\n", 3),
        ("version: 1\npriors:\n  Lin.w: 'Normal(0, 1)\n", 4),
        ("version: 1\npriors:\n\tLin.w: Normal(0, 1)\n", 3),
        ("version: 1\npriors:\n  Lin.w: Normal(0, 1)\n Lin.b: Normal(0, 1)\n", 4),
        ("version: 1\npriors:\n  Lin.w: Normal(0,\x07 1)\n", 3),
        ("version: 1\n---\nversion: 1\n", 2),
        ("version: 1\npriors: *undefined\n", 2),
    ],
)
def test_text_that_is_not_yaml_is_refused_with_its_line(text: str, line: int) -> None:
    error = refused(text)
    assert_located(error, line)
    assert "not valid YAML" in error.message


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("- version: 1\n- priors: {}\n", 1, "the spec must be a mapping"),
        ("just a string\n", 1, "the spec must be a mapping"),
        ("priors:\n  Lin.w: Normal(0, 1)\n", 1, "the spec must start with `version: 1`"),
        ("version: 2\n", 1, "the spec must start with `version: 1`"),
        ("version: one\n", 1, "the spec must start with `version: 1`"),
        ("version: 1.0\n", 1, "the spec must start with `version: 1`"),
        (
            "version: 1\nprior:\n  Lin.w: Normal(0, 1)\n",
            2,
            "unknown top-level key 'prior'; did you mean 'priors'?",
        ),
        ("version: 1\nfoo: 1\n", 2, "unknown top-level key 'foo'"),
        ("version: 1\npriors:\n  - Lin.w: Normal(0, 1)\n", 3, "`priors` must be a mapping"),
        ("version: 1\npriors:\n  Lin.w:\n    Normal: [0, 1]\n", 4, "expected a plain value here"),
        ("version: 1\nmodules:\n  exclude: Container\n", 3, "expected a list"),
        ("version: 1\nmodules:\n  include: [A]\n", 3, "unknown key of `modules` 'include'"),
        ("version: 1\nmodules: [A]\n", 2, "`modules` must be a mapping"),
        ("version: 1\nversion: 1\n", 2, "'version' is given twice"),
    ],
)
def test_a_spec_of_the_wrong_schema_is_refused(text: str, line: int, expected: str) -> None:
    error = refused(text)
    assert_located(error, line)
    assert expected in error.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_spec_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / SPEC
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}:1: ")
    assert "the spec is empty; it needs at least `version: 1`" in str(caught.value)


def test_a_missing_spec_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / SPEC
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value) == f"{path}: cannot read the spec: No such file or directory"


def test_a_spec_that_is_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: cannot read the spec: ")


def test_a_spec_that_is_not_utf8_names_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / SPEC
    path.write_bytes(b"version: 1\npriors:\n  Lin.w: Normal(0, 1)  # caf\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}:3: the spec is not UTF-8 (byte 0xe9")


def test_a_spec_in_utf16_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / SPEC
    path.write_bytes("version: 1\n".encode("utf-16"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}:1: the spec is not UTF-8")


# --- Properties: whatever the text, the spec is refused cleanly or is safe -------------------

IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
NAMES = st.one_of(
    st.sampled_from(sorted(catalog.DISTRIBUTIONS)),
    st.sampled_from(sorted(catalog.CONSTRAINTS)),
    st.sampled_from(["self", "os", "__import__", "eval", "exec", "open", "__class__", "α", "inf"]),
    IDENTIFIER,
)
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e999", "-1e999", "0x" + "f" * 260, "1_0", "0b11", "0o7", ".5", "5.", "1j", "1e-400"]),
)
ATOMS = st.one_of(
    NUMBERS,
    NAMES,
    st.sampled_from(
        ["True", "None", "...", "'loc'", "b'x'", "f'{x}'", "f'{__import__(\"os\")}'", "()", "[]", "{}"]
    ),
)


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(NAMES, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, IDENTIFIER).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(st.sampled_from(["-", "+", "~", "not ", "-(", "await "]), inner).map(
            lambda t: t[0] + t[1] + (")" if t[0] == "-(" else "")
        ),
        st.tuples(inner, st.sampled_from(["+", "*", "**", "if 1 else", "or", "==", ":="]), inner).map(
            " ".join
        ),
        inner.map(lambda a: f"lambda: {a}"),
        inner.map(lambda a: f"*{a}"),
        inner.map(lambda a: f"**{a}"),
        inner.map(lambda a: f"({a})"),
        inner.map(lambda a: f"[{a} for _ in ()]"),
    )


EXPRESSIONS = st.recursive(ATOMS, _compound, max_leaves=8)
ARGUMENTS = st.lists(
    st.one_of(
        EXPRESSIONS,
        st.tuples(
            st.one_of(
                st.sampled_from(["loc", "scale", "rate", "low", "high", "lower_bound", "upper_bound"]),
                IDENTIFIER,
            ),
            EXPRESSIONS,
        ).map("=".join),
    ),
    max_size=4,
)
CALLEES = st.one_of(
    NAMES,
    NAMES.map(lambda n: f"dist.{n}"),
    NAMES.map(lambda n: f"pyro.distributions.{n}"),
    NAMES.map(lambda n: f"constraints.{n}"),
    NAMES.map(lambda n: f"torch.distributions.constraints.{n}"),
    st.tuples(IDENTIFIER, NAMES).map(".".join),
)
SIMPLE_ARGUMENTS = st.one_of(
    st.integers(-100, 100).map(str),
    st.floats(-1e3, 1e3).map(repr),
    IDENTIFIER,
    NUMBERS,
    EXPRESSIONS,
)
PREFIXES = {
    "priors": ["", "dist.", "pyro.distributions.", "constraints."],
    "constraints": ["", "constraints.", "torch.distributions.constraints.", "dist."],
}


@st.composite
def near_valid_entries(draw: st.DrawFn) -> tuple[str, str]:
    """A section and a catalog distribution or constraint called with about the right
    arguments (so that many are accepted), some of them hostile."""
    section = draw(st.sampled_from(["priors", "constraints"]))
    if section == "priors":
        table = catalog.DISTRIBUTIONS
    else:
        table = {name: sig for name, sig in catalog.CONSTRAINTS.items() if sig is not None}
    name = draw(st.sampled_from(sorted(table)))
    params = table[name].params
    positional = draw(st.integers(0, len(params)))
    args = [draw(SIMPLE_ARGUMENTS) for _ in range(positional)]
    named = draw(st.lists(st.sampled_from(params), unique=True, max_size=len(params)))
    args += [f"{param}={draw(SIMPLE_ARGUMENTS)}" for param in named if param not in params[:positional]]
    prefix = draw(st.sampled_from(PREFIXES[section]))
    return section, f"{prefix}{name}({', '.join(args)})"


ACTIONS = st.one_of(
    st.tuples(CALLEES, ARGUMENTS).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
    CALLEES,
    EXPRESSIONS,
    st.text(max_size=40),
)
ENTRIES = st.one_of(near_valid_entries(), st.tuples(st.sampled_from(["priors", "constraints"]), ACTIONS))


def _is_finite_number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) and math.isfinite(node.value)


def _is_sibling_name(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and type(node.value) is str
        and node.value.isidentifier()
        and not keyword.iskeyword(node.value)
        and not (node.value.startswith("__") and node.value.endswith("__"))
    )


def _only(nodes: ast.AST, allowed: tuple[type, ...]) -> None:
    kinds = {type(node).__name__ for node in ast.walk(nodes) if not isinstance(node, allowed)}
    assert not kinds, f"rendered code holds {sorted(kinds)}"


def assert_prior_call_is_whitelisted(call: ast.expr) -> None:
    """``Family(args)``: a catalog distribution, finite number literals and string literals
    naming identifiers, each keyword a parameter of the distribution, given once."""
    _only(call, (ast.Call, ast.Name, ast.Load, ast.keyword, ast.Constant, ast.UnaryOp, ast.USub))
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    assert call.func.id in catalog.DISTRIBUTIONS
    assert [n for n in ast.walk(call) if isinstance(n, ast.Name)] == [call.func]
    for value in [*call.args, *(k.value for k in call.keywords)]:
        assert _is_finite_number(value) or _is_sibling_name(value), ast.dump(value)
    assert all(k.arg in catalog.DISTRIBUTIONS[call.func.id].params for k in call.keywords)
    assert len({k.arg for k in call.keywords}) == len(call.keywords)


def assert_constraint_is_whitelisted_node(node: ast.expr) -> None:
    """``constraints.name`` or ``constraints.factory(numbers)``, from the catalog."""
    _only(
        node, (ast.Call, ast.Attribute, ast.Name, ast.Load, ast.keyword, ast.Constant, ast.UnaryOp, ast.USub)
    )
    call = node if isinstance(node, ast.Call) else None
    attribute = call.func if call else node
    assert isinstance(attribute, ast.Attribute) and attribute.attr in catalog.CONSTRAINTS
    assert isinstance(attribute.value, ast.Name) and attribute.value.id == "constraints"
    signature = catalog.CONSTRAINTS[attribute.attr]
    assert (call is None) == (signature is None)
    if call is not None:
        for value in [*call.args, *(k.value for k in call.keywords)]:
            assert _is_finite_number(value), ast.dump(value)
        assert all(k.arg in signature.params for k in call.keywords)


def assert_prior_is_whitelisted(prior: Prior) -> None:
    """What the rewrite writes for a prior, ``Family(<arguments>)``, is whitelisted."""
    code = rendered(prior)
    assert code.isascii()
    assert_prior_call_is_whitelisted(ast.parse(code, mode="eval").body)


def assert_constraint_is_whitelisted(constraint: Constraint) -> None:
    code = codegen.code(constraint.node())
    assert code.isascii()
    assert_constraint_is_whitelisted_node(ast.parse(code, mode="eval").body)


def assert_safe(text: str) -> None:
    """``text`` is refused with a located SpecError, or every entry renders whitelisted."""
    try:
        spec = parse_spec(text, SPEC)
    except SpecError as error:
        assert error.path == SPEC and error.line is not None and error.line >= 1
        assert str(error).startswith(f"{SPEC}:{error.line}: ")
        assert len(str(error)) < 1000
        return
    for entry in spec.entries:
        if isinstance(entry.action, Prior):
            assert entry.section == "priors"
            assert_prior_is_whitelisted(entry.action)
            # What the plan shows is itself a valid prior that parses back to the same one.
            again = parse_spec(spec_with("priors", str(entry.action)), SPEC).entries[0].action
            assert again == entry.action
        else:
            assert entry.section == "constraints"
            assert_constraint_is_whitelisted(entry.action)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(entry=ENTRIES)
def test_every_accepted_entry_renders_to_whitelisted_code(entry: tuple[str, str]) -> None:
    section, action = entry
    assert_safe(spec_with(section, action))


@FUZZ
@given(entry=ENTRIES)
def test_an_unquoted_entry_is_refused_cleanly_or_safe(entry: tuple[str, str]) -> None:
    """Written plainly, the action goes through YAML's own parsing first."""
    section, action = entry
    if "\n" in action or "\r" in action:
        action = action.replace("\r", " ").replace("\n", " ")
    assert_safe(f"version: 1\n{section}:\n  Lin.w: {action}\n")


SCALARS = st.one_of(
    ACTIONS,
    st.sampled_from(["1", "2", "Lin.w", "*.weight", "Normal(0, 1)", "positive", "interval(0, 1)", "", "~"]),
    st.integers(),
    st.booleans(),
    st.none(),
)
KEYS = st.one_of(
    st.sampled_from(
        ["version", "priors", "constraints", "modules", "exclude", "Lin.w", "Lin.b", "M.*.weight"]
    ),
    IDENTIFIER,
    st.text(max_size=8),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(
    document=st.dictionaries(KEYS, DOCUMENTS, max_size=4),
    version=st.sampled_from([1, 1, 1, "1", 2, None]),
)
def test_random_yaml_specs_are_refused_cleanly_or_safe(document: dict, version: object) -> None:
    if version is not None:
        document = {"version": version, **document}
    assert_safe(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))


YAML_PIECES = st.sampled_from(
    [
        "version: 1\n",
        "priors:\n",
        "constraints:\n",
        "modules:\n",
        "  exclude: [A, '*B']\n",
        "  Lin.w: Normal(0, 1)\n",
        "  Lin.b: positive\n",
        "  Lin.w: !!python/object/apply:os.getcwd []\n",
        "  &a Lin.x: *a\n",
        "  <<: {Lin.y: Normal(0, 1)}\n",
        "  ? [Lin, w]\n  : Normal(0, 1)\n",
        "  Lin.z: |\n    Normal(0,\n      1)\n",
        "---\n",
        "...\n",
        "\t",
        "  ",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        "'",
        '"',
        "#",
        "!",
        "&",
        "*",
        "%YAML 1.1\n",
        "\n",
        "\ufeff",
        "\x00",
    ]
)


@FUZZ
@given(pieces=st.lists(st.one_of(YAML_PIECES, st.text(max_size=6)), max_size=12))
def test_random_yaml_text_is_refused_cleanly_or_safe(pieces: list[str]) -> None:
    assert_safe("".join(pieces))


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=60))
def test_random_bytes_as_a_spec_file_are_refused_cleanly_or_safe(tmp_path_factory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("spec") / SPEC
    path.write_bytes(b"version: 1\npriors:\n  Lin.w: " + raw)
    try:
        spec = load_spec(path)
    except SpecError as error:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", str(error)), str(error)
        return
    for entry in spec.entries:
        assert_prior_is_whitelisted(entry.action)


MODULE = b"""\
import torch
import torch.nn as nn


class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))
"""


def _generated_value(rewritten: bytes) -> ast.expr:
    """The value the rewrite assigns to ``self.w``."""
    tree = ast.parse(rewritten)
    (value,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Attribute)
        and node.targets[0].attr == "w"
    ]
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=near_valid_entries())
def test_every_accepted_entry_reaches_the_rewritten_code_whitelisted(entry: tuple[str, str]) -> None:
    """End to end: what the rewrite writes for ``self.w`` holds nothing from the spec but a
    catalog name and whitelisted arguments."""
    section, action = entry
    try:
        spec = parse_spec(spec_with(section, action), SPEC)
    except SpecError:
        return
    result = run_source(MODULE, spec)
    assert not result.failed, result.failed[0].error
    value = _generated_value(result.results[0].rewritten)
    if section == "priors":
        # PyroSample(Prior(self, "<Family>", <args>..., shape=(2, 3)))
        assert isinstance(value, ast.Call) and ast.unparse(value.func) == "PyroSample"
        (prior,) = value.args
        assert isinstance(prior, ast.Call) and ast.unparse(prior.func) == "Prior"
        module, family, *args = prior.args
        assert ast.unparse(module) == "self"
        assert isinstance(family, ast.Constant) and isinstance(family.value, str)
        shape = [ast.unparse(k.value) for k in prior.keywords if k.arg == "shape"]
        assert shape == ["(2, 3)"]
        keywords = [k for k in prior.keywords if k.arg != "shape"]
        assert_prior_call_is_whitelisted(ast.Call(ast.Name(family.value, ast.Load()), args, keywords))
    else:
        # PyroParam(torch.randn(2, 3), constraint=constraints.<name>[(<numbers>)])
        assert isinstance(value, ast.Call) and ast.unparse(value.func) == "PyroParam"
        assert [ast.unparse(a) for a in value.args] == ["torch.randn(2, 3)"]
        (constraint,) = [k.value for k in value.keywords if k.arg == "constraint"]
        assert_constraint_is_whitelisted_node(constraint)


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        ("Normal(0, -1)", "Normal's scale must be > 0, not -1"),
        ("LogNormal(0, 0)", "LogNormal's scale must be > 0, not 0"),
        ("Gamma(-1, 1)", "Gamma's concentration must be > 0, not -1"),
        ("Bernoulli(probs=1.5)", "Bernoulli's probs must be in [0, 1], not 1.5"),
    ],
)
def test_an_argument_outside_the_distribution_support_is_refused(prior: str, message: str) -> None:
    """It would rewrite cleanly and then fail at the model's first forward."""
    error = refused(spec_with("priors", prior))
    assert_located(error, 3)
    assert message in error.message


@pytest.mark.parametrize(
    ("family", "arguments"),
    [
        ("Normal", lambda v: ((0, v), {})),
        ("Gamma", lambda v: ((v, 1), {})),
        ("Beta", lambda v: ((1, v), {})),
        ("Bernoulli", lambda v: ((), {"probs": v})),
        ("Exponential", lambda v: ((v,), {})),
    ],
)
def test_the_spec_refuses_exactly_the_numbers_pyro_refuses(family: str, arguments) -> None:
    import pyro.distributions as dist

    for value in (-1, 0, 0.5, 1, 1.5):
        args, kwargs = arguments(value)
        written = ", ".join([*map(str, args), *(f"{key}={v}" for key, v in kwargs.items())])
        try:
            parse_spec(spec_with("priors", f"{family}({written})"), SPEC)
            accepted = True
        except SpecError:
            accepted = False
        try:
            getattr(dist, family)(
                *map(float, args), validate_args=True, **{k: float(v) for k, v in kwargs.items()}
            )
            constructed = True
        except ValueError:
            constructed = False
        assert accepted == constructed, (family, written)
