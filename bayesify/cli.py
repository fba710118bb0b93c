"""The ``bayesify`` command: a thin click layer over the library; never imports torch or pyro.

Messages go to standard error; diffs and data (the plan, JSON, workflow annotations, the
rewrite of standard input) to standard output, so both can be piped apart.

Every message is a :class:`~bayesify.diagnostics.Diagnostic`, printed in one shape
(``PATH[:LINE[:COL]]: severity CODE: message``); :class:`~bayesify.report.Report` gathers a
command's and decides its exit code: 0 done or nothing to do; 1 ``--check`` found work (or
``--strict``/``--error-on`` made a warning an error); 2 a usage, config or spec error, or a
spec entry that selects nothing; 123 a source file could not be processed (the other files
still are).
"""

# ruff: noqa: E402 (the imports after the Ctrl-C guard below come after it on purpose)

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupted_while_starting(_signal: int, _frame: object) -> None:
    sys.stderr.write("bayesify: interrupted\n")
    os._exit(130)


# Ctrl-C while this module and those it imports load (the first half second) ends the run
# with one line, not a traceback from inside an import; nothing has been read or written
# yet. (Unless Ctrl-C is ignored, as in a background job: then it stays ignored.)
_CATCH_EARLY_CTRL_C = (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
)
if _CATCH_EARLY_CTRL_C:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import contextlib
import difflib
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__, build, report
from .cache import Cache
from .config import ConfigError, default_priors, find_config, read_config, shown, spec_location
from .diagnostics import Diagnostic, unknown_codes
from .discover import DiscoveryError, discover
from .options import Options
from .output import (
    WriteError,
    mirror,
    mirror_package_files,
    mirrored_packages,
    package_mirror_root,
    unified_diff,
    write_atomically,
)
from .report import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXIT_WORK, Report
from .runner import RunResult, run, run_source
from .spec import EMPTY_SPEC, Spec, SpecError, load_spec

#: Interrupted (Ctrl-C), as shells report a process that SIGINT ended: 128 + 2.
EXIT_INTERRUPTED = 130
#: From this many files on, a run in a terminal shows a progress bar.
PROGRESS_THRESHOLD = 50
#: Where the config callback leaves the config file it read, for the commands.
CONFIG_PATH, CONFIG_TABLE = "bayesify.config_path", "bayesify.config_table"


# -- [tool.bayesify] ---------------------------------------------------------------------------


def _load_config(ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    """Eager callback: make ``[tool.bayesify]`` the defaults of this command's options.

    PATHS is eager too and declared before ``--config``, so click has parsed it by now and
    the config is the one at the project root of the paths, as black finds its own. A
    value on the command line still wins over the config.
    """
    located = ctx.params.get("paths") or ()
    if located == ("-",) and ctx.params.get("stdin_filename"):
        located = (ctx.params["stdin_filename"],)
    path = Path(value) if value else find_config(located)
    if path is None:
        return
    try:
        table = read_config(path)
        defaults = _option_defaults(ctx, path, table)
    except ConfigError as error:
        raise click.UsageError(str(error), ctx) from None
    ctx.default_map = {**defaults, **(ctx.default_map or {})}
    ctx.meta[CONFIG_PATH], ctx.meta[CONFIG_TABLE] = path, table


def _config_keys(command: click.Command) -> dict[str, click.Option]:
    """The options of ``command`` that a config key can set, by key (``extend_exclude``)."""
    keys = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "config":
            for opt in param.opts:
                if opt.startswith("--"):
                    keys[opt[2:].replace("-", "_")] = param
    return keys


def _option_defaults(ctx: click.Context, path: Path, table: dict[str, Any]) -> dict[str, Any]:
    """``table`` as click's default map for this command, each value checked by its option.

    ``[tool.bayesify.<command>]`` holds keys for one command, which win over the shared ones.
    A shared key of another command's option, or one whose value this command's option
    refuses but another's takes (``format = "github"`` is rewrite's, not plan's), is that
    command's business; any other key is an error, so that a misspelt option is never
    silently ignored.
    """
    commands = main.commands
    shared = {key: value for key, value in table.items() if key not in commands}
    own = table.get(ctx.command.name, {})
    if not isinstance(own, dict):
        raise ConfigError(f"{path}: [tool.bayesify] {ctx.command.name} must be a table")
    defaults = {}
    for key, value in shared.items():
        option = _checked_option(ctx, path, key, value, own_table=False)
        if option is not None:
            defaults[option.name] = value
    for key, value in own.items():
        option = _checked_option(ctx, path, key, value, own_table=True)
        if option is None:
            raise ConfigError(f"{path}: [tool.bayesify.{ctx.command.name}] has no option {_dashed(key)!r}")
        defaults[option.name] = value
    return defaults


def _checked_option(
    ctx: click.Context, path: Path, key: str, value: Any, own_table: bool
) -> Optional[click.Option]:
    """The option of this command that ``key`` sets, its value checked; None when the key is
    another command's."""
    option = _config_keys(ctx.command).get(key)
    others = [c for name, c in main.commands.items() if name != ctx.command.name]
    if option is None:
        elsewhere = {k for command in others for k in _config_keys(command)}
        if own_table or key in elsewhere:
            return None  # the caller says a key of this command's table is no option
        close = difflib.get_close_matches(key, sorted(elsewhere | set(_config_keys(ctx.command))), n=1)
        hint = f"; did you mean {_dashed(close[0])!r}?" if close else ""
        raise ConfigError(f"{path}: [tool.bayesify] has no option {_dashed(key)!r}{hint}")
    try:
        option.type_cast_value(ctx, value)
    except click.BadParameter as error:
        if not own_table and any(_takes(ctx, command, key, value) for command in others):
            return None
        table = f"tool.bayesify.{ctx.command.name}" if own_table else "tool.bayesify"
        raise ConfigError(f"{path}: [{table}] {_dashed(key)}: {error.message}") from None
    return option


def _takes(ctx: click.Context, command: click.Command, key: str, value: Any) -> bool:
    """Whether ``command`` has an option ``key`` that accepts ``value``."""
    option = _config_keys(command).get(key)
    if option is None:
        return False
    try:
        option.type_cast_value(ctx, value)
    except click.BadParameter:
        return False
    return True


def _dashed(key: str) -> str:
    return key.replace("_", "-")


# -- options shared by the commands ------------------------------------------------------------


def _options(*decorators):
    def apply(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


_file_options = _options(
    click.argument("paths", nargs=-1, type=click.Path(allow_dash=True), is_eager=True),
    click.option(
        "--config",
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        type=click.Path(exists=True, dir_okay=False),
        help="A pyproject.toml whose [tool.bayesify] holds the defaults "
        "(default: the one at the project root).",
    ),
    click.option(
        "--exclude",
        metavar="REGEX",
        help="Paths to skip in folders; replaces the default excludes and .gitignore.",
    ),
    click.option("--extend-exclude", metavar="REGEX", help="More paths to skip in folders."),
    click.option(
        "--force-exclude",
        metavar="REGEX",
        help="Paths to skip, even files named on the command line (as pre-commit names them).",
    ),
    click.option(
        "--context",
        metavar="PATH",
        multiple=True,
        type=click.Path(exists=True),
        help="Read-only sources whose classes are bases of the rewritten ones (repeatable).",
    ),
    click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: all cores)."),
    click.option(
        "--no-cache",
        is_flag=True,
        help="Neither read nor write the cache that lets re-runs skip unchanged files.",
    ),
    click.option(
        "--error-on",
        metavar="CODE",
        multiple=True,
        help="Make warnings of this code (or code prefix: BAY1) errors, exit 1 (repeatable).",
    ),
    click.option(
        "--ignore",
        metavar="CODE",
        multiple=True,
        help="Do not show warnings of this code or code prefix (repeatable); errors always show.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="Only errors."),
    click.option("-v", "--verbose", is_flag=True, help="Also the config and spec in use, and every file."),
)

_spec_options = _options(
    click.option(
        "--priors",
        metavar="FILE",
        help="The spec (default: priors.yaml beside the config, or at the project root).",
    ),
    click.option(
        "--allow-unmatched",
        is_flag=True,
        help="Spec entries that select nothing are a warning (BAY205), not an error.",
    ),
)

_MAIN_EPILOG = """\b
Examples:
  bayesify init src/                 write priors.yaml listing every parameter
  bayesify plan src/ --selected      what the spec makes random or constrained
  bayesify rewrite src/ --diff       show the rewrite, write nothing
  bayesify rewrite src/ --out bayesian/   write the rewritten tree beside the source
  bayesify rewrite --check src/      in CI: exit 1 if a file would change

Docs: docs/cli.md; shell completion: docs/cli.md#shell-completion.
"""


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C is one line and exit 130, not click's "Aborted!" and exit 1. Files being
        written are finished first (output.signals_held); no temporary file is left."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _say("bayesify: interrupted")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_MAIN_EPILOG)
@click.version_option(__version__, "-V", "--version", prog_name="bayesify")
def main() -> None:
    """Turn deterministic PyTorch modules into Bayesian Pyro modules, as a source rewrite."""


def _say(message: str) -> None:
    click.echo(message, err=True)


class _Stop(click.exceptions.Exit):
    """Stop the command with ``diagnostic`` (said on standard error, whatever the format)."""

    def __init__(self, diagnostic: Diagnostic, code: int = EXIT_USAGE) -> None:
        _say(diagnostic.text())
        super().__init__(code)


def _usage_error(message: str, path: Optional[str] = None) -> _Stop:
    return _Stop(Diagnostic.of("BAY302", message, path))


def _check_codes(options: Options) -> None:
    unknown = unknown_codes((*options.error_on, *options.ignore))
    if unknown:
        raise _usage_error(
            f"no diagnostic code starts with {', '.join(map(repr, unknown))} (the codes are listed in docs/cli.md)"
        )


def _spec(options: Options, outcome: Report) -> Spec:
    ctx = click.get_current_context()
    config = ctx.meta.get(CONFIG_PATH)
    if options.verbose and config:
        _say(f"bayesify: config {shown(str(config))}")
    path = options.priors or default_priors(options.located_paths, config)
    if path is None:
        where = shown(str(spec_location(options.located_paths, config)))
        outcome.add(
            Diagnostic.of(
                "BAY206",
                f"no spec found (no --priors, and no {where}): every parameter stays deterministic; "
                "`bayesify init` writes a starter spec",
            )
        )
        return EMPTY_SPEC
    try:
        spec = load_spec(shown(path))
    except SpecError as error:
        raise _Stop(Diagnostic.of("BAY301", error.message, error.path, error.line)) from None
    if options.verbose:
        _say(f"bayesify: spec {spec.path}, {len(spec.entries)} entries")
    return spec


def _files(
    options: Options, outcome: Report, paths: Optional[tuple[str, ...]] = None, read_only: bool = False
) -> list[Path]:
    """The files to process; ``read_only`` ones (context) may be links that lead outside the project."""
    paths = options.paths if paths is None else paths
    if not paths:
        raise _usage_error("no PATH given (a file, a folder, or - for standard input)")
    if paths == ("-",):
        raise _usage_error("- (standard input) is for `bayesify rewrite` only")
    if "-" in paths:
        raise _usage_error("- (standard input) cannot be combined with other paths")
    warnings: list[Diagnostic] = []
    try:
        files = discover(
            paths,
            exclude=options.exclude,
            extend_exclude=options.extend_exclude,
            force_exclude=options.force_exclude,
            warnings=warnings,
            links_outside_root=read_only,
        )
    except DiscoveryError as error:
        raise _usage_error(error.message, error.where) from None
    outcome.add(*warnings)
    return files


def _context_files(options: Options, spec: Spec, outcome: Report) -> list[Path]:
    context_paths = (*options.context, *spec.context)
    return _files(options, outcome, context_paths, read_only=True) if context_paths else []


def _progress_bar(files: int, quiet: bool):
    """A bar on standard error for long runs in a terminal; logs and pipes get none."""
    if quiet or files < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    # Every file is indexed, then rewritten or skipped: two steps a file.
    return click.progressbar(length=2 * files, label="bayesify", file=sys.stderr)


def _run(files: list[Path], spec: Spec, options: Options, outcome: Report) -> RunResult:
    context_files = _context_files(options, spec, outcome)
    cache = (
        None if options.no_cache else Cache.for_spec(spec.fingerprint, tuple(str(p) for p in context_files))
    )
    if cache is not None and cache.note and options.verbose:
        _say(f"bayesify: {cache.note}")
    with _progress_bar(len(files), options.quiet) as bar:
        progress = bar.update if bar is not None else None
        result = run(files, spec, options.jobs, context_files, cache=cache, progress=progress)
    outcome.add_run(result, options.allow_unmatched)
    return result


def _say_diagnostics(outcome: Report, options: Options) -> None:
    for diagnostic in outcome.shown(options.quiet):
        _say(diagnostic.text())


def _exit(outcome: Report) -> None:
    if outcome.return_code != EXIT_OK:
        raise click.exceptions.Exit(outcome.return_code)


# -- rewrite -----------------------------------------------------------------------------------


_REWRITE_EPILOG = """\b
Examples:
  bayesify rewrite src/                      rewrite in place
  bayesify rewrite src/ --diff | less        review first
  bayesify rewrite src/ --out bayesian/      write a rewritten copy
  bayesify rewrite --check --format github src/   in a GitHub workflow
  bayesify rewrite - --stdin-filename src/m.py < src/m.py   as an editor filter
"""


@main.command(short_help="Rewrite files in place or into a mirror, or check them.", epilog=_REWRITE_EPILOG)
@click.option(
    "--stdin-filename",
    metavar="PATH",
    is_eager=True,
    help="With -: the file standard input is, for its messages, module name, config and spec.",
)
@_spec_options
@_file_options
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file would change.")
@click.option("--diff", is_flag=True, help="Write nothing; print a unified diff on stdout.")
@click.option(
    "--out",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write the rewritten tree into DIR (a mirror of the paths), leaving them as they are.",
)
@click.option(
    "--color/--no-color",
    default=None,
    help="Colour the diff (default: only on a terminal; NO_COLOR and FORCE_COLOR are honoured).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "github", "json"]),
    default="text",
    help="github: workflow annotations at file:line on stdout; json: the run as JSON on stdout.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when a lint finds one of the tutorial's pitfalls (--error-on BAY1).",
)
def rewrite(**params):
    """Rewrite PATHS in place (or into --out DIR); - rewrites standard input to standard output."""
    options = Options(**params)
    _check_codes(options)
    outcome = Report(options.selection)
    if options.paths == ("-",):
        _rewrite_stdin(options, outcome)
        return
    if options.stdin_filename:
        raise _usage_error("--stdin-filename names standard input: give - as the PATH")
    if options.out and options.dry_run:
        raise _usage_error(
            "--out writes a mirror; --check and --diff compare the PATHS themselves, "
            "so they cannot be combined with it"
        )
    files = _files(options, outcome)
    if options.out:
        out = Path(options.out)
        inside = [path for path in options.paths if _inside(Path(path), out) or _same(Path(path), out)]
        if inside:
            raise _usage_error(
                f"--out {options.out} is where the rewrite of {inside[0]} would go, but {inside[0]} is inside "
                "it: the mirror would overwrite its own source. To rewrite in place, leave out --out; "
                "else name a folder outside the PATHS"
            )
        # A mirror inside the rewritten folder is output, not source: never rewrite it again.
        files = [file for file in files if not _inside(file, out)]
    if not files:
        _say_diagnostics(outcome, options)
        if not options.quiet:
            _say("bayesify: no Python files to rewrite; nothing to do")
        _exit(outcome)
        return
    spec = _spec(options, outcome)
    result = _run(files, spec, options, outcome)
    if outcome.return_code == EXIT_USAGE:
        # Nothing is written: report the run as the dry run it became, without a summary
        # line that would count files as rewritten.
        _emit(result, outcome, options, None, dry_run=True, with_summary=False)
        _exit(outcome)
    diffs = None
    if options.diff:
        diffs = _diffs(result)
    elif options.out:
        outcome.add(*_write_mirror(result, options.paths, Path(options.out)))
    elif not options.check:
        outcome.add(*_write_in_place(result))
    outcome.work_found = options.check and bool(result.changed)
    if diffs is not None and options.output_format != "json":
        stream_colour = _use_colour(options.color)
        for patch in diffs.values():
            click.echo(report.colour_diff(patch) if stream_colour else patch, nl=False)
    _emit(result, outcome, options, diffs, dry_run=options.dry_run)
    _exit(outcome)


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(folder)) in Path(os.path.abspath(path)).parents


def _same(path: Path, folder: Path) -> bool:
    return os.path.abspath(path) == os.path.abspath(folder)


def _diffs(result: RunResult) -> dict[str, bytes]:
    """Each changed file's diff, sorted by path, labelled relative to the current folder so
    that ``patch -p0`` and ``git apply`` apply it from here."""
    cwd = Path.cwd().resolve()
    return {
        changed.path: unified_diff(changed, _label(changed.path, cwd))
        for changed in sorted(result.changed, key=lambda r: r.path)
    }


def _label(path: str, cwd: Path) -> str:
    try:
        return Path(path).resolve().relative_to(cwd).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _write_in_place(result: RunResult) -> list[Diagnostic]:
    """Write each changed file; one that cannot be written becomes a failure of the run."""
    failures = []
    for changed in result.changed:
        try:
            write_atomically(Path(changed.path), changed.rewritten, expected=changed.original)
        except WriteError as error:
            changed.error = Diagnostic.of("BAY002", error.message, error.path)
            failures.append(changed.error)
    return failures


def _write_mirror(result: RunResult, paths: tuple[str, ...], out: Path) -> list[Diagnostic]:
    """Write the mirror, each package whole under its own name: the errors are the sources
    that changed during the run (left out of it), the warnings the files in it that no longer
    have a source, and the mirrored packages an import here would not find first."""
    try:
        root = package_mirror_root(list(paths), result.results)
        orphans, failures = mirror(result.results, root, out)
        packages = mirrored_packages(result.results, root)
        copies = set(mirror_package_files(result.results, packages, root, out))
        # A package mirror answers for its packages' folders only: out/ may hold others.
        folders = [(out / package.name).resolve() for package in packages]
        orphans = [
            path
            for path in orphans
            if path.resolve() not in copies
            and (not folders or any(f in path.resolve().parents for f in folders))
        ]
    except WriteError as error:
        raise _Stop(Diagnostic.of("BAY002", error.message, error.path), EXIT_FAILED) from None
    except ValueError as error:
        raise _Stop(Diagnostic.of("BAY002", str(error)), EXIT_FAILED) from None
    stale = [
        Diagnostic.of(
            "BAY207", "in the mirror, but its source is gone (delete it if it is stale)", str(orphan)
        )
        for orphan in orphans
    ]
    shadowed = (_shadowed_package(package.name, out) for package in packages)
    return failures + stale + [warning for warning in shadowed if warning]


def _shadowed_package(name: str, out: Path) -> Optional[Diagnostic]:
    """A warning when ``import name`` here loads another copy of a mirrored package (the
    original, installed or in the current folder, which ``python -m`` and ``-c`` search
    first): the rewritten one is imported only with ``out`` before it on ``sys.path``. The
    lookup finds the package without running any of its code."""
    import importlib.machinery

    found = importlib.machinery.PathFinder.find_spec(name, [os.getcwd(), *sys.path])
    # A package's origin is its __init__.py; a namespace package has none, only its folder.
    origin = found and (found.origin or next(iter(found.submodule_search_locations or ()), None))
    if not origin or Path(os.path.abspath(out)) in Path(os.path.abspath(origin)).parents:
        return None
    folder = Path(origin).parent if found.origin else Path(origin)
    return Diagnostic.of(
        "BAY209",
        f"the rewritten {name}; `import {name}` here loads {shown(str(folder))}/, the original, "
        f"unless {out} comes before it on sys.path (PYTHONPATH={out}; `python -m` and `python -c` search "
        "the current folder first)",
        str(out / name),
    )


def _use_colour(option: Optional[bool]) -> bool:
    """--color/--no-color, else NO_COLOR, else FORCE_COLOR (either set to anything but the
    empty string), else whether standard output is a terminal. NO_COLOR wins over
    FORCE_COLOR, as in CPython."""
    if option is not None:
        return option
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return click.get_text_stream("stdout").isatty()


def _emit(
    result: RunResult,
    outcome: Report,
    options: Options,
    diffs: Optional[dict[str, bytes]],
    dry_run: bool,
    with_summary: bool = True,
) -> None:
    """A rewrite run's diagnostics and summary, in the format asked for."""
    if options.output_format == "json":
        # JSON holds text: a diff of a file in another encoding keeps its lines, not its bytes.
        texts = (
            None
            if diffs is None
            else {path: patch.decode("utf-8", errors="replace") for path, patch in diffs.items()}
        )
        click.echo(report.rewrite_json(result, dry_run, texts, outcome.diagnostics))
    elif options.output_format == "github":
        for line in report.github_annotations(result, dry_run, outcome.diagnostics):
            click.echo(line)
    else:
        _say_diagnostics(outcome, options)
    if options.verbose and not options.quiet:
        for file in result.results:
            _say(f"{report.status(file, dry_run)} {file.path}")
    if with_summary and not options.quiet:
        _say(report.summary(result, dry_run, options.out))


def _rewrite_stdin(options: Options, outcome: Report) -> None:
    """Rewrite standard input: by default, the whole result (the rewrite, or the input
    unchanged) to standard output, as a filter; with --diff, the diff; with --check, nothing."""
    source = sys.stdin.buffer.read()
    if _force_excluded(options):
        if not options.dry_run:
            sys.stdout.buffer.write(source)  # a filter passes what it leaves alone
        return
    spec = _spec(options, outcome)
    path = options.stdin_filename or "-"
    result = run_source(source, spec, path, _context_files(options, spec, outcome))
    outcome.add_run(result, options.allow_unmatched)
    outcome.work_found = options.check and bool(result.changed)
    _say_diagnostics(outcome, options)
    code = outcome.return_code
    rewritten = result.results[0]
    usable = code in (EXIT_OK, EXIT_WORK) and rewritten.changed
    if options.diff:
        if usable:
            click.echo(unified_diff(rewritten, path), nl=False)
    elif not options.check:
        sys.stdout.buffer.write(rewritten.rewritten if usable else source)
    _exit(outcome)


def _force_excluded(options: Options) -> bool:
    """Whether ``--force-exclude`` skips the file ``--stdin-filename`` names, as it would skip
    that file named on the command line (pre-commit and editors pass files either way)."""
    if not (options.force_exclude and options.stdin_filename):
        return False
    try:
        return not discover([options.stdin_filename], force_exclude=options.force_exclude)
    except DiscoveryError:  # a file that is not there yet: nothing excludes it
        return False


# -- plan --------------------------------------------------------------------------------------


@main.command(
    short_help="Show what the spec makes of every parameter.",
    epilog="""\b
Examples:
  bayesify plan src/                         every parameter, and what it becomes
  bayesify plan src/ --selected              only those a spec entry selects
  bayesify plan src/ --class Encoder         one class
  bayesify plan src/ --format json | jq '.sites[] | select(.outcome == "random")'
""",
)
@_spec_options
@_file_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text: a table (cut to the terminal's width); json: the same as JSON.",
)
@click.option("--selected", is_flag=True, help="Only parameters a spec entry selects.")
@click.option("--class", "class_name", metavar="NAME", help="Only the parameters of the classes named NAME.")
@click.option(
    "--build",
    "build_call",
    metavar="MODULE:CALL",
    help="Also build this model from the rewritten code, e.g. 'models:Net(4)' (literal arguments), "
    "in a subprocess, and list its real sites.",
)
def plan(**params):
    """Show every parameter found, the entry that selects it and what it becomes; write nothing.

    Exit 0, or 2 when a spec entry selects nothing (--allow-unmatched: 0), or 123 when a
    file could not be processed.
    """
    options = Options(**params)
    _check_codes(options)
    call = _build_call(options.build_call)
    outcome = Report(options.selection)
    files = _files(options, outcome)
    spec = _spec(options, outcome)
    result = _run(files, spec, options, outcome)
    _say_diagnostics(outcome, options)
    sites = report.plan_sites(result, options.selected, options.class_name)
    if options.output_format == "json":
        output = report.plan_json(result, sites, outcome.diagnostics)
    else:
        output = report.plan_table(result, sites, report.terminal_width())
    if call is not None and not result.failed:
        try:
            output = build.with_built_model(output, result, call, options.output_format)
        except build.BuildError as error:
            click.echo(output)
            raise _Stop(Diagnostic.of("BAY010", str(error)), EXIT_FAILED) from None
    click.echo(output)
    _exit(outcome)


def _build_call(text: Optional[str]) -> Optional[build.Call]:
    try:
        return build.parse_call(text) if text else None
    except build.BuildError as error:
        raise _usage_error(str(error)) from None


# -- init --------------------------------------------------------------------------------------


@main.command(
    short_help="Write a starter spec that lists every parameter.",
    epilog="""\b
Examples:
  bayesify init src/                 priors.yaml at the project root
  bayesify init src/ -o - | less     look first
""",
)
@_file_options
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the spec; - for standard output "
    "(default: where rewrite looks for it: the config's priors, or priors.yaml at the project root).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
def init(**params):
    """Write a starter priors.yaml that lists every parameter found in PATHS."""
    options = Options(**params)
    _check_codes(options)
    outcome = Report(options.selection)
    target = options.output or _starter_target(options.paths)
    if target != "-" and Path(target).exists() and not options.force:
        raise _usage_error("the spec already exists; pass --force to overwrite it", shown(target))
    files = _files(options, outcome)
    result = _run(files, EMPTY_SPEC, options, outcome)
    _say_diagnostics(outcome, options)
    starter = report.starter_spec(result.sites)
    count = len(report.starter_sites(result.sites))
    if target == "-":
        click.echo(starter, nl=False)
    else:
        try:
            write_atomically(Path(target), starter.encode("utf-8"))
        except WriteError as error:
            raise _Stop(Diagnostic.of("BAY002", error.message, error.path), EXIT_FAILED) from None
        if not options.quiet:
            _say(f"bayesify: wrote {shown(target)} with {count} parameter{'' if count == 1 else 's'}")
    _exit(outcome)


def _starter_target(paths: tuple[str, ...]) -> str:
    """Where ``rewrite`` looks for the spec of ``paths`` when no option names one."""
    ctx = click.get_current_context()
    configured = ctx.meta.get(CONFIG_TABLE, {}).get("priors")
    return shown(configured or str(spec_location(paths, ctx.meta.get(CONFIG_PATH))))


# The commands are defined: from here on Ctrl-C is _Commands.invoke's to handle.
if _CATCH_EARLY_CTRL_C:
    signal.signal(signal.SIGINT, signal.default_int_handler)
