"""Rebuild a student's network from plain layer records, with PyTorch's own layer classes only."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable

import torch
from torch import nn

from cnn_course.training import PREDICT_BATCH

__all__ = [
    "ACTIVATION_BUDGET",
    "COMPUTE_BUDGET",
    "LAYER_BUDGET",
    "PARAMETER_BUDGET",
    "REBUILT_KINDS",
    "RebuildError",
    "over_budget",
    "rebuild",
    "refused_records",
]


class RebuildError(Exception):
    """The records describe a layer the grader does not rebuild, or tensors that do not fit."""


# The layer kinds ``_layer`` rebuilds.
REBUILT_KINDS = frozenset(
    "Conv2d MaxPool2d AvgPool2d Linear Softmax LogSoftmax Flatten Dropout LeakyReLU BatchNorm2d "
    "BatchNorm1d ReLU Sigmoid Tanh Identity GELU ELU".split()
)


def _layer(kind: str, config: dict, tensors: dict) -> nn.Module:
    if kind == "Conv2d":
        return nn.Conv2d(
            config["in"],
            config["out"],
            kernel_size=tuple(config["kernel"]),
            stride=tuple(config["stride"]),
            padding=tuple(config["padding"]),
            dilation=tuple(config.get("dilation", (1, 1))),
            groups=config.get("groups", 1),
            bias="bias" in tensors,
        )
    if kind in ("MaxPool2d", "AvgPool2d"):
        return getattr(nn, kind)(tuple(config["kernel"]), tuple(config["stride"]))
    if kind == "Linear":
        return nn.Linear(config["in"], config["out"], bias="bias" in tensors)
    if kind in ("Softmax", "LogSoftmax"):
        return getattr(nn, kind)(dim=config.get("dim"))
    if kind == "Flatten":
        return nn.Flatten(config.get("start_dim", 1), config.get("end_dim", -1))
    if kind == "Dropout":
        return nn.Dropout(config.get("p", 0.5))
    if kind == "LeakyReLU":
        return nn.LeakyReLU(config.get("negative_slope", 0.01))
    if kind in ("BatchNorm2d", "BatchNorm1d"):
        return getattr(nn, kind)(
            config["num_features"], eps=config["eps"], momentum=config["momentum"]
        )
    if kind in ("ReLU", "Sigmoid", "Tanh", "Identity", "GELU", "ELU"):
        return getattr(nn, kind)()
    raise RebuildError(f"the grader does not rebuild {kind} layers")


def rebuild(
    records: dict, *, with_weights: bool = True, device: str | None = None
) -> nn.Sequential:
    """An ``nn.Sequential`` of the recorded layers, with their trained tensors when asked.

    Without weights, the layers keep PyTorch's fresh initialisation (for retraining); on the
    ``meta`` device they only check that every layer is one the grader rebuilds. Records the
    judge refused (``refused_records``) are never rebuilt: the refusal says why.
    """
    if records.get("refused"):
        raise RebuildError(str(records["refused"]))
    layers = []
    for index, record in enumerate(records["layers"]):
        tensors = record.get("tensors", {})
        try:
            with torch.device(device) if device else contextlib.nullcontext():
                layer = _layer(record["kind"], record["config"], tensors)
        except (KeyError, TypeError, ValueError) as exc:
            raise RebuildError(
                f"layer {index} ({record.get('kind')}): unusable settings ({exc})"
            ) from None
        if with_weights:
            state = layer.state_dict()
            if set(state) != set(tensors):
                raise RebuildError(
                    f"layer {index} ({record['kind']}): tensors {sorted(tensors)} do not fit"
                )
            for name, tensor in tensors.items():
                if not isinstance(tensor, torch.Tensor) or tensor.shape != state[name].shape:
                    raise RebuildError(
                        f"layer {index} ({record['kind']}): tensor {name} has the wrong shape"
                    )
            layer.load_state_dict(
                {name: tensor.to(state[name].dtype) for name, tensor in tensors.items()}
            )
        layers.append(layer)
    if not layers:
        raise RebuildError("the model has no layers")
    return nn.Sequential(*layers)


# What the grader spends on one rebuilt model, per image it evaluates (it evaluates
# training.PREDICT_BATCH = 100 at once, and retrains at the lab's training batch sizes): the
# lab's models output at most 65,536 values in one layer, 0.3 M in all, and need about 20 M
# multiply-adds per image. The budget leaves a margin of 7 to 50 over that.
LAYER_BUDGET = 500_000  # values of the largest layer output for one image (200 MB for 100)
ACTIVATION_BUDGET = 4_000_000  # values of all layer outputs for one image
COMPUTE_BUDGET = 1_000_000_000  # multiply-adds for one image (a pooling window: one per value)
# Parameters of one model (the labs' largest has about 0.6 M): a record's tensors are read with
# their shapes only (a zero-stride tensor of 10^10 values fits in a 1.5 KB file), and rebuilding
# gives each parameter its memory.
PARAMETER_BUDGET = 20_000_000

_LARGEST_SETTING = 2**31 - 1  # a whole-number setting: at most a C int, as some kernels hold it
_MISSING = object()


class _Unusable(Exception):
    """A layer whose output shape cannot be computed, or settings PyTorch cannot take: the
    message says what it got and what it expects, after ``layer i (kind)``."""


def _text(value: object) -> str:
    """A short, printable form of a recorded value (a crafted one may be anything)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an int of 5,000 digits refuses to print
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(config: dict, key: str, low: int, default: object = _MISSING) -> int:
    value = config.get(key, default)
    if value is _MISSING:
        raise _Unusable(f"has no {key} setting")
    if not isinstance(value, numbers.Integral) or not low <= value <= _LARGEST_SETTING:
        raise _Unusable(
            f"has {key} = {_text(value)}, where it expects a whole number from {low} to "
            f"{_LARGEST_SETTING:,}"
        )
    return int(value)


def _pair(config: dict, key: str, low: int, default: object = _MISSING) -> tuple[int, int]:
    value = config.get(key, default)
    if value is _MISSING:
        raise _Unusable(f"has no {key} setting")
    if not (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and low <= v <= _LARGEST_SETTING for v in value)
    ):
        raise _Unusable(
            f"has {key} = {_text(value)}, where it expects two whole numbers from {low} to "
            f"{_LARGEST_SETTING:,}"
        )
    return int(value[0]), int(value[1])


def _real(config: dict, key: str, default: object, low: float, high: float, expects: str) -> None:
    value = config.get(key, default)
    try:
        usable = isinstance(value, numbers.Real) and low <= float(value) <= high
    except OverflowError:
        usable = False
    if not usable:
        raise _Unusable(f"has {key} = {_text(value)}, where it expects {expects}")


def _dimension(config: dict, key: str, default: object, rank: int, input_text: str) -> int:
    """A dimension setting (start_dim, dim...) for an input of ``rank`` dimensions, from 0."""
    value = config.get(key, default)
    if not isinstance(value, numbers.Integral) or not -rank <= value < rank:
        raise _Unusable(
            f"has {key} = {_text(value)} for an input of shape {input_text}, where it expects a "
            f"dimension from {-rank} to {rank - 1}"
        )
    return int(value) % rank


def _shape_text(shape: tuple[int, ...], batch: int) -> str:
    """``(N, 32, 14, 14)``: the batch dimension, where it is the batch's, written N."""
    dims = ["N" if i == 0 and n == batch else _text(n) for i, n in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


_UNBATCHED = (
    ": a 3-d input is taken as one image (C, H, W), with the batch's images as its channels; "
    "keep the batch dimension first and each image's (C, H, W) after it (look at the Flatten "
    "or view before this layer)"
)


def _images_input(shape: tuple[int, ...], batch: int, channels: int | str) -> None:
    """Refuse an input that is not a batch of images ``(N, channels, H, W)``."""
    if len(shape) != 4:
        raise _Unusable(
            f"got an input of shape {_shape_text(shape, batch)}, where it expects a batch of "
            f"images (N, C, H, W)"
            + (f" with C = {channels}" if isinstance(channels, int) else "")
            + (_UNBATCHED if len(shape) == 3 else "")
        )
    if isinstance(channels, int) and shape[1] != channels:
        raise _Unusable(
            f"got an input of shape {_shape_text(shape, batch)}, where it expects "
            f"(N, {channels}, H, W): {channels} channels per image"
        )


def _output_shape(
    kind: str, config: dict, shape: tuple[int, ...], batch: int
) -> tuple[tuple[int, ...], int]:
    """The shape the rebuilt layer gives an input of ``shape`` (the batch first), exactly as
    PyTorch computes it, and its multiply-adds; ``_Unusable`` where PyTorch would refuse the
    layer or its input, or would take the input as something other than a batch (an unbatched
    convolution, a Flatten merging the images)."""
    got = _shape_text(shape, batch)
    if kind == "Conv2d":
        channels, out = _whole(config, "in", 1), _whole(config, "out", 1)
        kernel, stride = _pair(config, "kernel", 1), _pair(config, "stride", 1)
        padding = _pair(config, "padding", 0)
        dilation = _pair(config, "dilation", 1, (1, 1))
        groups = _whole(config, "groups", 1, 1)
        if channels % groups or out % groups:
            raise _Unusable(
                f"has groups = {groups}, where it expects a number that divides both in "
                f"({channels}) and out ({out})"
            )
        _images_input(shape, batch, channels)
        spans = zip(shape[2:], kernel, stride, padding, dilation, strict=True)
        size = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in spans)
        if min(size) <= 0:
            raise _Unusable(
                f"got an input of shape {got}, where it expects images at least as large as its "
                f"kernel {kernel} (dilated by {dilation}) once padded by {padding}"
            )
        output = (shape[0], out, *size)
        return output, math.prod(output) * (channels // groups) * math.prod(kernel)
    if kind in ("MaxPool2d", "AvgPool2d"):
        kernel, stride = _pair(config, "kernel", 1), _pair(config, "stride", 1)
        _images_input(shape, batch, "C")
        size = tuple((n - k) // s + 1 for n, k, s in zip(shape[2:], kernel, stride, strict=True))
        if min(size) <= 0:
            raise _Unusable(
                f"got an input of shape {got}, where it expects images at least as large as its "
                f"window {kernel}"
            )
        output = (*shape[:2], *size)
        return output, math.prod(output) * math.prod(kernel)
    if kind == "Linear":
        features, out = _whole(config, "in", 1), _whole(config, "out", 1)
        if len(shape) < 2 or shape[-1] != features:
            expected = f"(N, {features})" if len(shape) <= 2 else f"(N, ..., {features})"
            raise _Unusable(
                f"got an input of shape {got}, where it expects {expected}: its in_features "
                "must be the number of values each image has there"
            )
        output = (*shape[:-1], out)
        return output, math.prod(output) * features
    if kind == "Flatten":
        start = _dimension(config, "start_dim", 1, len(shape), got)
        end = _dimension(config, "end_dim", -1, len(shape), got)
        if start > end:
            raise _Unusable(
                f"has start_dim after end_dim for an input of shape {got}, where it expects "
                "start_dim <= end_dim"
            )
        if start == 0 and end > 0:
            raise _Unusable(
                f"got an input of shape {got} and flattens from dimension 0, where it expects "
                "start_dim >= 1: it would merge the batch's images into one; use nn.Flatten() "
                "(start_dim=1)"
            )
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :]), 0
    if kind in ("BatchNorm2d", "BatchNorm1d"):
        features = _whole(config, "num_features", 1)
        _real(config, "eps", _MISSING, 0.0, math.inf, "a number >= 0")
        if config.get("momentum", _MISSING) is not None:
            _real(config, "momentum", _MISSING, -math.inf, math.inf, "a number or None")
        ranks = (4,) if kind == "BatchNorm2d" else (2, 3)
        if len(shape) not in ranks or shape[1] != features:
            expected = "(N, {0}, H, W)" if kind == "BatchNorm2d" else "(N, {0}) or (N, {0}, L)"
            raise _Unusable(
                f"got an input of shape {got}, where it expects {expected.format(features)}"
            )
        return shape, 0
    if kind in ("Softmax", "LogSoftmax"):
        if config.get("dim") is not None:
            _dimension(config, "dim", None, len(shape), got)
        return shape, 0
    if kind == "Dropout":
        _real(config, "p", 0.5, 0.0, 1.0, "a probability from 0 to 1")
    elif kind == "LeakyReLU":
        _real(config, "negative_slope", 0.01, -math.inf, math.inf, "a number")
    return shape, 0  # every other layer the grader rebuilds keeps the shape of its input


def _measured(layers: list, image: tuple[int, ...], batch: int) -> dict[str, int]:
    """Per image, for a batch of ``batch`` images ``image``: the values of the largest layer
    output, of all layer outputs, and the multiply-adds; ``_Unusable`` (its message naming the
    layer) where a layer's output shape cannot be computed."""
    totals = {"activations": 0, "compute": 0, "largest": 0}
    shape = (batch, *image)
    for index, record in enumerate(layers):
        where = f"layer {index} ({record['kind']})"
        config = record.get("config")
        try:
            if not isinstance(config, dict):
                raise _Unusable(f"has settings of type {type(config).__name__}, not a dict")
            shape, compute = _output_shape(record["kind"], config, shape, batch)
            if len(shape) < 2 or shape[0] != batch or min(shape) <= 0:
                raise _Unusable(
                    f"outputs the shape {_shape_text(shape, batch)}, where it must keep the "
                    "batch of images first, and give each image at least one value"
                )
        except _Unusable as exc:
            raise _Unusable(f"{where} {exc}") from None
        values = math.prod(shape)
        totals["activations"] += values
        totals["largest"] = max(totals["largest"], values)
        totals["compute"] += compute
    return {name: -(-total // batch) for name, total in totals.items()}


def over_budget(
    records: dict, input_shape: tuple[int, ...], batch_sizes: Iterable[int] = (1, PREDICT_BATCH)
) -> str | None:
    """Why the grader refuses to evaluate this model, or None when it fits the budget.

    Every layer's output shape is computed from the records alone, as PyTorch computes it, for
    a batch of each of ``batch_sizes`` images ``input_shape`` (C, H, W): the sizes the judge
    runs the model at (one image, ``training.PREDICT_BATCH`` and the lab's training batches),
    so even a model that would need tens of gigabytes costs nothing to measure. A model whose
    shapes cannot be computed (a layer given an input it cannot take, a convolution given an
    unbatched image, a Flatten merging the batch, settings that are no sizes) is refused, with
    the layer, the shape it got and what it expects; budgets are per image. A model holding a
    layer the grader does not rebuild is left to ``rebuild`` to report.
    """
    layers = records.get("layers") if isinstance(records, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        return (
            "the model's record holds no list of layers, each a dict of kind, config and "
            "tensors. The grader did not evaluate it"
        )
    kinds = [layer.get("kind") for layer in layers]
    if not layers or not all(isinstance(k, str) and k in REBUILT_KINDS for k in kinds):
        return None  # rebuild refuses it, saying which layer: nothing evaluates it
    try:
        image_shape = tuple(input_shape)
        sizes = tuple(dict.fromkeys(batch_sizes)) or (1,)
        per_image = [_measured(layers, image_shape, batch) for batch in sizes]
    except _Unusable as exc:
        return f"{exc}. The grader did not evaluate it"
    totals = {name: max(measured[name] for measured in per_image) for name in per_image[0]}
    image = "x".join(map(str, input_shape))
    if totals["largest"] > LAYER_BUDGET:
        return (
            f"a layer of the model outputs {totals['largest']:,} values for one {image} image "
            f"(the grader's budget is {LAYER_BUDGET:,} per layer): look at the padding and sizes "
            "of its layers. The grader did not evaluate it"
        )
    if totals["activations"] > ACTIVATION_BUDGET:
        return (
            f"the model's layers output {totals['activations']:,} values for one {image} image "
            f"(the grader's budget is "
            f"{ACTIVATION_BUDGET:,}): look at the padding and sizes of its layers. The grader "
            "did not evaluate it"
        )
    if totals["compute"] > COMPUTE_BUDGET:
        return (
            f"the model needs {totals['compute']:,} multiply-adds for one image (the grader's "
            f"budget is {COMPUTE_BUDGET:,}): look at the sizes of its layers. The grader did not "
            "evaluate it"
        )
    try:  # within the budget, the layers cost nothing to build on the meta device
        built = rebuild(records, with_weights=False, device="meta")
    except RebuildError as exc:
        return f"{exc}. The grader did not evaluate it"
    except Exception as exc:  # noqa: BLE001 - settings PyTorch's own classes refuse
        return (
            f"PyTorch's layers refuse the model's settings ({str(exc)[:200]}). The grader did "
            "not evaluate it"
        )
    parameters = sum(tensor.numel() for tensor in built.state_dict().values())
    if parameters > PARAMETER_BUDGET:
        return (
            f"the model has {parameters:,} parameters (the grader's budget is "
            f"{PARAMETER_BUDGET:,}): look at the sizes of its linear and convolution layers. "
            "The grader did not evaluate it"
        )
    return None


def refused_records(records: dict, refusal: str) -> dict:
    """What the hidden tests judge in place of the records of a model ``over_budget`` refused:
    each layer's kind, settings and output shape as the student's kernel recorded them, its
    tensors as shapes without values (on the meta device, so parameters are still counted),
    and the refusal as the model's error and as ``refused``, which ``rebuild`` refuses. The
    layer table is still judged; nothing evaluates the model or reads its values."""
    layers = records.get("layers") if isinstance(records, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        return {"error": refusal}
    kept = []
    for layer in layers:
        tensors = layer.get("tensors")
        shapes = {
            name: torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
            for name, tensor in (tensors.items() if isinstance(tensors, dict) else ())
            if isinstance(tensor, torch.Tensor)
        }
        kept.append({**layer, "tensors": shapes})
    return {"layers": kept, "error": refusal, "refused": refusal}
