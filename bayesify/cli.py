"""The ``bayesify`` command: a thin click layer over the library; never imports torch or pyro.

Messages go to standard error; diffs and data (the plan, JSON, workflow annotations, the
rewrite of standard input) to standard output, so both can be piped apart.

Exit codes: 0 done or nothing to do; 1 ``--check`` found work (or ``--strict`` found lints);
2 a usage, config or spec error, or a spec entry that selects nothing; 123 a source file
could not be processed (the other files still are).
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupted_while_starting(_signal: int, _frame: object) -> None:
    sys.stderr.write("bayesify: interrupted\n")
    os._exit(130)


# Ctrl-C while the modules below load (the first half second) ends the run with one line,
# not a traceback from inside an import; nothing has been read or written yet. (Unless
# Ctrl-C is ignored, as in a background job: then it stays ignored.)
_CATCH_EARLY_CTRL_C = (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
)
if _CATCH_EARLY_CTRL_C:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import contextlib  # noqa: E402
import difflib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import click  # noqa: E402

from . import __version__, report
from .cache import Cache
from .config import ConfigError, default_priors, find_config, read_config, shown, spec_location
from .discover import DiscoveryError, discover
from .output import WriteError, mirror, mirror_root, unified_diff, write_atomically
from .runner import RunResult, run, run_source
from .spec import EMPTY_SPEC, Spec, SpecError, load_spec

if _CATCH_EARLY_CTRL_C:
    signal.signal(signal.SIGINT, signal.default_int_handler)

EXIT_OK, EXIT_WORK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 123
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
    path = Path(value) if value else find_config(ctx.params.get("paths") or ())
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
    A key of another subcommand's option is that command's business; any other key is an
    error, so that a misspelt option is never silently ignored."""
    options = _config_keys(ctx.command)
    elsewhere = {key for command in main.commands.values() for key in _config_keys(command)}
    defaults = {}
    for key, value in table.items():
        option = options.get(key)
        if option is None:
            if key in elsewhere:
                continue
            close = difflib.get_close_matches(key, sorted(elsewhere), n=1)
            hint = f"; did you mean {_dashed(close[0])!r}?" if close else ""
            raise ConfigError(f"{path}: [tool.bayesify] has no option {_dashed(key)!r}{hint}")
        try:
            option.type_cast_value(ctx, value)
        except click.BadParameter as error:
            raise ConfigError(f"{path}: [tool.bayesify] {_dashed(key)}: {error.message}") from None
        defaults[option.name] = value
    return defaults


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
    click.option("--config", metavar="FILE", is_eager=True, expose_value=False, callback=_load_config,
                 type=click.Path(exists=True, dir_okay=False),
                 help="A pyproject.toml whose [tool.bayesify] holds the defaults "
                 "(default: the one at the project root)."),
    click.option("--exclude", metavar="REGEX",
                 help="Paths to skip in folders; replaces the default excludes and .gitignore."),
    click.option("--extend-exclude", metavar="REGEX", help="More paths to skip in folders."),
    click.option("--force-exclude", metavar="REGEX",
                 help="Paths to skip, even files named on the command line (as pre-commit names them)."),
    click.option("--context", metavar="PATH", multiple=True, type=click.Path(exists=True),
                 help="Read-only sources whose classes are bases of the rewritten ones (repeatable)."),
    click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: all cores)."),
    click.option("--no-cache", is_flag=True,
                 help="Neither read nor write the cache that lets re-runs skip unchanged files."),
    click.option("-q", "--quiet", is_flag=True, help="Only errors."),
    click.option("-v", "--verbose", is_flag=True, help="Also the config and spec in use, and every file."),
)

_spec_options = _options(
    click.option("--priors", metavar="FILE",
                 help="The spec (default: priors.yaml beside the config, or at the project root)."),
    click.option("--allow-unmatched", is_flag=True, help="Spec entries that select nothing are not an error."),
)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C is one line and exit 130, not click's "Aborted!" and exit 1. Files being
        written are finished first (output.signals_held); no temporary file is left."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _say("bayesify: interrupted")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bayesify")
def main() -> None:
    """Turn deterministic PyTorch modules into Bayesian Pyro modules, as a source rewrite."""


def _say(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int = EXIT_USAGE) -> click.exceptions.Exit:
    """Say ``message``; the caller raises the exit this returns."""
    _say(message)
    return click.exceptions.Exit(code)


def _spec(priors: Optional[str], paths: tuple[str, ...], verbose: bool) -> Spec:
    ctx = click.get_current_context()
    config = ctx.meta.get(CONFIG_PATH)
    if verbose and config:
        _say(f"bayesify: config {shown(str(config))}")
    path = priors or default_priors(paths, config)
    if path is None:
        if verbose:
            _say("bayesify: no spec (no --priors, no priors.yaml): every parameter stays deterministic")
        return EMPTY_SPEC
    try:
        spec = load_spec(shown(path))
    except SpecError as error:
        raise _fail(f"error: {error}") from None
    if verbose:
        _say(f"bayesify: spec {spec.path}, {len(spec.entries)} entries")
    return spec


def _files(paths, exclude=None, extend_exclude=None, force_exclude=None, read_only=False) -> list[Path]:
    if not paths:
        raise _fail("error: no PATH given (a file, a folder, or - for standard input)")
    if paths == ("-",):
        raise _fail("error: - (standard input) is for `bayesify rewrite` only")
    if "-" in paths:
        raise _fail("error: - (standard input) cannot be combined with other paths")
    warnings: list[str] = []
    try:
        files = discover(
            paths, exclude=exclude, extend_exclude=extend_exclude, force_exclude=force_exclude, warnings=warnings,
            links_outside_root=read_only,
        )
    except DiscoveryError as error:
        raise _fail(f"error: {error}") from None
    for warning in warnings:
        _say(f"warning: {warning}")
    return files


def _progress_bar(files: int, quiet: bool):
    """A bar on standard error for long runs in a terminal; logs and pipes get none."""
    if quiet or files < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    # Every file is indexed, then rewritten or skipped: two steps a file.
    return click.progressbar(length=2 * files, label="bayesify", file=sys.stderr)


def _run(files: list[Path], spec: Spec, context: tuple[str, ...], jobs, quiet: bool, no_cache: bool) -> RunResult:
    context_paths = (*context, *spec.context)
    context_files = _files(context_paths, read_only=True) if context_paths else []
    cache = None if no_cache else Cache.for_spec(spec.fingerprint, tuple(str(p) for p in context_files))
    if cache is not None and cache.note and click.get_current_context().params.get("verbose"):
        _say(f"bayesify: {cache.note}")
    with _progress_bar(len(files), quiet) as bar:
        progress = bar.update if bar is not None else None
        return run(files, spec, jobs, context_files, cache=cache, progress=progress)


def _say_problems(result: RunResult, quiet: bool, strict: bool = False) -> None:
    """Failures are errors; lints are warnings, or errors under --strict; -q keeps errors."""
    for failed in result.failed:
        _say(f"error: {failed.error}")
    lint_level = "error" if strict else "warning"
    for level, message in [*(("warning", w) for w in result.warnings), *((lint_level, l) for l in result.lints)]:
        if level == "error" or not quiet:
            _say(f"{level}: {message}")


# -- rewrite -----------------------------------------------------------------------------------


@main.command(short_help="Rewrite files in place or into a mirror, or check them.")
@_spec_options
@_file_options
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file would change.")
@click.option("--diff", is_flag=True, help="Write nothing; print a unified diff on stdout.")
@click.option("--out", metavar="DIR", type=click.Path(file_okay=False),
              help="Write the rewritten tree into DIR (a mirror of the paths), leaving them as they are.")
@click.option("--color/--no-color", default=None,
              help="Colour the diff (default: only on a terminal; NO_COLOR and FORCE_COLOR are honoured).")
@click.option("--format", "output_format", type=click.Choice(["text", "github", "json"]), default="text",
              help="github: workflow annotations at file:line on stdout; json: the run as JSON on stdout.")
@click.option("--strict", is_flag=True, help="Exit 1 when a lint finds one of the tutorial's pitfalls.")
def rewrite(paths, exclude, extend_exclude, force_exclude, context, jobs, no_cache, quiet, verbose, priors,
            allow_unmatched, check, diff, out, color, output_format, strict):
    """Rewrite PATHS in place (or into --out DIR); - rewrites standard input to standard output."""
    if paths == ("-",):
        spec = _spec(priors, paths, verbose)
        raise click.exceptions.Exit(_rewrite_stdin(spec, allow_unmatched, check, diff, strict, quiet))
    if out and (check or diff):
        raise _fail("error: --out writes a mirror; --check and --diff compare the PATHS themselves, "
                    "so they cannot be combined with it")
    files = _files(paths, exclude, extend_exclude, force_exclude)
    if out:
        # A mirror inside the rewritten folder is output, not source: never rewrite it again.
        files = [file for file in files if not _inside(file, Path(out))]
    if not files:
        if not quiet:
            _say("bayesify: no Python files to rewrite; nothing to do")
        return
    spec = _spec(priors, paths, verbose)
    result = _run(files, spec, context, jobs, quiet, no_cache)
    dry_run = check or diff
    if result.unmatched and not allow_unmatched:
        # Nothing is written: report the run as the dry run it became, without a summary
        # line that would count files as rewritten.
        _report(result, output_format, True, strict, quiet, verbose, None, [], with_summary=False)
        raise click.exceptions.Exit(EXIT_USAGE)
    diffs, notes = None, []
    if diff:
        diffs = _diffs(result)
    elif out:
        notes = _write_mirror(result, paths, Path(out))
    elif not check:
        _write_in_place(result)
    if diffs is not None and output_format != "json":
        stream_colour = _use_colour(color)
        for patch in diffs.values():
            click.echo(report.colour_diff(patch) if stream_colour else patch, nl=False)
    _report(result, output_format, dry_run, strict, quiet, verbose, diffs, notes, into=out)
    if result.failed:
        raise click.exceptions.Exit(EXIT_FAILED)
    if (check and result.changed) or (strict and result.lints):
        raise click.exceptions.Exit(EXIT_WORK)


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(folder)) in Path(os.path.abspath(path)).parents


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


def _write_in_place(result: RunResult) -> None:
    """Write each changed file; one that cannot be written becomes a failure of the run."""
    for changed in result.changed:
        try:
            write_atomically(Path(changed.path), changed.rewritten, expected=changed.original)
        except WriteError as error:
            changed.error = str(error)


def _write_mirror(result: RunResult, paths: tuple[str, ...], out: Path) -> list[str]:
    """Write the mirror; the notes say which files in it no longer have a source."""
    try:
        orphans = mirror(result.results, mirror_root(list(paths)), out)
    except (WriteError, ValueError) as error:
        _say(f"error: {error}")
        raise click.exceptions.Exit(EXIT_FAILED) from None
    return [f"{orphan}: in the mirror, but its source is gone (delete it if it is stale)" for orphan in orphans]


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


def _report(result: RunResult, output_format: str, dry_run: bool, strict: bool, quiet: bool,
            verbose: bool, diffs: Optional[dict[str, bytes]], notes: list[str],
            into: Optional[str] = None, with_summary: bool = True) -> None:
    if output_format == "json":
        # JSON holds text: a diff of a file in another encoding keeps its lines, not its bytes.
        texts = None if diffs is None else {
            path: patch.decode("utf-8", errors="replace") for path, patch in diffs.items()
        }
        click.echo(report.rewrite_json(result, dry_run, texts, notes))
    elif output_format == "github":
        for line in report.github_annotations(result, dry_run, strict, notes):
            click.echo(line)
    else:
        message = report.unmatched_message(result)
        if message:
            _say(message)
        _say_problems(result, quiet, strict)
        if not quiet:
            for note in notes:
                _say(f"warning: {note}")
    if verbose and not quiet:
        for file in result.results:
            _say(f"{report.status(file, dry_run)} {file.path}")
    if with_summary and not quiet:
        _say(report.summary(result, dry_run, into))


def _rewrite_stdin(spec: Spec, allow_unmatched: bool, check: bool, diff: bool, strict: bool, quiet: bool) -> int:
    """Rewrite standard input: by default, the whole result (the rewrite, or the input
    unchanged) to standard output, as a filter; with --diff, the diff; with --check, nothing."""
    source = sys.stdin.buffer.read()
    result = run_source(source, spec)
    _say_problems(result, quiet, strict)
    message = report.unmatched_message(result)
    if message and not allow_unmatched:
        _say(message)
        code = EXIT_USAGE
    elif result.failed:
        code = EXIT_FAILED
    elif (check and result.changed) or (strict and result.lints):
        code = EXIT_WORK
    else:
        code = EXIT_OK
    rewritten = result.results[0]
    if diff:
        if code in (EXIT_OK, EXIT_WORK) and rewritten.changed:
            click.echo(unified_diff(rewritten, "-"), nl=False)
    elif not check:
        usable = code in (EXIT_OK, EXIT_WORK) and rewritten.changed
        sys.stdout.buffer.write(rewritten.rewritten if usable else source)
    return code


# -- plan --------------------------------------------------------------------------------------


@main.command(short_help="Show what the spec makes of every parameter.")
@_spec_options
@_file_options
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              help="text: a table; json: the same as JSON.")
def plan(paths, exclude, extend_exclude, force_exclude, context, jobs, no_cache, quiet, verbose, priors,
         allow_unmatched, output_format):
    """Show every parameter found, the entry that selects it and what it becomes; write nothing.

    Exit 0, or 2 when a spec entry selects nothing (--allow-unmatched: 0), or 123 when a
    file could not be processed.
    """
    files = _files(paths, exclude, extend_exclude, force_exclude)
    spec = _spec(priors, paths, verbose)
    result = _run(files, spec, context, jobs, quiet, no_cache)
    _say_problems(result, quiet)
    click.echo(report.plan_json(result) if output_format == "json" else report.plan_table(result))
    if result.failed:
        raise click.exceptions.Exit(EXIT_FAILED)
    if result.unmatched and not allow_unmatched:
        raise click.exceptions.Exit(EXIT_USAGE)


# -- init --------------------------------------------------------------------------------------


@main.command(short_help="Write a starter spec that lists every parameter.")
@_file_options
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the spec; - for standard output "
              "(default: where rewrite looks for it: the config's priors, or priors.yaml at the project root).")
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
def init(paths, exclude, extend_exclude, force_exclude, context, jobs, no_cache, quiet, verbose, output, force):
    """Write a starter priors.yaml that lists every parameter found in PATHS."""
    target = output or _starter_target(paths)
    if target != "-" and Path(target).exists() and not force:
        raise _fail(f"error: {shown(target)} exists; pass --force to overwrite it")
    files = _files(paths, exclude, extend_exclude, force_exclude)
    result = _run(files, EMPTY_SPEC, context, jobs, quiet, no_cache)
    _say_problems(result, quiet)
    starter = report.starter_spec(result.sites)
    count = len(report.starter_sites(result.sites))
    if target == "-":
        click.echo(starter, nl=False)
    else:
        try:
            write_atomically(Path(target), starter.encode("utf-8"))
        except WriteError as error:
            raise _fail(f"error: {error}", EXIT_FAILED) from None
        if not quiet:
            _say(f"bayesify: wrote {shown(target)} with {count} parameter{'' if count == 1 else 's'}")
    if result.failed:
        raise click.exceptions.Exit(EXIT_FAILED)


def _starter_target(paths: tuple[str, ...]) -> str:
    """Where ``rewrite`` looks for the spec of ``paths`` when no option names one."""
    ctx = click.get_current_context()
    configured = ctx.meta.get(CONFIG_TABLE, {}).get("priors")
    return shown(configured or str(spec_location(paths, ctx.meta.get(CONFIG_PATH))))
