"""Turn a student's objects into plain data (tensors, numbers, strings) that can be saved and
read back with ``torch.load(..., weights_only=True)``: what the probe records in the kernel."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .verdict import Verdict, fault, ok
from .verdicts import output_value

__all__ = [
    "call_record",
    "failure",
    "history_record",
    "model_call_record",
    "optimizer_record",
    "plain",
    "tensor_output",
]


def plain(value) -> dict:
    """A function's return value as plain data: a tensor, a real number, or just its type."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu().clone()}
    if isinstance(value, bool):
        return {"type": "bool"}
    if isinstance(value, numbers.Real):  # int, float and NumPy's scalars alike
        return {"type": type(value).__name__, "value": float(value), "number": True}
    return {"type": _type_name(value)}


def _type_name(value) -> str:
    """``CrossEntropyLoss`` for an object, ``class CrossEntropyLoss`` for the class itself.

    The (values, indices) pairs that ``torch.max(x, dim)`` and its kin return keep their module,
    ``torch.return_types.max``, so that a message can say what they are.
    """
    if isinstance(value, type):
        return f"class {value.__name__}"
    kind = type(value)
    if kind.__module__ == "torch.return_types":
        return f"torch.return_types.{kind.__name__}"
    return kind.__name__


def failure(exc: BaseException) -> dict:
    """An exception as plain data."""
    if isinstance(exc, NotImplementedError):
        return {"error": "not implemented yet (the stub still raises NotImplementedError)"}
    return {"error": f"{type(exc).__name__}: {exc}"[:400]}


def call_record(function: Callable, cases: Sequence[tuple]) -> list[dict]:
    """Call ``function`` on each tuple of arguments (copies of tensors), recording what it returns."""
    if not callable(function):
        raise TypeError(f"expected a function, got {type(function).__name__}")
    outputs = []
    for args in cases:
        try:
            copies = [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]
            outputs.append(plain(function(*copies)))
        except Exception as exc:  # the student's function may fail in any way; record it
            outputs.append(failure(exc))
    return outputs


def optimizer_record(criterion, optimizer, model) -> dict:
    """The loss's and optimiser's types, the learning rate, and whether it holds the model's parameters."""
    groups = list(getattr(optimizer, "param_groups", None) or [])
    held = {id(p) for group in groups if isinstance(group, dict) for p in group.get("params", [])}
    owned = (
        [p for p in model.parameters() if p.requires_grad] if isinstance(model, nn.Module) else []
    )
    learning_rate = groups[0].get("lr") if groups and isinstance(groups[0], dict) else None
    return {
        "criterion": _type_name(criterion),
        "optimizer": _type_name(optimizer),
        "lr": float(learning_rate) if isinstance(learning_rate, numbers.Real) else None,
        "covers_model": bool(owned) and all(id(p) in held for p in owned),
        "model_parameters": len(owned),
    }


def history_record(history) -> dict:
    """A training history's per-epoch values, as lists of floats."""
    metrics = getattr(history, "metrics", None)
    if not isinstance(metrics, dict):
        raise TypeError(f"expected a training.History, got {type(history).__name__}")
    return {str(key): [float(v) for v in values] for key, values in metrics.items()}


def model_call_record(function: Callable, model: nn.Module, args: Sequence, repeat: bool = False):
    """Call ``function(model, *args)`` as a student's code is called, and record plain data.

    The arguments are passed as they are, not copied, so that what the function does to them
    shows: ``changed`` lists the (0-based) arguments whose values it changed, ``requires_grad``
    says whether the result still holds a gradient graph and, with ``repeat``, ``repeat`` is
    the result of a second call on the same objects (gradients left in ``images.grad`` pile up).
    """
    if not callable(function):
        raise TypeError(f"expected a function, got {_type_name(function)}")
    kept = [arg.detach().clone() if isinstance(arg, torch.Tensor) else None for arg in args]
    try:
        output = function(model, *args)
    except Exception as exc:  # the student's function may fail in any way; record it
        return {"output": failure(exc)}
    entry = {
        "output": plain(output),
        "requires_grad": bool(isinstance(output, torch.Tensor) and output.requires_grad),
        "changed": [
            index
            for index, (arg, copy) in enumerate(zip(args, kept, strict=True))
            if copy is not None and not torch.equal(arg.detach(), copy)
        ],
    }
    if repeat:
        try:
            entry["repeat"] = plain(function(model, *args))
        except Exception as exc:  # noqa: BLE001 - recorded, like the first call's
            entry["repeat"] = failure(exc)
    return entry


def tensor_output(
    entry: dict, shape: tuple[int, ...], what: str
) -> tuple[torch.Tensor | None, Verdict]:
    """The recorded result as a float tensor of ``shape``, or a fault saying why it is not."""
    output = entry.get("output", entry)
    value, message = output_value(output)
    if value is None:
        return None, fault(message)
    if not isinstance(value, torch.Tensor):
        return None, fault(f"returned a {type(value).__name__}, expected {what} of shape {shape}")
    if tuple(value.shape) != tuple(shape):
        return None, fault(f"expected {what} of shape {tuple(shape)}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        return None, fault(f"expected floating-point values, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        return None, fault(f"{what} holds NaN or infinite values")
    return value.float(), ok()
