"""Rebuild a student's network from plain layer records, with PyTorch's own layer classes only."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

__all__ = [
    "ACTIVATION_BUDGET",
    "COMPUTE_BUDGET",
    "LAYER_BUDGET",
    "RebuildError",
    "over_budget",
    "rebuild",
]


class RebuildError(Exception):
    """The records describe a layer the grader does not rebuild, or tensors that do not fit."""


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
    ``meta`` device they only check that every layer is one the grader rebuilds.
    """
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
# training.PREDICT_BATCH = 100 at once): the lab's models output at most 65,536 values in one
# layer, 0.3 M in all, and need about 20 M multiply-adds per image. The budget leaves a margin
# of 7 to 50 over that.
LAYER_BUDGET = 500_000  # values of the largest layer output for one image (200 MB for 100)
ACTIVATION_BUDGET = 4_000_000  # values of all layer outputs for one image
COMPUTE_BUDGET = 1_000_000_000  # multiply-adds for one image


def _output_shape(kind: str, config: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a recorded layer gives an input of ``shape`` (batch first), as PyTorch computes
    it; ValueError where PyTorch would refuse the input."""
    if kind == "Conv2d":
        channels, *size = shape[1:]
        if len(size) != 2 or channels != config["in"]:
            raise ValueError("the input does not fit")
        spans = zip(
            size,
            config["kernel"],
            config["stride"],
            config["padding"],
            config.get("dilation", (1, 1)),
            strict=True,
        )
        out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in spans)
        return (shape[0], config["out"], *out)
    if kind in ("MaxPool2d", "AvgPool2d"):
        spans = zip(shape[-2:], config["kernel"], config["stride"], strict=True)
        return (*shape[:-2], *((n - k) // s + 1 for n, k, s in spans))
    if kind == "Linear":
        if shape[-1] != config["in"]:
            raise ValueError("the input does not fit")
        return (*shape[:-1], config["out"])
    if kind == "Flatten":
        start, end = (
            d % len(shape) for d in (config.get("start_dim", 1), config.get("end_dim", -1))
        )
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    return shape  # every other layer the grader rebuilds keeps the shape of its input


def over_budget(records: dict, input_shape: tuple[int, ...]) -> str | None:
    """Why the grader refuses to evaluate this model, or None when it fits the budget.

    The sizes are computed from the layer records alone (the formulas PyTorch's layers follow),
    so even a model that would need tens of gigabytes costs nothing to measure. Unusable records
    are not judged here (``rebuild`` says what is wrong).
    """
    totals = {"activations": 0, "compute": 0, "largest": 0}
    shape = (1, *input_shape)
    try:
        rebuild(records, with_weights=False, device="meta")  # only layers the grader rebuilds
        for record in records["layers"]:
            config = record["config"]
            shape = _output_shape(record["kind"], config, shape)
            values = math.prod(shape)
            if min(shape) <= 0:
                return None  # PyTorch refuses such a layer; the tests say so
            totals["activations"] += values
            totals["largest"] = max(totals["largest"], values)
            if record["kind"] == "Conv2d":
                per_output = config["in"] // config.get("groups", 1) * math.prod(config["kernel"])
                totals["compute"] += values * per_output
            elif record["kind"] == "Linear":
                totals["compute"] += values * config["in"]
    except Exception:  # noqa: BLE001 - unusable records are judged by the tests, not here
        return None
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
    return None
