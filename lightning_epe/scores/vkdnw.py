"""VKDNW (Tybl & Neumann, CVPR 2025): the spectral entropy of a sampled Fisher information matrix.

For a few weights ``theta`` (``p`` flat entries of each of the first ``params_grad_len``
parameter tensors), ``J_b = d logits_b / d theta`` (C x P) per sample, with the network in
**eval** mode. With ``pi_b = softmax(logits_b) (1 - alpha) + alpha / C`` (``alpha`` =
float16(0.05)) and ``L_b`` the lower-triangular factor of ``diag(pi_b) - pi_b pi_b^T`` of the
official ``cholesky_covariance``, the empirical Fisher matrix is
``F = mean_b (L_b J_b)^T (L_b J_b)`` (P x P). Its eigenvalues ``lambda`` (``svd(F).S``) give nine
deciles ``q`` (``torch.quantile`` at 0.1 .. 0.9), ``t = q / (|q|_1 + 1e-10)`` and

- ``vkdnw_entropy = -sum(t log(t + 1e-10))`` (in ``[0, log 9]``; higher: a flatter spectrum),
- ``vkdnw_dim = len(named_parameters)`` (the number of parameter tensors, a size proxy),
- ``vkdnw``: the two in one float that ranks like the official dense lexicographic rank of
  ``(vkdnw_dim, vkdnw_entropy)``: ``dim + entropy / (log 9 + 1e-6)``, the entropy term below 1.

Precision (``mode``): the official statistic is float32, and where ``F`` is rank-deficient (most NB201
cells) its lower deciles are the SVD's float32 rounding noise, which differs from one CPU to another
(up to several % of the entropy; docs/benchmarks/cpu_spread.md). ``mode="clean"`` (default) computes
``L``, ``F``, the spectrum, the deciles and the entropy in float64 from the float32 Jacobian: the same
value on every CPU to ~4e-5 (measured). ``mode="official"`` keeps the float32 arithmetic, for parity with the
official values and the committed benchmark rows.

Official code: ondratybl/VKDNW@6901b65, ``NB201/ZeroShotProxy/compute_vkdnw_score.py``
(``compute_nas_score(p=1)``), run on torch 2.0.1. It re-initialises the network (Kaiming normal,
fan-in) before scoring, takes the per-sample Jacobian with ``vmap(jacrev(...))`` over batch-1
forwards (per-sample *full* weight gradients of every selected tensor, ~10 s per NB201 cell on a
CPU) and fails on current torch ("in-place operation ... would mutate a captured Tensor").

Here the Jacobian is computed without per-sample weight gradients. In eval mode the samples do
not interact, so one batched forward and one backward per logit give, at the output ``y`` of
each module owning a selected weight ``w``, ``g_b = d logit_b / d y_b`` for every sample at once;
the per-sample derivative is ``<g_b, d y_b / d w>``, and ``d y / d w`` for one entry is cheap
(Conv2d: one input channel through a one-tap kernel; Linear, BatchNorm: one column; other modules:
a forward-mode ``torch.func.jvp`` of the module alone). Rows of ``J`` for the last logit are not
computed: the last column of ``L`` is exactly zero. Cost: one forward with autograd and C - 1
input-gradient backward passes.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._isolation import scoring_context
from ._reinit import kaiming_fanin_init_, restored_parameters
from ._validation import check_batch, logits_of, model_device, prepare_inputs
from .registry import register_score

#: The official smoothing ``torch.tensor(0.05, dtype=torch.float16)`` = 0.04998779296875.
ALPHA = float(torch.tensor(0.05, dtype=torch.float16))
#: The entropy of nine deciles is at most log 9; dividing by this keeps ``vkdnw``'s entropy term below 1.
ENTROPY_BOUND = math.log(9) + 1e-6

Init = Literal["official"]
Mode = Literal["clean", "official"]
#: The dtype of the Fisher matrix, its spectrum and the entropy per mode (``None``: the Jacobian's, float32).
MODE_DTYPE = {"clean": torch.float64, "official": None}


# ----------------------------------------------------------------------------- Fisher -> entropy


def vkdnw_cholesky(logits: torch.Tensor) -> torch.Tensor:
    """The official ``cholesky_covariance``: (B, C, C) lower-triangular ``L`` with ``L L^T ~ diag(pi) - pi pi^T``.

    ``pi = softmax(logits) * (1 - alpha) + alpha / C`` with ``alpha`` a float16 0.05, in the
    official float16/float32 arithmetic (``1 - alpha`` = 0.9501953125, ``alpha / C`` rounded to
    float16). Row i, column j < i: ``-pi_i / q_j * d_j``; diagonal ``d_j`` with
    ``q_j = 1 - sum_{k<=j} pi_k`` (``q_{C-1} = 0``, so the last column is 0) and
    ``d_j = sqrt(pi_j q_j / q_{j-1})`` (``q_{-1} = 1``).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, classes), got {tuple(logits.shape)}")
    alpha = torch.tensor(0.05, dtype=torch.float16, device=logits.device)
    prob = torch.softmax(logits, dim=1) * (1 - alpha) + alpha / logits.shape[1]
    q = torch.ones_like(prob) - torch.cumsum(prob, dim=1)
    q[:, -1] = 0
    q_shift = torch.roll(q, shifts=1, dims=1)
    q_shift[:, 0] = 1
    d = torch.sqrt(prob * q / q_shift)
    lower = torch.nan_to_num(-(prob[:, :, None] * (1 / q)[:, None, :]), neginf=0.0)
    eye = torch.eye(prob.shape[1], dtype=lower.dtype, device=lower.device)
    lower = torch.tril(lower * (1 - eye) + eye)
    return lower * d[:, None, :]


def vkdnw_fisher(jacobian: torch.Tensor, logits: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F = mean_b (L_b J_b)^T (L_b J_b)`` (P x P) from ``J`` (B, C, P) and the logits (B, C), as the official code.

    ``dtype``: compute ``L`` and ``F`` in this dtype (default: the Jacobian's, float32 as the official code).
    """
    if jacobian.dim() != 3 or logits.dim() != 2 or jacobian.shape[:2] != logits.shape:
        raise ValueError(f"jacobian must be (B, C, P) and logits (B, C), got {tuple(jacobian.shape)} "
                         f"and {tuple(logits.shape)}")
    if dtype is not None:
        jacobian, logits = jacobian.to(dtype), logits.to(dtype)
    scaled = torch.matmul(vkdnw_cholesky(logits), jacobian)
    return torch.mean(torch.matmul(scaled.transpose(1, 2), scaled), dim=0)


def vkdnw_entropy_from_fisher(fisher: torch.Tensor) -> float:
    """The entropy of the nine normalised deciles of ``fisher``'s singular values (the official statistic).

    ``-0.0`` for ``F = 0`` (e.g. an NB201 cell of ``none`` ops). When the SVD fails (it refuses a
    non-finite ``F``, e.g. from NaN logits) the official code catches the error and uses
    ``lambda = (0, 0)``, and so does this: ``-0.0`` again.
    """
    if fisher.dim() != 2 or fisher.shape[0] != fisher.shape[1] or fisher.shape[0] == 0:
        raise ValueError(f"fisher must be a non-empty square matrix, got shape {tuple(fisher.shape)}")
    try:
        lambdas = torch.linalg.svd(fisher, full_matrices=False).S
    except torch.linalg.LinAlgError:
        lambdas = torch.zeros(2, dtype=fisher.dtype, device=fisher.device)
    deciles = torch.quantile(lambdas, torch.arange(0.1, 1.0, 0.1, dtype=lambdas.dtype, device=lambdas.device))
    t = deciles / (torch.linalg.norm(deciles, ord=1).item() + 1e-10)
    return float(-(t * torch.log(t + 1e-10)).sum())


def vkdnw_from_jacobian(jacobian: torch.Tensor, logits: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """``vkdnw_entropy`` from the per-sample Jacobian ``J`` (B, C, P) of the logits w.r.t. the
    selected weights and the (eval-mode, full-batch) logits (B, C).

    ``dtype``: the dtype of ``L``, ``F`` and the SVD (default: the Jacobian's). The official
    statistic is float32, and for a rank-deficient ``F`` (most NB201 cells) its lower deciles are
    float32 rounding noise of the SVD (~1e-7 of the largest eigenvalue); ``torch.float64`` gives
    the exact-arithmetic value, which can differ completely (NB201 ``resnet`` cell: 1.17 in float32,
    ~1e-3 in float64). The scores' ``mode="official"`` uses the default, ``mode="clean"`` float64.
    """
    return vkdnw_entropy_from_fisher(vkdnw_fisher(jacobian, logits, dtype))


def vkdnw_combine(dim: float, entropy: float) -> float:
    """``dim + entropy / (log 9 + 1e-6)``: ranks exactly like the lexicographic order of ``(dim, entropy)``.

    ``dim`` is an integer and the entropy of nine normalised deciles lies in ``[0, log 9]`` (up to
    rounding of ~1e-9), so the entropy term stays in ``(-1e-9, 1)`` and never crosses to the
    next ``dim``. NaN entropy gives NaN.
    """
    return float(dim) + float(entropy) / ENTROPY_BOUND


# ----------------------------------------------------------------------------- weight selection


@dataclass
class _Selected:
    name: str
    param: nn.Parameter
    indices: list[int]
    column: int  # first column of this tensor's entries in J


def vkdnw_selection(model: nn.Module, p: int = 1, params_grad_len: int = 128) -> list[_Selected]:
    """The official weight sample: for each of the first ``params_grad_len`` tensors of
    ``named_parameters()``, the flat indices ``linspace(0, numel - 1, steps=p)`` (truncated to
    integers; p = 1: index 0)."""
    _check_int("p", p, 1)
    _check_int("params_grad_len", params_grad_len, 1)
    selected, column = [], 0
    for name, param in list(model.named_parameters())[:params_grad_len]:
        n = param.numel()
        if n == 0:
            raise ValueError(f"parameter {name!r} is empty: vkdnw cannot sample a weight from it")
        indices = torch.linspace(0, n - 1, steps=p, dtype=torch.float64).long().tolist()
        selected.append(_Selected(name, param, indices, column))
        column += len(indices)
    return selected


def _check_int(key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{key} must be an int >= {minimum}, got {value!r}"
                         + (" (the official default p=0. selects no weight and fails)" if key == "p" else ""))


# ----------------------------------------------------------------------------- Jacobian


Contraction = Callable[[torch.Tensor], torch.Tensor]  # g (B, ...) -> (B,) per-sample derivative


def _sum_rest(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def _conv2d_entry(module: nn.Conv2d, x: torch.Tensor, attr: str, index: int) -> Contraction:
    """d y / d w for one entry of a Conv2d's weight or bias, contracted with g."""
    if attr == "bias":
        return lambda g: _sum_rest(g[:, index])
    out_c, in_per_group, kh, kw = module.weight.shape
    o, rest = divmod(index, in_per_group * kh * kw)
    i, rest = divmod(rest, kh * kw)
    r, s = divmod(rest, kw)
    channel = (o // (out_c // module.groups)) * in_per_group + i
    tap = torch.zeros(1, 1, kh, kw, dtype=x.dtype, device=x.device)
    tap[0, 0, r, s] = 1
    with torch.no_grad():
        tangent = F.conv2d(x[:, channel:channel + 1].detach(), tap, None, module.stride, module.padding,
                           module.dilation)
    return lambda g: _sum_rest(g[:, o:o + 1] * tangent)


def _linear_entry(module: nn.Linear, x: torch.Tensor, attr: str, index: int) -> Contraction:
    if attr == "bias":
        return lambda g: _sum_rest(g[..., index])
    o, i = divmod(index, module.in_features)
    column = x[..., i].detach()
    return lambda g: _sum_rest(g[..., o] * column)


def _batchnorm_entry(module: _BatchNorm, x: torch.Tensor, attr: str, index: int) -> Contraction:
    if attr == "bias":
        return lambda g: _sum_rest(g[:, index])
    with torch.no_grad():
        invstd = torch.rsqrt(module.running_var[index] + module.eps)
        tangent = (x[:, index].detach() - module.running_mean[index]) * invstd
    return lambda g: _sum_rest(g[:, index] * tangent)


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


def _generic_entry(module: nn.Module, args, kwargs, attr: str, index: int) -> Contraction:
    """d y / d w for one entry of any module's parameter ``attr``: forward mode (``torch.func.jvp``
    of the module alone), or, where an op has no forward-mode formula, per-sample reverse mode."""
    weight = getattr(module, attr).detach()
    args = tuple(_detached(a) for a in args)
    kwargs = {k: _detached(v) for k, v in kwargs.items()}
    direction = torch.zeros_like(weight).reshape(-1)
    direction[index] = 1

    def run(w):
        return torch.func.functional_call(module, {attr: w}, args, kwargs)

    try:
        with torch.no_grad(), _math_attention(), warnings.catch_warnings():
            # torch scripts some forward-mode formulas (e.g. GroupNorm's) and warns that scripting is deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
            _, tangent = torch.func.jvp(run, (weight,), (direction.reshape(weight.shape),))
    except (NotImplementedError, RuntimeError) as error:
        if "forward AD" not in str(error) and "forward-mode" not in str(error) and "jvp" not in str(error):
            raise
        return _per_sample_vjp_entry(module, args, kwargs, attr, index)
    if not isinstance(tangent, torch.Tensor):
        raise ValueError(f"vkdnw: module {type(module).__name__} returns {type(tangent).__name__}; a module "
                         "owning a sampled weight must return one tensor")
    return lambda g: _sum_rest(g * tangent)


def _per_sample_vjp_entry(module: nn.Module, args, kwargs, attr: str, index: int) -> Contraction:
    """Per-sample ``<g_b, d y_b / d w>`` by reverse mode, one sample at a time under ``vmap``
    (tensor arguments with the batch first are split by sample, others shared)."""
    weight = getattr(module, attr).detach()
    batch = next(a.shape[0] for a in args if isinstance(a, torch.Tensor))
    dims = tuple(0 if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch else None for a in args)

    def one(g_b, *sample):
        def run(w):
            inputs = tuple(a.unsqueeze(0) if d == 0 else a for a, d in zip(sample, dims))
            return torch.func.functional_call(module, {attr: w}, inputs, kwargs)

        _, pullback = torch.func.vjp(run, weight)
        return pullback(g_b.unsqueeze(0))[0].reshape(-1)[index]

    def contract(g):
        with torch.enable_grad(), _math_attention():
            return torch.func.vmap(one, in_dims=(0, *dims))(g.detach(), *args)

    return contract


def _math_attention():
    """``scaled_dot_product_attention`` by its composite (math) kernel, which has forward-mode derivatives."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def _fast_path(module: nn.Module, attr: str) -> Callable | None:
    """The closed-form derivative for a standard layer's own ``weight``/``bias``, else None."""
    if attr not in ("weight", "bias") or module._parameters.get(attr) is None:
        return None
    kind = type(module)
    if kind.forward is nn.Conv2d.forward and module.padding_mode == "zeros":
        return _conv2d_entry
    if kind.forward is nn.Linear.forward:
        return _linear_entry
    if (isinstance(module, _BatchNorm) and kind.forward is _BatchNorm.forward and not module.training
            and module.running_mean is not None and module.running_var is not None):
        return _batchnorm_entry
    return None


@dataclass
class _Owner:
    module: nn.Module
    entries: list[tuple[str, int, int]] = field(default_factory=list)  # (attr, flat index, column of J)


def _owners(model: nn.Module, selected: list[_Selected]) -> list[_Owner]:
    """Every (module, attribute) holding a selected tensor (a shared tensor has several)."""
    by_param = {id(s.param): s for s in selected}
    owners: dict[int, _Owner] = {}
    for full_name, param in model.named_parameters(remove_duplicate=False):
        chosen = by_param.get(id(param))
        if chosen is None:
            continue
        path, _, attr = full_name.rpartition(".")
        module = model.get_submodule(path) if path else model
        if ".parametrizations." in f".{full_name}":
            raise ValueError(f"vkdnw: parameter {full_name!r} is behind a torch parametrization (e.g. weight norm, "
                             "spectral norm); sampled weights must be used directly by the layer that applies them")
        owner = owners.setdefault(id(module), _Owner(module))
        for k, index in enumerate(chosen.indices):
            owner.entries.append((attr, index, chosen.column + k))
    return list(owners.values())


def _couples_samples(model: nn.Module) -> bool:
    """True when eval mode still mixes samples (BatchNorm without running statistics)."""
    return any(isinstance(m, _BatchNorm) and (m.running_mean is None or m.running_var is None)
               for m in model.modules())


def vkdnw_jacobian(model: nn.Module, inputs: torch.Tensor,
                   selected: list[_Selected]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, logits)``: J (B, C, P) = d logits_b / d theta_sel per sample (row C - 1 left 0: the
    last column of ``L`` is zero), and the logits (B, C) of the batch. Call inside
    ``scoring_context(model, device, train=False)``: samples must not interact (eval mode)."""
    owners = _owners(model, selected)
    columns = sum(len(s.indices) for s in selected)
    if _couples_samples(model):  # per-sample forwards, as the official batch-1 vmap
        with torch.no_grad():
            logits = _logits(model(inputs), inputs.shape[0])
        parts = [_jacobian_chunk(model, inputs[b:b + 1], owners, columns)[0] for b in range(inputs.shape[0])]
        return torch.cat(parts), logits
    return _jacobian_chunk(model, inputs, owners, columns)


def _logits(output, batch: int) -> torch.Tensor:
    logits = logits_of(output)
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ValueError(f"vkdnw needs logits of shape (B, classes) = ({batch}, C), got {tuple(logits.shape)}")
    return logits


def _jacobian_chunk(model, inputs, owners, columns):
    batch = inputs.shape[0]
    records: list[tuple[torch.Tensor, list[tuple[Contraction, int]]]] = []
    recording = [True]

    def make_hook(owner: _Owner):
        fast = {attr: _fast_path(owner.module, attr) for attr, _, _ in owner.entries}

        def hook(module, args, kwargs, output):
            if not recording[0]:
                return None  # the module runs again to differentiate it: not part of the batch's forward
            if not isinstance(output, torch.Tensor) or output.dim() < 1 or output.shape[0] != batch:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(
                    f"vkdnw: a sampled weight belongs to {type(module).__name__}, whose output ({shape}) is not a "
                    f"(B, ...) tensor with the batch ({batch}) first; per-sample derivatives need one"
                )
            if not output.requires_grad:
                return None  # does not depend on the input: its derivative reaches no logit per sample
            x = args[0] if args else None
            contractions = []
            for attr, index, column in owner.entries:
                if fast[attr] is not None and isinstance(x, torch.Tensor) and not kwargs:
                    contractions.append((fast[attr](module, x, attr, index), column))
                else:
                    recording[0] = False
                    try:
                        contractions.append((_generic_entry(module, args, kwargs, attr, index), column))
                    finally:
                        recording[0] = True
            records.append((output, contractions))
            return output.clone()  # later in-place ops change the copy, not the recorded output
        return hook

    handles = []
    try:
        for owner in owners:
            handles.append(owner.module.register_forward_hook(make_hook(owner), with_kwargs=True))
        x = inputs.detach().requires_grad_(True)
        logits = _logits(model(x), batch)
    finally:
        for handle in handles:
            handle.remove()

    classes = logits.shape[1]
    jacobian = torch.zeros(batch, classes, columns, dtype=logits.dtype, device=logits.device)
    if not logits.requires_grad or not records:
        return jacobian, logits.detach()
    row = [0]
    tensor_hooks = []

    def make_tensor_hook(contractions):
        def on_grad(g):
            for contract, column in contractions:
                jacobian[:, row[0], column] += contract(g)
        return on_grad

    try:
        for output, contractions in records:
            tensor_hooks.append(output.register_hook(make_tensor_hook(contractions)))
        for c in range(classes - 1):  # the last column of L is zero: logit C-1 is never needed
            row[0] = c
            cotangent = torch.zeros_like(logits)
            cotangent[:, c] = 1
            torch.autograd.grad(logits, x, cotangent, retain_graph=c < classes - 2, allow_unused=True)
    finally:
        for handle in tensor_hooks:
            handle.remove()
    return jacobian, logits.detach()


# ----------------------------------------------------------------------------- initialisation


# ----------------------------------------------------------------------------- scores


def _seed_global_rng(seed: int | None, device: torch.device) -> None:
    """Seed the global RNG (inside ``scoring_context``, which forks it and restores it afterwards)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    torch.random.default_generator.manual_seed(int(seed))
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(int(seed))


def _entropy(model, inputs, init, p, params_grad_len, seed, noise=False, mode="clean") -> float:
    if mode not in MODE_DTYPE:
        raise ValueError(f"mode must be 'clean' (the Fisher matrix, its spectrum and the entropy in float64: the "
                         f"same value on every CPU) or 'official' (float32, as the official code), got {mode!r}")
    if init not in (None, "official"):
        raise ValueError(f"init must be 'official' (the official Kaiming normal fan-in re-initialisation) or None "
                         f"(the weights as they are), got {init!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if seed is not None and init is None:
        raise ValueError("seed only applies with init='official' (it seeds the re-initialisation)")
    selected = vkdnw_selection(model, p, params_grad_len)
    if not selected:
        raise ValueError(f"{type(model).__name__} has no parameters: vkdnw samples weights of the network")
    inputs, _ = check_batch(inputs, None)
    device = model_device(model, inputs.device)
    inputs = prepare_inputs(model, inputs, device)
    with scoring_context(model, device, train=False), \
            (restored_parameters(model) if init else contextlib.nullcontext()):
        if init == "official":
            _seed_global_rng(seed, device)
            kaiming_fanin_init_(model)
        if noise:  # the official driver's trainloader=None input, drawn after the re-initialisation
            inputs = torch.randn_like(inputs)
        jacobian, logits = vkdnw_jacobian(model, inputs, selected)
        return vkdnw_from_jacobian(jacobian, logits, MODE_DTYPE[mode])


@register_score("vkdnw_entropy", needs_labels=False, data_dependent=True)
def vkdnw_entropy_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                        init: Init | None = "official", p: int = 1, params_grad_len: int = 128,
                        seed: int | None = None, noise: bool = False, mode: Mode = "clean") -> float:
    """VKDNW entropy: spectral entropy of the Fisher matrix of a few sampled weights (higher is better).

    Args:
        model: returns logits (B, C) or a tuple ending in them; scored in **eval** mode (BatchNorm
            uses its running statistics, as the official ``get_fisher``), left as found.
        inputs: float tensor (B, ...) with B >= 2 (the official NB201 driver feeds 64 random
            or CIFAR images; the reference values use x[:64]).
        targets: ignored (labels are not needed); may be None.
        init: ``"official"`` (default): the official scorer's own re-initialisation first, as it
            always does (``init_model(kaiming_norm_fanin)``, see :func:`kaiming_fanin_init_`), on the
            model's own parameters, restored afterwards; drawn from the global RNG (seed it just
            before the call to reproduce the official values) or from ``seed``. ``None``: the
            weights as they are.
        p: weights sampled per tensor (``linspace(0, numel - 1, p)``); the reference values and
            the paper's NB201 results use p = 1 (index 0). The official default p = 0 fails.
        params_grad_len: only the first this-many tensors of ``named_parameters()`` are sampled.
        seed: with ``init="official"``, draw the re-initialisation from the global RNG seeded with
            ``seed`` (its state is restored afterwards); None: from the global RNG as it is.
        noise: score ``torch.randn_like(inputs)`` drawn after the re-initialisation, as the official
            NB201 driver (``trainloader=None``, B = 64) does; only the inputs' shape is used.
        mode: ``"clean"`` (default): the Fisher matrix, its spectrum, the deciles and the entropy in
            float64 (from the float32 Jacobian): the same value on every CPU and thread count to
            ~4e-5 relative (docs/benchmarks/cpu_spread.md). ``"official"``: all in float32 as the
            official code, for parity with its values. Where ``F`` is rank-deficient (most NB201
            cells) the official float32 deciles are partly rounding noise (~1e-7 of the largest
            eigenvalue) and move by up to several % from one CPU to another; there the two modes
            can differ completely (NB201 ``resnet`` cell: 1.17 official, ~1e-3 clean).

    Samples are assumed independent in eval mode (true with running-statistics BatchNorm,
    LayerNorm, GroupNorm); a BatchNorm without running statistics mixes them, and then the
    samples are differentiated one at a time (slower, as the official batch-1 forwards). Sampled
    weights must belong to modules returning one (B, ...) tensor. ``-0.0`` when the Fisher matrix
    is zero (no sampled weight reaches the logits: an NB201 cell of ``none`` ops) or not finite
    (NaN/inf logits or derivatives: the official code then catches the SVD error and uses zero
    eigenvalues).
    """
    return _entropy(model, inputs, init, p, params_grad_len, seed, noise, mode)


@register_score("vkdnw_dim", needs_labels=False, data_dependent=False)
def vkdnw_dim_score(model: nn.Module, inputs: torch.Tensor | None = None,
                    targets: torch.Tensor | None = None) -> float:
    """VKDNW dim: the number of parameter tensors, ``len(named_parameters())`` (a size proxy; the inputs are unused)."""
    return float(len(list(model.named_parameters())))


@register_score("vkdnw", needs_labels=False, data_dependent=True)
def vkdnw_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                init: Init | None = "official", p: int = 1, params_grad_len: int = 128,
                seed: int | None = None, noise: bool = False, mode: Mode = "clean") -> float:
    """VKDNW: ``vkdnw_dim + vkdnw_entropy / (log 9 + 1e-6)``, the official lexicographic ranking in one float.

    The official NB201 ranking is the dense lexicographic rank of ``(vkdnw_dim, vkdnw_entropy)``:
    first the number of parameter tensors, ties broken by the entropy. The entropy of nine
    normalised deciles is in ``[0, log 9]``, so the entropy term is in ``[0, 1)`` and this float
    sorts exactly like the pair (the paper's ``VKDNW_single = dim + entropy`` does not always).
    Arguments as :func:`vkdnw_entropy_score`.
    """
    return vkdnw_combine(vkdnw_dim_score(model), _entropy(model, inputs, init, p, params_grad_len, seed, noise,
                                                                 mode))
