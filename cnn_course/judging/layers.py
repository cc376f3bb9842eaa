"""Layers as plain facts: a recorded layer (``LayerInfo``), a lab's table entry (``LayerSpec``),
and how the two compare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

__all__ = [
    "LayerInfo",
    "LayerSpec",
    "block_spec",
    "compare_layers",
    "conv_spec",
    "describe_layer",
    "layer_config",
    "layers_from_records",
    "pair",
    "pool_spec",
    "relu_spec",
    "shape_text",
]


@dataclass(frozen=True)
class LayerInfo:
    """One layer as a forward pass saw it: its type, settings, output shape and parameter count."""

    kind: str
    config: dict
    output_shape: tuple[int, ...] | None  # without the batch dimension; None if not reached
    parameters: int

    def describe(self) -> str:
        return describe_layer(self.kind, self.config)


@dataclass(frozen=True)
class LayerSpec:
    """What one layer of an exercise must be (settings not listed are not checked)."""

    kind: str
    config: dict
    output_shape: tuple[int, ...]

    def describe(self) -> str:
        return describe_layer(self.kind, self.config)


def pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value), int(value))


def layer_config(layer: nn.Module) -> dict:
    """Settings in one normal form, so that equivalent spellings compare equal."""
    if isinstance(layer, nn.Conv2d):
        kernel, stride = pair(layer.kernel_size), pair(layer.stride)
        padding = layer.padding
        if padding == "same":
            padding = tuple((k - 1) // 2 for k in kernel)  # 'same' is zero padding of (k-1)/2
        elif padding == "valid":
            padding = (0, 0)
        return {
            "in": layer.in_channels,
            "out": layer.out_channels,
            "kernel": kernel,
            "stride": stride,
            "padding": pair(padding),
            "dilation": pair(layer.dilation),
            "groups": layer.groups,
        }
    if isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):
        kernel = pair(layer.kernel_size)
        stride = pair(layer.stride) if layer.stride is not None else kernel
        return {"kernel": kernel, "stride": stride}
    if isinstance(layer, nn.Linear):
        return {"in": layer.in_features, "out": layer.out_features}
    if isinstance(layer, nn.Softmax | nn.LogSoftmax):
        return {"dim": layer.dim}
    if isinstance(layer, nn.Flatten):
        return {"start_dim": layer.start_dim, "end_dim": layer.end_dim}
    if isinstance(layer, nn.Dropout):
        return {"p": layer.p}
    if isinstance(layer, nn.LeakyReLU):
        return {"negative_slope": layer.negative_slope}
    if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
        return {"num_features": layer.num_features, "eps": layer.eps, "momentum": layer.momentum}
    return {}


def describe_layer(kind: str, config: dict) -> str:
    def short(value):
        return value[0] if isinstance(value, tuple) and len(set(value)) == 1 else value

    if kind == "Conv2d" and config:
        return (
            f"Conv2d({config['in']}, {config['out']}, kernel_size={short(config['kernel'])}, "
            f"stride={short(config['stride'])}, padding={short(config['padding'])})"
        )
    if kind in ("MaxPool2d", "AvgPool2d") and config:
        return f"{kind}({short(config['kernel'])}, {short(config['stride'])})"
    if kind == "Linear" and config:
        return f"Linear({config['in']}, {config['out']})"
    if kind in ("Softmax", "LogSoftmax"):
        return f"{kind}(dim={config.get('dim')})"
    return f"{kind}()"


def shape_text(shape: tuple[int, ...] | None) -> str:
    return "(not reached)" if shape is None else "(N, " + ", ".join(map(str, shape)) + ")"


def compare_layers(layers: Sequence[LayerInfo], spec: Sequence[LayerSpec]) -> list[str]:
    """Messages for the first mismatch between found layers and the specification (empty if none)."""
    for index, expected in enumerate(spec):
        if index >= len(layers):
            missing = ", ".join(s.describe() for s in spec[index:])
            return [
                f"layer {index}: expected {expected.describe()}, but the model stops here (missing: {missing})"
            ]
        found = layers[index]
        expected_text = f"{expected.describe()} -> {shape_text(expected.output_shape)}"
        found_text = f"{found.describe()} -> {shape_text(found.output_shape)}"
        if found.kind in ("Softmax", "LogSoftmax") and expected.kind != found.kind:
            return [
                f"layer {index}: {found.kind} found where {expected.describe()} was expected: "
                "nn.CrossEntropyLoss applies the softmax itself, so the model must output raw scores"
            ]
        if found.kind != expected.kind:
            return [f"layer {index}: expected {expected_text}, got {found_text}"]
        wrong = [key for key, value in expected.config.items() if found.config.get(key) != value]
        if wrong or found.output_shape != expected.output_shape:
            what = f" ({', '.join(wrong)} differ)" if wrong else ""
            return [f"layer {index}: expected {expected_text}, got {found_text}{what}"]
    if len(layers) > len(spec):
        extra = layers[len(spec)]
        hint = (
            ": nn.CrossEntropyLoss applies the softmax itself, so the model must output raw scores"
            if extra.kind in ("Softmax", "LogSoftmax")
            else ""
        )
        return [
            f"layer {len(spec)}: unexpected extra layer {extra.describe()} after the last one{hint}"
        ]
    return []


def layers_from_records(records: dict) -> list[LayerInfo]:
    """``LayerInfo`` of each recorded layer (what ``describe_model`` gives for a live model)."""
    return [
        LayerInfo(
            layer["kind"],
            layer["config"],
            tuple(layer["output_shape"]) if layer["output_shape"] is not None else None,
            sum(t.numel() for name, t in layer["tensors"].items() if name in ("weight", "bias")),
        )
        for layer in records["layers"]
    ]


def conv_spec(cin: int, cout: int, size: int) -> LayerSpec:
    config = {"in": cin, "out": cout, "kernel": (3, 3), "stride": (1, 1), "padding": (1, 1)}
    return LayerSpec("Conv2d", config, (cout, size, size))


def pool_spec(channels: int, size: int) -> LayerSpec:
    return LayerSpec("MaxPool2d", {"kernel": (2, 2), "stride": (2, 2)}, (channels, size, size))


def relu_spec(shape: tuple[int, ...]) -> LayerSpec:
    return LayerSpec("ReLU", {}, shape)


def block_spec(cin: int, cout: int, size: int) -> tuple[LayerSpec, ...]:
    """A convolution followed by batch normalisation and a ReLU."""
    shape = (cout, size, size)
    return (
        conv_spec(cin, cout, size),
        LayerSpec("BatchNorm2d", {"num_features": cout}, shape),
        relu_spec(shape),
    )
