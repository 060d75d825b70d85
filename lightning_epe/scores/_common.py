"""Shared helpers for training-free scores: input checks, side-effect isolation, input gradients.

No Lightning here: scores are plain functions of (model, inputs, targets).
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import UninitializedBuffer
from torch.overrides import TorchFunctionMode


def check_batch(inputs: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate a scoring batch; return ``(inputs, targets)`` with targets as int64 on the inputs' device."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor (normalised images), got dtype {inputs.dtype}")
    if inputs.dim() < 2:
        raise ValueError(f"inputs must be batched, shape (B, ...), got shape {tuple(inputs.shape)}")
    if inputs.shape[0] < 2:
        raise ValueError(
            f"a score needs a batch of at least 2 samples, got {inputs.shape[0]} "
            "(correlations between samples are undefined for one)"
        )
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or inf; check the data pipeline and normalisation")
    if targets is None:
        return inputs, None
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of integer class labels, got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class labels, got dtype {targets.dtype}")
    if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"targets must have shape (B,) = ({inputs.shape[0]},) to match the inputs, got {tuple(targets.shape)}"
        )
    if (targets < 0).any():
        raise ValueError(f"targets must be class indices >= 0, got minimum {int(targets.min())}")
    return inputs, targets.to(device=inputs.device, dtype=torch.int64)


def logits_of(output) -> torch.Tensor:
    """Logits from a model output: a tensor, or a tuple/list whose last element is the logits."""
    if isinstance(output, (tuple, list)) and output:
        output = output[-1]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the model must return logits (a tensor) or a tuple whose last element is the logits, "
            f"got {type(output).__name__}"
        )
    return output


# (backend, op) pairs of torch's float32 precision switches: "ieee" is true float32 arithmetic;
# "tf32"/"bf16" (cuDNN convs on Ampere+ default to TF32; torch.set_float32_matmul_precision("medium")
# turns on bf16 matmuls in oneDNN on CPU) change the score far beyond its float32 error.
_FP32_SWITCHES = (("cuda", "conv"), ("cuda", "rnn"), ("cuda", "matmul"),
                  ("mkldnn", "conv"), ("mkldnn", "matmul"), ("mkldnn", "rnn"))


_precision_lock = threading.Lock()
_precision_users = 0
_precision_saved: list = []


def _set_ieee_float32() -> list:
    """Switch to true float32 arithmetic; return what is needed to switch back."""
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    setter = getattr(torch._C, "_set_fp32_precision_setter", None)
    cudnn = torch.backends.cudnn
    saved: list = [("cudnn", (cudnn.benchmark, cudnn.deterministic)),
                   ("deterministic", (torch.are_deterministic_algorithms_enabled(),
                                      torch.is_deterministic_algorithms_warn_only_enabled()))]
    try:
        if torch.are_deterministic_algorithms_enabled():
            # Lightning's Trainer(deterministic=True) turns this on; the backward of CUDA adaptive
            # average pooling (the global pool of NB201 and most timm networks) would then raise.
            torch.use_deterministic_algorithms(True, warn_only=True)
        if getter is not None and setter is not None:  # torch >= 2.9: per-backend precision switches
            for backend, op in _FP32_SWITCHES:
                saved.append(("precision", (backend, op, getter(backend, op))))
                setter(backend, op, "ieee")
        else:  # older torch: the legacy booleans
            saved.append(("legacy", (cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                                     torch.get_float32_matmul_precision())))
            cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")
        cudnn.benchmark, cudnn.deterministic = False, True
    except BaseException:
        _restore_float32(saved)
        raise
    return saved


def _restore_float32(saved: list) -> None:
    for kind, value in reversed(saved):
        if kind == "cudnn":
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = value
        elif kind == "deterministic":
            torch.use_deterministic_algorithms(value[0], warn_only=value[1])
        elif kind == "precision":
            torch._C._set_fp32_precision_setter(*value)
        else:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = value[:2]
            torch.set_float32_matmul_precision(value[2])


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """True float32 arithmetic inside (no TF32/bf16 shortcuts, no cuDNN autotuning), restored on exit.

    cuDNN: ``benchmark`` off (autotuning may pick Winograd/FFT algorithms), ``deterministic`` on
    (as the official search). ``torch.use_deterministic_algorithms(True)`` is relaxed to
    ``warn_only`` (its warnings silenced): scoring would otherwise raise on CUDA. The switches are process-wide: with several scores running at once
    in threads, the first to enter sets them and the last to leave puts them back as found.
    """
    global _precision_users, _precision_saved
    with _precision_lock:
        if _precision_users == 0:
            _precision_saved = _set_ieee_float32()
        _precision_users += 1
    try:
        yield
    finally:
        with _precision_lock:
            _precision_users -= 1
            if _precision_users == 0:
                _restore_float32(_precision_saved)
                _precision_saved = []


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _park_running_stats(modules: list[nn.Module]) -> list[tuple[nn.Module, dict[str, torch.Tensor]]]:
    """Detach the running statistics of standard BatchNorm layers (train mode only).

    A train-mode BatchNorm normalises with batch statistics whether or not it has running stats
    (same kernel, bit-identical output); without them it only skips the running-average update.
    Taking the buffers out for the duration of the score (and putting the very same tensors back)
    replaces cloning and restoring every BatchNorm buffer (~240 small copies for an NB201 network,
    which cost launches on a GPU). Layers with their own ``forward`` or lazy buffers are left
    alone: their buffers are snapshotted and restored instead.
    """
    parked = []
    for module in modules:
        if not (isinstance(module, _BatchNorm) and type(module).forward is _BatchNorm.forward
                and module.track_running_stats):
            continue
        stats = {name: module._buffers.get(name) for name in _RUNNING_STATS}
        if not all(isinstance(t, torch.Tensor) and not isinstance(t, UninitializedBuffer)
                   for t in stats.values()):
            continue
        for name in _RUNNING_STATS:
            module._buffers[name] = None
        parked.append((module, stats))
    return parked


def _buffers_of(modules: list[nn.Module]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for module in modules:
        for b in module._buffers.values():
            if b is not None and id(b) not in seen:
                seen.add(id(b))
                out.append(b)
    return out


@contextlib.contextmanager
def scoring_context(model: nn.Module, device: torch.device, train: bool = True) -> Iterator[None]:
    """Score ``model`` without side effects.

    Inside: gradients enabled, autocast off, true float32 arithmetic (``ieee_float32``), the model
    in train (or eval) mode, parameters not requiring grad (only input gradients are needed; a
    gradient taken with ``torch.autograd.grad`` w.r.t. the input alone skips them for built-in
    ops anyway, this also covers custom autograd Functions), standard BatchNorm running statistics
    detached (train mode: they do not change the batch statistics used). On exit the model's
    buffers (BatchNorm running statistics and counters), ``requires_grad`` flags, modes, the global
    RNG states and the precision switches are restored exactly.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "cannot score inside torch.inference_mode(): scores need autograd. Lightning runs "
            "validation/test under inference mode; score in setup/on_fit_start/on_train_start, or "
            "wrap the call in torch.inference_mode(False)."
        )
    modules = list(model.modules())  # one traversal: the per-call overhead matters on a GPU
    modes = [m.training for m in modules]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    parked: list[tuple[nn.Module, dict[str, torch.Tensor]]] = []
    buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    rng_devices = [device] if device.type == "cuda" else []
    try:
        if train:
            parked = _park_running_stats(modules)
        buffers = [(b, b.detach().clone()) for b in _buffers_of(modules)]  # whatever forward may change
        with torch.random.fork_rng(devices=rng_devices), torch.enable_grad(), \
                torch.autocast(device.type, enabled=False), ieee_float32(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation")
            if all(type(m).train is nn.Module.train for m in modules):
                for m in modules:
                    m.training = train
            else:  # a custom train() (e.g. one that freezes BatchNorm) is honoured
                model.train(train)
            for m in modules:  # dropout and drop-path off: random masks would make the score noisy
                if _is_dropout(m):
                    m.training = False
            for p, flag in flags:
                if flag:
                    p.requires_grad_(False)
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for module, stats in parked:
            module._buffers.update(stats)
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for m, mode in zip(modules, modes):
            m.training = mode


def _is_dropout(module: nn.Module) -> bool:
    """Dropout layers, timm's DropPath/DropBlock, and modules applying a functional ``drop_rate``
    with their own training flag (timm's classifier heads)."""
    if isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ in ("DropPath", "DropBlock2d"):
        return True
    rate = getattr(module, "drop_rate", None)
    return isinstance(rate, float) and rate > 0


# ----------------------------------------------------------------------------- exact CPU pooling
def _window_range(size_in: int, size_out: int, offset: int, stride: int, pad: int):
    """Outputs ``o`` whose window element ``offset`` falls inside the input: ``(o0, o1, i0)``."""
    need = pad - offset
    lo = 0 if need <= 0 else -(-need // stride)
    hi = min(size_out - 1, (size_in - 1 + pad - offset) // stride)
    return None if hi < lo else (lo, hi + 1, lo * stride - pad + offset)


def _pool_counts(size, out, kernel, stride, pad, include_pad, dtype, device) -> torch.Tensor:
    """The divisor of each output, exactly as ATen's CPU kernel computes it."""
    axes = []
    for n, o, k, s, p in zip(size, out, kernel, stride, pad):
        start = torch.arange(o, device=device) * s - p
        end = torch.clamp(start + k, max=n + p)
        axes.append(end - start if include_pad else torch.clamp(end, max=n) - torch.clamp(start, min=0))
    return (axes[0][:, None] * axes[1][None, :]).to(dtype)


class _ExactAvgPool2d(torch.autograd.Function):
    """``avg_pool2d`` in NCHW with whole-tensor shifted adds, bit for bit as ATen's CPU kernel.

    ATen sums each window in row-major order from 0 and divides by an integer count; its backward
    adds ``grad / count`` into each input in row-major order of the outputs. Doing the same adds
    in the same order on shifted slices gives identical bits (signed zeros included; tested
    against ``F.avg_pool2d`` for many shapes) at a third of the time: ATen's NCHW kernel for
    stride-1 windows is scalar and slow (NB201's avg_pool_3x3 cost as much as two 3x3 convs).
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, pad, include_pad):
        size = x.shape[-2:]
        out_size = [(n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, pad)]
        out = x.new_zeros(*x.shape[:-2], *out_size)
        plan = []
        for i in range(kernel[0]):
            rows = _window_range(size[0], out_size[0], i, stride[0], pad[0])
            for j in range(kernel[1]):
                cols = _window_range(size[1], out_size[1], j, stride[1], pad[1])
                if rows is None or cols is None:
                    continue
                plan.append((rows, cols))
                out[..., rows[0]:rows[1], cols[0]:cols[1]] += x[..., _strided(rows, stride[0]), _strided(cols, stride[1])]
        count = _pool_counts(size, out_size, kernel, stride, pad, include_pad, x.dtype, x.device)
        out.div_(count)
        ctx.save_for_backward(count)
        ctx.plan, ctx.in_shape, ctx.pool_stride = plan, x.shape, stride
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (count,) = ctx.saved_tensors
        delta = grad_out / count
        grad = grad_out.new_zeros(ctx.in_shape)
        for rows, cols in reversed(ctx.plan):  # row-major order of the outputs, for every input
            grad[..., _strided(rows, ctx.pool_stride[0]), _strided(cols, ctx.pool_stride[1])] += \
                delta[..., rows[0]:rows[1], cols[0]:cols[1]]
        return grad, None, None, None, None


def _strided(window_range, stride: int) -> slice:
    o0, o1, i0 = window_range
    return slice(i0, i0 + (o1 - o0 - 1) * stride + 1, stride)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _exact_pool_plan(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True, divisor_override=None):
    """``(kernel, stride, padding, count_include_pad)`` where ``_ExactAvgPool2d`` is exact and
    faster than ATen (CPU, float32/64, contiguous NCHW, stride 1, floor mode), else ``None``."""
    if not (isinstance(input, torch.Tensor) and input.device.type == "cpu" and input.dim() == 4
            and input.dtype in (torch.float32, torch.float64) and input.is_contiguous()
            and not ceil_mode and divisor_override is None):
        return None
    kernel = _pair(kernel_size)
    strides = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _pair(stride)
    pad = _pair(padding)
    if strides != (1, 1) or not all(0 <= p <= k // 2 for k, p in zip(kernel, pad)):
        return None  # strided pools: ATen is faster (and ATen raises on invalid padding)
    if not all(n + 2 * p >= k for n, k, p in zip(input.shape[-2:], kernel, pad)):
        return None
    return kernel, strides, pad, bool(count_include_pad)


def fast_cpu_ops(device: torch.device) -> contextlib.AbstractContextManager:
    """Exact faster CPU kernels for the duration of a score (``_FastCPUOps``); nothing elsewhere.

    The mode costs a few microseconds per torch call: nothing next to CPU kernels, but it would
    slow a GPU's launch-bound forward, where ATen's pooling is fast anyway.
    """
    return _FastCPUOps() if device.type == "cpu" else contextlib.nullcontext()


class _FastCPUOps(TorchFunctionMode):
    """Inside a score on CPU: stride-1 ``avg_pool2d`` in NCHW runs as ``_ExactAvgPool2d`` (same bits)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch._C._nn.avg_pool2d:
            plan = _exact_pool_plan(*args, **kwargs)
            if plan is not None:
                return _ExactAvgPool2d.apply(args[0] if args else kwargs["input"], *plan)
        return func(*args, **kwargs)


def input_gradient(model: nn.Module, inputs: torch.Tensor,
                   dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, logits)``: J = d(sum of all logits)/d inputs, flattened to (B, -1), as the official code.

    Only the input gradient is computed (call inside ``scoring_context``). With ``dtype`` (e.g.
    ``torch.float64``), the network runs on temporary copies of its floating-point parameters and
    buffers in that dtype (``torch.func.functional_call``); the model itself is not touched.
    """
    x = inputs.detach().to(dtype or inputs.dtype).requires_grad_(True)
    if dtype is None:
        output = model(x)
    else:
        tensors = {name: t.detach().to(dtype) if t.is_floating_point() else t.detach().clone()
                   for name, t in [*model.named_parameters(), *model.named_buffers()]}
        output = torch.func.functional_call(model, tensors, (x,), tie_weights=True)
    logits = logits_of(output)
    (grad,) = torch.autograd.grad(logits, x, grad_outputs=torch.ones_like(logits))
    return grad.reshape(grad.shape[0], -1), logits.detach()


def model_device(model: nn.Module, default: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return default
