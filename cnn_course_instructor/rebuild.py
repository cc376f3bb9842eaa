"""Rebuild a student's network from plain layer records, with PyTorch's own layer classes only."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RebuildError", "rebuild"]


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
