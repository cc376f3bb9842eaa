"""Judges shared by every lab: plain records -> verdicts whose messages name the fault."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .layers import LayerInfo, LayerSpec, compare_layers
from .verdict import Verdict, fault, ok

__all__ = [
    "FLOAT_TYPES",
    "SOFTMAX",
    "SOFTMAX_HINT",
    "classes_verdict",
    "classifier_verdict",
    "close",
    "convolutions_verdict",
    "detached_verdict",
    "fraction_verdict",
    "history_verdict",
    "layer_order_verdict",
    "loss_verdict",
    "number_verdict",
    "optimizer_verdict",
    "output_value",
    "per_item_unit",
    "repeat_verdict",
    "unchanged_verdict",
    "whole_number",
]


SOFTMAX = ("Softmax", "LogSoftmax")


SOFTMAX_HINT = (
    "nn.CrossEntropyLoss applies the softmax itself, so the network must output raw scores"
)


def convolutions_verdict(layers: Sequence[LayerInfo], spec: Sequence[LayerSpec]) -> Verdict:
    """Are the convolutions the ones the table asks for, in number and settings?"""
    convs = [layer for layer in layers if layer.kind == "Conv2d"]
    expected = [s for s in spec if s.kind == "Conv2d"]
    if len(convs) != len(expected):
        return fault(f"expected {len(expected)} convolutions, found {len(convs)}")
    for number, (found, wanted) in enumerate(zip(convs, expected, strict=True), 1):
        wrong = [key for key, value in wanted.config.items() if found.config.get(key) != value]
        if wrong:
            return fault(
                f"convolution {number}: expected {wanted.describe()}, got {found.describe()} "
                f"({', '.join(wrong)} differ)"
            )
    return ok()


def layer_order_verdict(layers: Sequence[LayerInfo], spec: Sequence[LayerSpec]) -> Verdict:
    """Are the layer types (activations, pooling, flatten...) in the table's order?

    A softmax after the last layer is the classifier's fault (see ``classifier_verdict``).
    """
    body = list(layers)
    while body and body[-1].kind in SOFTMAX:
        body.pop()
    kinds, expected = [layer.kind for layer in body], [s.kind for s in spec]
    if kinds == expected:
        return ok()
    kind_spec = [LayerSpec(s.kind, {}, s.output_shape) for s in spec]
    kind_layers = [LayerInfo(layer.kind, {}, layer.output_shape, 0) for layer in body]
    mismatch = compare_layers(kind_layers, kind_spec)
    return fault(mismatch[0] if mismatch else f"expected the layers {expected}, got {kinds}")


def classifier_verdict(
    layers: Sequence[LayerInfo], spec: Sequence[LayerSpec], forward_error: str | None = None
) -> Verdict:
    """Do the linear layers and the output match the table, with raw scores at the end?"""
    softmax = [layer for layer in layers if layer.kind in SOFTMAX]
    if softmax:
        return fault(f"the model ends with {softmax[0].kind}: {SOFTMAX_HINT}")
    found = [layer for layer in layers if layer.kind == "Linear"]
    expected = [s for s in spec if s.kind == "Linear"]
    if [(x.config.get("in"), x.config.get("out")) for x in found] != [
        (s.config["in"], s.config["out"]) for s in expected
    ]:
        found_text = ", ".join(x.describe() for x in found) or "none"
        wanted = ", ".join(s.describe() for s in expected)
        why = f" ({forward_error})" if forward_error else ""
        return fault(f"expected the linear layers {wanted}, got {found_text}{why}")
    if not layers or layers[-1].output_shape != spec[-1].output_shape:
        return fault(
            forward_error or f"the output for one image must have shape {spec[-1].output_shape}"
        )
    return ok()


_LOSS_HINTS = {
    "BCELoss": "BCELoss is for yes/no (binary) targets; 10 classes need CrossEntropyLoss",
    "BCEWithLogitsLoss": "BCEWithLogitsLoss is for yes/no (binary) targets; 10 classes need CrossEntropyLoss",
    "NLLLoss": "NLLLoss expects log-probabilities; raw scores need CrossEntropyLoss",
    "MSELoss": "MSELoss is for regression; classification needs CrossEntropyLoss",
    "class CrossEntropyLoss": (
        "criterion is the class nn.CrossEntropyLoss itself: call it, nn.CrossEntropyLoss(), "
        "to make the loss function"
    ),
}


def loss_verdict(facts: dict) -> Verdict:
    """Is the loss a cross-entropy loss object?"""
    criterion = facts["criterion"]
    if criterion == "CrossEntropyLoss":
        return ok()
    return fault(_LOSS_HINTS.get(criterion, f"expected nn.CrossEntropyLoss(), got {criterion}"))


def optimizer_verdict(facts: dict, model_name: str, learning_rate: float) -> Verdict:
    """Is the optimiser Adam, over the model's parameters, at the lab's learning rate?"""
    optimizer = facts["optimizer"]
    if optimizer.startswith("class "):
        return fault(
            f"optimizer is the class {optimizer[6:]} itself: create one, "
            f"torch.optim.Adam({model_name}.parameters(), lr=learning_rate)"
        )
    if optimizer != "Adam":
        return fault(f"expected torch.optim.Adam, got {optimizer}")
    if not facts["covers_model"]:
        return fault(
            f"the optimiser does not hold {model_name}'s parameters: pass {model_name}.parameters()"
        )
    lr = facts["lr"]
    if lr is None or not math.isclose(lr, learning_rate, rel_tol=1e-6):
        return fault(
            f"expected the learning rate learning_rate = {learning_rate:g}, got {lr if lr is None else f'{lr:g}'}"
        )
    return ok()


def output_value(output: dict, expected: str = "a tensor") -> tuple[object, str]:
    """The recorded value (a tensor or a number), or None and a message naming what came back.

    ``expected`` says what the exercise asks for ("a tensor of shape (N,)", "a number").
    """
    if "error" in output:
        error = output["error"]
        return None, error if error.startswith("not implemented") else f"raised {error}"
    if "tensor" in output:
        return output["tensor"], ""
    if output.get("number"):
        return output["value"], ""
    kind = output.get("type", "value")
    if kind == "NoneType":
        return None, f"returned None, expected {expected}: is the `return` statement missing?"
    if kind.startswith("torch.return_types."):
        return None, (
            f"returned a {kind} (a pair of values and indices), expected {expected}: "
            "take its .indices, or use torch.argmax"
        )
    return None, f"returned a {kind}, expected {expected}"


def classes_verdict(output: dict, scores: torch.Tensor) -> Verdict:
    """Is ``output`` (a recorded return value) the class of each row of ``scores`` (N, C)?

    Any index of a row's maximum is right (ties).
    """
    count = scores.shape[0]
    value, message = output_value(output, f"a tensor of shape ({count},)")
    if value is None:
        return fault(message)
    if not isinstance(value, torch.Tensor):
        return fault(f"returned a {type(value).__name__}, expected a tensor of shape ({count},)")
    if value.dim() == 0:
        return fault(
            f"returned a single value for {count} rows: argmax without dim= flattens the whole "
            "batch; take the argmax over dim=1 (the classes)"
        )
    if tuple(value.shape) != (count,):
        if tuple(value.shape) == (scores.shape[1],) and count != scores.shape[1]:
            hint = " (argmax over dim=0 gives one value per class, not per image: use dim=1)"
        elif tuple(value.shape) == (count, 1):
            hint = " (keepdim=True leaves a column: drop it, or squeeze(1))"
        elif tuple(value.shape) == tuple(scores.shape):
            hint = f" ({_per_class(value)}: return the index of the largest, argmax over dim=1)"
        else:
            hint = ""
        return fault(f"expected shape ({count},), got {tuple(value.shape)}{hint}")
    largest = _largest_values(value, scores)
    if largest:
        return fault(
            f"returned the largest {largest} themselves, not where they are: the class is the "
            "index of the largest, torch.argmax(x, dim=1) (or torch.max(x, dim=1).indices)"
        )
    if value.is_floating_point() or value.dtype == torch.bool:
        return fault(
            f"expected integer classes, got dtype {value.dtype}; argmax returns integer indices"
        )
    best = scores.max(dim=1, keepdim=True).values
    acceptable = scores == best
    chosen = value.long().clamp(0, scores.shape[1] - 1)
    right = acceptable.gather(1, chosen.view(-1, 1)).view(-1) & (value.long() == chosen)
    if not bool(right.all()):
        row = int((~right).nonzero()[0])
        hint = _wrong_classes_hint(value, scores)
        return fault(
            f"{int((~right).sum())} of {count} rows wrong; e.g. row {row}: got class "
            f"{int(value[row])}, the largest score is at {int(scores[row].argmax())}"
            + (f" ({hint})" if hint else "")
        )
    return ok()


def _per_class(value: torch.Tensor) -> str:
    """What a tensor of one value per class for each row is: probabilities, or scores."""
    rows = value.double()
    if value.is_floating_point() and bool(
        (rows >= 0).all() and torch.allclose(rows.sum(dim=1), torch.ones(len(rows)).double())
    ):
        return "returned the probabilities, one per class for each row"
    return "returned one score per class for each row"


def _largest_values(value: torch.Tensor, scores: torch.Tensor) -> str:
    """ "scores" or "probabilities" where ``value`` holds each row's largest one, else ""."""
    if not value.is_floating_point() or value.shape != scores.shape[:1]:
        return ""
    for name, table in (("scores", scores), ("probabilities", torch.softmax(scores.double(), 1))):
        if torch.allclose(value.double(), table.double().max(dim=1).values, rtol=1e-4, atol=1e-6):
            return name
    return ""


def _wrong_classes_hint(value: torch.Tensor, scores: torch.Tensor) -> str:
    """Name the mistake that gives these classes: the smallest score, a softmax over the
    images, an exp() that overflowed."""
    with torch.no_grad():
        exp = torch.exp(scores.float())
        overflowed = exp / exp.sum(dim=1, keepdim=True)
    mistakes = (
        (scores.argmin(dim=1), "that is the smallest score (argmin): the class is the largest"),
        (
            torch.softmax(scores, dim=0).argmax(dim=1),
            "a softmax over dim=0 mixes the images: the probabilities of one image run along "
            "dim=1 (and the argmax of the raw scores gives the same classes)",
        ),
        (
            overflowed.argmax(dim=1) if bool(overflowed.isnan().any()) else None,
            "exp() of a large score overflows (exp(1000) is inf, and inf / inf is nan): use "
            "torch.softmax, or take the argmax of the raw scores",
        ),
    )
    for classes, hint in mistakes:
        if classes is not None and torch.equal(value.long(), classes):
            return hint
    return ""


def fraction_verdict(output: dict, predict: torch.Tensor, labels: torch.Tensor) -> Verdict:
    """Is ``output`` the fraction of ``predict`` equal to ``labels`` (both (N,))?"""
    value, message = output_value(output, "a number between 0 and 1")
    if value is None:
        if "Got: Bool" in message:
            message += (
                " (predict == labels holds True and False: turn them into numbers, .float(), "
                "before the mean)"
            )
        return fault(message)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            hint = ""
            if value.dim() == 2 and value.shape[0] == value.shape[1] == len(labels):
                hint = (
                    f": comparing shapes {(len(labels), 1)} and {(len(labels),)} broadcasts to an "
                    "N x N table; make both tensors (N,)"
                )
            return fault(
                f"returned a tensor of shape {tuple(value.shape)}, expected one number{hint}"
            )
        value = float(value)
    expected = float((predict == labels).float().mean())
    count = int((predict == labels).sum())
    if not math.isclose(value, expected, abs_tol=1e-6):
        if math.isclose(value, count):
            hint = f" (that is the count of right predictions, {count}: divide by N)"
        elif value == count // len(labels):
            hint = (
                f" (integer division: {count} // {len(labels)} rounds the fraction down to "
                f"{count // len(labels)}; divide with /)"
            )
        elif math.isclose(value, 100 * expected, abs_tol=1e-4):
            hint = " (a percentage: return a fraction between 0 and 1)"
        elif math.isclose(value, 1 - expected, abs_tol=1e-6):
            hint = " (the fraction of wrong predictions: count where they are equal)"
        elif math.isclose(value, _broadcast_mean(predict, labels), abs_tol=1e-6):
            hint = (
                f" (that is the mean of an N x N table: comparing shapes {(len(labels), 1)} and "
                f"{(len(labels),)} broadcasts; make both tensors (N,) before comparing)"
            )
        else:
            hint = ""
        return fault(f"expected {expected:.4f}, got {value:.4f}{hint}", value=value)
    return ok(value=value)


def _broadcast_mean(predict: torch.Tensor, labels: torch.Tensor) -> float:
    """What comparing an (N, 1) column with an (N,) row, then averaging, gives."""
    return float((predict.view(-1, 1) == labels.view(1, -1)).float().mean())


def number_verdict(output: dict) -> Verdict:
    """Is the recorded return value a plain number (Python's or NumPy's), not a tensor?"""
    if output.get("number"):
        return ok()
    if "tensor" in output:
        return fault("returned a tensor: use .item() to return a Python number")
    return fault(output_value(output, "a number")[1])


def history_verdict(history: dict, epochs: int, shortened: bool = False) -> Verdict:
    """One mean loss and accuracy per epoch, fractions for accuracies, the loss going down.
    ``shortened``: the grader's own run of the training, told as such (the student never saw
    its number of epochs)."""
    losses, accuracies = history.get("loss", []), history.get("accuracy", [])
    if len(losses) != epochs or len(accuracies) != epochs:
        ran = (
            f"the grader ran your training for {epochs} epochs (a shortened run)"
            if shortened
            else f"the training ran {epochs} epochs"
        )
        return fault(
            f"{ran} and the history holds {len(losses)} losses and {len(accuracies)} "
            "accuracies: expected 1 mean loss and 1 accuracy per epoch"
        )
    if not all(math.isfinite(v) for v in [*losses, *accuracies]):
        return fault("the history holds NaN or infinite values: the training diverged")
    if not all(0.0 <= a <= 1.0 for a in accuracies):
        return fault("recorded accuracies must be fractions between 0 and 1")
    if not losses[-1] < 0.99 * losses[0]:  # a model that never updates only wobbles
        return fault(
            f"the mean loss did not go down (first epoch {losses[0]:.4f}, last {losses[-1]:.4f})"
        )
    return ok(first_loss=losses[0], last_loss=losses[-1])


FLOAT_TYPES = ("float", "float16", "float32", "float64")


def whole_number(output: dict, what: str) -> tuple[int | None, str]:
    """A recorded return value as an ``int``, or the fault that stops it being one."""
    if "error" in output:
        return None, output_value(output, what)[1]
    if "tensor" in output:
        return None, f"returned a tensor, expected {what} as a Python int: use int(...) or .item()"
    if not output.get("number"):
        return None, f"returned a {output.get('type', 'value')}, expected {what} (a whole number)"
    if output["type"] in FLOAT_TYPES:
        value = output["value"]
        shown = f"{value:.1f}" if value.is_integer() else f"{value:.6g}"
        return None, (
            f"returned {shown}, a {output['type']}: {what} is a whole number; use "
            "// (floor division) rather than /"
        )
    return int(output["value"]), ""


def close(value: torch.Tensor, expected: torch.Tensor, tolerance: float, scale_free: bool) -> bool:
    if scale_free:  # compare each map divided by its largest value
        value, expected = per_item_unit(value), per_item_unit(expected)
    bound = tolerance * max(float(expected.abs().max()), 1e-12)
    return bool((value - expected).abs().max() <= bound)


def per_item_unit(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.reshape(len(maps), -1)
    top = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    return (flat / top).reshape(maps.shape)


def repeat_verdict(entry: dict, what: str) -> Verdict:
    """Did a second call on the same tensors give the same result as the first?"""
    if "repeat" not in entry:
        return fault(output_value(entry.get("output", {}))[1] or "the function was not called")
    first, _ = output_value(entry["output"])
    second, message = output_value(entry["repeat"])
    if first is None or second is None:
        return fault(message or output_value(entry["output"])[1])
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        return fault(f"expected {what} as a tensor")
    if first.shape == second.shape and torch.allclose(first, second, rtol=1e-4, atol=1e-7):
        return ok()
    return fault(
        f"a second call on the same images gave a different {what}: gradients pile up in "
        "images.grad from one call to the next; work on a copy "
        "(x = images.clone().requires_grad_()) or zero the gradient first"
    )


def unchanged_verdict(entry: dict, names: Sequence[str]) -> Verdict:
    """Did the function leave its tensor arguments as it found them?"""
    if "changed" not in entry:
        return fault(output_value(entry.get("output", {}))[1])
    changed = [names[index] for index in entry["changed"] if index < len(names)]
    if changed:
        return fault(
            f"the function changed its argument {changed[0]} in place: work on a copy "
            f"({changed[0]}.clone()) so that the caller's tensor stays as it was"
        )
    return ok()


def detached_verdict(entry: dict) -> Verdict:
    """Does the function return plain values, without the gradient graph that made them?"""
    if "requires_grad" not in entry:
        return fault(output_value(entry.get("output", {}))[1])
    if entry["requires_grad"]:
        return fault(
            "the result still requires grad (it carries the graph that computed it): return "
            "result.detach(), or compute it under torch.no_grad()"
        )
    return ok()
