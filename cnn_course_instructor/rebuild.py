"""Rebuild a student's network from plain layer records, with PyTorch's own layer classes only."""

from __future__ import annotations

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


def rebuild(records: dict, *, with_weights: bool = True) -> nn.Sequential:
    """An ``nn.Sequential`` of the recorded layers, with their trained tensors when asked.

    Without weights, the layers keep PyTorch's fresh initialisation (for retraining).
    """
    layers = []
    for index, record in enumerate(records["layers"]):
        tensors = record.get("tensors", {})
        try:
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


# What the grader spends on one rebuilt model, per image it evaluates (it evaluates 1,000 at
# once): the lab's models output at most 65,536 values in one layer, 0.3 M in all, and need about
# 20 M multiply-adds per image. The budget leaves a margin of 7 to 50 over that.
LAYER_BUDGET = 500_000  # values of the largest layer output for one image (2 GB for 1,000)
ACTIVATION_BUDGET = 4_000_000  # values of all layer outputs for one image
COMPUTE_BUDGET = 1_000_000_000  # multiply-adds for one image


def over_budget(records: dict, input_shape: tuple[int, ...]) -> str | None:
    """Why the grader refuses to evaluate this model, or None when it fits the budget.

    The model is rebuilt on PyTorch's ``meta`` device, which propagates shapes without
    computing or allocating anything, so even a model that would need tens of gigabytes costs
    nothing to measure. Unusable records are not judged here (``rebuild`` says what is wrong).
    """
    totals = {"activations": 0, "compute": 0, "largest": 0}

    def count(module: nn.Module, inputs, output) -> None:
        if not isinstance(output, torch.Tensor):
            return
        totals["activations"] += output.numel()
        totals["largest"] = max(totals["largest"], output.numel())
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            totals["compute"] += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            totals["compute"] += output.numel() * module.in_features

    try:
        with torch.device("meta"):
            model = rebuild(records, with_weights=False)
            for layer in model:
                layer.register_forward_hook(count)
            model(torch.empty(1, *input_shape))
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
