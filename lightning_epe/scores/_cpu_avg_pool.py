"""An exact, faster CPU average pool: the same additions in the same order as ATen (same bits).

Used only inside a score on the CPU (``fast_cpu_ops``): ATen's NCHW kernel for stride-1 windows is
scalar and slow (NB201's avg_pool_3x3 cost as much as two 3x3 convolutions).
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode


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
                window = x[..., _strided(rows, stride[0]), _strided(cols, stride[1])]
                out[..., rows[0]:rows[1], cols[0]:cols[1]] += window
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


