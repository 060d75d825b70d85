"""Scoring without side effects: true float32 arithmetic, parked BatchNorm statistics, restored state.

``scoring_context`` is an ``ExitStack`` of small context managers, each restoring one kind of
state it touches (modes, ``requires_grad`` flags, buffers, RNG, precision switches).
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

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
    ``warn_only`` (its warnings silenced): scoring would otherwise raise on CUDA. The switches are
    process-wide: with several scores running at once in threads, the first to enter sets them and the
    last to leave puts them back as found.
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


@contextlib.contextmanager
def parked_running_stats(modules: list[nn.Module]) -> Iterator[None]:
    """Detach the running statistics of standard BatchNorm layers (train mode only); put them back on exit.

    A train-mode BatchNorm normalises with batch statistics whether or not it has running stats
    (same kernel, bit-identical output); without them it only skips the running-average update.
    Taking the buffers out for the duration of the score (and putting the very same tensors back)
    replaces cloning and restoring every BatchNorm buffer (~240 small copies for an NB201 network,
    which cost launches on a GPU). Layers with their own ``forward`` or lazy buffers are left
    alone: ``restored_buffers`` snapshots and restores theirs.
    """
    parked = []
    try:
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
        yield
    finally:
        for module, stats in parked:
            module._buffers.update(stats)


@contextlib.contextmanager
def restored_buffers(modules: list[nn.Module]) -> Iterator[None]:
    """Every buffer the modules hold (whatever a forward may change) holds its old value on exit."""
    seen: set[int] = set()
    saved = []
    for module in modules:
        for b in module._buffers.values():
            if b is not None and id(b) not in seen:
                seen.add(id(b))
                saved.append((b, b.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


_OWNED: contextvars.ContextVar[bool] = contextvars.ContextVar("lightning_epe_owned_networks", default=False)


@contextlib.contextmanager
def owned_networks() -> Iterator[None]:
    """Inside, the networks scored belong to the caller, which rebuilds or redraws them for the next score (the
    search: a fresh build, or ``NB201Builder``, which redraws every value and starts over when a score changed
    the network's structure): ``restored_parameters`` is skipped, saving a copy of the weights per score."""
    token = _OWNED.set(True)
    try:
        yield
    finally:
        _OWNED.reset(token)


@contextlib.contextmanager
def restored_parameters(modules: list[nn.Module]) -> Iterator[None]:
    """The model as found on exit, whatever its forward did: the submodules, parameters and buffers each
    module holds (a forward that replaces a submodule or a parameter, or adds one), and the parameters'
    values (a forward that changes its own weights, in place or through ``.data``).

    The values are checked with one concatenated copy per dtype and device (not one copy per tensor:
    launches on a GPU) and written back only if they changed.
    """
    held = [(m, dict(m._modules), dict(m._parameters), dict(m._buffers)) for m in modules]
    params, seen = [], set()
    for _, _, parameters, _ in held:
        for p in parameters.values():
            if (p is not None and id(p) not in seen and not isinstance(p, UninitializedParameter)
                    and not p.is_meta):
                seen.add(id(p))
                params.append((p, p.data, p.data_ptr(), p.shape))
    groups: dict = {}
    for p, *_ in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    with torch.no_grad():
        saved = {key: torch.cat([p.detach().reshape(-1) for p in group]) for key, group in groups.items()}
    try:
        yield
    finally:
        for module, children, parameters, buffers in held:
            for now, before in ((module._modules, children), (module._parameters, parameters),
                                (module._buffers, buffers)):
                if now.keys() != before.keys() or any(now[k] is not v for k, v in before.items()):
                    now.clear()
                    now.update(before)
        with torch.no_grad():
            for p, data, pointer, shape in params:  # ``p.data = other`` inside forward
                if p.data_ptr() != pointer or p.shape != shape:
                    p.data = data
            for key, group in groups.items():
                flat = saved[key]
                if not torch.equal(torch.cat([p.detach().reshape(-1) for p in group]), flat):
                    for p, value in zip(group, flat.split([p.numel() for p in group])):
                        p.data.copy_(value.view_as(p))


@contextlib.contextmanager
def scoring_modes(model: nn.Module, modules: list[nn.Module], train: bool) -> Iterator[None]:
    """The model in train (or eval) mode with dropout and drop-path off; each module's mode restored on exit."""
    modes = [m.training for m in modules]
    try:
        if all(type(m).train is nn.Module.train for m in modules):
            for m in modules:
                m.training = train
        else:  # a custom train() (e.g. one that freezes BatchNorm) is honoured
            model.train(train)
        for m in modules:  # dropout and drop-path off: random masks would make the score noisy
            if _is_dropout(m):
                m.training = False
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside (scores that need a weight gradient ask for it); flags restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, flag in flags:
            if flag:
                p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


@contextlib.contextmanager
def _quiet_determinism_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation")
        yield


def scoring_context(model: nn.Module, device: torch.device, train: bool = True) -> contextlib.ExitStack:
    """Score ``model`` without side effects.

    Inside: gradients enabled, autocast off, true float32 arithmetic (``ieee_float32``), the model
    in train (or eval) mode, parameters not requiring grad (only input gradients are needed; a
    gradient taken with ``torch.autograd.grad`` w.r.t. the input alone skips them for built-in
    ops anyway, this also covers custom autograd Functions), standard BatchNorm running statistics
    detached (train mode: they do not change the batch statistics used). On exit the model's
    buffers (BatchNorm running statistics and counters), its parameters and submodules (a forward that
    changes its own weights or replaces a submodule), ``requires_grad`` flags, modes, the global
    RNG states and the precision switches are restored exactly.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "cannot score inside torch.inference_mode(): scores need autograd. Lightning runs "
            "validation/test under inference mode; score in setup/on_fit_start/on_train_start, or "
            "wrap the call in torch.inference_mode(False)."
        )
    modules = list(model.modules())  # one traversal: the per-call overhead matters on a GPU
    stack = contextlib.ExitStack()
    with stack:  # a failure while entering unwinds what was entered
        if train:
            stack.enter_context(parked_running_stats(modules))
        stack.enter_context(restored_buffers(modules))
        if not _OWNED.get():
            stack.enter_context(restored_parameters(modules))
        stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(torch.autocast(device.type, enabled=False))
        stack.enter_context(ieee_float32())
        stack.enter_context(_quiet_determinism_warnings())
        stack.enter_context(scoring_modes(model, modules, train))
        stack.enter_context(frozen_parameters(model))
        return stack.pop_all()


def _is_dropout(module: nn.Module) -> bool:
    """Dropout layers, timm's DropPath/DropBlock, and modules applying a functional ``drop_rate``
    with their own training flag (timm's classifier heads)."""
    if isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ in ("DropPath", "DropBlock2d"):
        return True
    rate = getattr(module, "drop_rate", None)
    return isinstance(rate, float) and rate > 0


