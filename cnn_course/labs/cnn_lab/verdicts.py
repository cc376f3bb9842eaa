"""Part 1's own judges: a convolution by hand, output sizes, parameter counts, the MLP."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction

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
    "model_parameter_count_verdict",
    "output_size_verdict",
    "output_size_verdicts",
    "parameter_count_verdict",
    "parametrised_layers",
]


# What Python and PyTorch say when a size or an index is a float (an output size computed with /)
_FLOAT_SIZE_ERRORS = (
    "'float' object cannot be interpreted as an integer",  # range(h_out)
    "but got float",  # torch.zeros(c_out, h_out, w_out)
    "slice indices must be integers",  # x[i : i + h_out]
)


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
        if any(words in message for words in _FLOAT_SIZE_ERRORS):
            message += (
                " (an output size computed with / is a float: use // (floor division) for H_out "
                "and W_out)"
            )
        return fault(message)
    if not isinstance(value, torch.Tensor):
        return fault(f"returned a {type(value).__name__}, expected a tensor")

    def reference(w=weight, b=bias, s=stride, p=padding, image=x) -> torch.Tensor:
        b = None if b is None else b.double()
        batch = image[None].double()
        return torch.nn.functional.conv2d(batch, w.double(), b, stride=s, padding=p)[0]

    def padded_after(amount: int) -> torch.Tensor:  # x in the top left corner, zeros after it
        return reference(p=0, image=torch.nn.functional.pad(x, (0, amount, 0, amount)))

    expected = reference()
    shape, found = tuple(expected.shape), tuple(value.shape)
    if found != shape:
        hints = (
            (padding > 0, tuple(reference(p=0).shape), "the padding is missing: surround x with "
             "`padding` rows and columns of zeros on every side first"),
            (padding > 0, tuple(padded_after(padding).shape), "padding on one side only: "
             "`padding` rows and columns of zeros go on every side, 2 × padding in all"),
            (stride > 1, tuple(reference(s=1).shape), "the stride is missing: move the window by "
             "`stride` pixels at a time"),
            (True, (1, *shape), "return one image's (C_out, H_out, W_out), without a batch "
             "dimension"),
            (True, (shape[0], x.shape[0], *shape[1:]), "sum over the input channels too: one "
             "output value adds the products over all C_in channels"),
        )  # fmt: skip
        fits = [text for applies, s, text in hints if applies and found == s]
        hint = fits[0] if fits else ""
        if fits[:2] == [hints[0][2], hints[1][2]]:  # a stride that never reaches the last row
            hint = (
                "the padding is missing, or on one side only: surround x with `padding` rows and "
                "columns of zeros on every side first"
            )
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
        (
            reference(s=1)[:, : shape[1], : shape[2]] if stride > 1 else None,
            "the window moves 1 pixel at a time: the patch of output position (i, j) starts at "
            "row i × stride and column j × stride of the padded image",
        ),
        (
            padded_after(2 * padding) if padding > 0 else None,
            "x sits in the top left corner of the padded image, zeros on one side only: copy it "
            "to rows and columns padding to padding + H (or W), so that `padding` zeros surround "
            "it on every side",
        ),
    ):
        if candidate is not None and torch.allclose(value, candidate, rtol=1e-4, atol=1e-4):
            return fault(hint)
    where = tuple(int(i) for i in (~close).nonzero()[0])
    return fault(
        f"{int((~close).sum())} of {close.numel()} values wrong; e.g. at [c, i, j] = "
        f"{list(where)}: expected {float(expected[where]):.4f}, got {float(value[where]):.4f}"
    )


@functools.lru_cache(maxsize=4096)
def _positions(size: int, kernel: int, stride: int, padding: int) -> int | None:
    """How many positions a window finds along one axis, as torch's convolution measures it
    (None where the window does not fit at all); kept, as a verdict asks for the same few."""
    if size + 2 * padding < kernel:
        return None
    line = torch.zeros(1, 1, 1, size)
    window = torch.zeros(1, 1, 1, kernel)
    return int(
        torch.nn.functional.conv2d(line, window, stride=(1, stride), padding=(0, padding)).shape[-1]
    )


# Nearly right output sizes, each with the words that name it: the one a case's wrong value
# matches (on every case where the record can tell) is the fault named.
_ROUNDING = ("round", "half up", "ceil")
SIZE_HINTS = {
    "round": "round() goes to the nearest whole number, and from .5 to the even one (round(6.5) "
    "is 6, round(7.5) is 8); the formula rounds down (⌊·⌋): use // (floor division)",
    "half up": "rounded .5 up, as int(x + 0.5) does; the formula rounds down (⌊·⌋): use // "
    "(floor division)",
    "ceil": "rounded up, as math.ceil does; the formula rounds down (⌊·⌋): use // (floor division)",
    "padding once": "padding adds `padding` pixels on each side, so 2 × padding in all",
    "no padding": "the padding is missing",
    "no stride": "the stride is missing: the window moves `stride` pixels at a time",
    "no + 1": "one short: count the window's first position too (the + 1)",
}
_ROUNDED_UP = (
    "rounded up; the formula rounds down (⌊·⌋), as // (floor division) does, where round() and "
    "math.ceil go up"
)


def _nearly_right_sizes(size: int, kernel: int, stride: int, padding: int) -> dict[str, int]:
    """What each nearly right way of counting gives for one case (only those that differ from
    the right count)."""
    expected = _positions(size, kernel, stride, padding)
    # the pixels past the window's last position: the fraction of a step that does not fit
    left_over = _positions(size, 1, 1, padding) - ((expected - 1) * stride + kernel)
    steps = expected - 1 + Fraction(left_over, stride)  # the steps that fit, fraction included
    sizes = {
        "round": round(steps) + 1,  # a Fraction rounds half to even, as a float does
        "half up": math.floor(steps + Fraction(1, 2)) + 1,
        "ceil": math.ceil(steps) + 1,
        "padding once": _positions(size + padding, kernel, stride, 0),
        "no padding": _positions(size, kernel, stride, 0),
        "no stride": _positions(size, kernel, 1, padding),
        "no + 1": expected - 1,
    }
    return {name: value for name, value in sizes.items() if value not in (None, expected)}


def output_size_verdicts(outputs: Sequence[dict], cases: Sequence[tuple]) -> list[Verdict]:
    """Is each recorded output the height (or width) after a window of ``kernel`` slides over
    ``size`` pixels padded with ``padding`` zeros on each side, ``stride`` pixels at a time, for
    its case ``(size, kernel, stride, padding)``?

    A wrong value is named by the nearly right count that gives it; where two give it, by the
    one that also gives the values of the other cases.
    """
    values = [whole_number(output, "the output size") for output in outputs]
    nearly = [_nearly_right_sizes(*case) for case in cases]

    def explains(name: str) -> bool:  # this mistake gives every whole-number value recorded
        return all(
            value is None or value == found.get(name, _positions(*case))
            for (value, _), case, found in zip(values, cases, nearly, strict=True)
        )

    verdicts = []
    for (value, message), case, found in zip(values, cases, nearly, strict=True):
        expected = _positions(*case)
        if value is None:
            verdicts.append(fault(message))
            continue
        if value == expected:
            verdicts.append(ok())
            continue
        fits = [name for name, size in found.items() if size == value]
        named = [name for name in fits if explains(name)] or fits
        if len(named) == 1:
            hint = SIZE_HINTS[named[0]]
        elif named and all(name in _ROUNDING for name in named):
            hint = _ROUNDED_UP
        else:
            hint = ""
        where = "size {}, kernel {}, stride {}, padding {}".format(*case)
        verdicts.append(
            fault(f"for {where}: expected {expected}, got {value}" + (f" ({hint})" if hint else ""))
        )
    return verdicts


def output_size_verdict(output: dict, size: int, kernel: int, stride: int, padding: int) -> Verdict:
    """Is ``output`` the height (or width) after a window of ``kernel`` slides over ``size``
    pixels padded with ``padding`` zeros on each side, ``stride`` pixels at a time? (One case
    alone: see ``output_size_verdicts``.)"""
    return output_size_verdicts([output], [(size, kernel, stride, padding)])[0]


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# Nearly right counts of one layer's parameters, each with the words that name it.
COUNT_HINTS = {
    "no bias": "the biases are missing: each filter or output unit has one bias too",
    "one bias": "one bias per filter or output unit, not one for the whole layer",
    "bias per input": "one bias per filter or output unit (out_channels or out_features of "
    "them), not one per input",
    "no in_channels": "each filter spans all in_channels input channels, with a kernel on each",
    "kernel once": "a kernel_size × kernel_size filter holds kernel_size ** 2 weights per input "
    "channel, not kernel_size",
    "kernel times 2": "kernel_size * 2 doubles the size: a filter's area is kernel_size ** 2 "
    "(kernel_size * kernel_size)",
    "kernel xor": "kernel_size ^ 2 is a bitwise XOR in Python (3 ^ 2 is 1), not a power: write "
    "kernel_size ** 2",
}


def _nearly_right_counts(layer: nn.Module) -> dict[str, int]:
    """What each nearly right way of counting gives for one convolution or linear layer (only
    those that differ from the right count), read from the layer's own tensors."""
    weights, biases = layer.weight.numel(), layer.bias.numel()
    counts = {"no bias": weights, "one bias": weights + 1}
    if isinstance(layer, nn.Conv2d):
        inputs = layer.in_channels
        height, width = layer.kernel_size
        counts["bias per input"] = weights + inputs
        counts["no in_channels"] = weights // inputs + biases
        if height == width:
            per_cell = weights // (height * width)  # weights per kernel cell
            counts["kernel once"] = per_cell * height + biases
            counts["kernel times 2"] = per_cell * 2 * height + biases
            counts["kernel xor"] = per_cell * (height ^ 2) + biases
    elif isinstance(layer, nn.Linear):
        counts["bias per input"] = weights + layer.in_features
    right = _trainable(layer)
    return {name: count for name, count in counts.items() if count != right}


def parameter_count_verdict(output: dict, module: nn.Module) -> Verdict:
    """Is ``output`` the number of trainable parameters of ``module`` (a convolution or a linear
    layer), weights and biases?"""
    value, message = whole_number(output, "a parameter count")
    if value is None:
        return fault(message)
    expected = _trainable(module)
    if value == expected:
        return ok(f"{expected:,} parameters")
    fits = [name for name, count in _nearly_right_counts(module).items() if count == value]
    hint = f" ({COUNT_HINTS[fits[0]]})" if len(fits) == 1 else ""
    return fault(f"expected {expected:,}, got {value:,}{hint}")


def model_parameter_count_verdict(output: dict, spec: Sequence[LayerSpec]) -> Verdict:
    """Is ``output`` the number of parameters of the network the table ``spec`` describes?

    A wrong total is named by the layer count that explains it: one nearly right count on every
    layer, a layer left out, or the linear layer counted from the wrong number of inputs (the
    image before the pooling, say)."""
    value, message = whole_number(output, "a parameter count")
    if value is None:
        return fault(message)
    layers = parametrised_layers(spec)
    counts = [_trainable(layer) for layer in layers]
    expected = sum(counts)
    if value == expected:
        return ok(f"{expected:,} parameters")
    nearly = [_nearly_right_counts(layer) for layer in layers]
    same_mistake = [  # one nearly right count on every layer it applies to
        COUNT_HINTS[name]
        for name in COUNT_HINTS
        if any(name in found for found in nearly)
        and value
        == sum(found.get(name, count) for found, count in zip(nearly, counts, strict=True))
    ]
    linear = next(index for index, layer in enumerate(layers) if isinstance(layer, nn.Linear))
    rest, outputs = expected - counts[linear], layers[linear].out_features
    inputs = (value - rest - outputs) / outputs  # what the linear layer was counted from
    linear_inputs = (
        [_linear_inputs_hint(int(inputs), spec)] if inputs.is_integer() and inputs > 0 else []
    )
    left_out = [
        f"the count leaves out {name}, {count:,} parameters"
        for name, count in zip(_layer_names(spec), counts, strict=True)
        if value == expected - count
    ]
    hint = next(
        (f" ({found[0]})" for found in (same_mistake, linear_inputs, left_out) if len(found) == 1),
        "",
    )
    return fault(f"expected {expected:,}, got {value:,}{hint}")


def _layer_names(spec: Sequence[LayerSpec]) -> list[str]:
    """The parametrised layers of ``spec`` as the table says them: "convolution 2", "linear
    layer 1"."""
    names, seen = [], {"Conv2d": 0, "Linear": 0}
    for layer in spec:
        if layer.kind in seen:
            seen[layer.kind] += 1
            word = "convolution" if layer.kind == "Conv2d" else "linear layer"
            names.append(f"{word} {seen[layer.kind]}")
    return names


def _linear_inputs_hint(inputs: int, spec: Sequence[LayerSpec]) -> str:
    """Name the image size a linear layer counted from ``inputs`` values assumed."""
    flatten = next(index for index, s in enumerate(spec) if s.kind == "Flatten")
    channels, height, width = spec[flatten - 1].output_shape
    expected = channels * height * width
    side = math.isqrt(inputs // channels)
    said = (
        f"{channels} × {side} × {side} = {inputs:,}"
        if side * side * channels == inputs
        else f"{inputs:,}"
    )
    pools = [
        index for index, s in enumerate(spec[:flatten]) if s.kind in ("MaxPool2d", "AvgPool2d")
    ]
    if pools and spec[pools[-1] - 1].output_shape == (channels, side, side):
        before = spec[pools[-1] - 1].output_shape[1]
        return (
            f"the linear layer counted from {said} inputs, the image before the pooling: "
            f"the 2×2 pooling halves the height and the width ({before} → {height}), so it "
            f"gets {channels} × {height} × {width} = {expected:,} values"
        )
    return (
        f"the linear layer counted from {said} inputs; it gets the flattened output of the "
        f"last pooling, {channels} × {height} × {width} = {expected:,} values"
    )


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
