#!/usr/bin/env python
"""The zoo: bayesify on 100+ models of four model packages it was never written for (issue 9).

For each package (monai, diffusers, torch_geometric, kornia; none of them in
``bench/realpackages.py``) the script

1. installs it, pinned, into a virtual environment of its own under the cache folder
   (``~/.cache/bayesify-zoo``, ``--cache-dir``; it sees the installed torch and pyro, and is
   constrained to that torch); nothing of the packages is stored in the repository;
2. rewrites the whole installed package with ``bayesify rewrite PKG/ --out MIRROR/`` under
   each of three specs, the intents users of BNN libraries have:

   - ``type``: every Linear and Conv weight, by layer type (``nn.Linear.weight``,
     ``nn.Conv*.weight``, and the package's own linear layer where it has one);
   - ``head``: the classifier (output) layer's weight only, one exact entry a model;
   - ``depth``: every parameter called ``weight`` at any depth (``**.weight``);

3. for each model builder (``bench/zoo_models.py``), in subprocesses with per-model timeouts:

   - builds the deterministic model from the original package and runs its forward pass,
     which also tells, for each spec, the parameters it means (the *intended* sites);
   - **ours**: builds the model from the rewritten mirror, traces it inside a Pyro model with
     a likelihood, checks that the sample sites are exactly the intended ones, and takes one
     SVI step (``AutoNormal`` started from a prior draw, ``Trace_ELBO``) that must give a finite loss;
   - **baseline**: the same intent done by hand at run time on the original model: pyro's
     ``to_pyro_module_`` and a ``PyroSample`` on every intended parameter; the same trace
     and SVI checks.

It prints the pass rates (ours vs the baseline, by package and spec) and the failures grouped
by their error, and with ``--markdown FILE`` writes them into that page between the zoo
markers (``docs/real-packages.md``)::

    python bench/zoo.py --quick                         # three models a package, a fast check
    python bench/zoo.py                                 # every model (about an hour on 2 CPUs)
    python bench/zoo.py --only monai --models 'resnet*' -v
    python bench/zoo.py --markdown docs/real-packages.md

It needs the registry (PyPI) the first time only. Exit status 0 when ours passes at least as
often as the baseline and at least 99% of the models under every spec, else 1; 2 when the
packages cannot be installed.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from zoo_models import MODELS, ZooModel  # noqa: E402

DEFAULT_CACHE = Path.home() / ".cache" / "bayesify-zoo"
PROBE_MARKER = "ZOO-PROBE-RESULT "
SPECS = ("type", "head", "depth")
#: The packages, pinned, and the layer classes of their own that the type spec names besides
#: torch.nn's (a user asking for "every linear weight" means torch_geometric's Linear too).
PACKAGES = {
    "monai": ("monai==1.6.1", ()),
    "diffusers": ("diffusers==0.42.1", ()),
    "torch_geometric": ("torch_geometric==2.8.1", ("torch_geometric.nn.dense.linear.Linear",)),
    "kornia": ("kornia==0.9.0", ()),
}
#: Optional dependencies the packages' models import: monai's transformer blocks (ViT, UNETR,
#: SwinUNETR, its diffusion and autoencoder networks) need einops.
BESIDE = ("einops==0.8.2",)
PRIOR = "Normal(0, 0.1)"
MARKDOWN_BEGIN, MARKDOWN_END = "<!-- zoo: begin (written by bench/zoo.py) -->", "<!-- zoo: end -->"


def spec_text(package: str, spec: str, models: list[ZooModel]) -> str:
    if spec == "type":
        selectors = [
            "nn.Linear.weight",
            "nn.Conv*.weight",
            *(f"{layer}.weight" for layer in PACKAGES[package][1]),
        ]
    elif spec == "head":
        selectors = sorted({f"{model.head}.weight" for model in models})
    else:
        selectors = ["**.weight"]
    return "version: 1\npriors:\n" + "".join(f'  "{selector}": {PRIOR}\n' for selector in selectors)


# --------------------------------------------------------------------------------------------
# Setting up: the packages' environment and the rewritten mirrors
# --------------------------------------------------------------------------------------------


class SetupError(RuntimeError):
    pass


def environment(cache: Path) -> Path:
    """A virtual environment with the zoo's packages, beside the installed torch and pyro;
    its Python is returned. pip is told to keep the installed torch."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    wanted = [*(requirement for requirement, _ in PACKAGES.values()), *BESIDE]
    installed = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True
    ).stdout.lower()
    if all(requirement.lower().replace("_", "-") in installed.replace("_", "-") for requirement in wanted):
        return python
    constraints = cache / "constraints.txt"
    constraints.write_text(f"torch=={metadata.version('torch')}\n")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *wanted],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SetupError(f"pip could not install {wanted}:\n{done.stderr[-3000:]}")
    return python


def package_folder(python: Path, package: str) -> Path:
    found = subprocess.run(
        [
            str(python),
            "-c",
            f"import importlib.util; print(importlib.util.find_spec({package!r}).submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


def rewrite(source: Path, spec_file: Path, mirror: Path) -> dict[str, Any]:
    """``bayesify rewrite SOURCE --out MIRROR``, as a user runs it; what it said and took.

    When entries select nothing (exit 2) the rewrite runs again with ``--allow-unmatched``, so
    that the models those entries do not concern are still measured; the entries are kept."""
    command = [
        sys.executable,
        "-m",
        "bayesify",
        "rewrite",
        str(source),
        "--out",
        str(mirror),
        "--priors",
        str(spec_file),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    errors = [line for line in done.stderr.splitlines() if ERROR.search(line)]
    unmatched = [match[1] for line in errors for match in [UNMATCHED.search(line)] if match]
    exit_code = done.returncode
    if exit_code == 2 and unmatched and len(unmatched) == len(errors):
        done = subprocess.run([*command, "--allow-unmatched"], capture_output=True, text=True, env=env)
    summary = next((line for line in reversed(done.stderr.splitlines()) if line.startswith("bayesify:")), "")
    return {
        "exit": exit_code,
        "written": done.returncode == 0,
        "seconds": time.perf_counter() - start,
        "summary": summary,
        "errors": errors[:20],
        "unmatched": unmatched,
    }


UNMATCHED = re.compile(r"priors entry '([^']+)' selects no parameter")
#: bayesify's error lines: ``path:line: error BAY205: …`` (``error:`` before diagnostic codes).
ERROR = re.compile(r"\berror( BAY\d+)?:")


# --------------------------------------------------------------------------------------------
# The probe: runs in a subprocess, with the package (original or mirror) importable
# --------------------------------------------------------------------------------------------


class ModelTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise ModelTimeout("took longer than the per-model timeout")


def first_tensor(output):
    """The first tensor of a model's output: a tensor, a dataclass-like output (diffusers'
    ``.sample``), a tuple, list or dict of them."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    elif hasattr(output, "to_tuple"):
        output = output.to_tuple()
    elif hasattr(output, "__dataclass_fields__"):
        output = [getattr(output, name) for name in output.__dataclass_fields__]
    if isinstance(output, (tuple, list)):
        for item in output:
            try:
                return first_tensor(item)
            except TypeError:
                continue
    raise TypeError(f"no tensor in the model's output ({type(output).__name__})")


def reading_tensors():
    """A torch function mode that collects the id of every tensor a torch function receives
    (properties such as ``.shape`` included) while it is active: the parameters a forward
    reads, whether it calls their module or passes them to a function itself."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    class Reading(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.read: set[int] = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            self.read.update(
                id(leaf) for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)
            )
            return func(*args, **kwargs)

    return Reading()


def intended_sites(net, package: str, model: ZooModel, read: set[int]) -> dict[str, list[str]]:
    """For each spec, the parameters of the deterministic ``net`` it means, among those its
    forward reads (``read``, their ids): a parameter the forward never reads (kornia's XFeat
    holds a ``fine_matcher`` its forward never calls) is a sample site on neither side, a
    PyroSample being drawn when it is read."""
    import importlib

    from torch import nn
    from torch.nn.modules.conv import _ConvNd

    types: list[type] = [nn.Linear, _ConvNd]
    for dotted in PACKAGES[package][1]:
        module, _, name = dotted.rpartition(".")
        types.append(getattr(importlib.import_module(module), name))
    names = [name for name, parameter in net.named_parameters() if id(parameter) in read]
    modules = dict(net.named_modules())
    typed = [
        name
        for name in names
        if name.rpartition(".")[2] == "weight" and isinstance(modules[name.rpartition(".")[0]], tuple(types))
    ]
    # The head spec holds every model's head entry (one rewrite a package): in a model that
    # holds another zoo model's class (GCN holds GCNConvs), that entry selects there too.
    heads = {f"{m.head}.weight".partition(".")[::2] for m in MODELS if m.package == package}
    selected_heads = set()
    for prefix, module in modules.items():
        classes = {cls.__name__ for cls in type(module).__mro__}
        selected_heads.update(f"{prefix}.{path}" if prefix else path for cls, path in heads if cls in classes)
    return {
        "type": typed,
        "head": [name for name in names if name in selected_heads],
        "depth": [name for name in names if name.rpartition(".")[2] == "weight"],
    }


def aliases(net) -> dict[str, str]:
    """Each other path of a parameter held in two places -> the path ``named_parameters()``
    gives it: Pyro names a module held twice (DynUNet's ``skip_layers`` holds its
    ``downsamples``) by the place it was assigned last, on either side."""
    first: dict[int, str] = {}
    other = {}
    for name, parameter in net.named_parameters(remove_duplicate=False):
        if first.setdefault(id(parameter), name) != name:
            other[name] = first[id(parameter)]
    return other


def by_hand(net, sites: list[str]) -> None:
    """The baseline: the intent done at run time with pyro's own tools."""
    import pyro.distributions as dist
    from pyro.nn import PyroSample
    from pyro.nn.module import to_pyro_module_

    to_pyro_module_(net)
    for site in sites:
        path, _, attr = site.rpartition(".")
        module = net.get_submodule(path)
        value = getattr(module, attr)
        setattr(module, attr, PyroSample(dist.Normal(0.0, 0.1).expand(value.shape).to_event(value.dim())))


def trace_and_step(net, args, kwargs) -> dict[str, Any]:
    """Trace ``net`` in a Pyro model with a likelihood, then one SVI step; the sample sites
    and the loss."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal, init_to_sample

    def model():
        output = first_tensor(net(*args, **kwargs)).float().reshape(-1)
        pyro.sample("obs", dist.Normal(output, 1.0).to_event(1), obs=torch.zeros_like(output).detach())

    pyro.clear_param_store()
    trace = poutine.trace(model).get_trace()
    sites = [
        name for name, site in trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]
    ]
    params = [name for name, site in trace.nodes.items() if site["type"] == "param"]
    pyro.clear_param_store()
    # The guide starts from a draw of the prior, as the trace above ran the model: AutoNormal's
    # default start, every weight 0, is no network (GraphUNet's pooling divides by a norm).
    guide = AutoNormal(model, init_loc_fn=init_to_sample)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    loss = svi.step()
    return {"sites": sites, "dollar_params": [name for name in params if "$$$" in name][:3], "loss": loss}


def where(error: BaseException) -> str:
    """The innermost frame of the error in a package file (not torch's, pyro's, the zoo's)."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if "site-packages/torch/" not in frame.filename and "/pyro/" not in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return ""


def failure(error: BaseException) -> dict[str, Any]:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return {
        "ok": False,
        "error": f"{type(error).__name__}: {message[:300]}",
        "where": where(error),
        "detail": "".join(traceback.format_exception(error))[-4000:],
    }


def run_one(model: ZooModel, mode: str, specs: list[str], timeout: int) -> dict[str, Any]:
    """One model: ``mode`` is ``baseline`` (the original package: deterministic build and
    forward, the intended sites, the by-hand baseline per spec) or a spec name (the mirror)."""
    import pyro
    import torch

    def fresh():
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        return model.build()

    signal.signal(signal.SIGALRM, _alarm)
    result: dict[str, Any] = {"model": model.name, "mode": mode}
    try:
        signal.alarm(timeout)
        if mode == "baseline":
            start = time.perf_counter()
            try:
                net, args, kwargs = fresh()
                with torch.no_grad(), reading_tensors() as reading:
                    first_tensor(net(*args, **kwargs))
                result["deterministic"] = {"ok": True, "seconds": time.perf_counter() - start}
                result["intended"] = intended_sites(net, model.package, model, reading.read)
                result["aliases"] = aliases(net)
            except Exception as error:  # noqa: BLE001 - the model's own failure, reported
                result["deterministic"] = failure(error)
                return result
            for spec in specs:
                try:
                    net, args, kwargs = fresh()
                    by_hand(net, result["intended"][spec])
                    result[spec] = {"ok": True, **trace_and_step(net, args, kwargs)}
                except Exception as error:  # noqa: BLE001
                    result[spec] = failure(error)
        else:
            start = time.perf_counter()
            try:
                net, args, kwargs = fresh()
                result["build_seconds"] = time.perf_counter() - start
                result[mode] = {"ok": True, **trace_and_step(net, args, kwargs)}
            except Exception as error:  # noqa: BLE001
                result[mode] = failure(error)
    except ModelTimeout as error:
        result.setdefault(mode if mode != "baseline" else "deterministic", failure(error))
    finally:
        signal.alarm(0)
    return result


def probe(package: str, mode: str, names: list[str], timeout: int) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    models = [model for model in MODELS if model.package == package and model.name in names]
    for model in models:
        result = run_one(model, mode, list(SPECS), timeout)
        print(PROBE_MARKER + json.dumps(result), flush=True)


def probe_in_subprocess(
    python: Path, package: str, mode: str, names: list[str], timeout: int, mirror: Optional[Path]
) -> list[dict[str, Any]]:
    """Run the probe; a model that kills its process (or a process that outlives every
    model's timeout) fails by name, and the probe goes on with the models after it."""
    results: list[dict[str, Any]] = []
    pending = list(names)
    path = [str(mirror)] if mirror else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
    while pending:
        command = [
            str(python),
            str(Path(__file__).resolve()),
            "--probe",
            package,
            "--mode",
            mode,
            "--timeout",
            str(timeout),
            "--names",
            ",".join(pending),
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                cwd=tempfile.gettempdir(),
                timeout=timeout * len(pending) + 120,
            )
            stdout, stderr = done.stdout, done.stderr
        except subprocess.TimeoutExpired as expired:
            stdout = (
                (expired.stdout or b"").decode()
                if isinstance(expired.stdout, bytes)
                else expired.stdout or ""
            )
            stderr = "the probe process outlived its timeout"
        for line in stdout.splitlines():
            if line.startswith(PROBE_MARKER):
                result = json.loads(line[len(PROBE_MARKER) :])
                results.append(result)
                pending.remove(result["model"])
        if pending:
            crashed = pending.pop(0)
            key = "deterministic" if mode == "baseline" else mode
            results.append(
                {
                    "model": crashed,
                    "mode": mode,
                    key: {
                        "ok": False,
                        "error": f"the probe process died: {stderr.strip().splitlines()[-1] if stderr.strip() else '?'}",
                        "where": "",
                        "detail": stderr[-4000:],
                    },
                }
            )
    return results


# --------------------------------------------------------------------------------------------
# Judging and reporting
# --------------------------------------------------------------------------------------------


def judge(
    outcome: Optional[dict[str, Any]], intended: list[str], aliases: Optional[dict[str, str]] = None
) -> tuple[bool, str, str]:
    """Whether one model passed under one spec, and if not, why (a cause and where); a site
    named by another path of an intended parameter (``aliases``) is that parameter."""
    if outcome is None:
        return False, "not run", ""
    if not outcome["ok"]:
        return False, outcome["error"], outcome.get("where", "")
    sites = {(aliases or {}).get(site, site) for site in outcome["sites"]}
    missing, extra = sorted(set(intended) - sites), sorted(sites - set(intended))
    if missing or extra:
        return (
            False,
            f"sites differ: {len(missing)} intended missing, {len(extra)} extra",
            f"missing {missing[:3]} extra {extra[:3]}",
        )
    if outcome["dollar_params"]:
        return (
            False,
            "parameters named with $$$ (a plain module under a PyroModule)",
            str(outcome["dollar_params"]),
        )
    if not math.isfinite(outcome["loss"]):
        return False, "the SVI loss is not finite", str(outcome["loss"])
    return True, "", ""


def tabulate(packages: list[str], models: list[ZooModel], results: dict, rewrites: dict) -> dict[str, Any]:
    """Pass counts per package and spec, for ours and the baseline, and the failures."""
    table: dict[tuple[str, str], dict[str, int]] = {}
    failures: list[dict[str, str]] = []
    broken: list[str] = []
    for package in packages:
        for spec in SPECS:
            table[package, spec] = {"models": 0, "ours": 0, "baseline": 0}
        for model in (m for m in models if m.package == package):
            base = results.get((package, "baseline", model.name))
            if base is None or not base["deterministic"]["ok"]:
                broken.append(
                    f"{package}.{model.name}: {base['deterministic']['error'] if base else 'not run'}"
                )
                continue
            if f"{model.head_path}.weight" not in base["intended"]["head"]:
                broken.append(
                    f"{package}.{model.name}: the built model has no {model.head_path}.weight (its head)"
                )
                continue
            for spec in SPECS:
                if (package, spec) not in rewrites:
                    continue  # a run stopped before this spec: not measured
                row = table[package, spec]
                row["models"] += 1
                intended = base["intended"][spec]
                ok, _, _ = judge(base.get(spec), intended, base.get("aliases"))
                row["baseline"] += ok
                if not base.get(spec, {}).get("ok", True):
                    failures.append(
                        {
                            "side": "baseline",
                            "package": package,
                            "spec": spec,
                            "model": model.name,
                            "cause": base[spec]["error"],
                            "where": base[spec].get("where", ""),
                        }
                    )
                ours = results.get((package, spec, model.name), {}).get(spec)
                ok, cause, detail = judge(ours, intended, base.get("aliases"))
                rewritten = rewrites.get((package, spec), {})
                own = [
                    entry
                    for entry in rewritten.get("unmatched", ())
                    if spec != "head" or entry == f"{model.head}.weight"
                ]
                if own:
                    ok, cause, detail = (
                        False,
                        "the rewrite says the entry selects no parameter (exit 2)",
                        own[0],
                    )
                elif ours is None and rewritten.get("errors"):
                    cause, detail = "the rewrite failed", rewritten["errors"][0]
                row["ours"] += ok
                if not ok:
                    failures.append(
                        {
                            "side": "ours",
                            "package": package,
                            "spec": spec,
                            "model": model.name,
                            "cause": cause,
                            "where": detail,
                        }
                    )
    return {"table": table, "failures": failures, "broken": broken}


def rate(passed: int, total: int) -> str:
    return f"{passed}/{total} ({100 * passed / total:.0f}%)" if total else "-"


def cause_key(cause: str) -> str:
    """Failures grouped by their message with numbers, names in quotes and shapes blurred."""
    cause = re.sub(r"'[^']*'", "'…'", cause)
    cause = re.sub(r"\d+", "N", cause)
    return cause[:160]


def report_lines(summary: dict[str, Any], packages: list[str], markdown: bool) -> list[str]:
    table = summary["table"]
    lines = []
    if markdown:
        lines += [
            "| package | spec | models | bayesify (rewrite) | run-time baseline |",
            "|---|---|--:|--:|--:|",
        ]
    else:
        lines += [f"{'package':16} {'spec':6} {'models':>6}  {'bayesify':>16}  {'baseline':>16}"]
    totals = {spec: Counter() for spec in SPECS}

    def add(package: str, spec: str, row: Counter) -> None:
        cells = (
            package,
            spec,
            str(row["models"]),
            rate(row["ours"], row["models"]),
            rate(row["baseline"], row["models"]),
        )
        lines.append(
            "| " + " | ".join(cells) + " |"
            if markdown
            else f"{cells[0]:16} {cells[1]:6} {cells[2]:>6}  {cells[3]:>16}  {cells[4]:>16}"
        )

    for package in packages:
        for spec in SPECS:
            totals[spec].update(table[package, spec])
            add(package, spec, table[package, spec])
    for spec in SPECS:
        add("**all**" if markdown else "all", spec, totals[spec])
    return lines


def failure_groups(summary: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(side, cause, ["package.model (spec) at where", ...]), the largest groups first."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in summary["failures"]:
        groups[item["side"], cause_key(item["cause"])].append(
            f"{item['package']}.{item['model']} ({item['spec']})"
            + (f" at {item['where']}" if item["where"] else "")
        )
    return sorted(
        ((side, cause, members) for (side, cause), members in groups.items()), key=lambda g: -len(g[2])
    )


def machine() -> str:
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("libcst", "torch", "pyro-ppl"))
    return f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; {versions}"


def markdown_section(summary: dict[str, Any], packages: list[str], command: str, seconds: float) -> str:
    versions = ", ".join(PACKAGES[package][0] for package in packages)
    lines = [
        MARKDOWN_BEGIN,
        "",
        "## The zoo: every model of four packages, three intents",
        "",
        "`bench/zoo.py` installs four model packages that nothing else here uses, rewrites each whole "
        "package with `bayesify rewrite PKG/ --out MIRROR/` under three specs, and, for every model builder "
        "of `bench/zoo_models.py`, builds the model from the mirror, traces it and takes one SVI step; "
        "side by side with the same intent done by hand at run time on the original model (pyro's "
        "`to_pyro_module_` and a `PyroSample` on every intended parameter). A model passes when its "
        "sample sites are exactly the intended ones and the SVI loss (`AutoNormal` started from a draw "
        "of the prior) is finite. The intended sites are the parameters a spec means that the "
        "deterministic forward reads: a `PyroSample` is drawn when its attribute is read, so a "
        "submodule the forward never calls (kornia's `XFeatModel.fine_matcher`, the unused "
        "attention of diffusers' temporal decoder) has no sample site on either side, and asking "
        "for one would fail both alike. The specs: **type**, "
        "every Linear and Conv weight (`nn.Linear.weight`, `nn.Conv*.weight`, and torch_geometric's own "
        "`Linear`); **head**, the output layer's weight only (one exact entry a model); **depth**, every "
        "parameter called `weight` (`**.weight`).",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Run on {datetime.date.today().isoformat()} in {seconds / 60:.0f} min: {machine()}; {versions}.",
        "",
        *report_lines(summary, packages, markdown=True),
        "",
    ]
    if summary["broken"]:
        lines += ["Builders whose deterministic model failed (left out of the counts):", ""]
        lines += [f"- {line}" for line in summary["broken"]] + [""]
    groups = [group for group in failure_groups(summary)]
    if groups:
        lines += ["Failures, grouped by cause:", ""]
        for side, cause, members in groups:
            shown = ", ".join(members[:6]) + (f", and {len(members) - 6} more" if len(members) > 6 else "")
            lines.append(f"- {side}, {len(members)}: `{cause}`: {shown}")
        lines.append("")
    lines.append(MARKDOWN_END)
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, section: str) -> None:
    """Replace the zoo's section of ``path`` (or append one), leaving the rest of the page."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if MARKDOWN_BEGIN in text and MARKDOWN_END in text:
        before = text[: text.index(MARKDOWN_BEGIN)]
        after = text[text.index(MARKDOWN_END) + len(MARKDOWN_END) :].lstrip("\n")
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def save(path: Optional[Path], results: dict, rewrites: dict, seconds: float) -> None:
    """Every result so far as JSON (``--json``), for ``--report-from``."""
    if path is None:
        return
    path.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "results": [{"package": p, "mode": m, **r} for (p, m, _), r in results.items()],
                "rewrites": [{"package": p, "spec": s, **r} for (p, s), r in rewrites.items()],
            },
            indent=1,
        )
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(PACKAGES), help="only this package (repeatable)"
    )
    parser.add_argument(
        "--models",
        metavar="GLOB",
        help="only the models whose name matches one of these comma-separated globs",
    )
    parser.add_argument(
        "--quick", action="store_true", help="three models a package: a fast check of the harness"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="the first N models of each package")
    parser.add_argument(
        "--timeout", type=int, default=300, help="seconds a model may take, per side (default: %(default)s)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="the environment (default: %(default)s)"
    )
    parser.add_argument("--work", type=Path, help="where the mirrors go (default: a temporary folder)")
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write the results into this page's zoo section"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every result as JSON")
    parser.add_argument(
        "--report-from",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: report the results these --json files saved (runs split by --only)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure with its traceback")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.probe:
        probe(options.probe, options.mode, options.names.split(","), options.timeout)
        return 0

    packages = [package for package in PACKAGES if not options.only or package in options.only]
    globs = options.models.split(",") if options.models else ["*"]
    models = [m for m in MODELS if m.package in packages and any(fnmatch.fnmatch(m.name, g) for g in globs)]
    limit = 3 if options.quick else options.limit
    if limit:
        kept: Counter = Counter()
        models = [m for m in models if kept.update([m.package]) or kept[m.package] <= limit]
    start = time.perf_counter()
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    rewrites: dict[tuple[str, str], dict[str, Any]] = {}
    measure, measured = not options.report_from, 0.0
    if options.report_from:
        for saved in options.report_from:
            data = json.loads(saved.read_text())
            measured = max(measured, data.get("seconds", 0.0))  # the runs went side by side
            results.update(((r["package"], r["mode"], r["model"]), r) for r in data["results"])
            rewrites.update(((r["package"], r["spec"]), r) for r in data["rewrites"])
        packages = [package for package in packages if any(key[0] == package for key in rewrites)]
        models = [m for m in models if any(key[0] == m.package and key[2] == m.name for key in results)]
    else:
        options.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            python = environment(options.cache_dir)
        except (SetupError, subprocess.CalledProcessError) as error:
            print(f"zoo: {error}", file=sys.stderr)
            return 2
        work = options.work or Path(tempfile.mkdtemp(prefix="bayesify-zoo-"))
        work.mkdir(parents=True, exist_ok=True)
    for package in packages if measure else ():
        names = [m.name for m in models if m.package == package]
        if not names:
            continue
        source = package_folder(python, package)
        print(f"{package}: {len(names)} models; baseline ...", file=sys.stderr, flush=True)
        for result in probe_in_subprocess(python, package, "baseline", names, options.timeout, None):
            results[package, "baseline", result["model"]] = result
        save(options.json, results, rewrites, time.perf_counter() - start)  # what a long run has so far
        for spec in SPECS:
            spec_file = work / f"{package}-{spec}.yaml"
            spec_file.write_text(spec_text(package, spec, [m for m in MODELS if m.package == package]))
            mirror = work / spec
            rewritten = rewrite(source, spec_file, mirror)
            rewrites[package, spec] = rewritten
            print(
                f"  {spec}: rewrite exit {rewritten['exit']} in {rewritten['seconds']:.0f}s: {rewritten['summary']}",
                file=sys.stderr,
                flush=True,
            )
            for error in rewritten["errors"]:
                print(f"    {error}", file=sys.stderr)
            if not rewritten["written"]:
                continue
            for result in probe_in_subprocess(python, package, spec, names, options.timeout, mirror):
                results[package, spec, result["model"]] = result
            save(options.json, results, rewrites, time.perf_counter() - start)

    summary = tabulate(packages, models, results, rewrites)
    print("\n".join(report_lines(summary, packages, markdown=False)))
    for line in summary["broken"]:
        print(f"deterministic build failed (left out): {line}")
    for side, cause, members in failure_groups(summary):
        print(f"\n{side}, {len(members)}: {cause}")
        for member in members[: None if options.verbose else 8]:
            print(f"    {member}")
    if options.verbose:
        for (package, mode, name), result in sorted(results.items()):
            for key in (*SPECS, "deterministic"):
                outcome = result.get(key)
                if isinstance(outcome, dict) and not outcome.get("ok", True):
                    print(f"\n--- {package}.{name} ({mode}, {key})\n{outcome.get('detail', '')}")
    seconds = time.perf_counter() - start if measure else measured
    save(options.json, results, rewrites, seconds)
    if options.markdown:
        command = (
            "python bench/zoo.py" + (" --quick" if options.quick else "") + f" --markdown {options.markdown}"
        )
        if options.report_from:
            command = (
                f"for p in {' '.join(packages)}; do python bench/zoo.py --only $p --json zoo-$p.json & done; wait\n"
                f"python bench/zoo.py --report-from zoo-*.json --markdown {options.markdown}"
            )
        write_markdown(options.markdown, markdown_section(summary, packages, command, seconds))
    goal = all(
        row["ours"] >= row["baseline"] and row["ours"] >= 0.99 * row["models"]
        for row in summary["table"].values()
    )
    return 0 if goal else 1


if __name__ == "__main__":
    sys.exit(main())
