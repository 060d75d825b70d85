"""Several scores of one network with shared work: ``score_many(model, inputs, targets, names)``.

Scores that read the same pass of the network share it:

- the **input-gradient pass** (one forward in train mode, one backward of the summed logits to the
  inputs): ``epe``, ``jacob_cov``, and ``naswot``, whose activation hooks ride on that forward;
- the **loss-gradient pass** (cross-entropy backward to the Conv/Linear weights): ``grad_norm`` and
  ``snip``;
- AZ-NAS's pass (its own initialisation and input): ``az_expressivity``, ``az_progressivity``,
  ``az_trainability``.

Every other score runs alone, as ``get_score(name)(model, inputs, targets, **options)``. The values
are identical to calling each score alone (tested bit for bit); a score with options that change its
pass (``epe`` with ``reference`` or ``precision``) runs alone too.
"""
from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import torch
from torch import nn

from ._cpu_avg_pool import fast_cpu_ops
from ._gradients import input_gradient
from ._isolation import scoring_context
from ._validation import check_batch, model_device, prepare_inputs, score_value
from .az_nas import az_nas_components
from .epe import epe_from_jacobian
from .gradient_proxies import grad_norm_from_gradients, loss_gradients, snip_from_gradients
from .jacob_cov import jacob_cov_from_jacobian
from .naswot import naswot_hooks
from .registry import get_score, score_info

INPUT_GRADIENT = ("epe", "jacob_cov", "naswot")
LOSS_GRADIENT = ("grad_norm", "snip")
AZ_NAS = ("az_expressivity", "az_progressivity", "az_trainability")


def score_many(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
               names: Sequence[str] = ("epe",), options: Mapping[str, Mapping] | None = None) -> dict[str, float]:
    """``{name: value}`` for each score in ``names``, computed with shared passes.

    Args:
        model, inputs, targets: as for each score (``targets`` may be None when no score needs labels).
        names: registered score names (not rank ensembles: they rank several networks).
        options: per-score keyword arguments, e.g. ``{"epe": {"class_count": "true"}}``. The key
            ``samples`` (an int) gives that score only the first ``samples`` rows of the batch (how
            some official code feeds its proxy: MeCo one image, SWAP 16).
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"score_many: names must be a list of score names, e.g. ['epe', 'naswot'], got {names!r}"
                        + (f"; for one score: names=[{names!r}]" if isinstance(names, str) else ""))
    options = {name: dict(value) for name, value in (options or {}).items()}
    unknown = set(options) - set(names)
    if unknown:
        raise ValueError(f"options given for score(s) not requested: {sorted(unknown)}")
    for name in names:
        if score_info(name).relative:
            raise ValueError(f"{name!r} ranks candidates against each other; score_many computes per-network scores")
    samples = {name: _samples(name, options[name].pop("samples", None), inputs) for name in options}
    whole = [n for n in names if samples.get(n) is None]  # the scores that see the whole batch
    values: dict[str, float] = {}
    shared = [n for n in whole if n in INPUT_GRADIENT and _shareable(n, options.get(n, {}))]
    if len(shared) > 1:
        values.update(_input_gradient_pass(model, inputs, targets, shared, options))
    losses = [n for n in whole if n in LOSS_GRADIENT]
    if len(losses) > 1:
        weights, grads = loss_gradients(model, inputs, targets, " and ".join(losses))
        rules = {"grad_norm": grad_norm_from_gradients, "snip": snip_from_gradients}
        values.update({n: rules[n](weights, grads) for n in losses})
    az = [n for n in names if n in AZ_NAS]
    if len(az) > 1 and len({(samples.get(n), _frozen(options.get(n, {}))) for n in az}) == 1:
        rows = samples.get(az[0]) or len(inputs)
        components = az_nas_components(model, inputs[:rows], None if targets is None else targets[:rows],
                                       **options.get(az[0], {}))
        values.update({n: float(components[n.removeprefix("az_")]) for n in az})
    for name in names:  # the rest, alone
        if name not in values:
            rows = samples.get(name) or len(inputs)
            fn = get_score(name)
            values[name] = score_value(fn(model, inputs[:rows], None if targets is None else targets[:rows],
                                          **options.get(name, {})), name, fn)
    return {name: values[name] for name in names}


def _samples(name: str, samples, inputs: torch.Tensor) -> int | None:
    """The rows a score gets (None: the whole batch); refuses what the batch cannot give."""
    if samples is None:
        return None
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"{name}: samples must be an int >= 1 (the first rows of the batch), got {samples!r}")
    if samples > len(inputs):
        raise ValueError(f"{name}: samples={samples} but the batch has {len(inputs)} rows")
    return None if samples == len(inputs) else samples


def _shareable(name: str, options: dict) -> bool:
    if name == "epe":
        return not options.get("reference") and options.get("precision") is None
    return name != "jacob_cov" or not options


def _frozen(options: Mapping) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in options.items()))


def _input_gradient_pass(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None,
                         names: list[str], options: dict[str, dict]) -> dict[str, float]:
    """One forward (with naswot's hooks, if asked) and one input-gradient backward for ``names``."""
    if "epe" in names and targets is None:
        raise ValueError("epe needs labels: pass integer class targets of shape (B,)")
    inputs, targets = check_batch(inputs, targets if "epe" in names else None)
    device = model_device(model, inputs.device)
    inputs = prepare_inputs(model, inputs, device)
    kernel_hooks, kernel = (naswot_hooks(model, inputs.shape[0], device, **options.get("naswot", {}))
                            if "naswot" in names else (contextlib.nullcontext(), None))
    with scoring_context(model, device), fast_cpu_ops(device), kernel_hooks:
        jacobian, logits = input_gradient(model, inputs)
    values = {}
    if "epe" in names:
        values["epe"] = epe_from_jacobian(jacobian, targets.to(device), logits.shape[-1], **options.get("epe", {}))
    if "jacob_cov" in names:
        values["jacob_cov"] = jacob_cov_from_jacobian(jacobian.cpu().numpy())
    if "naswot" in names:
        values["naswot"] = kernel.logdet()
    return values
