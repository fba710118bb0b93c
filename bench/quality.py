"""Quality and speed of bayesify's documented recipe against the BNN libraries a user would pick.

One command regenerates the table of docs/quality.md:

    python bench/quality.py                       # all methods, 2 seeds, markdown table + ratios
    python bench/quality.py --methods bayesify bayesian-torch --tasks digits --rounds 6
                                                  # the time ratios: medians of six rounds in turn

The same MLP (an ordinary ``nn.Module`` file, written below) is trained on scikit-learn's
bundled ``load_digits`` (classification) and ``load_diabetes`` (regression) and on a 1-D
regression with a gap in its inputs, for the same number of epochs, made Bayesian six ways:

- ``deterministic``: the MLP itself (Adam, cross-entropy or MSE);
- ``bayesify``: ``bayesify rewrite`` with a spec, then docs/runtime.md's recipe
  (``load_deterministic``, ``supervised``, ``CheckpointNormal`` and ``fit`` for classes,
  ``CheckpointLaplace`` for regression, ``predict``);
- ``bayesian-torch``, ``bayesian-torch-moped``: ``dnn_to_bnn`` and its README's loop;
- ``tyxe``: ``VariationalBNN`` with an IID normal prior, started at the trained weights;
- ``laplace``: laplace-torch's last-layer Laplace (KFAC, marginal-likelihood prior precision, and
  for regression noise, as its README's regression example).

Competitors are optional, each skipped with a message when it is not installed. They live in
their own environments, built with the CPU torch of this project (``-c`` keeps pip from
pulling another torch)::

    python -m venv --system-site-packages /tmp/issue10/venv
    /tmp/issue10/venv/bin/pip install scikit-learn bayesian-torch laplace-torch -c <(echo torch==2.13.0)
    /tmp/issue10/venv/bin/pip uninstall -y torchvision   # laplace pulls it; its wheel breaks CPU torch
    python -m venv --system-site-packages /tmp/issue10/tyxe-venv   # TyXe 0.0.2 needs pyro-ppl < 1.9
    /tmp/issue10/tyxe-venv/bin/pip install "pyro-ppl<1.9" tyxe scikit-learn -c <(echo torch==2.13.0)

then ``/tmp/issue10/venv/bin/python bench/quality.py --tyxe-python /tmp/issue10/tyxe-venv/bin/python``.
Every method runs in a child process of its interpreter, with one torch thread (on a shared
machine, thread hand-offs cost more than these small networks' work, and would make the
timings noise), and reports JSON; the parent prints the table.

Metrics: test NLL and ECE (15 bins) on digits; test RMSE and NLL (original units) on
diabetes; test NLL on the toy and its in-between uncertainty, the mean epistemic standard
deviation in the gap divided by that on the training inputs; the CPU time of 100-sample
prediction on the test set and of the Bayesian training run (the deterministic pre-training
that bayesify, MOPED, TyXe and Laplace start from is timed in its own row); and the lines of
user code of each method's recipe (the non-blank lines of its function below). Times are
the process's CPU time (``time.process_time``: one thread, so the work itself): on a shared
machine the wall-clock time adds whatever other processes take, which changes between the
methods' runs by more than the differences measured.
"""

import argparse
import importlib
import inspect
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("deterministic", "bayesify", "bayesian-torch", "bayesian-torch-moped", "tyxe", "laplace")
#: What a method needs importable, to skip it with a message when it is not.
REQUIRES = {
    "bayesian-torch": "bayesian_torch",
    "bayesian-torch-moped": "bayesian_torch",
    "tyxe": "tyxe",
    "laplace": "laplace",
    "bayesify": "bayesify.runtime",
}
TASKS = ("digits", "diabetes", "toy")
EPOCHS, BATCH, HIDDEN, NUM_SAMPLES = 30, 64, 128, 100

MLP_SOURCE = """\
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_size, hidden, out_size):
        super().__init__()
        self.fc1 = nn.Linear(in_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, out_size)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
"""
SPEC = 'version: 1\npriors:\n  "MLP.*.weight": Normal(0, 1)\n  "MLP.*.bias": Normal(0, 1)\n'


# -- data -------------------------------------------------------------------------------------


def load_task(task, seed):
    """``(x_train, y_train, x_test, y_test, y_unit, extra)``: float inputs, targets (classes,
    or standardized values whose unit is ``y_unit`` of the original), and for the toy the gap's
    inputs."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    if task == "toy":

        def draw(n):
            x = np.concatenate([rng.uniform(-2, -0.7, n // 2), rng.uniform(0.7, 2, n - n // 2)])
            return x, np.sin(2 * x) + 0.1 * rng.standard_normal(n)

        (x_train, y_train), (x_test, y_test) = draw(200), draw(200)
        x_train, x_test = x_train[:, None], x_test[:, None]
        gap = np.linspace(-0.5, 0.5, 50)[:, None]
        as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        return (
            as_tensor(x_train),
            as_tensor(y_train)[:, None],
            as_tensor(x_test),
            as_tensor(y_test)[:, None],
            1.0,
            as_tensor(gap),
        )
    from sklearn.datasets import load_diabetes, load_digits

    x, y = (load_digits if task == "digits" else load_diabetes)(return_X_y=True)
    order = rng.permutation(len(x))
    split = int(0.7 * len(x))
    train, test = order[:split], order[split:]
    mean, sd = x[train].mean(0), x[train].std(0) + 1e-6
    x = torch.tensor((x - mean) / sd, dtype=torch.float32)
    if task == "digits":
        y = torch.tensor(y)
        return x[train], y[train], x[test], y[test], 1.0, None
    y_mean, y_sd = y[train].mean(), y[train].std()
    y = torch.tensor((y - y_mean) / y_sd, dtype=torch.float32)[:, None]
    return x[train], y[train], x[test], y[test], float(y_sd), None


def loader(x, y, seed):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(
        TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def mlp_class(workdir):
    sys.path.insert(0, str(workdir))
    from src.mlp import MLP

    return MLP


def train_deterministic(MLP, x, y, classes, seed):
    """The deterministic model every method starts from (or is trained like)."""
    import torch

    torch.manual_seed(seed)
    net = MLP(x.shape[1], HIDDEN, classes or 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss() if classes else torch.nn.MSELoss()
    for _ in range(EPOCHS):
        for xb, yb in loader(x, y, seed):
            optimizer.zero_grad()
            loss_fn(net(xb), yb).backward()
            optimizer.step()
    return net


# -- the methods: each returns an object with predict(x) -> (mean or probs, sd or None, epistemic) --


def recipe_deterministic(net, x, y, classes, seed, workdir):
    import torch

    noise = None if classes else (net(x) - y).pow(2).mean().sqrt().item()

    def predict(x_new):
        with torch.no_grad():
            output = net(x_new)
        if classes:
            return output.softmax(-1), None, None
        return output, torch.full_like(output, noise), torch.zeros_like(output)

    return predict


def recipe_bayesify(net, x, y, classes, seed, workdir):
    import pyro
    from bayesian.mlp import MLP

    from bayesify.runtime import (
        Categorical,
        CheckpointLaplace,
        CheckpointNormal,
        Normal,
        fit,
        load_deterministic,
        predict,
        supervised,
    )

    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    bayesian = MLP(x.shape[1], HIDDEN, classes or 1)
    values = load_deterministic(bayesian, net.state_dict())
    if classes:  # the recipe for classes: mean-field, trained from the checkpoint
        model = supervised(bayesian, Categorical(len(x)))
        guide = CheckpointNormal(model, values)
        fit(model, guide, loader(x, y, seed), epochs=EPOCHS, progress=False)
    else:  # the recipe for regression: last-layer Laplace at the checkpoint, nothing to train
        model = supervised(bayesian, Normal(len(x)))
        guide = CheckpointLaplace(model, values, loader(x, y, seed))

    def predict_(x_new):
        prediction = predict(model, guide, x_new, num_samples=NUM_SAMPLES)
        if classes:
            return prediction.probs, None, prediction.epistemic
        return prediction.mean, prediction.sd, prediction.epistemic

    return predict_


def _bayesian_torch(net, x, y, classes, seed, moped):
    import copy

    import torch
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss

    torch.manual_seed(seed)
    model = copy.deepcopy(net)
    if not moped:  # trained from scratch, as dnn_to_bnn's README does
        for layer in model.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    dnn_to_bnn(
        model,
        {
            "prior_mu": 0.0,
            "prior_sigma": 1.0,
            "posterior_mu_init": 0.0,
            "posterior_rho_init": -3.0,
            "type": "Reparameterization",
            "moped_enable": moped,
            "moped_delta": 0.5,
        },
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss() if classes else torch.nn.MSELoss()
    for _ in range(EPOCHS):
        for xb, yb in loader(x, y, seed):
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb) + get_kl_loss(model) / BATCH
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        noise = None if classes else (model(x) - y).pow(2).mean().sqrt()

    def predict(x_new):
        with torch.no_grad():
            outputs = torch.stack([model(x_new) for _ in range(NUM_SAMPLES)])
        if classes:
            return outputs.softmax(-1).mean(0), None, None
        epistemic = outputs.std(0)
        return outputs.mean(0), (epistemic**2 + noise**2).sqrt(), epistemic

    return predict


def recipe_bayesian_torch(net, x, y, classes, seed, workdir):
    return _bayesian_torch(net, x, y, classes, seed, moped=False)


def recipe_bayesian_torch_moped(net, x, y, classes, seed, workdir):
    return _bayesian_torch(net, x, y, classes, seed, moped=True)


def recipe_tyxe(net, x, y, classes, seed, workdir):
    import copy
    from functools import partial

    import pyro
    import pyro.distributions as dist
    import torch
    import tyxe

    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    model = copy.deepcopy(net)
    prior = tyxe.priors.IIDPrior(dist.Normal(0.0, 1.0))
    with torch.no_grad():  # regression: the trained network's noise, as TyXe's scale is fixed
        noise = None if classes else (model(x) - y).pow(2).mean().sqrt().item()
    likelihood = (
        tyxe.likelihoods.Categorical(len(x))
        if classes
        else tyxe.likelihoods.HomoskedasticGaussian(len(x), scale=noise)
    )
    guide = partial(
        tyxe.guides.AutoNormal, init_scale=1e-4, init_loc_fn=tyxe.guides.PretrainedInitializer.from_net(model)
    )
    bnn = tyxe.VariationalBNN(model, prior, likelihood, guide)
    bnn.fit(loader(x, y, seed), pyro.optim.Adam({"lr": 1e-3}), EPOCHS)

    def predict(x_new):
        with torch.no_grad():
            if classes:  # the logits of the averaged probabilities
                return bnn.predict(x_new, num_predictions=NUM_SAMPLES).softmax(-1), None, None
            outputs = bnn.predict(x_new, num_predictions=NUM_SAMPLES, aggregate=False)
            epistemic = outputs.std(0)
            return outputs.mean(0), (epistemic**2 + noise**2).sqrt(), epistemic

    return predict


def recipe_laplace(net, x, y, classes, seed, workdir):
    import torch
    from laplace import Laplace

    torch.manual_seed(seed)
    la = Laplace(
        net,
        "classification" if classes else "regression",
        subset_of_weights="last_layer",
        hessian_structure="kron",
    )
    la.fit(loader(x, y, seed))
    if classes:
        la.optimize_prior_precision(method="marglik")
    else:  # its README's regression recipe: the noise and the prior precision by marginal likelihood
        log_prior, log_sigma = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
        hyper_optimizer = torch.optim.Adam([log_prior, log_sigma], lr=0.1)
        for _ in range(1000):
            hyper_optimizer.zero_grad()
            (-la.log_marginal_likelihood(log_prior.exp(), log_sigma.exp())).backward()
            hyper_optimizer.step()

    def predict(x_new):
        if classes:
            return la(x_new, link_approx="probit"), None, None
        mean, variance = la(x_new)
        epistemic = variance.squeeze(-1).sqrt()
        return mean, (epistemic**2 + la.sigma_noise**2).sqrt(), epistemic

    return predict


# -- one method, in a child process -----------------------------------------------------------


def ece(probs, y, bins=15):
    import torch

    confidence, predicted = probs.max(-1)
    correct = (predicted == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs()
    return float(total)


def run_method(method, workdir, tasks, seeds):
    import torch

    torch.set_num_threads(1)
    # A library's import is paid once a process, not once a training run: each method's is
    # made before the timers (pyro's takes a tenth of a second, bayesian-torch's a hundredth).
    importlib.import_module(REQUIRES.get(method, "torch"))
    MLP = mlp_class(workdir)
    recipe = globals()["recipe_" + method.replace("-", "_")]
    results = {}
    for task in tasks:
        for seed in range(seeds):
            x, y, x_test, y_test, unit, gap = load_task(task, seed)
            classes = 10 if task == "digits" else 0
            start = time.process_time()
            net = train_deterministic(MLP, x, y, classes, seed)
            pretraining = time.process_time() - start
            start = time.process_time()
            predict = recipe(net, x, y, classes, seed, workdir)
            training = pretraining if method == "deterministic" else time.process_time() - start
            start = time.process_time()
            mean, sd, epistemic = predict(x_test)
            predict_time = time.process_time() - start
            row = {"training": training, "predict": predict_time}
            mean = mean.detach()
            if classes:
                picked = mean.gather(-1, y_test.unsqueeze(-1)).squeeze(-1).clamp_min(1e-12)
                row.update(nll=float(-picked.log().mean()), ece=ece(mean, y_test))
            else:
                sd = sd.detach()
                row["rmse"] = float((mean - y_test).pow(2).mean().sqrt()) * unit
                row["nll"] = float(-torch.distributions.Normal(mean, sd).log_prob(y_test).mean()) + math.log(
                    unit
                )
                if gap is not None:
                    _, _, in_gap = predict(gap)
                    _, _, on_data = predict(x)
                    row["gap_ratio"] = float(
                        in_gap.detach().mean() / on_data.detach().mean().clamp_min(1e-12)
                    )
            results.setdefault(task, []).append(row)
    averaged = {
        task: {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
        for task, rows in results.items()
    }
    averaged["lines"] = _user_lines(method)
    print(json.dumps(averaged))


def _user_lines(method):
    """Logical lines (statements, however the formatter wraps them) of the method's recipe
    (the deterministic one: with its training); bayesify's adds the spec and the CLI call."""
    name = "recipe_" + method.replace("-", "_")
    source = inspect.getsource(globals()[name])
    if method.startswith("bayesian-torch"):
        source += inspect.getsource(_bayesian_torch)
    if method == "deterministic":  # its training is the others' pre-training
        source += inspect.getsource(train_deterministic)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    lines = sum(1 for token in tokens if token.type == tokenize.NEWLINE)
    if method == "bayesify":
        lines += len(SPEC.splitlines()) + 1
    return lines


# -- the parent: run each method, print the table ---------------------------------------------


def prepare(workdir):
    (workdir / "src").mkdir(parents=True, exist_ok=True)
    (workdir / "src" / "mlp.py").write_text(MLP_SOURCE)
    (workdir / "priors.yaml").write_text(SPEC)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesify",
            "rewrite",
            "src",
            "--out",
            "bayesian",
            "--priors",
            "priors.yaml",
            "-q",
        ],
        cwd=workdir,
        check=True,
        env=_env(),
    )


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def available(python, module):
    return (
        subprocess.run(
            [python, "-c", f"import {module}, sklearn"], capture_output=True, env=_env()
        ).returncode
        == 0
    )


COLUMNS = {
    "digits": [
        ("nll", "NLL", min),
        ("ece", "ECE", min),
        ("predict", "100-sample predict (CPU s)", min),
        ("training", "training (CPU s)", min),
    ],
    "diabetes": [("rmse", "RMSE", min), ("nll", "NLL", min)],
    "toy": [("nll", "NLL", min), ("gap_ratio", "in-between sd gap/data", max)],
}


def table(results):
    competitors = [m for m in results if m not in ("deterministic", "bayesify")]
    lines = []
    tasks = next(iter(results.values()), {})
    for task, columns in COLUMNS.items():
        if task not in tasks:  # not run (--tasks)
            continue
        header = (
            ["method"]
            + [title for _, title, _ in columns]
            + (["user code lines"] if task == "digits" else [])
        )
        lines += [f"\n{task}\n", "| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"]
        for method, result in results.items():
            cells = [f"{result[task][key]:.3g}" for key, _, _ in columns]
            if task == "digits":
                cells.append(str(result["lines"]))
            lines.append("| " + " | ".join([method] + cells) + " |")
        if "bayesify" in results and competitors:
            # NLLs can be negative: they are compared by difference, the rest by ratio. Times are
            # compared with bayesian-torch (the anchor), qualities with the best.
            compared = []
            for key, _title, better in columns:
                anchors = (
                    ["bayesian-torch"]
                    if key in ("predict", "training") and "bayesian-torch" in results
                    else competitors
                )
                best = better(results[m][task][key] for m in anchors)
                ours = results["bayesify"][task][key]
                if key == "nll":
                    compared.append(f"{ours - best:+.3f} (difference)")
                else:
                    compared.append(f"{ours / best:.2f}×" if best else "-")
            label = "bayesify vs best competitor (times: vs bayesian-torch)"
            lines.append(f"| {label} | " + " | ".join(compared) + (" |  |" if task == "digits" else " |"))
    return "\n".join(lines)


def _median_times(runs):
    """One method's result: the first run's, with each time the median of every run's (run in
    turn with the other methods, a ratio of medians is not at the mercy of what else the
    machine did during one method's turn)."""
    result = runs[0]
    for task, row in result.items():
        if isinstance(row, dict):
            for key in ("training", "predict"):
                if key in row:
                    row[key] = statistics.median(run[task][key] for run in runs)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--tyxe-python",
        default=os.environ.get("TYXE_PYTHON", "/tmp/issue10/tyxe-venv/bin/python"),
        help="interpreter whose environment has TyXe (pyro-ppl < 1.9)",
    )
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--seeds", type=int, default=2, help="how many seeds (0, 1, ...) each figure averages"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the methods this many times, one after another in turn, and report the median "
        "of each time (the qualities are the same every round: the seeds are)",
    )
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return run_method(args.run, Path(args.workdir), args.tasks, args.seeds)
    rounds = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(workdir)
        runnable = []
        for method in args.methods:
            python = args.tyxe_python if method == "tyxe" else sys.executable
            if Path(python).exists() and available(python, REQUIRES.get(method, "torch")):
                runnable.append((method, python))
            else:
                print(
                    f"skipped {method}: {REQUIRES.get(method)} (or scikit-learn) is not installed for {python}",
                    file=sys.stderr,
                )
        for _ in range(args.rounds):
            for method, python in runnable:
                started = time.perf_counter()
                child = subprocess.run(
                    [python, __file__, "--run", method, "--workdir", str(workdir), "--seeds", str(args.seeds)]
                    + ["--tasks", *args.tasks],
                    cwd=workdir,
                    capture_output=True,
                    text=True,
                    env=_env(),
                )
                if child.returncode != 0:
                    print(f"{method} failed:\n{child.stderr[-3000:]}", file=sys.stderr)
                    continue
                rounds.setdefault(method, []).append(json.loads(child.stdout.strip().splitlines()[-1]))
                print(f"{method}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = {method: _median_times(runs) for method, runs in rounds.items()}
    print(
        f"means of {args.seeds} seeds, {EPOCHS} epochs, batch {BATCH}, MLP with two hidden layers of {HIDDEN}, one torch thread"
        + (f"; times: medians of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    print(table(results))


if __name__ == "__main__":
    main()
