"""Linear, embedding and convolution layers whose weights may carry a leading batch of samples.

Under ``Predictive(..., parallel=True)`` or ``Trace_ELBO(vectorize_particles=True)``, Pyro
samples every weight once per particle in one go, inside a plate to the left of the model's
own plates: a ``Linear`` weight of shape ``(out, in)`` arrives as ``(particles, 1, out, in)``.
``torch.nn.Linear`` and ``torch.nn.Conv2d`` accept only one weight. Importing
:mod:`bayesify.runtime` makes ``PyroModule[nn.Linear]``, ``PyroModule[nn.Embedding]``,
``PyroModule[nn.Conv1d|2d|3d]`` and ``PyroModule[nn.ConvTranspose1d|2d|3d]`` (what the rewrite and
:func:`~bayesify.runtime.pyro_module` turn those layers into) the classes below, which accept
both (and ``PyroModule[nn.BatchNorm1d|2d|3d]`` in eval mode takes their outputs)::

    layer = PyroModule[nn.Linear](3, 2)
    layer.weight = PyroSample(dist.Normal(0, 1).expand([2, 3]).to_event(2))
    with pyro.plate("particles", 100, dim=-2):
        layer(torch.randn(8, 3)).shape   # (100, 8, 2): one output per weight sample

The weight's batch dimensions line up with the input's batch dimensions from the right, as
Pyro's plates do; a weight batch dimension of size 1 (the model's data plate) is shared by
the inputs there. The computation is one matrix product (one convolution) for all samples.

The operations are Pyro effects (:func:`~pyro.poutine.runtime.effectful`, of types
``"linear"``, ``"conv"`` and ``"conv_transpose"``), so an effect handler can replace them:
see :mod:`bayesify.runtime.handlers` for local reparameterization and flipout (of linear
layers and convolutions), and :class:`SamplesInBatchMessenger` for prediction through
networks written for one batch dimension.
"""

import functools
import inspect
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from pyro.distributions.util import broadcast_shape
from pyro.nn import PyroModule
from pyro.nn.module import _PyroModuleMeta
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import effectful, get_plates
from torch import nn
from torch.overrides import TorchFunctionMode

from bayesify.runtime.prior import SAMPLE_PLATES

_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSED_CONVOLUTIONS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def output_batch(weight_batch: torch.Size, input_batch: torch.Size) -> Tuple[torch.Size, torch.Size]:
    """
    Splits the batch shape of a layer's output into ``(samples, rows)``: ``rows`` are the
    input's dimensions that meet the weight's trailing batch dimensions of size 1 (one
    weight serves them all), ``samples`` the broadcast of the weight's other batch
    dimensions with the input's dimensions left of ``rows``. The output's batch shape is
    ``samples + rows``.
    """
    shared = 0
    for size in reversed(weight_batch):
        if size != 1:
            break
        shared += 1
    split = max(0, len(input_batch) - shared)
    rows = (1,) * (shared - (len(input_batch) - split)) + tuple(input_batch[split:])
    weight_samples, input_samples = weight_batch[: len(weight_batch) - shared], input_batch[:split]
    return torch.Size(broadcast_shape(weight_samples, input_samples)), torch.Size(rows)


def _batched_linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    if weight.dim() <= 2:
        return F.linear(input, weight, bias)
    out_features, in_features = weight.shape[-2:]
    samples, rows = output_batch(weight.shape[:-2], input.shape[:-1])
    sample_dims = max(0, input.dim() - 1 - len(rows))
    # One batched product, (samples, rows, in) @ (samples, in, out), an input shared by every
    # sample broadcast over them: its output is laid out sample by sample, as the next
    # layer's product reads it.
    inputs = input.reshape(*input.shape[:sample_dims], -1, in_features)
    output = torch.matmul(inputs, weight.reshape(*samples, out_features, in_features).transpose(-1, -2))
    output = output.reshape(*samples, *rows, out_features)
    return output if bias is None else _add_bias(output, bias)


def _batched_conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    dims: int,
    stride=1,
    padding: Union[str, int, tuple] = 0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    convolve = _CONVOLUTIONS[dims]
    if weight.dim() <= dims + 2:
        return convolve(input, weight, bias, stride, padding, dilation, groups)

    def operation(input: torch.Tensor, weights: torch.Tensor, bias, groups: int) -> torch.Tensor:
        return convolve(input, weights, bias, stride, padding, dilation, groups)

    # A weight (out, in / groups, *kernel); an input shared by every sample can go through
    # one convolution whose output channels are those of all samples side by side.
    return _every_sample(
        operation, input, weight, bias, dims, weight.shape[-dims - 2], groups, shareable=True
    )


def _batched_conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    dims: int,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> torch.Tensor:
    transpose = _TRANSPOSED_CONVOLUTIONS[dims]
    if weight.dim() <= dims + 2:
        return transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)

    def operation(input: torch.Tensor, weights: torch.Tensor, bias, groups: int) -> torch.Tensor:
        return transpose(input, weights, bias, stride, padding, output_padding, groups, dilation)

    # A weight (in, out / groups, *kernel): its samples line up by input channel only.
    channels_out = weight.shape[-dims - 1] * groups
    return _every_sample(operation, input, weight, bias, dims, channels_out, groups, shareable=False)


def _batched_embedding(
    input: torch.Tensor,
    weight: torch.Tensor,
    padding_idx: Optional[int] = None,
    max_norm: Optional[float] = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> torch.Tensor:
    if weight.dim() <= 2:
        return F.embedding(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise ValueError(
            "an Embedding with max_norm, scale_grad_by_freq or sparse takes one sample of its weight at a time"
        )
    samples, rows = output_batch(weight.shape[:-2], input.shape)
    count = math.prod(samples)
    # Each sample's rows looked up in its own table: one gather for all samples.
    indices = input.expand(*samples, *rows).reshape(count, -1)
    tables = weight.expand(*samples, *(1,) * (weight.dim() - 2 - len(samples)), *weight.shape[-2:])
    output = tables.reshape(count, *weight.shape[-2:])[torch.arange(count).unsqueeze(-1), indices]
    if padding_idx is not None and output.requires_grad:
        # F.embedding's padding row gets no gradient.
        output = torch.where((indices == padding_idx).unsqueeze(-1), output.detach(), output)
    return output.reshape(*samples, *rows, weight.shape[-1])


def _every_sample(
    operation,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias,
    dims: int,
    channels_out: int,
    groups: int,
    shareable: bool,
) -> torch.Tensor:
    """A convolution ``operation(input, weights, bias, groups)`` with each sample's weight. For
    one sample, or large inputs on a CPU (:func:`_by_sample`), one call a sample, its bias
    added by the convolution: torch's grouped convolution there takes about twice as long as
    its groups one by one, and adding the bias apart is one more pass over the outputs.
    Elsewhere in one call: a grouped one,
    each sample's input channels and weights a set of groups of their own, or
    (``shareable``, one group, an input shared by every sample) a plain one with the
    samples' weights stacked."""
    channels_in, spatial = input.shape[-dims - 1], input.shape[-dims:]
    samples, rows = output_batch(weight.shape[: -dims - 2], input.shape[: -dims - 1])
    count = math.prod(samples)
    weights = weight.reshape(count * weight.shape[-dims - 2], *weight.shape[-dims - 1 :])
    biases = None  # each sample's bias, where the convolution adds it
    if _by_sample(input, count, math.prod(rows) * channels_in * math.prod(spatial)):
        each = input.expand(*samples, *rows, channels_in, *spatial).reshape(count, -1, channels_in, *spatial)
        biases = _each_bias(bias, count, channels_out)
        outputs = [
            operation(*arguments, groups)
            for arguments in zip(each, weights.chunk(count), biases if biases is not None else [None] * count)
        ]
        output = outputs[0][None] if count == 1 else torch.stack(outputs)
    else:
        if shareable and input.dim() - dims - 1 <= len(rows) and groups == 1:
            output = operation(input.reshape(-1, channels_in, *spatial), weights, None, 1)
        else:
            stacked = input.expand(*samples, *rows, channels_in, *spatial)
            stacked = stacked.reshape(count, -1, channels_in, *spatial).transpose(0, 1)
            output = operation(
                stacked.reshape(-1, count * channels_in, *spatial), weights, None, groups * count
            )
        output = output.reshape(-1, count, channels_out, *output.shape[2:]).transpose(0, 1)
    output = output.reshape(*samples, *rows, *output.shape[2:])
    if bias is None or biases is not None:
        return output
    return _add_bias(output, bias.reshape(*bias.shape, *(1,) * dims))


def _by_sample(input: torch.Tensor, count: int, size: int) -> bool:
    """Whether a convolution of ``count`` samples' weights, on inputs of ``size`` elements a
    sample, runs one call a sample: for one sample; on a CPU, where each sample's input is
    large (a million elements: a ConvNet of 32 channels on 600 images of 8×8 took 0.37 s to
    predict 20 samples in passes of 8, 0.68 s grouped), not where it is small (a ResNet of 4
    to 128 channels on 4 images of 32×32: 0.40 s against 0.27 s, the calls' own cost the
    larger)."""
    return count == 1 or (input.device.type == "cpu" and size >= CPU_LARGE_INPUT)


#: How many elements each sample's input to a convolution holds, at least, for one call a
#: sample on a CPU.
CPU_LARGE_INPUT = 2**20


def _each_bias(bias: Optional[torch.Tensor], count: int, channels: int):
    """Each sample's bias, for ``count`` samples: one shared by all, or one a sample; None
    where there is none or it varies along other dimensions too."""
    if bias is None:
        return None
    if bias.dim() == 1:
        return [bias] * count
    if bias.numel() == count * channels:
        return bias.reshape(count, channels)
    return None


def _add_bias(output: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``output + bias``, into ``output`` where nothing differentiates through it (prediction):
    the product's output is as large as the layer's activations for every sample, and a second
    tensor of that size is a pass over memory that is out of cache. The product keeps its
    inputs for its gradient, not its output, but an in-place add under autograd would add a
    node to copy it back into the view, so under autograd it stays out of place."""
    fits = (
        bias.dtype == output.dtype
        and bias.dim() <= output.dim()
        and all(size in (1, into) for size, into in zip(reversed(bias.shape), reversed(output.shape)))
    )
    if output.requires_grad or bias.requires_grad or not fits:
        return output + bias
    return output.add_(bias)


def _plated(value: Optional[torch.Tensor], event_dims: int) -> Optional[torch.Tensor]:
    """
    ``value`` with one batch dimension for each enclosing plate, counted from the right.

    ``Predictive(parallel=True)`` hands the model a weight of shape ``(samples, out, in)``
    where the site's distribution has the batch shape ``(samples, 1)`` of its plates: Pyro
    pads a sample's shape to the plates' nesting by its number of dimensions, event
    dimensions included. The missing dimensions of size 1 are put back here.
    """
    if value is None or value.dim() <= event_dims:
        return value
    batch = value.shape[: value.dim() - event_dims]
    plates = {-frame.dim: frame.size for frame in get_plates() if frame.vectorized and frame.dim is not None}
    nesting = max(plates, default=0)
    if len(batch) < nesting and plates.get(nesting) == batch[0]:
        return value.reshape(*batch, *(1,) * (nesting - len(batch)), *value.shape[len(batch) :])
    return value


#: ``linear(input, weight, bias)``: :func:`torch.nn.functional.linear`, for weights with a
#: leading batch too, as a Pyro effect of type ``"linear"``.
linear = effectful(_batched_linear, type="linear")

#: ``conv(input, weight, bias, dims, stride, padding, dilation, groups)``: the
#: ``dims``-dimensional convolution, for weights with a leading batch too, as a Pyro effect of
#: type ``"conv"``.
conv = effectful(_batched_conv, type="conv")

#: ``conv_transpose(input, weight, bias, dims, stride, padding, output_padding, groups,
#: dilation)``: the ``dims``-dimensional transposed convolution, for weights with a leading
#: batch too, as a Pyro effect of type ``"conv_transpose"``.
conv_transpose = effectful(_batched_conv_transpose, type="conv_transpose")


#: ``embedding(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)``:
#: :func:`torch.nn.functional.embedding`, for weights with a leading batch too, as a Pyro
#: effect of type ``"embedding"``.
embedding = effectful(_batched_embedding, type="embedding")


class SamplesInBatchMessenger(Messenger):
    """
    Computes the rewritten layers for ``count`` weight samples when the network's batch
    holds its inputs once per sample, sample by sample (``x.repeat(count, 1)``):
    each ``"linear"``, ``"embedding"``, ``"conv"`` and ``"conv_transpose"`` effect whose weight carries the
    samples splits its input's first dimension into ``(count, rows)``, applies each sample's
    weight to its own rows, and merges the two again. Everything between the layers sees an
    ordinary batch of ``count * rows`` inputs, so code written for one batch dimension
    (``BatchNorm2d``, ``x.view(x.size(0), -1)``, ``x.mean((2, 3))``) computes as it was
    written. It is what :func:`~bayesify.runtime.predict` uses when every random site is a
    weight or bias of such a layer; a random parameter used anywhere else would meet the
    merged batch.

    :param int count: the number of weight samples.
    :param shared: ``(input, batch)``, the network's input and the batch it reads, ``input``
        repeated once per sample: a layer that reads ``batch`` itself computes on ``input``,
        shared by every sample, rather than on its copies.
    """

    def __init__(self, count: int, shared: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> None:
        super().__init__()
        self.count = count
        self._input, self._repeated = shared or (None, None)

    def _pyro_linear(self, msg) -> None:
        input, weight, bias = msg["args"]
        if self._carries_samples(weight, 2):
            if self._reads_shared(input):
                rows = self._input.reshape(-1, input.shape[-1])
            else:
                rows = input.reshape(self.count, -1, input.shape[-1])
            output = _batched_linear(rows, self._per_sample(weight, 2), self._per_sample(bias, 1))
            msg["value"] = output.reshape(*input.shape[:-1], output.shape[-1])

    def _pyro_embedding(self, msg) -> None:
        input, weight, *options = msg["args"]
        if self._carries_samples(weight, 2):
            output = _batched_embedding(input.reshape(self.count, -1), self._per_sample(weight, 2), *options)
            msg["value"] = output.reshape(*input.shape, output.shape[-1])

    def _pyro_conv(self, msg) -> None:
        self._convolve(_batched_conv, msg)

    def _pyro_conv_transpose(self, msg) -> None:
        self._convolve(_batched_conv_transpose, msg)

    def _convolve(self, operation, msg) -> None:
        input, weight, bias, dims, *options = msg["args"]
        if self._carries_samples(weight, dims + 2):
            if self._reads_shared(input):
                rows = self._input
            else:
                rows = input.reshape(self.count, -1, *input.shape[1:])
            weight, bias = self._per_sample(weight, dims + 2), self._per_sample(bias, 1)
            output = operation(rows, weight, bias, dims, *options)
            msg["value"] = output.reshape(input.shape[0], *output.shape[2:])

    def _reads_shared(self, input: torch.Tensor) -> bool:
        # Not where the network differentiates by its input (DeepXDE's x.requires_grad_() in
        # its forward): each sample's rows must then be in its graph.
        return input is self._repeated and not input.requires_grad

    def _carries_samples(self, weight: torch.Tensor, event_dims: int) -> bool:
        return weight.dim() > event_dims and math.prod(weight.shape[:-event_dims]) == self.count

    def _per_sample(self, value: Optional[torch.Tensor], event_dims: int) -> Optional[torch.Tensor]:
        """``value`` with the batch shape ``(count, 1)``: one per sample, shared by its rows."""
        if value is None or value.dim() <= event_dims:
            return value
        return value.reshape(self.count, 1, *value.shape[-event_dims:])


class FunctionalLayers(TorchFunctionMode):
    """
    Routes calls of :func:`torch.nn.functional.linear`, ``embedding``, ``conv1d|2d|3d`` and
    ``conv_transpose1d|2d|3d`` whose weight carries sample dimensions to the batched effects
    above (``"linear"``, ``"embedding"``, ``"conv"``, ``"conv_transpose"``), as a rewritten layer's forward
    would; and :func:`torch.addmm` ``(bias, rows, weight)`` with such a weight, a linear layer
    whose weight is stored ``(in, out)`` (transformers' ``Conv1D``, GPT-2's projections), to
    ``"linear"``. Code that calls the functional form itself with a layer's weight (a
    subclass whose forward does, as timm's ``Linear``; an attention that projects with
    ``F.linear(x, self.qkv.weight, bias)``) then takes a batch of weight samples as the
    rewritten layers do, :class:`SamplesInBatchMessenger` included. Calls with an ordinary
    weight run as they are. :func:`~bayesify.runtime.predict` computes its passes inside it
    where they fail without it: every torch call of a pass is then a Python call.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        routed = _FUNCTIONAL.get(func)
        if routed is not None:
            effect, weight_dims, arguments = routed
            effect_args = arguments(*args, **kwargs)
            weight = effect_args[1]
            if weight is not None and weight.dim() > weight_dims:
                return effect(*effect_args)
        return func(*args, **kwargs)


def _linear_arguments(input, weight, bias=None):
    return input, weight, bias


def _addmm_arguments(input, mat1, mat2, *, beta=1, alpha=1, out=None):
    """``addmm(bias, rows, weight)`` as ``linear(rows, weight.T, bias)``; no weight (nothing
    to route) where it scales or writes into ``out``."""
    if beta != 1 or alpha != 1 or out is not None:
        return mat1, None, input
    return mat1, mat2.transpose(-1, -2), input


def _embedding_arguments(
    input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False
):
    return input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse


def _conv_arguments(dims, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, dims, stride, padding, dilation, groups


def _conv_transpose_arguments(
    dims, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    return input, weight, bias, dims, stride, padding, output_padding, groups, dilation


_ATTENTION = inspect.signature(F.multi_head_attention_forward)


def _attention_arguments(*args, **kwargs):
    """``multi_head_attention_forward``'s arguments by name, and its output projection's weight."""
    arguments = _ATTENTION.bind(*args, **kwargs).arguments
    return arguments, arguments["out_proj_weight"]


def _attention_then_projection(arguments: dict, out_proj_weight: torch.Tensor):
    """Multi-head attention whose output projection carries samples (``nn.MultiheadAttention``'s
    ``out_proj``, a ``Linear`` that ``nn.Linear.weight`` selects, inside torch's functional
    attention): the attention with the identity for a projection, then the batched ``"linear"``
    effect on its rows, batch first as the layers read them."""
    for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        if arguments.get(name) is not None and arguments[name].dim() > 2:
            raise ValueError(f"multi-head attention takes one sample of its {name} at a time")
    size = out_proj_weight.shape[-1]
    identity = torch.eye(size, dtype=out_proj_weight.dtype, device=out_proj_weight.device)
    attended, attention = F.multi_head_attention_forward(
        **{**arguments, "out_proj_weight": identity, "out_proj_bias": None}
    )
    if attended.dim() == 2:  # one sequence, unbatched
        return linear(attended, out_proj_weight, arguments["out_proj_bias"]), attention
    projected = linear(attended.transpose(0, 1), out_proj_weight, arguments["out_proj_bias"])
    return projected.transpose(-3, -2), attention


#: torch's functional layers, by function: what takes a batch of weights instead (an effect;
#: for torch's attention, a function that applies one), the number of dimensions of one
#: weight, and the function's arguments in its order (the weight second).
_FUNCTIONAL = {
    F.linear: (linear, 2, _linear_arguments),
    torch.addmm: (linear, 2, _addmm_arguments),
    F.embedding: (embedding, 2, _embedding_arguments),
    F.multi_head_attention_forward: (_attention_then_projection, 2, _attention_arguments),
    **{
        function: (conv, dims + 2, functools.partial(_conv_arguments, dims))
        for dims, function in _CONVOLUTIONS.items()
    },
    **{
        function: (conv_transpose, dims + 2, functools.partial(_conv_transpose_arguments, dims))
        for dims, function in _TRANSPOSED_CONVOLUTIONS.items()
    },
}


class _PyroMixin:
    """What Pyro's ``PyroModule[Layer]`` adds: pickling by the layer class."""

    _layer: type

    def __reduce__(self):
        state = getattr(self, "__getstate__", self.__dict__.copy)()
        return _PyroModuleMeta._New, (self._layer,), state


class PyroLinear(_PyroMixin, nn.Linear, PyroModule):
    """``PyroModule[nn.Linear]`` whose weight and bias may carry leading sample dimensions."""

    _layer = nn.Linear

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, _plated(self.weight, 2), _plated(self.bias, 1))


class PyroEmbedding(_PyroMixin, nn.Embedding, PyroModule):
    """``PyroModule[nn.Embedding]`` whose weight may carry leading sample dimensions."""

    _layer = nn.Embedding

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        options = (self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse)
        return embedding(input, _plated(self.weight, 2), self.padding_idx, *options)


class _PyroConv(_PyroMixin):
    _dims: int

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        weight, bias = _plated(self.weight, self._dims + 2), _plated(self.bias, 1)
        return conv(input, weight, bias, self._dims, self.stride, padding, self.dilation, self.groups)


class _PyroConvTranspose(_PyroMixin):
    _dims: int

    def forward(self, input: torch.Tensor, output_size: Optional[List[int]] = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {self._layer.__name__}")
        # torch reads the sizes of one batch of inputs: without the sample dimensions.
        one_batch = input[(0,) * max(0, input.dim() - self._dims - 2)]
        output_padding = self._output_padding(
            one_batch, output_size, self.stride, self.padding, self.kernel_size, self._dims, self.dilation
        )
        weight, bias = _plated(self.weight, self._dims + 2), _plated(self.bias, 1)
        return conv_transpose(
            input,
            weight,
            bias,
            self._dims,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )


def _pyro_layer(layer: type, dims: int, forward: type = _PyroConv) -> type:
    return type(
        "Pyro" + layer.__name__,
        (forward, layer, PyroModule[layer.__bases__[0]]),
        {
            "_layer": layer,
            "_dims": dims,
            "__module__": __name__,
            "__doc__": f"``PyroModule[nn.{layer.__name__}]`` whose weight and bias may carry leading "
            "sample dimensions.",
        },
    )


PyroConv1d = _pyro_layer(nn.Conv1d, 1)
PyroConv2d = _pyro_layer(nn.Conv2d, 2)
PyroConv3d = _pyro_layer(nn.Conv3d, 3)
PyroConvTranspose1d = _pyro_layer(nn.ConvTranspose1d, 1, _PyroConvTranspose)
PyroConvTranspose2d = _pyro_layer(nn.ConvTranspose2d, 2, _PyroConvTranspose)
PyroConvTranspose3d = _pyro_layer(nn.ConvTranspose3d, 3, _PyroConvTranspose)

#: The layers whose weights may carry samples.
BATCHED_LAYERS = (PyroLinear, PyroEmbedding, _PyroConv, _PyroConvTranspose)

#: The dimensions a batch norm of 1, 2 and 3 dimensions takes, with its channels second.
_NORMALIZED_DIMS = {1: (2, 3), 2: (4,), 3: (5,)}


class _PyroBatchNorm(_PyroMixin):
    """A batch norm in eval mode, after a layer whose weights carry samples: under Pyro's
    vectorised plates (``Predictive(parallel=True)``, ``vectorize_particles=True``) its input
    has the samples' dimensions first, ``(samples, batch, channels)``, which torch read as
    ``(batch, channels, length)``: an error, or where the batch had as many rows as there
    were channels, every row normalized by another channel's statistics, silently. The
    samples are normalized as more rows of the batch."""

    _dims: int

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        samples = self._sample_dims(input)
        if not samples:
            return super().forward(input)
        if self.training or not self.track_running_stats:
            raise ValueError(
                f"{self._layer.__name__} normalizes by batch statistics (in training mode, or without "
                f"running statistics), and its input "
                f"{tuple(input.shape)} carries {tuple(input.shape[:samples])} weight samples, whose "
                "statistics would mix: train with one particle a step (fit's default), or in eval mode"
            )
        flat = input.flatten(0, samples)
        normalized = F.batch_norm(flat, self.running_mean, self.running_var, eps=self.eps).view(input.shape)
        # The scale and shift, random too, carry the samples as well: (samples, 1, channels).
        for value, apply in ((self.weight, torch.mul), (self.bias, torch.add)):
            if value is not None:
                lead = value.shape[:-1]
                spread = (*lead, *(1,) * (samples + 1 - len(lead)), -1, *(1,) * (input.dim() - samples - 2))
                normalized = apply(normalized, value.reshape(spread))
        return normalized

    def _sample_dims(self, input: torch.Tensor) -> int:
        """How many of the input's first dimensions are the samples of a Pyro plate around it."""
        normalized = _NORMALIZED_DIMS[self._dims]
        leading = next(
            (
                leading
                for leading in range(1, input.dim())
                if input.dim() - leading in normalized and input.shape[leading + 1] == self.num_features
            ),
            0,
        )
        # The shape first: Pyro's plates are looked up only where it may hold samples, not at
        # every call of every batch norm of a network trained or predicted without them.
        if not leading or not any(
            frame.vectorized and frame.name in SAMPLE_PLATES and frame.size == len(input)
            for frame in get_plates()
        ):
            return 0
        if input.dim() in normalized and input.shape[1] == self.num_features:
            raise ValueError(
                f"{self._layer.__name__}'s input {tuple(input.shape)} may be {len(input)} weight samples of a "
                "batch (samples, batch, channels) or one batch (batch, channels, length), which its shape "
                "cannot tell apart: use Predictive without parallel=True, or bayesify's predict"
            )
        return leading


class _OneSampleAtATime(_PyroMixin):
    """A recurrent layer takes one sample of its weights at a time: torch's ``nn.LSTM``, given
    weights with a leading batch of samples, computes every sample with the first one's, and
    says nothing. Refusing them turns that into an error that names the layer, so that
    :func:`~bayesify.runtime.predict` runs such a network once per sample and
    ``Predictive(parallel=True)`` or a vectorised ELBO stops."""

    def forward(self, *args, **kwargs):
        names = getattr(self, "_flat_weights_names", None) or ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for name in names:
            value = getattr(self, name, None)  # a random weight is sampled once a call: read again below
            if value is not None and value.dim() > (1 if name.startswith("bias") else 2):
                raise ValueError(
                    f"{self._layer.__name__} takes one sample of its weights at a time, and its {name} "
                    f"carries samples {tuple(value.shape[:-2 if value.dim() > 1 else -1])}: a network with "
                    "a random recurrent layer runs once per weight sample (predict does so by itself; use "
                    "Predictive without parallel=True, and an ELBO without vectorize_particles=True)"
                )
        return super().forward(*args, **kwargs)


PyroBatchNorm1d = _pyro_layer(nn.BatchNorm1d, 1, _PyroBatchNorm)
PyroBatchNorm2d = _pyro_layer(nn.BatchNorm2d, 2, _PyroBatchNorm)
PyroBatchNorm3d = _pyro_layer(nn.BatchNorm3d, 3, _PyroBatchNorm)


def _pyro_recurrent(layer: type) -> type:
    return type(
        "Pyro" + layer.__name__,
        (_OneSampleAtATime, layer, PyroModule[layer.__bases__[0]]),
        {
            "_layer": layer,
            "__module__": __name__,
            "__doc__": f"``PyroModule[nn.{layer.__name__}]``, which refuses weights that carry samples.",
        },
    )


# Pyro builds ``PyroModule[Layer]`` once per layer class and keeps it in this cache (it places
# its own ``PyroModuleList`` there the same way): from now on ``PyroModule[nn.Linear]``, and
# ``to_pyro_module_`` on an ``nn.Linear``, give the batched class (a recurrent layer, the class
# that refuses batched weights). A subclass ``PyroModule[MyLinear]`` made afterwards derives
# from it too.
for _layer, _pyro_class in (
    (nn.Linear, PyroLinear),
    (nn.Embedding, PyroEmbedding),
    (nn.Conv1d, PyroConv1d),
    (nn.Conv2d, PyroConv2d),
    (nn.Conv3d, PyroConv3d),
    (nn.ConvTranspose1d, PyroConvTranspose1d),
    (nn.ConvTranspose2d, PyroConvTranspose2d),
    (nn.ConvTranspose3d, PyroConvTranspose3d),
    (nn.BatchNorm1d, PyroBatchNorm1d),
    (nn.BatchNorm2d, PyroBatchNorm2d),
    (nn.BatchNorm3d, PyroBatchNorm3d),
    *(
        (layer, _pyro_recurrent(layer))
        for layer in (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)
    ),
):
    _PyroModuleMeta._pyro_mixin_cache[_layer] = _pyro_class
