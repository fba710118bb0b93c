"""The ``bayesify`` command: a thin click layer over the library; never imports torch or pyro.

Exit codes: 0 done or nothing to do; 1 ``--check`` found work; 2 a usage or spec error;
123 a source file could not be processed (the other files still are).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from . import __version__
from .config import ConfigError, default_priors, find_config, read_config
from .discover import DiscoveryError, discover
from .output import WriteError, mirror, mirror_root, unified_diff, write_atomically
from .report import plan_json, plan_table, starter_spec, summary, unmatched_message
from .runner import RunResult, run, run_source
from .spec import EMPTY_SPEC, Spec, SpecError, load_spec

EXIT_OK, EXIT_WORK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 123


def _load_config(ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """Eager callback: read ``[tool.bayesify]`` into click's defaults before other options."""
    path = Path(value) if value else find_config(ctx.params.get("paths") or sys.argv[1:] or ["."])
    if path is None:
        return None
    try:
        ctx.default_map = {**read_config(path), **(ctx.default_map or {})}
    except ConfigError as error:
        raise click.BadParameter(str(error)) from None
    return str(path)


def _common(function):
    for decorator in reversed(
        [
            click.argument("paths", nargs=-1, type=click.Path(allow_dash=True)),
            click.option("--priors", metavar="FILE", help="The spec (default: priors.yaml at the project root)."),
            click.option("--config", metavar="FILE", is_eager=True, expose_value=False, callback=_load_config,
                         help="A pyproject.toml with [tool.bayesify] (default: the project root's)."),
            click.option("--exclude", metavar="REGEX", help="Paths to skip; replaces the defaults and .gitignore."),
            click.option("--extend-exclude", metavar="REGEX", help="More paths to skip."),
            click.option("--force-exclude", metavar="REGEX", help="Paths to skip even when named explicitly."),
            click.option("--context", metavar="PATH", multiple=True, type=click.Path(exists=True),
                         help="Read-only sources whose classes are bases of the rewritten ones (repeatable)."),
            click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: all cores)."),
            click.option("-q", "--quiet", is_flag=True, help="Only errors."),
            click.option("-v", "--verbose", is_flag=True, help="Every file and every warning."),
        ]
    ):
        function = decorator(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bayesify")
def main() -> None:
    """Turn deterministic PyTorch modules into Bayesian Pyro modules, as a source rewrite."""


def _fail(message: str, code: int = EXIT_USAGE) -> "click.exceptions.Exit":
    click.echo(message, err=True)
    return click.exceptions.Exit(code)


def _spec(priors: Optional[str], paths: tuple[str, ...]) -> Spec:
    priors = priors or default_priors(paths)
    if priors is None:
        return EMPTY_SPEC
    try:
        return load_spec(priors)
    except SpecError as error:
        raise _fail(f"error: {error}") from None


def _files(paths: tuple[str, ...], exclude, extend_exclude, force_exclude) -> list[Path]:
    try:
        return discover(paths, exclude=exclude, extend_exclude=extend_exclude, force_exclude=force_exclude)
    except DiscoveryError as error:
        raise _fail(f"error: {error}") from None


def _run(paths, priors, exclude, extend_exclude, force_exclude, context, jobs, quiet, verbose) -> RunResult:
    if not paths:
        raise _fail("error: no PATH given (a file, a folder, or - for standard input)")
    spec = _spec(priors, paths)
    context_files = _files((*context, *spec.context), None, None, None) if context or spec.context else []
    result = run(_files(paths, exclude, extend_exclude, force_exclude), spec, jobs, context_files)
    _say_problems(result, quiet, verbose)
    return result


def _say_problems(result: RunResult, quiet: bool, verbose: bool) -> None:
    for failed in result.failed:
        click.echo(f"error: {failed.error}", err=True)
    if not quiet:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)


@main.command()
@_common
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file would change.")
@click.option("--diff", is_flag=True, help="Write nothing; print a unified diff on stdout.")
@click.option("--out", metavar="DIR", type=click.Path(file_okay=False), help="Write the rewritten tree here.")
@click.option("--allow-unmatched", is_flag=True, help="Spec entries that select nothing are not an error.")
@click.option("--color/--no-color", default=None, help="Colour the diff (default: only on a terminal).")
def rewrite(paths, priors, exclude, extend_exclude, force_exclude, context, jobs, quiet, verbose,
            check, diff, out, allow_unmatched, color):
    """Rewrite PATHS in place (or into --out DIR); - reads standard input."""
    if paths == ("-",):
        raise click.exceptions.Exit(_rewrite_stdin(_spec(priors, paths), allow_unmatched))
    result = _run(paths, priors, exclude, extend_exclude, force_exclude, context, jobs, quiet, verbose)
    message = unmatched_message(result)
    if message and not allow_unmatched:
        raise _fail(message)
    failed = bool(result.failed)
    if diff:
        cwd = Path.cwd()
        for changed in sorted(result.changed, key=lambda r: r.path):
            click.echo(unified_diff(changed, _label(changed.path, cwd)), nl=False, color=color)
    elif out:
        try:
            for orphan in mirror(result.results, mirror_root(list(paths)), Path(out)):
                click.echo(f"warning: {orphan} has no source any more", err=True)
        except (WriteError, ValueError) as error:
            click.echo(f"error: {error}", err=True)
            failed = True
    elif not check:
        for changed in result.changed:
            try:
                write_atomically(Path(changed.path), changed.rewritten, expected=changed.original)
            except WriteError as error:
                click.echo(f"error: {error}", err=True)
                changed.error = str(error)
                failed = True
            else:
                if verbose:
                    click.echo(f"rewrote {changed.path}", err=True)
    if not quiet:
        click.echo(summary(result, check or diff), err=True)
    if failed:
        raise click.exceptions.Exit(EXIT_FAILED)
    if check and result.changed:
        raise click.exceptions.Exit(EXIT_WORK)


def _label(path: str, cwd: Path) -> str:
    try:
        return Path(path).resolve().relative_to(cwd.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _rewrite_stdin(spec: Spec, allow_unmatched: bool) -> int:
    source = sys.stdin.buffer.read()
    result = run_source(source, spec)
    _say_problems(result, quiet=False, verbose=False)
    message = unmatched_message(result)
    if message and not allow_unmatched:
        click.echo(message, err=True)
        code = EXIT_USAGE
    else:
        code = EXIT_FAILED if result.failed else EXIT_OK
    rewritten = result.results[0]
    sys.stdout.buffer.write(rewritten.rewritten if code == EXIT_OK and rewritten.changed else source)
    return code


@main.command()
@_common
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def plan(paths, priors, exclude, extend_exclude, force_exclude, context, jobs, quiet, verbose, output_format):
    """Show every parameter found, the entry that selects it, and its prior; write nothing."""
    result = _run(paths, priors, exclude, extend_exclude, force_exclude, context, jobs, quiet, verbose)
    click.echo(plan_json(result) if output_format == "json" else plan_table(result))
    if result.failed:
        raise click.exceptions.Exit(EXIT_FAILED)
    if result.unmatched:
        raise click.exceptions.Exit(EXIT_USAGE)


@main.command()
@_common
@click.option("-o", "--output", default="priors.yaml", show_default=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
def init(paths, priors, exclude, extend_exclude, force_exclude, context, jobs, quiet, verbose, output, force):
    """Write a starter priors.yaml listing every parameter found in PATHS."""
    target = Path(output)
    if target.exists() and not force:
        raise _fail(f"error: {target} exists; pass --force to overwrite it")
    if not paths:
        raise _fail("error: no PATH given")
    result = run(_files(paths, exclude, extend_exclude, force_exclude), EMPTY_SPEC, jobs)
    _say_problems(result, quiet, verbose)
    write_atomically(target, starter_spec(result.sites).encode("utf-8"))
    if not quiet:
        click.echo(f"bayesify: wrote {target} with {len(result.sites)} parameters", err=True)
    if result.failed:
        raise click.exceptions.Exit(EXIT_FAILED)
