"""Step time, peak memory and 100-sample prediction of large rewritten models, vs bayesian-torch.

    python bench/gpu_inference.py                          # on CUDA: BERT-base and a ResNet-50
    python bench/gpu_inference.py --device cpu --tiny      # the same code on small configurations

Two networks, with every weight of their Linear (and Conv) layers random under a
``Normal(0, 1)`` prior, the rest deterministic:

- **BERT-base** (``transformers.BertModel``, randomly initialised: nothing is downloaded),
  batch 32 x 128 tokens, a linear classification head on the first token; the 72 encoder
  Linear weights are random (as ``set_prior`` makes them from the spec entries
  ``BertModel.encoder.layer.*.attention.*.*.weight`` and
  ``BertModel.encoder.layer.*.*.dense.weight``);
- a **ResNet-50** (bottleneck blocks 3-4-6-3, written below: torchvision's wheel does not
  work with CPU torch), batch 32 x 224 x 224, every convolution and the classifier random.

For each: one optimisation step of the deterministic network (Adam, cross-entropy), of the
Bayesian one by docs/runtime.md's recipe (``CheckpointNormal``, ``TraceMeanField_ELBO``, Adam:
one step of :func:`bayesify.runtime.fit`), and of bayesian-torch's ``dnn_to_bnn`` of the same
network (its README's loss, cross-entropy + KL / batch); and 100-sample prediction in eval
mode with :func:`bayesify.runtime.predict` and with bayesian-torch's 100 forward passes. It prints
median times, peak GPU memory, and ratios vs bayesian-torch and vs the deterministic step.
bayesian-torch is skipped, with a message, where it is not installed (see bench/quality.py).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bayesify.runtime import (  # noqa: E402
    Categorical,
    CheckpointNormal,
    fit,
    load_deterministic,
    predict,
    pyro_module,
    set_prior,
    supervised,  # noqa: E402
)


class Bottleneck(nn.Module):
    def __init__(self, inputs, width, stride):
        super().__init__()
        outputs = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, outputs, 1, bias=False), nn.BatchNorm2d(outputs)
        self.shortcut = None
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Conv2d(inputs, outputs, 1, stride, bias=False)
            self.bn_shortcut = nn.BatchNorm2d(outputs)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.shortcut is None else self.bn_shortcut(self.shortcut(x))))


class ResNet50(nn.Module):
    def __init__(self, classes=1000, base=64, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base)
        layers, inputs = [], base
        for stage, count in enumerate(blocks):
            width = base * 2**stage
            for index in range(count):
                layers.append(Bottleneck(inputs, width, 2 if index == 0 and stage > 0 else 1))
                inputs = 4 * width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.stem(x))), 3, 2, 1)
        return self.fc(self.layers(x).mean((2, 3)))


def bert(tiny):
    from transformers import BertConfig, BertModel

    size = (
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        if tiny
        else {}
    )
    encoder = BertModel(BertConfig(**size), add_pooling_layer=False)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert, self.head = encoder, nn.Linear(encoder.config.hidden_size, 2)

        def forward(self, tokens):
            return self.head(self.bert(tokens).last_hidden_state[:, 0])

    selectors = [  # the encoder's six Linear weights a layer, not its LayerNorms'
        "Classifier.bert.encoder.layer.*.attention.self.*.weight",
        "Classifier.bert.encoder.layer.*.attention.output.dense.weight",
        "Classifier.bert.encoder.layer.*.*.dense.weight",
    ]
    return Classifier(), selectors, lambda batch: torch.randint(0, 1000, (batch, 16 if tiny else 128))


def resnet(tiny):
    net = ResNet50(classes=10, base=4) if tiny else ResNet50()
    selectors = [
        "ResNet50.stem.weight",
        "ResNet50.fc.weight",
        "ResNet50.layers.*.conv?.weight",
        "ResNet50.layers.*.shortcut.weight",
    ]
    return net, selectors, lambda batch: torch.randn(batch, 3, *((32, 32) if tiny else (224, 224)))


def bayesian(net, selectors):
    """The network as the rewrite makes it: Pyro modules, the selected weights random."""
    import copy

    converted = pyro_module(copy.deepcopy(net))
    for selector in selectors:
        set_prior(converted, selector, "Normal", 0, 1)
    return converted


def timed(step, device, repeats):
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for index in range(repeats + 1):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index:  # the first call builds guides and optimiser state
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def fit_step_timed(model, guide, batch, device, repeats):
    """The median time of :func:`fit`'s own steps, as a user runs them (its loss, its fused
    Adam), after its first: that one runs with Pyro's checks on and makes the optimizer, and
    comes once a fit. A step's time is that between fit's requests for consecutive batches."""
    stamps = []

    def batches():
        for _ in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            yield batch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fit(model, guide, batches(), lr=1e-4, progress=False)
    steps = [end - start for start, end in zip(stamps[1:], stamps[2:])]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return statistics.median(steps), peak


def measure(name, build, args):
    device = torch.device(args.device)
    net, selectors, inputs = build(args.tiny)
    net = net.to(device)
    x = inputs(args.batch).to(device)
    classes = net(x).shape[-1]
    y = torch.randint(0, classes, (args.batch,), device=device)
    rows = {}

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def deterministic_step():
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    rows["deterministic step"] = timed(deterministic_step, device, args.repeats)

    pyro.clear_param_store()
    converted = bayesian(net, selectors).to(device)
    values = load_deterministic(converted, net.state_dict())
    model = supervised(converted, Categorical(dataset_size=50_000))
    guide = CheckpointNormal(model, values).to(device)

    rows["bayesify step"] = fit_step_timed(model, guide, (x, y), device, args.repeats)
    per_pass = args.samples if device.type == "cuda" else 10
    # Predictions in eval mode, as users make them: BatchNorm's running statistics, no
    # dropout (in training mode both mix or resample the samples, and predict's check of one
    # sample sends such a network to a pass per sample).
    converted.eval()
    rows[f"bayesify predict ({args.samples} samples, {per_pass} per pass)"] = timed(
        lambda: predict(model, guide, x, num_samples=args.samples, samples_per_pass=per_pass), device, 1
    )

    try:
        from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss
    except ImportError:
        print("skipped bayesian-torch: it is not installed", file=sys.stderr)
        return rows
    import copy

    other = copy.deepcopy(net)
    dnn_to_bnn(
        other,
        {
            "prior_mu": 0.0,
            "prior_sigma": 1.0,
            "posterior_mu_init": 0.0,
            "posterior_rho_init": -3.0,
            "type": "Reparameterization",
            "moped_enable": True,
            "moped_delta": 0.1,
        },
    )
    other = other.to(device)
    other_optimizer = torch.optim.Adam(other.parameters(), lr=1e-4)

    def bayesian_torch_step():
        other_optimizer.zero_grad()
        (F.cross_entropy(other(x), y) + get_kl_loss(other) / args.batch).backward()
        other_optimizer.step()

    rows["bayesian-torch step"] = timed(bayesian_torch_step, device, args.repeats)

    other.eval()

    @torch.no_grad()
    def bayesian_torch_predict():
        return torch.stack([other(x) for _ in range(args.samples)]).softmax(-1).mean(0)

    rows[f"bayesian-torch predict ({args.samples} samples)"] = timed(bayesian_torch_predict, device, 1)
    return rows


def report(name, rows):
    print(f"\n{name}")
    print("| measure | seconds | peak GiB | vs bayesian-torch | vs deterministic step |")
    print("|---|--:|--:|--:|--:|")
    anchor = {
        "step": rows.get("bayesian-torch step"),
        "predict": next((v for k, v in rows.items() if k.startswith("bayesian-torch predict")), None),
    }
    deterministic = rows["deterministic step"][0]
    for measure_name, (seconds, peak) in rows.items():
        kind = "predict" if "predict" in measure_name else "step"
        versus = (
            f"{seconds / anchor[kind][0]:.2f}" if anchor[kind] and measure_name.startswith("bayesify") else ""
        )
        peak_text = f"{peak:.2f}" if peak is not None else "-"
        print(f"| {measure_name} | {seconds:.4g} | {peak_text} | {versus} | {seconds / deterministic:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small configurations (for a CPU check)")
    parser.add_argument("--batch", type=int, default=None, help="default 32, or 4 with --tiny")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=["bert", "resnet50"], choices=["bert", "resnet50"])
    args = parser.parse_args()
    args.batch = args.batch or (4 if args.tiny else 32)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; pass --device cpu --tiny for a check on the CPU")
    if args.device == "cpu":
        torch.set_num_threads(1)  # on a shared machine, thread hand-offs would be most of a tiny step
    for name in args.models:
        if name == "bert":
            try:
                import transformers  # noqa: F401
            except ImportError:
                print("skipped bert: transformers is not installed", file=sys.stderr)
                continue
        rows = measure(name, bert if name == "bert" else resnet, args)
        report(f"{name} on {args.device}{' (tiny)' if args.tiny else ''}, batch {args.batch}", rows)


if __name__ == "__main__":
    main()
