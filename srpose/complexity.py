"""Model complexity: parameter counts, mmcv-convention MACs and all-ops FLOPs.

``count_macs`` reproduces the convention of mmcv 1.x ``get_model_complexity_info``
(``mmcv/cnn/utils/flops_counter.py``), which the SRPose paper's "GFLOPs" column uses:
forward hooks on modules whose type is *exactly* one of a fixed list of ``torch.nn``
classes, one multiply-add counted as one "FLOP" (so the numbers are MACs):

- ``Conv1d/2d/3d``: ``prod(kernel) * in_channels * (out_channels // groups)`` per output
  position, plus ``out_channels`` per output position when there is a bias.
- ``ConvTranspose2d``: the same per-position cost counted over the *input* spatial size,
  plus ``out_channels`` per *output* position for the bias.
- ``Linear``: ``numel(input) * out_features`` (all leading dims; the bias is NOT counted).
- ``BatchNorm1d/2d/3d``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``, ``LayerNorm``:
  ``numel(input)``, doubled when the norm is affine (``affine``/``elementwise_affine``).
- ``ReLU``, ``PReLU``, ``ELU``, ``LeakyReLU``, ``ReLU6``: ``numel(output)``.
- ``MaxPool*``, ``AvgPool*``, ``Adaptive{Max,Avg}Pool*``: ``numel(input)``.
- ``Upsample``: ``numel(output)`` (its subclasses such as ``UpsamplingNearest2d`` are not).

Everything else counts zero: ``GELU``, ``Sigmoid``, ``Softmax``, functional ops
(``F.interpolate``, ``F.pixel_shuffle``, ``torch.matmul``, additions...), parameters used
through functional calls, and subclasses of the listed types (mmcv matches ``type(m)``
exactly). In particular ``nn.MultiheadAttention`` counts zero: its in-projection is a bare
parameter and ``F.multi_head_attention_forward`` uses ``out_proj.weight`` directly, so the
``out_proj`` module's forward (and hook) never runs; besides, ``out_proj`` is a
``NonDynamicallyQuantizableLinear``, not an ``nn.Linear``. SRPose's own attention modules
behave the same way. PyTorch's MHA/Transformer "fast path" (which skips submodule calls of
``nn.TransformerEncoderLayer``) is switched off while counting, as it did not exist in the
PyTorch versions the paper used.

``count_all_ops_flops`` instead uses ``torch.utils.flop_counter.FlopCounterMode``, which
counts 2 FLOPs per multiply-add of every matmul/convolution/attention op (biases,
normalisations and activations excluded); a formula for the CPU flash-attention kernel, which
its registry lacks, is added so that attention is counted on CPU as on GPU.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "Complexity",
    "complexity_report",
    "count_all_ops_flops",
    "count_all_ops_macs",
    "count_macs",
    "count_params",
]


# --------------------------------------------------------------------------- counters
# Each counter takes (module, positional inputs, output) like a forward hook and returns
# the MACs of that call under mmcv 1.x's convention.


def _conv_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    batch = inputs[0].shape[0]
    positions = batch * math.prod(output.shape[2:])
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    bias = m.out_channels * positions if m.bias is not None else 0
    return per_position * positions + bias


def _deconv_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    x = inputs[0]
    batch = x.shape[0]
    in_positions = batch * math.prod(x.shape[2:])
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    bias = m.out_channels * batch * math.prod(output.shape[2:]) if m.bias is not None else 0
    return per_position * in_positions + bias


def _linear_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    return inputs[0].numel() * output.shape[-1]


def _norm_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return inputs[0].numel() * (2 if affine else 1)


def _activation_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    return output.numel()


def _pool_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    return inputs[0].numel()


def _upsample_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    # mmcv counts the elements of output[0]; equal to numel(output) at batch 1.
    return output[0].numel()


_COUNTERS: dict[type, Callable[[nn.Module, tuple, Any], int]] = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.Conv3d: _conv_macs,
    nn.ConvTranspose2d: _deconv_macs,
    nn.Linear: _linear_macs,
    nn.ReLU: _activation_macs,
    nn.PReLU: _activation_macs,
    nn.ELU: _activation_macs,
    nn.LeakyReLU: _activation_macs,
    nn.ReLU6: _activation_macs,
    nn.MaxPool1d: _pool_macs,
    nn.MaxPool2d: _pool_macs,
    nn.MaxPool3d: _pool_macs,
    nn.AvgPool1d: _pool_macs,
    nn.AvgPool2d: _pool_macs,
    nn.AvgPool3d: _pool_macs,
    nn.AdaptiveMaxPool1d: _pool_macs,
    nn.AdaptiveMaxPool2d: _pool_macs,
    nn.AdaptiveMaxPool3d: _pool_macs,
    nn.AdaptiveAvgPool1d: _pool_macs,
    nn.AdaptiveAvgPool2d: _pool_macs,
    nn.AdaptiveAvgPool3d: _pool_macs,
    nn.BatchNorm1d: _norm_macs,
    nn.BatchNorm2d: _norm_macs,
    nn.BatchNorm3d: _norm_macs,
    nn.GroupNorm: _norm_macs,
    nn.InstanceNorm1d: _norm_macs,
    nn.InstanceNorm2d: _norm_macs,
    nn.InstanceNorm3d: _norm_macs,
    nn.LayerNorm: _norm_macs,
    nn.Upsample: _upsample_macs,
}


# --------------------------------------------------------------------------- helpers


def _batched_shape(input_shape: tuple[int, ...], batched: bool | None) -> tuple[int, ...]:
    """Full batch-1 input shape from a per-sample or full shape (see ``count_macs``)."""
    if not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) == 0:
        raise ValueError(
            f"input_shape must be a non-empty tuple of ints such as (3, 256, 192), "
            f"got {input_shape!r}")
    shape = tuple(input_shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape must contain positive ints only, got {input_shape!r}")
    if batched is None:
        batched = len(shape) == 4 and shape[0] == 1
    if not batched:
        return (1, *shape)
    if shape[0] != 1:
        raise ValueError(
            f"complexity is counted for batch size 1, but input_shape {input_shape!r} has "
            f"batch {shape[0]}; pass (1, *{shape[1:]!r}) or the per-sample shape {shape[1:]!r}")
    return shape


def _make_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A deterministic input tensor on the model's device and dtype."""
    try:
        p = next(model.parameters())
        dtype, device = p.dtype, p.device
    except StopIteration:
        dtype, device = torch.get_default_dtype(), torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


@contextlib.contextmanager
def _eval_forward_context(model: nn.Module) -> Iterator[None]:
    """Eval mode, no grad, MHA fast path off; every module's training flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    try:
        model.eval()
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with torch.no_grad():
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
        for m, training in modes:
            m.training = training


class _TensorUse(TorchFunctionMode):
    """Records which of the watched tensors are passed to any torch function."""

    def __init__(self, watched: set[int]) -> None:
        super().__init__()
        self.watched = watched
        self.used: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        stack: list[Any] = [args, kwargs]
        while stack:
            obj = stack.pop()
            if isinstance(obj, torch.Tensor):
                if id(obj) in self.watched:
                    self.used.add(id(obj))
            elif isinstance(obj, (list, tuple)):
                stack.extend(obj)
            elif isinstance(obj, dict):
                stack.extend(obj.values())
        return func(*args, **kwargs)


@dataclass
class _Run:
    macs: int
    output: Any
    ran: set[int]  # ids of watched modules whose forward ran
    used: set[int]  # ids of watched parameters passed to a torch function


def _counted_forward(model: nn.Module, x: torch.Tensor,
                     watch: nn.Module | None = None) -> _Run:
    """One eval forward with mmcv-style MAC hooks; optionally watch ``watch``'s modules
    (did their forward run?) and parameters (were they used?)."""
    total = 0
    subclassed: set[str] = set()
    ran: set[int] = set()
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def counting_hook(m: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        total += int(_COUNTERS[type(m)](m, inputs, output))

    def subclass_hook(m: nn.Module, inputs: tuple, output: Any) -> None:
        subclassed.add(type(m).__qualname__)

    def ran_hook(m: nn.Module, inputs: tuple, output: Any) -> None:
        ran.add(id(m))

    watched_params = {id(p) for p in watch.parameters()} if watch is not None else set()
    tracker = _TensorUse(watched_params)
    try:
        for m in model.modules():
            if type(m) in _COUNTERS:
                handles.append(m.register_forward_hook(counting_hook))
            elif isinstance(m, tuple(_COUNTERS)):
                handles.append(m.register_forward_hook(subclass_hook))
        if watch is not None:
            for m in watch.modules():
                handles.append(m.register_forward_hook(ran_hook))
        with _eval_forward_context(model):
            with tracker if watch is not None else contextlib.nullcontext():
                output = model(x)
    finally:
        for h in handles:
            h.remove()
    if subclassed:
        warnings.warn(
            f"modules of type(s) {sorted(subclassed)} subclass a counted torch.nn type but "
            f"were not counted (mmcv's counter matches exact types)", stacklevel=3)
    return _Run(total, output, ran, tracker.used)


def _output_shape(output: Any) -> tuple:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (list, tuple)):
        return tuple(_output_shape(o) for o in output)
    raise TypeError(
        f"model output must be a tensor or a list/tuple of tensors, got {type(output).__name__}")


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax(q k^T) v: two batched matmuls, 2 FLOPs per multiply-add."""
    b, h, s_q, d = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * d + 2 * b * h * s_q * s_k * d_v


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """FlopCounterMode formulas for ops its registry lacks (the CPU flash-attention kernel,
    which CPU ``scaled_dot_product_attention`` uses), so counts do not depend on the device."""
    from torch.utils.flop_counter import flop_registry

    extra: dict[Any, Callable[..., int]] = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op not in flop_registry:
        extra[op] = _sdpa_flops
    return extra


# --------------------------------------------------------------------------- public API


def count_params(module: nn.Module) -> int:
    """Number of (distinct) parameters of ``module``, trainable or not.

    mmcv counts only ``requires_grad`` parameters; this is the same for a freshly built model.
    """
    return sum(p.numel() for p in module.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...], *,
               batched: bool | None = None) -> int:
    """MACs of one eval forward at batch 1, in mmcv 1.x's ``get_model_complexity_info``
    convention (see the module docstring for what is and is not counted).

    ``input_shape`` is the per-sample shape, e.g. ``(3, 256, 192)``, to which batch 1 is
    prepended (as mmcv does), or a full ``(1, C, H, W)`` shape. A 4-tuple starting with 1 is
    taken as full; pass ``batched=False``/``True`` to force either reading.
    """
    x = _make_input(model, _batched_shape(input_shape, batched))
    return _counted_forward(model, x).macs


def count_all_ops_flops(model: nn.Module, input_shape: tuple[int, ...], *,
                        batched: bool | None = None) -> int:
    """FLOPs (2 per multiply-add) of one eval forward at batch 1, as counted by
    ``torch.utils.flop_counter.FlopCounterMode``: every matmul, convolution and attention
    op, including functional ones; biases, norms and activations are not counted.

    ``input_shape`` is read as in ``count_macs``.
    """
    x = _make_input(model, _batched_shape(input_shape, batched))
    counter = FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())
    with _eval_forward_context(model):
        with counter:
            model(x)
    return int(counter.get_total_flops())


def count_all_ops_macs(model: nn.Module, input_shape: tuple[int, ...], *,
                       batched: bool | None = None) -> int:
    """``count_all_ops_flops`` expressed as multiply-adds (FLOPs / 2)."""
    return count_all_ops_flops(model, input_shape, batched=batched) // 2


@dataclass(frozen=True)
class Complexity:
    """Size and cost of a top-down pose model for one input at batch 1.

    ``params_head_eval`` counts the head parameters that an eval forward uses (their module
    runs, or they are passed to a torch op), excluding training-only branches such as
    SRPose's intermediate-stage supervision convs. ``gmacs`` is the mmcv-convention count
    the paper reports as "GFLOPs"; ``gmacs_all_ops`` is FlopCounterMode's FLOPs / 2 / 1e9.
    ``output_shape`` is the eval output's shape (a tuple of shapes for a list output).
    """

    params_backbone: int
    params_head: int
    params_head_eval: int
    gmacs: float
    gmacs_all_ops: float
    output_shape: tuple

    @property
    def params(self) -> int:
        """Backbone plus head parameters."""
        return self.params_backbone + self.params_head


def complexity_report(model: nn.Module, input_shape: tuple[int, ...], *,
                      batched: bool | None = None) -> Complexity:
    """Parameter counts, MACs and output shape of a model with ``.backbone`` and
    ``.keypoint_head`` for one eval forward at batch 1 (``input_shape`` as in ``count_macs``)."""
    for name in ("backbone", "keypoint_head"):
        if not isinstance(getattr(model, name, None), nn.Module):
            raise TypeError(
                f"complexity_report needs a model with a `{name}` submodule (e.g. from "
                f"srpose.build_model); {type(model).__name__} has none. Use count_macs / "
                f"count_params for other models")
    head: nn.Module = model.keypoint_head
    x = _make_input(model, _batched_shape(input_shape, batched))
    run = _counted_forward(model, x, watch=head)

    eval_ids = set(run.used)
    for m in head.modules():
        if id(m) in run.ran:
            eval_ids.update(id(p) for p in m.parameters(recurse=False))
    params_head_eval = sum(p.numel() for p in head.parameters() if id(p) in eval_ids)

    flops_all = count_all_ops_flops(model, x.shape, batched=True)
    return Complexity(
        params_backbone=count_params(model.backbone),
        params_head=count_params(head),
        params_head_eval=params_head_eval,
        gmacs=run.macs / 1e9,
        gmacs_all_ops=flops_all / 2 / 1e9,
        output_shape=_output_shape(run.output),
    )
