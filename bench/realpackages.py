#!/usr/bin/env python
"""bayesify on real model code: packages from PyPI that nobody here wrote (issue 3, item 7).

For each package below, the script

1. downloads its wheel (pinned) and the small pure-Python packages it imports, with
   ``pip download/install --no-deps`` (never another torch), into a cache folder
   (``~/.cache/bayesify-realpackages``, ``--cache-dir``); nothing of them is ever stored in
   the repository;
2. unpacks the wheel's source into a fresh temporary folder, writes a spec (``priors.yaml``)
   that selects real parameters of it, and runs ``bayesify rewrite`` over the package (or
   over part of it, with the rest given as ``--context``);
3. checks that every file of the package still compiles, and that a second run changes
   nothing (``bayesify rewrite --check`` exits 0);
4. in a subprocess of its own (the packages' modules never meet), imports the rewritten
   package, builds a small model from it, traces it with ``pyro.poutine.trace`` inside a
   tiny Pyro model with a likelihood, and checks that

   - every module with parameters is a ``PyroModule`` (a plain one gets ``a$$$b`` names
     from ``pyro.module``) and every ``PyroModule`` is named by its module path (one that
     is not is a separate Pyro root: its sites clash or are silently shared),
   - the parameters the spec selects are sample sites (each model's ``expect``),
   - no site is named with ``$$$``, and every param site is a parameter's module path,

   and takes two SVI steps with ``AutoNormal`` and ``Trace_ELBO``.

It prints a table and, with ``--markdown FILE``, writes it with the command, date and
machine (``docs/real-packages.md``)::

    python bench/realpackages.py                           # every package
    python bench/realpackages.py --only siren-pytorch -v   # one, with the details of failures
    python bench/realpackages.py --markdown docs/real-packages.md

It needs the registry (PyPI) the first time only. ``pytest -m realpackages`` runs the same
checks as tests (``tests/test_realpackages.py``). Exit status: 0 when every package passes
every check, 1 when one fails, 2 when a download fails.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import fnmatch
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

DEFAULT_CACHE = Path.home() / ".cache" / "bayesify-realpackages"
PROBE_MARKER = "REALPACKAGES-PROBE-RESULT "
#: Where bench/zoo.py's section of the page begins.
ZOO_SECTION = "<!-- zoo: begin"
BAYESIFY = [sys.executable, "-c", "from bayesify.cli import main; main()"]


# --------------------------------------------------------------------------------------
# The models: how to build one, small, from each rewritten package.
# Each builder runs in the probe subprocess, after the rewritten package is importable,
# and returns the model and the arguments of one forward call.
# --------------------------------------------------------------------------------------


def build_siren():
    import torch
    from siren_pytorch import SirenNet, SirenWrapper

    net = SirenNet(dim_in=2, dim_hidden=8, dim_out=3, num_layers=2)
    model = SirenWrapper(net, image_width=4, image_height=4, latent_dim=5)
    return model, (), {"latent": torch.randn(5)}


def build_vit():
    import torch
    from vit_pytorch.vit import ViT

    model = ViT(image_size=8, patch_size=4, num_classes=3, dim=16, depth=2, heads=2, mlp_dim=32, dim_head=8)
    return model, (torch.randn(2, 3, 8, 8),), {}


def build_perceiver():
    import torch
    from perceiver_pytorch import Perceiver

    model = Perceiver(
        num_freq_bands=2,
        depth=2,
        max_freq=4.0,
        input_channels=3,
        input_axis=2,
        num_latents=4,
        latent_dim=16,
        cross_heads=1,
        latent_heads=2,
        cross_dim_head=8,
        latent_dim_head=8,
        num_classes=3,
    )
    return model, (torch.randn(2, 4, 4, 3),), {}


def build_x_transformers():
    import torch
    from x_transformers import Decoder, TransformerWrapper

    model = TransformerWrapper(
        num_tokens=20,
        max_seq_len=8,
        attn_layers=Decoder(dim=16, depth=2, heads=2, attn_dim_head=8, attn_num_mem_kv=2, use_rmsnorm=True),
    )
    return model, (torch.randint(0, 20, (2, 8)),), {}


def build_linear_attention_transformer():
    import torch
    from linear_attention_transformer import LinearAttentionTransformerLM

    model = LinearAttentionTransformerLM(
        num_tokens=20,
        dim=16,
        heads=2,
        depth=2,
        max_seq_len=8,
        causal=False,
        n_local_attn_heads=1,
        local_attn_window_size=4,
        use_axial_pos_emb=True,
    )
    return model, (torch.randint(0, 20, (2, 8)),), {}


def build_efficientnet():
    import torch
    from efficientnet_pytorch.model import EfficientNet
    from efficientnet_pytorch.utils import efficientnet

    blocks_args, global_params = efficientnet(
        width_coefficient=0.25, depth_coefficient=0.25, image_size=32, num_classes=3
    )
    return EfficientNet(blocks_args, global_params), (torch.randn(2, 3, 32, 32),), {}


def build_bert():
    import torch
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertForSequenceClassification

    config = BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config)
    return model, (torch.randint(0, 30, (2, 6)),), {}


def build_bert_masked_lm():
    import torch
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertForMaskedLM

    config = BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        attn_implementation="eager",
    )
    # post_init ties cls.predictions.decoder.bias to the random cls.predictions.bias by name.
    model = BertForMaskedLM(config)
    return model, (torch.randint(0, 30, (2, 6)),), {}


def build_llama():
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=30,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        attn_implementation="eager",
        use_cache=False,
    )
    model = LlamaForCausalLM(config)
    return model, (torch.randint(0, 30, (2, 6)),), {}


# --------------------------------------------------------------------------------------
# The packages
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """One model built from a rewritten package and the sites its spec must make random."""

    name: str
    build: Callable[[], tuple]
    #: fnmatch patterns of sample-site names; each must match at least one site of the trace.
    expect: tuple[str, ...]


@dataclass(frozen=True)
class Package:
    name: str  #: the PyPI name
    version: str
    style: str  #: what kind of model code it is, for the table
    priors: str  #: the spec, YAML
    models: tuple[Model, ...]
    #: folders of the wheel that are rewritten (default: the import package).
    rewrite: tuple[str, ...] = ()
    #: folders of the wheel given as ``--context`` (read for base classes, never rewritten).
    context: tuple[str, ...] = ()
    #: pinned requirements installed (``--no-deps``) beside it: what it imports, never torch.
    deps: tuple[str, ...] = ()
    #: import the modules without running the package's ``__init__`` (see ``vit-pytorch``).
    skip_init: bool = False

    @property
    def import_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def scope(self) -> tuple[str, ...]:
        return self.rewrite or (self.import_name,)


EINOPS = "einops==0.8.2"

PACKAGES: tuple[Package, ...] = (
    Package(
        name="siren-pytorch",
        version="0.1.7",
        style="single file; raw nn.Parameters with a custom init, a conditional bias",
        deps=(EINOPS,),
        priors="""
            version: 1
            priors:
              Siren.weight: Normal(0, 0.1)
              Siren.bias: Normal(0, 1)                     # nn.Parameter(bias) if use_bias else None
              "Modulator.layers.*.0.weight": Normal(0, 0.1)  # Sequentials appended to a ModuleList
        """,
        models=(
            Model(
                "SirenWrapper",
                build_siren,
                expect=(
                    "net.layers.*.weight",
                    "net.layers.*.bias",
                    "net.last_layer.weight",
                    "modulator.layers.*.0.weight",
                ),
            ),
        ),
    ),
    Package(
        name="vit-pytorch",
        version="1.26.11",
        style="one model per file, same class names in many files; Sequential and nested ModuleList",
        deps=(EINOPS,),
        # vit_pytorch/__init__.py imports dino.py, which imports torchvision; torchvision does not
        # import beside this torch, so the probe imports vit_pytorch.vit without the __init__.
        skip_init=True,
        priors="""
            version: 1
            priors:
              vit_pytorch.vit:ViT.cls_token: Normal(0, 1)
              vit_pytorch.vit:ViT.pos_embedding: Normal(0, 1)
              vit_pytorch.vit:ViT.mlp_head.weight: Normal(0, 0.1)      # Linear(...) if num_classes > 0 else None
              vit_pytorch.vit:Attention.to_qkv.weight: Normal(0, 0.1)
              "vit_pytorch.vit:FeedForward.net.*.weight": Normal(0, 0.1)  # LayerNorm and Linear weights of a Sequential
            constraints:
              vit_pytorch.vit:Attention.norm.weight: positive
        """,
        models=(
            Model(
                "ViT",
                build_vit,
                expect=(
                    "cls_token",
                    "pos_embedding",
                    "mlp_head.weight",
                    "transformer.layers.*.0.to_qkv.weight",
                    "transformer.layers.*.1.net.1.weight",
                ),
            ),
        ),
    ),
    Package(
        name="perceiver-pytorch",
        version="0.11.0",
        style="two files; wrapper modules (PreNorm(fn)), factories through cache_fn, conditional heads",
        deps=(EINOPS,),
        priors="""
            version: 1
            priors:
              Perceiver.latents: Normal(0, 1)
              perceiver_pytorch.perceiver_pytorch:Attention.to_q.weight: Normal(0, 0.1)
              perceiver_pytorch.perceiver_pytorch:Attention.to_kv.weight: Normal(0, 0.1)
              "perceiver_pytorch.perceiver_pytorch:FeedForward.net.*.weight": Normal(0, 0.1)
              "Perceiver.to_logits.*.weight": Normal(0, 0.1)   # Sequential(...) if head else Identity()
            constraints:
              perceiver_pytorch.perceiver_pytorch:PreNorm.norm.weight: positive
        """,
        models=(
            Model(
                "Perceiver",
                build_perceiver,
                expect=(
                    "latents",
                    "layers.*.cross_attn.fn.to_q.weight",
                    "layers.*.self_attns.*.0.fn.to_kv.weight",
                    "layers.*.cross_ff.fn.net.0.weight",
                    "to_logits.2.weight",
                ),
            ),
        ),
    ),
    Package(
        name="x-transformers",
        version="2.31.10",
        style="one 4,800-line file plus wrappers; partial-made layers, raw parameters under flags",
        deps=(EINOPS, "einx==0.4.3", "frozendict==2.5.1", "loguru==0.7.3", "torch-einops-utils==0.2.0"),
        priors="""
            version: 1
            priors:
              TokenEmbedding.emb.weight: Normal(0, 1)
              # LinearNoBias = partial(nn.Linear, bias=False)
              x_transformers.x_transformers:Attention.to_q.weight: Normal(0, 0.1)
              x_transformers.x_transformers:Attention.mem_k: Normal(0, 1)            # only with num_mem_kv > 0
              x_transformers.x_transformers:RMSNorm.g: Normal(0, 0.1)
        """,
        models=(
            Model(
                "TransformerWrapper(Decoder)",
                build_x_transformers,
                expect=(
                    "token_emb.emb.weight",
                    "attn_layers.layers.*.1.to_q.weight",
                    "attn_layers.layers.*.1.mem_k",
                    "*.g",
                ),
            ),
        ),
    ),
    Package(
        name="linear-attention-transformer",
        version="0.19.1",
        style=(
            "holds modules of four other libraries (local-attention, linformer, "
            "product-key-memory, axial-positional-embedding)"
        ),
        deps=(
            EINOPS,
            "axial-positional-embedding==0.3.12",
            "linformer==0.2.3",
            "local-attention==1.11.2",
            "hyper-connections==0.4.11",
            "torch-einops-utils==0.2.0",
            "product-key-memory==0.3.0",
            "colt5-attention==0.11.2",
        ),
        priors="""
            version: 1
            priors:
              LinearAttentionTransformerLM.token_emb.weight: Normal(0, 1)
              LinearAttentionTransformerLM.out.weight: Normal(0, 0.1)   # Linear(...) if ... else Identity()
              # a ParameterList of AxialPositionalEmbedding, another library's module
              "LinearAttentionTransformerLM.pos_emb.weights.*": Normal(0, 1)
              linear_attention_transformer.linear_attention_transformer:SelfAttention.to_q.weight: Normal(0, 0.1)
              linear_attention_transformer.linear_attention_transformer:FeedForward.w1.weight: Normal(0, 0.1)
        """,
        models=(
            Model(
                "LinearAttentionTransformerLM",
                build_linear_attention_transformer,
                expect=(
                    "token_emb.weight",
                    "out.weight",
                    "pos_emb.weights.*",
                    "transformer.layers.*.to_q.weight",
                    "*.w1.weight",
                ),
            ),
        ),
    ),
    Package(
        name="efficientnet-pytorch",
        version="0.3.0",
        style=(
            "a 2019 CNN: nn.Conv2d subclasses (inherited weights) made by a factory that returns "
            "a partial, BatchNorm2d, `super(Cls, self).__init__()`"
        ),
        priors="""
            version: 1
            priors:
              Conv2dStaticSamePadding.weight: Normal(0, 0.1)   # inherited from nn.Conv2d
              MBConvBlock._se_reduce.bias: Normal(0, 1)
              EfficientNet._fc.weight: Normal(0, 0.1)
            constraints:
              MBConvBlock._bn1.weight: positive               # a BatchNorm2d's scale
        """,
        models=(
            Model(
                "EfficientNet",
                build_efficientnet,
                expect=(
                    "_conv_stem.weight",
                    "_blocks.*._depthwise_conv.weight",
                    "_blocks.*._se_reduce.bias",
                    "_fc.weight",
                ),
            ),
        ),
    ),
    Package(
        name="transformers",
        version="5.24.0",
        style=(
            "large multi-file library; models/bert and models/llama rewritten, their "
            "PreTrainedModel bases (modeling_utils.py, ...) read as --context"
        ),
        rewrite=("transformers/models/bert", "transformers/models/llama"),
        context=("transformers",),
        deps=(
            "huggingface-hub==1.31.0",
            "safetensors==0.8.0",
            "httpx==0.28.1",
            "httpcore==1.0.9",
            "h11==0.16.0",
            "anyio==4.11.0",
        ),
        priors="""
            version: 1
            priors:
              BertEmbeddings.word_embeddings.weight: Normal(0, 1)
              BertSelfAttention.query.weight: Normal(0, 0.1)
              BertForSequenceClassification.classifier.weight: Normal(0, 0.1)
              BertLMPredictionHead.bias: Normal(0, 1)                # tied into decoder.bias
              LlamaRMSNorm.weight: LogNormal(0, 0.1)
              LlamaAttention.q_proj.weight: Normal(0, 0.1)
              "LlamaMLP.*_proj.weight": Normal(0, 0.1)
              LlamaForCausalLM.lm_head.weight: Normal(0, 0.1)
            constraints:
              BertSelfOutput.LayerNorm.weight: positive
        """,
        models=(
            Model(
                "BertForSequenceClassification",
                build_bert,
                expect=(
                    "bert.embeddings.word_embeddings.weight",
                    "bert.encoder.layer.*.attention.self.query.weight",
                    "classifier.weight",
                ),
            ),
            Model(
                "BertForMaskedLM",
                build_bert_masked_lm,
                # decoder.bias reads the same sample: a deterministic site, not a random one.
                expect=("cls.predictions.bias",),
            ),
            Model(
                "LlamaForCausalLM",
                build_llama,
                expect=(
                    "model.layers.*.self_attn.q_proj.weight",
                    "model.layers.*.mlp.gate_proj.weight",
                    "model.layers.*.input_layernorm.weight",
                    "model.norm.weight",
                    "lm_head.weight",
                ),
            ),
        ),
    ),
)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


class DownloadError(RuntimeError):
    """The registry could not be reached or has no such wheel: no verdict on bayesify."""


@dataclass
class Problem:
    check: str  #: "rewrite", "compiled", "idempotent" or a model's name
    summary: str  #: one line
    detail: str = ""


@dataclass
class Result:
    package: Package
    files: int = 0
    classes: int = 0
    random: int = 0
    constrained: int = 0
    rewrote: Optional[bool] = None
    compiled: Optional[bool] = None
    idempotent: Optional[bool] = None
    #: per model: "ok", "failures", "sample_sites", "param_sites", "losses" (see probe_model)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kept: Optional[Path] = None

    @property
    def probed(self) -> Optional[bool]:
        if not self.models:
            return None
        return all(report["ok"] for report in self.models.values())

    @property
    def passed(self) -> bool:
        return bool(self.rewrote and self.compiled and self.idempotent and self.probed)


# --------------------------------------------------------------------------------------
# Download and unpack
# --------------------------------------------------------------------------------------


def run(command: list[str], cwd: Optional[Path] = None, env: Optional[dict] = None, timeout: int = 1800):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def pip(*arguments: str) -> None:
    """pip, always with --no-deps: nothing it installs can pull in another torch."""
    completed = run(
        [sys.executable, "-m", "pip", *arguments, "--no-deps", "--disable-pip-version-check", "-q"]
    )
    if completed.returncode != 0:
        raise DownloadError(f"pip {' '.join(arguments)} failed:\n{tail(completed.stderr)}")


def fetch(package: Package, cache: Path = DEFAULT_CACHE) -> tuple[Path, Optional[Path]]:
    """The package's wheel, and a folder with its pinned dependencies (or None)."""
    folder = cache / "wheels"
    pattern = f"{package.import_name}-{package.version}-*.whl"
    if not any(folder.glob(pattern)):
        folder.mkdir(parents=True, exist_ok=True)
        pip("download", f"{package.name}=={package.version}", "--only-binary=:all:", "-d", str(folder))
    found = sorted(folder.glob(pattern))
    if not found:
        raise DownloadError(f"pip downloaded no wheel for {package.name}=={package.version}")
    if not package.deps:
        return found[0], None
    names = {requirement.split("==")[0].strip().lower() for requirement in package.deps}
    assert "torch" not in names, "the dependencies must never include torch"
    target = cache / "deps" / f"{package.name}-{package.version}"
    complete = target / ".complete"
    if not complete.exists() or complete.read_text().split() != list(package.deps):
        shutil.rmtree(target, ignore_errors=True)
        pip("install", "--target", str(target), "--only-binary=:all:", *package.deps)
        complete.write_text("\n".join(package.deps) + "\n")
    return found[0], target


def unpack(wheel_path: Path, into: Path) -> None:
    """The wheel's source, without its metadata."""
    with zipfile.ZipFile(wheel_path) as archive:
        archive.extractall(into, members=[name for name in archive.namelist() if ".dist-info/" not in name])


# --------------------------------------------------------------------------------------
# Rewrite, compile, idempotence
# --------------------------------------------------------------------------------------


def python_files(root: Path, folders: tuple[str, ...]) -> list[Path]:
    return sorted(path for folder in folders for path in (root / folder).rglob("*.py"))


def class_bases(source: str) -> dict[str, str]:
    """Every class of a module, by qualified name, with the source of its bases."""
    found: dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                found[prefix + child.name] = ", ".join(ast.unparse(base) for base in child.bases)
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{prefix}{child.name}.<locals>.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def converted_classes(before: dict[Path, str]) -> int:
    """Classes whose bases the rewrite changed to a PyroModule."""
    count = 0
    for path, source in before.items():
        old = class_bases(source)
        new = class_bases(path.read_text(encoding="utf-8"))
        count += sum(
            "PyroModule" in bases and "PyroModule" not in old.get(name, "") for name, bases in new.items()
        )
    return count


def summary_counts(stderr: str) -> tuple[int, int]:
    """Sites made random and constrained, from bayesify's summary line."""
    for line in reversed(stderr.splitlines()):
        if "sites made random" in line or "site made random" in line:
            words = line.replace(",", " ").split()
            return int(words[words.index("made") - 2]), int(words[words.index("constrained") - 1])
    return 0, 0


def rewrite_command(package: Package, *extra: str) -> list[str]:
    command = [*BAYESIFY, "rewrite", *package.scope, "--priors", "priors.yaml"]
    for folder in package.context:
        command += ["--context", folder]
    return [*command, *extra]


def rewrite_and_check(package: Package, root: Path, result: Result) -> None:
    (root / "priors.yaml").write_text(textwrap.dedent(package.priors).lstrip(), encoding="utf-8")
    files = python_files(root, package.scope)
    before = {path: path.read_text(encoding="utf-8") for path in files}
    result.files = len(files)

    # Each run gets a cache of its own, so the second run tests idempotence, not the cache.
    env = {**os.environ, "BAYESIFY_CACHE_DIR": str(root / ".bayesify-cache-first")}
    first = run(rewrite_command(package), cwd=root, env=env)
    result.rewrote = first.returncode == 0
    result.random, result.constrained = summary_counts(first.stderr)
    # Diagnostics read `PATH[:LINE[:COL]]: warning CODE: message` (docs/cli.md).
    result.warnings = [
        line for line in first.stderr.splitlines() if re.search(r"(^|: )warning BAY\d+: ", line)
    ]
    if not result.rewrote:
        result.problems.append(
            Problem("rewrite", f"bayesify rewrite exited {first.returncode}", tail(first.stderr))
        )
    result.classes = converted_classes(before)

    broken = []
    for path in python_files(root, (package.import_name,)):
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except SyntaxError as error:
            broken.append(f"{path.relative_to(root)}:{error.lineno}: {error.msg}")
    result.compiled = not broken
    if broken:
        summary = f"{len(broken)} files do not compile, e.g. {broken[0]}"
        result.problems.append(Problem("compiled", summary, "\n".join(broken)))

    env["BAYESIFY_CACHE_DIR"] = str(root / ".bayesify-cache-second")
    second = run(rewrite_command(package, "--check", "--diff"), cwd=root, env=env)
    result.idempotent = second.returncode == 0
    if not result.idempotent:
        changed = [line[4:] for line in second.stdout.splitlines() if line.startswith("+++ ")]
        result.problems.append(
            Problem(
                "idempotent",
                f"a second run exits {second.returncode} and changes {len(changed)} files, e.g. {changed[:2]}",
                second.stdout or second.stderr,
            )
        )


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------
# Import, build, trace, SVI: in a subprocess per package
# --------------------------------------------------------------------------------------


def probe_in_subprocess(package: Package, root: Path, deps: Optional[Path], result: Result) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), "--probe", package.name, "--root", str(root)]
    if deps:
        command += ["--deps", str(deps)]
    completed = run(command, cwd=root, timeout=900)
    for line in completed.stdout.splitlines():
        if line.startswith(PROBE_MARKER):
            result.models = json.loads(line[len(PROBE_MARKER) :])
    if not result.models:
        failure = f"the probe exited {completed.returncode}"
        result.models = {"(probe)": {"ok": False, "failures": [failure], "detail": tail(completed.stderr)}}
    for name, report in result.models.items():
        if not report["ok"]:
            result.problems.append(Problem(name, "; ".join(report["failures"]), report.get("detail", "")))


def probe(package: Package, root: Path, deps: Optional[Path]) -> dict[str, dict[str, Any]]:
    """In the subprocess: import the rewritten package, and build, trace and train each model."""
    sys.path[:0] = [str(root)] + ([str(deps)] if deps else [])
    if package.skip_init:
        stub = types.ModuleType(package.import_name)
        stub.__path__ = [str(root / package.import_name)]
        sys.modules[package.import_name] = stub
    reports = {}
    for model in package.models:
        try:
            reports[model.name] = probe_model(model)
        except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the others
            detail = "".join(traceback.format_exception(error))
            reports[model.name] = {"ok": False, "failures": [describe(error)], "detail": detail}
    return reports


def describe(error: BaseException) -> str:
    """The error's first line, and the last place it went through outside torch and pyro."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not any(part in frame.filename for part in ("/torch/", "/pyro/", "/realpackages.py"))
    ]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}{where}"


def probe_model(model: Model) -> dict[str, Any]:
    """Build the model, check how its modules are named, then trace and train it."""
    import pyro
    import torch
    from pyro.nn import PyroModule

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    net, args, kwargs = model.build()
    failures: list[str] = []

    # A plain nn.Module with parameters held by a PyroModule: pyro.module names them `a$$$b`,
    # and the PyroModules inside it are separate Pyro roots.
    modules = dict(net.named_modules())
    plain = [
        f"{path or '<root>'} ({type(module).__name__})"
        for path, module in modules.items()
        if not isinstance(module, PyroModule)
        and isinstance(modules[path.rpartition(".")[0]], PyroModule)
        and any(True for _ in module.parameters())
    ]
    if plain:
        failures.append(f"{len(plain)} modules with parameters are plain nn.Modules, e.g. {plain[:3]}")
    # Whether held PyroModules are named by their module path shows in the trace: Pyro
    # names a PyroModule when its parent first reads it, so every site of a module that a
    # separate root held would be named without its path (checked in trace_and_train).

    report: dict[str, Any] = {}
    try:
        trace_and_train(net, args, kwargs, model.expect, failures, report)
    except Exception as error:  # noqa: BLE001 - reported with what was found before it
        failures.append(describe(error))
        report["detail"] = "".join(traceback.format_exception(error))
    return {"ok": not failures, "failures": failures, **report}


def trace_and_train(net, args, kwargs, expect, failures: list[str], report: dict[str, Any]) -> None:
    """Trace ``net`` inside a Pyro model with a likelihood and take two SVI steps with
    AutoNormal; append what is wrong to ``failures`` and the counts to ``report``."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.poutine.util import site_is_subsample

    with torch.no_grad():
        example = as_tensor(net(*args, **kwargs))
    target = torch.randn(example.shape[0], example[0].numel())

    def bayesian_model(target):
        # The network reads its random attributes here, outside the plate.
        output = as_tensor(net(*args, **kwargs)).reshape(target.shape)
        with pyro.plate("data", target.shape[0]):
            pyro.sample("obs", dist.Normal(output, 1.0).to_event(1), obs=target)

    trace = poutine.trace(bayesian_model).get_trace(target)
    sample_sites = [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    param_sites = [name for name, site in trace.nodes.items() if site["type"] == "param"]

    for pattern in expect:
        if not fnmatch.filter(sample_sites, pattern):
            failures.append(f"no sample site matches {pattern!r}")
    dollars = [name for name in sample_sites + param_sites if "$$$" in name]
    if dollars:
        failures.append(f"{len(dollars)} sites are named with '$$$', e.g. {dollars[:3]}")
    parameters = {name for name, _ in net.named_parameters()}
    stray = [
        name
        for name in param_sites
        if "$$$" not in name and name not in parameters and f"{name}_unconstrained" not in parameters
    ]
    if stray:
        failures.append(f"{len(stray)} param sites are not named by a module path, e.g. {stray[:3]}")
    pyro.clear_param_store()
    guide = AutoNormal(bayesian_model)
    svi = SVI(bayesian_model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    losses = [svi.step(target) for _ in range(2)]
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"SVI losses are not finite: {losses}")
    untrained = [name for name in param_sites if name not in pyro.get_param_store()]
    if untrained:
        failures.append(
            f"{len(untrained)} parameters are not in the param store after SVI, e.g. {untrained[:3]}"
        )

    report.update(sample_sites=len(sample_sites), param_sites=len(param_sites), losses=losses)


def as_tensor(output):
    """The first tensor of a model's output (a tensor, a tuple, or a transformers ModelOutput)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)):
        return next(item for item in output if isinstance(item, torch.Tensor))
    raise TypeError(f"no tensor in the model's output {type(output).__name__}")


# --------------------------------------------------------------------------------------
# Driver and report
# --------------------------------------------------------------------------------------


def check_package(package: Package, cache: Path = DEFAULT_CACHE, keep: bool = False) -> Result:
    """Every check, for one package (what ``tests/test_realpackages.py`` runs too).

    :raises DownloadError: if the wheel or a dependency cannot be downloaded.
    """
    wheel_path, deps = fetch(package, cache)
    result = Result(package)
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix=f"bayesify-{package.name}-"))
    try:
        unpack(wheel_path, root)
        rewrite_and_check(package, root, result)
        if result.rewrote and result.compiled:
            probe_in_subprocess(package, root, deps, result)
    finally:
        result.seconds = time.perf_counter() - start
        if keep:
            result.kept = root
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


HEADER = (
    "package",
    "version",
    "files",
    "classes converted",
    "sites made random",
    "compiled",
    "idempotent",
    "imported+traced+SVI",
)


def mark(value: Optional[bool]) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[value]


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    table = []
    for result in results:
        random = str(result.random) + (f" (+{result.constrained} constrained)" if result.constrained else "")
        table.append(
            (
                result.package.name,
                result.package.version,
                str(result.files),
                str(result.classes),
                random,
                mark(result.compiled if result.rewrote is not False else False),
                mark(result.idempotent),
                mark(result.probed),
            )
        )
    return table


def text_table(results: list[Result]) -> str:
    table = [HEADER, *rows(results)]
    widths = [max(len(row[column]) for row in table) for column in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def model_line(name: str, report: dict[str, Any]) -> str:
    if "sample_sites" not in report:
        return f"`{name}`: {mark(report['ok'])} (see *What failed*)"
    losses = ", ".join(f"{loss:.1f}" for loss in report["losses"])
    return (
        f"`{name}`: {mark(report['ok'])}; {report['sample_sites']} random sites and "
        f"{report['param_sites']} learnable parameters traced; SVI losses {losses}"
    )


def markdown(results: list[Result], command: str) -> str:
    lines = [
        "# bayesify on real packages",
        "",
        "`bench/realpackages.py` downloads real PyTorch model packages from PyPI (pinned wheels and",
        "their small pure-Python dependencies, with `pip --no-deps`, into `~/.cache/bayesify-realpackages`;",
        "nothing of them is in this repository). For each one it writes a spec that selects real",
        "parameters (raw `nn.Parameter`s, weights of held layers, container globs), rewrites the package",
        "in a temporary folder, checks that every file compiles and that a second run changes nothing",
        "(`--check` exits 0), then, in a subprocess of its own, imports the rewritten package, builds a",
        "small model, traces it inside a Pyro model with a likelihood, and checks that the selected",
        "parameters are sample sites, that every site is named by its module path (no `$$$`, no module",
        "that became a separate Pyro root), that every module with parameters is a `PyroModule`, and",
        "that two SVI steps with `AutoNormal` and `Trace_ELBO` give finite losses.",
        "",
        "```bash",
        command,
        "pytest -m realpackages     # the same checks, as tests (deselected by default)",
        "```",
        "",
        f"Run on {datetime.date.today().isoformat()}: {machine()}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["--:"] * 3 + [":-:"] * 3) + "|",
        *["| " + " | ".join(row) + " |" for row in rows(results)],
        "",
        "*files*: Python files rewritten; *classes converted*: classes whose bases the rewrite made a",
        "`PyroModule`; *sites made random*: `bayesify`'s own count of spec matches (a `set_prior` glob",
        "counts once); every model's trace is described below.",
        "",
        "## The packages",
        "",
    ]
    for result in results:
        package = result.package
        lines.append(f"- **{package.name} {package.version}**: {package.style}.")
        lines += [f"  - {model_line(name, report)}" for name, report in result.models.items()]
    failing = [result for result in results if result.problems]
    if failing:
        lines += ["", "## What failed", ""]
        for result in failing:
            lines += [f"- **{result.package.name}**"]
            lines += [f"  - {problem.check}: {problem.summary}" for problem in result.problems]
    return "\n".join(lines).rstrip() + "\n"


def machine() -> str:
    import importlib.metadata as metadata

    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("bayesify", "libcst", "torch", "pyro-ppl")
    )
    return f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; {versions}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="only this package (repeatable)")
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="wheels and dependencies (default: %(default)s)"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write the table, command and machine here"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the rewritten packages (their folders are printed)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every problem with its details")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # the subprocess of probe_in_subprocess
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deps", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.probe:
        package = next(package for package in PACKAGES if package.name == options.probe)
        print(PROBE_MARKER + json.dumps(probe(package, options.root, options.deps)))
        return 0

    unknown = set(options.only or ()) - {package.name for package in PACKAGES}
    if unknown:
        parser.error(f"unknown packages {sorted(unknown)}; known: {[package.name for package in PACKAGES]}")
    results = []
    for package in PACKAGES:
        if options.only and package.name not in options.only:
            continue
        print(f"{package.name} {package.version} ...", file=sys.stderr, flush=True)
        try:
            result = check_package(package, options.cache_dir, options.keep)
        except DownloadError as error:
            print(f"  {error}", file=sys.stderr)
            return 2
        print(
            f"  {'pass' if result.passed else 'FAIL'} in {result.seconds:.0f}s", file=sys.stderr, flush=True
        )
        results.append(result)

    print(text_table(results))
    for result in results:
        if result.problems or result.kept or (options.verbose and result.warnings):
            print(f"\n{result.package.name}:" + (f" (kept in {result.kept})" if result.kept else ""))
        for problem in result.problems:
            print(f"  {problem.check}: {problem.summary}")
            if options.verbose and problem.detail:
                print(textwrap.indent(problem.detail.rstrip(), "      "))
        if options.verbose:
            for warning in result.warnings:
                print(f"  bayesify {warning}")
    if options.markdown:
        command = f"python bench/realpackages.py --markdown {options.markdown}"
        # The zoo's section (bench/zoo.py) is that script's: keep it.
        existing = options.markdown.read_text(encoding="utf-8") if options.markdown.exists() else ""
        zoo = existing[existing.index(ZOO_SECTION) :] if ZOO_SECTION in existing else ""
        options.markdown.write_text(
            markdown(results, command) + ("\n" + zoo if zoo else ""), encoding="utf-8"
        )
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
