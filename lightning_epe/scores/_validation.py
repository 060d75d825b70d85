"""Input and output checks shared by every score, the search's batches and the callback.

No Lightning here. One place says what a scoring batch is (finite float inputs, B >= 2, integer
labels of shape (B,) within the class count) and how logits are read from a model's output.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import numbers
from typing import Any, Callable, Iterator, Mapping, Union

import numpy
import torch
from torch import nn


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


def check_labels(targets: torch.Tensor, num_classes: int, hint: str = "", where: str = "") -> None:
    """Refuse a label outside ``0 .. num_classes - 1``: the message names it, the accepted range and ``hint``."""
    top = int(targets.max())
    if top >= num_classes:
        raise ValueError(f"{where + ' has ' if where else ''}label {top}, out of range for num_classes={num_classes} "
                         f"(labels must be 0..{num_classes - 1}){'; ' + hint if hint else ''}")


def prepare_inputs(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``inputs`` on ``device`` in the dtype of the model's floating-point parameters."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), inputs.dtype)
    return inputs.to(device=device, dtype=dtype)


def check_inputs_shape(inputs: torch.Tensor) -> torch.Tensor:
    """For scores that only use the input *shape* (flops, synflow): one sample is enough."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor (normalised images), got dtype {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be batched, shape (B, ...) with B >= 1, got shape {tuple(inputs.shape)}")
    return inputs


# ------------------------------------------------------------------------------------------
# Reading logits from a model's output: the one place every score, the search, the callback and
# CandidateModule read them.

OutputSelector = Union[None, int, str, Callable[[Any], torch.Tensor]]
_OUTPUT: contextvars.ContextVar = contextvars.ContextVar("lightning_epe_output", default=None)
_UNSET = object()
HOW_TO_CHOOSE = ("choose with output=: an index (output=0), an attribute or key name (output='logits') or a "
                 "function output -> logits; ArchitectureSearch(output=...), EPEScore(output=...), YAML "
                 "search.output, or `with selecting_output(...):` around a score function")


def check_output_selector(output: OutputSelector) -> OutputSelector:
    """Validate an ``output=`` choice: None (the default rule), an int index, an attribute/key name or a callable."""
    if output is None or callable(output):
        return output
    if isinstance(output, bool) or not isinstance(output, (int, str)):
        raise TypeError(f"output must be None, an int index, an attribute or key name, or a function output -> "
                        f"logits; got {output!r}")
    if isinstance(output, str) and not output.strip():
        raise ValueError("output must be a non-empty attribute or key name (e.g. 'logits'), got ''")
    if isinstance(output, str) and "." in output:  # a function's dotted path (YAML), else nested attributes
        module, _, name = output.rpartition(".")
        try:
            function = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            function = None
        if callable(function):
            return function
    return int(output) if isinstance(output, int) else output


def describe_output_selector(output: OutputSelector):
    """The JSON form of an ``output=`` choice (a callable by its dotted path), for a results' configuration."""
    if output is None or isinstance(output, (int, str)):
        return output
    return f"{getattr(output, '__module__', '?')}.{getattr(output, '__qualname__', type(output).__name__)}"


@contextlib.contextmanager
def selecting_output(output: OutputSelector) -> Iterator[None]:
    """Within the block, every score reads the logits as ``output`` says (see :func:`logits_of`)."""
    token = _OUTPUT.set(check_output_selector(output))
    try:
        yield
    finally:
        _OUTPUT.reset(token)


def describe_output(output) -> str:
    """A model output in words, for error messages: its type, shapes and keys."""
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, (tuple, list)):
        inner = ", ".join(describe_output(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in output[:4])
        return f"a {type(output).__name__} of {len(output)} ({inner}{', ...' if len(output) > 4 else ''})"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {list(output)[:6]}"
    return f"a {type(output).__name__}"


def _select(output, selector: OutputSelector):
    if callable(selector):
        return selector(output)
    if isinstance(selector, int):
        if not isinstance(output, (tuple, list)):
            raise TypeError(f"output={selector} indexes a tuple or list, but the model returned "
                            f"{describe_output(output)}")
        if not -len(output) <= selector < len(output):
            raise IndexError(f"output={selector} is out of range: the model returned {describe_output(output)}")
        return output[selector]
    value = output
    for part in selector.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif hasattr(value, part):
            value = getattr(value, part)
        else:
            raise TypeError(f"output={selector!r}: the model returned {describe_output(output)}, which has no "
                            f"attribute or key {part!r}")
    return value


def _default_logits(output):
    """The default rule: a tensor; a named ``logits`` (attribute, e.g. torchvision's GoogLeNetOutputs or a
    Hugging Face output, or dict key); a 1-tuple; a 2-tuple ``(features, logits)`` of two different shapes
    (AutoDL's NB201 networks) gives its last element. A pair of one shape (torchvision's ``(logits, aux)``)
    and any longer tuple are ambiguous and refused."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output:
            return output["logits"]
        raise TypeError(f"the model returned {describe_output(output)} without a 'logits' key: which is the logits? "
                        + HOW_TO_CHOOSE)
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)):
        if len(output) == 2 and all(isinstance(o, torch.Tensor) for o in output) \
                and output[0].shape == output[1].shape:
            raise TypeError(f"the model returned {describe_output(output)}: two outputs of one shape, such as "
                            "torchvision's (logits, aux), are ambiguous (a pair is read as (features, logits) only "
                            "when its shapes differ); " + HOW_TO_CHOOSE)
        if len(output) in (1, 2):
            return output[-1]
        raise TypeError(f"the model returned {describe_output(output)}: which element is the logits is ambiguous "
                        "(only a 1-tuple or a (features, logits) pair of two shapes is read by default); "
                        + HOW_TO_CHOOSE)
    return output


def logits_of(output, select=_UNSET) -> torch.Tensor:
    """Logits of shape (B, classes) from a model output.

    ``select`` (default: the ``output=`` of the enclosing :func:`selecting_output`, else None): an int
    index into a tuple/list, an attribute or key name (dotted for nesting), or a function output ->
    logits. None: the default rule (a tensor; ``.logits`` or a ``'logits'`` key; the last element of
    a 1-tuple or a ``(features, logits)`` pair of two different shapes; a pair of one shape and any longer
    tuple are refused as ambiguous).
    """
    selector = _OUTPUT.get() if select is _UNSET else check_output_selector(select)
    logits = _default_logits(output) if selector is None else _select(output, selector)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model must return logits (a tensor of shape (B, classes)), or a tuple or object "
                        f"holding them; got {describe_output(logits)}" + ("" if selector is None else
                                                                    f" from output={selector!r}"))
    if logits.dim() != 2:
        raise ValueError(f"the model's output must be logits of shape (B, classes), got shape {tuple(logits.shape)}"
                         + (" (a scalar: is the output reduced, e.g. a loss or a mean over the batch?)"
                            if logits.dim() == 0 else
                            " (one value per sample: return (B, 1) for a single output)" if logits.dim() == 1
                            else " (flatten or pool the class scores to (B, classes))")
                         + ("" if selector is None else f"; read with output={selector!r}"))
    return logits


# ------------------------------------------------------------------------------------------
# A score function's value


def score_value(value, score: str, fn: Callable | None = None):
    """``value`` (what the score function ``score`` returned) as a float; a rank ensemble's dict of member
    scores as a dict of floats. Anything but a real number (a float, an int, a one-element real tensor, a
    numpy scalar) is a ``TypeError`` naming the score function: ``float()`` would turn ``True`` into 1.0
    and ``"2.5"`` into 2.5 silently."""
    if isinstance(value, Mapping):
        return {name: score_value(v, f"{score}[{name!r}]", fn) for name, v in value.items()}
    real = False
    if isinstance(value, torch.Tensor):
        real = value.numel() == 1 and not (value.is_complex() or value.dtype == torch.bool)
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, numpy.bool_)):
        real = True
    elif isinstance(value, numpy.ndarray):
        real = value.size == 1 and value.dtype.kind in "iuf"
    if real:
        return float(value)
    where = f" ({fn.__module__}.{fn.__qualname__})" if fn is not None and hasattr(fn, "__qualname__") else ""
    what = describe_output(value) if isinstance(value, torch.Tensor) else f"{value!r:.80} (a {type(value).__name__})"
    raise TypeError(f"the score function {score!r}{where} returned {what}; a score must be a real number: a float, "
                    "an int, a 0-d tensor or a numpy scalar (not a bool, str, None, complex or a tensor of several "
                    "values)")


# ------------------------------------------------------------------------------------------
# Explaining a failed or undefined score


def explain_error(err: BaseException, model: nn.Module | None, inputs: torch.Tensor | None, score: str,
                  where: str = "", network: str | None = None) -> str:
    """Context for an exception raised while scoring: where, the inputs, what the score needs, and a
    likely cause for the usual confusing messages. ``network`` names the network when ``model`` is None
    (a candidate that failed before it was built)."""
    text = str(err)
    name = type(model).__name__ if model is not None else network or "the network"
    parts = [f"while scoring {where + ' ' if where else ''}({name}) with the {score!r} score"]
    if isinstance(inputs, torch.Tensor):
        parts.append(f" on inputs of shape {tuple(inputs.shape)}, {str(inputs.dtype).replace('torch.', '')}, "
                     f"device {inputs.device}")
    parts.append("; it runs the network in train mode with autograd on and needs logits of shape (B, classes)")
    hint = ""
    lowered = text.lower()
    meta = model is not None and any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    if meta or "meta tensor" in lowered or "meta device" in lowered:
        hint = ("the network has tensors on the 'meta' device (shapes only, no values): materialise it "
                "(model.to_empty(device=...) then initialise) before scoring")
    elif "does not require grad" in lowered or "does not have a grad_fn" in lowered:
        hint = ("the output does not depend on the inputs through autograd: does forward run under "
                "torch.no_grad()/torch.inference_mode() or call .detach()? The score differentiates the output")
    elif any(s in lowered for s in ("expected 3d", "expected 4d", "expected 2d", "mat1 and mat2", "size mismatch",
                                    "given groups=", "expected input", "input channels", "but got input of size")):
        hint = ("the network does not accept inputs of this shape: check the data's image size and channels "
                "against the network (e.g. build_options in_channels)")
    return "".join(parts) + (f". Likely cause: {hint}" if hint else "")


def nan_reason(score: str, options: dict | None = None, targets: torch.Tensor | None = None,
               num_logits: int | None = None, draws: int = 1) -> str:
    """Why a score came out NaN (or infinite), as far as can be told from the score's options and labels."""
    options = options or {}
    prefix = f"all {draws} draws are undefined; " if draws > 1 else ""
    if score == "epe":
        class_count = options.get("class_count", "official")
        count = 10 if class_count == "official" else num_logits if class_count == "true" else class_count
        if isinstance(count, int) and count > 100 and targets is not None:
            sizes = torch.bincount(targets.flatten().long().cpu())
            if not bool((sizes >= 2).any()):
                return (prefix + f"class_count={class_count!r} gives {count} classes (> 100: the pairwise branch, "
                        "which drops classes with one sample, as the official code); every class in this batch of "
                        f"{targets.numel()} has a single sample, so no class is left. Use a larger batch, or "
                        "class_count='official'")
        return (prefix + "the input gradient of at least one sample is constant (e.g. zero: the output does not "
                "depend on the input, as in an all-'none' cell), so its correlations are undefined")
    return (prefix + f"the {score} score is undefined for this network (NaN or infinite): typically zero or "
            "constant activations or gradients, or an overflow")


def model_device(model: nn.Module, default: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return default
