"""Part 1's own judges: a convolution by hand, output sizes, parameter counts, the MLP."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cnn_course.judging.layers import LayerInfo, LayerSpec
from cnn_course.judging.verdict import Verdict, fault, ok
from cnn_course.judging.verdicts import SOFTMAX, SOFTMAX_HINT, output_value, whole_number

__all__ = [
    "BUDGET_TOLERANCE",
    "budget_verdict",
    "conv2d_verdict",
    "mlp_verdict",
    "output_size_verdict",
    "parameter_count_verdict",
    "parametrised_layers",
]


def conv2d_verdict(
    output: dict,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
    padding: int,
) -> Verdict:
    """Is ``output`` what ``F.conv2d`` gives for one image ``x (C_in, H, W)``, filters
    ``weight (C_out, C_in, kH, kW)``, ``bias (C_out,)``, ``stride`` and zero ``padding``?"""
    value, message = output_value(output, "a tensor (C_out, H_out, W_out)")
    if value is None:
        return fault(message)
    if not isinstance(value, torch.Tensor):
        return fault(f"returned a {type(value).__name__}, expected a tensor")

    def reference(w=weight, b=bias, s=stride, p=padding) -> torch.Tensor:
        b = None if b is None else b.double()
        return torch.nn.functional.conv2d(x[None].double(), w.double(), b, stride=s, padding=p)[0]

    expected = reference()
    shape, found = tuple(expected.shape), tuple(value.shape)
    if found != shape:
        hints = (
            (padding > 0, tuple(reference(p=0).shape), "the padding is missing: surround x with "
             "`padding` rows and columns of zeros on every side first"),
            (stride > 1, tuple(reference(s=1).shape), "the stride is missing: move the window by "
             "`stride` pixels at a time"),
            (True, (1, *shape), "return one image's (C_out, H_out, W_out), without a batch "
             "dimension"),
            (True, (shape[0], x.shape[0], *shape[1:]), "sum over the input channels too: one "
             "output value adds the products over all C_in channels"),
        )  # fmt: skip
        hint = next((text for applies, s, text in hints if applies and found == s), "")
        return fault(f"expected shape {shape}, got {found}" + (f": {hint}" if hint else ""))
    if not value.is_floating_point():
        return fault(f"expected floating-point values, got dtype {value.dtype}")
    value = value.double()
    close = torch.isclose(value, expected, rtol=1e-4, atol=1e-4)
    if bool(close.all()):
        return ok()
    for candidate, hint in (
        (
            reference(w=weight.flip(-2, -1)),
            "the filter is flipped: PyTorch's convolution (a cross-correlation) multiplies "
            "x[i + a, j + b] by weight[a, b] without flipping it",
        ),
        (reference(b=None), "the bias is missing: add bias[c] to every value of channel c"),
    ):
        if torch.allclose(value, candidate, rtol=1e-4, atol=1e-4):
            return fault(hint)
    where = tuple(int(i) for i in (~close).nonzero()[0])
    return fault(
        f"{int((~close).sum())} of {close.numel()} values wrong; e.g. at [c, i, j] = "
        f"{list(where)}: expected {float(expected[where]):.4f}, got {float(value[where]):.4f}"
    )


def _positions(size: int, kernel: int, stride: int, padding: int) -> int:
    """How many positions a window finds along one axis, as torch's convolution measures it."""
    line = torch.zeros(1, 1, 1, size)
    window = torch.zeros(1, 1, 1, kernel)
    return int(
        torch.nn.functional.conv2d(line, window, stride=(1, stride), padding=(0, padding)).shape[-1]
    )


def output_size_verdict(output: dict, size: int, kernel: int, stride: int, padding: int) -> Verdict:
    """Is ``output`` the height (or width) after a window of ``kernel`` slides over ``size``
    pixels padded with ``padding`` zeros on each side, ``stride`` pixels at a time?"""
    value, message = whole_number(output, "the output size")
    if value is None:
        return fault(message)
    expected = _positions(size, kernel, stride, padding)
    if value == expected:
        return ok()
    hints = (
        (padding > 0 and value == _positions(size + padding, kernel, stride, 0),
         "padding adds `padding` pixels on each side, so 2 × padding in all"),
        (padding > 0 and value == _positions(size, kernel, stride, 0), "the padding is missing"),
        (stride > 1 and value == _positions(size, kernel, 1, padding),
         "the stride is missing: the window moves `stride` pixels at a time"),
        (value == expected - 1, "one short: count the window's first position too (the + 1)"),
    )  # fmt: skip
    hint = next((text for applies, text in hints if applies), "")
    where = f"size {size}, kernel {kernel}, stride {stride}, padding {padding}"
    return fault(f"for {where}: expected {expected}, got {value}" + (f" ({hint})" if hint else ""))


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_count_verdict(output: dict, module: nn.Module) -> Verdict:
    """Is ``output`` the number of trainable parameters of ``module``, weights and biases?"""
    value, message = whole_number(output, "a parameter count")
    if value is None:
        return fault(message)
    expected = _trainable(module)
    if value == expected:
        return ok(f"{expected:,} parameters")
    weights = sum(p.numel() for name, p in module.named_parameters() if name.endswith("weight"))
    hint = ""
    if value == weights:
        hint = " (the biases are missing: each filter or output unit has one bias too)"
    elif isinstance(module, nn.Conv2d) and value == _trainable(
        nn.Conv2d(1, module.out_channels, module.kernel_size)
    ):
        hint = " (each filter spans all in_channels input channels, with a kernel on each)"
    return fault(f"expected {expected:,}, got {value:,}{hint}")


def parametrised_layers(spec: Sequence[LayerSpec]) -> nn.ModuleList:
    """The layers of ``spec`` that hold parameters (convolutions, linear layers), freshly made."""
    layers = nn.ModuleList()
    for layer in spec:
        if layer.kind == "Conv2d":
            config = layer.config
            layers.append(nn.Conv2d(config["in"], config["out"], config["kernel"]))
        elif layer.kind == "Linear":
            layers.append(nn.Linear(layer.config["in"], layer.config["out"]))
    return layers


def mlp_verdict(
    layers: Sequence[LayerInfo], output_shape: tuple[int, ...], forward_error: str | None = None
) -> Verdict:
    """Is the model a multi-layer perceptron: flatten, fully connected layers with an activation
    between them, raw scores of ``output_shape`` out?"""
    kinds = [layer.kind for layer in layers]
    spatial = [kind for kind in kinds if kind in ("Conv2d", "MaxPool2d", "AvgPool2d")]
    if spatial:
        return fault(
            f"the model holds a {spatial[0]}: an MLP flattens the image and uses nn.Linear only"
        )
    if any(kind in SOFTMAX for kind in kinds):
        return fault(f"the model ends with a softmax: {SOFTMAX_HINT}")
    linear = [index for index, kind in enumerate(kinds) if kind == "Linear"]
    if len(linear) < 2:
        return fault(
            f"expected at least two nn.Linear layers (a hidden layer, then the classes), found "
            f"{len(linear)}"
        )
    if kinds[0] != "Flatten":
        return fault("start with nn.Flatten(): each image (1, 28, 28) becomes 784 values")
    for first, second in zip(linear, linear[1:], strict=False):
        if second == first + 1:
            return fault(
                f"layers {first} and {second} are linear with nothing between them: without an "
                "activation such as nn.ReLU() they compute one linear function"
            )
    if forward_error or layers[-1].output_shape != output_shape:
        return fault(forward_error or f"the output for one image must have shape {output_shape}")
    return ok()


BUDGET_TOLERANCE = 0.1  # how far a comparison model's parameter count may stray, as a fraction


def budget_verdict(
    layers: Sequence[LayerInfo], budget: int, tolerance: float = BUDGET_TOLERANCE
) -> Verdict:
    """Does the model hold about ``budget`` parameters (within ``tolerance``, a fraction)?"""
    total = sum(layer.parameters for layer in layers)
    low, high = math.ceil(budget * (1 - tolerance)), math.floor(budget * (1 + tolerance))
    if low <= total <= high:
        return ok(f"{total:,} parameters, the CNN has {budget:,}", parameters=total)
    return fault(
        f"{total:,} parameters; the comparison is fair only with about the CNN's {budget:,} "
        f"(between {low:,} and {high:,}): change the width of the hidden layer",
        parameters=total,
    )
