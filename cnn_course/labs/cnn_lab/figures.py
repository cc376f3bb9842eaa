"""Part 1's teaching figures: how a convolution, padding and stride, pooling, ReLU and the
softmax with its cross-entropy compute, on small grids with their numbers (headless-safe)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnn_course.errors import CourseError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from cnn_course.plots import new_figure, skipped_while_grading

_HIGHLIGHT = np.array([1.0, 0.85, 0.4])  # the cells a step reads
_PADDING = np.array([0.85, 0.85, 0.85])  # the zeros padding adds

__all__ = [
    "show_convolution",
    "show_max_pooling",
    "show_padding_stride",
    "show_relu",
    "show_softmax_cross_entropy",
]


def _grid_array(values, name: str, ndim: int = 2) -> np.ndarray:
    array = (
        values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    )
    if array.ndim != ndim or array.size == 0:
        raise CourseError(f"{name} must be a {ndim}-D grid of numbers; got shape {array.shape}.")
    return array.astype(float)


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _signed(value: float) -> str:
    """A number for a written sum: negative ones in brackets, ``(-1)``."""
    return f"({_number(value)})" if value < 0 else _number(value)


def _draw_grid(
    axis,
    values: np.ndarray,
    *,
    title: str,
    colours: np.ndarray | None = None,
    bold: np.ndarray | None = None,
    fontsize: float = 9,
) -> None:
    """``values (H, W)`` as a table of numbers, one square per value, optionally coloured."""
    height, width = values.shape
    cells = np.ones((height, width, 3)) if colours is None else colours
    axis.imshow(cells, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    for row in range(height):
        for col in range(width):
            axis.text(
                col,
                row,
                _number(values[row, col]),
                ha="center",
                va="center",
                fontsize=fontsize,
                fontweight="bold" if bold is not None and bold[row, col] else "normal",
            )
    axis.set_xticks(np.arange(-0.5, width), minor=True)
    axis.set_yticks(np.arange(-0.5, height), minor=True)
    axis.grid(which="minor", color="grey", linewidth=0.8)
    axis.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    axis.set_title(title, fontsize=10)


def _outline(
    axis, row: int, col: int, height: int, width: int, colour, linewidth=2.5, linestyle="-"
):
    from matplotlib.patches import Rectangle

    corner = (col - 0.5, row - 0.5)
    axis.add_patch(
        Rectangle(corner, width, height, fill=False, edgecolor=colour, linewidth=linewidth,
                  linestyle=linestyle, zorder=3)
    )  # fmt: skip


@skipped_while_grading
def show_convolution(image, kernel, *, row: int = 0, col: int = 0, bias: float = 0.0) -> Figure:
    """A filter ``kernel (kH, kW)`` sliding over ``image (H, W)`` (no padding, stride 1), with the
    arithmetic of the output value at ``(row, col)`` written out."""
    grid, weights = _grid_array(image, "image"), _grid_array(kernel, "kernel")
    if weights.shape[0] > grid.shape[0] or weights.shape[1] > grid.shape[1]:
        raise CourseError(f"the kernel {weights.shape} is larger than the image {grid.shape}.")
    output = torch.nn.functional.conv2d(
        torch.tensor(grid)[None, None],
        torch.tensor(weights)[None, None],
        torch.tensor([float(bias)], dtype=torch.float64),
    )[0, 0].numpy()
    if not (0 <= row < output.shape[0] and 0 <= col < output.shape[1]):
        raise CourseError(f"(row, col) must lie in the output of shape {output.shape}.")
    k_h, k_w = weights.shape
    colours = np.ones((*grid.shape, 3))
    colours[row : row + k_h, col : col + k_w] = _HIGHLIGHT
    out_colours = np.ones((*output.shape, 3))
    out_colours[row, col] = _HIGHLIGHT
    columns = grid.shape[1] + k_w + output.shape[1]
    figure = new_figure(
        figsize=(0.75 * columns + 1.5, 0.75 * grid.shape[0] + 1.4), layout="constrained"
    )
    axes = figure.subplots(1, 3, width_ratios=[grid.shape[1], k_w, output.shape[1]])
    _draw_grid(axes[0], grid, title=f"input {grid.shape[0]}×{grid.shape[1]}", colours=colours)
    _outline(axes[0], row, col, k_h, k_w, "tab:orange")
    _draw_grid(
        axes[1], weights, title=f"filter {k_h}×{k_w}", colours=np.tile(_HIGHLIGHT, (k_h, k_w, 1))
    )
    _draw_grid(
        axes[2],
        output,
        title=f"output {output.shape[0]}×{output.shape[1]}",
        colours=out_colours,
    )
    _outline(axes[2], row, col, 1, 1, "tab:orange")
    window = grid[row : row + k_h, col : col + k_w]
    terms = " + ".join(
        f"{_signed(x)}×{_signed(w)}" for x, w in zip(window.ravel(), weights.ravel(), strict=True)
    )
    if bias:
        terms += f" + {_signed(bias)} (bias)"
    figure.suptitle(f"output[{row}, {col}] = {terms}\n= {_number(output[row, col])}", fontsize=10)
    return figure


@skipped_while_grading
def show_padding_stride(
    size: int = 5, kernel: int = 3, settings: Sequence[tuple[int, int]] = ((1, 0), (1, 1), (2, 1))
) -> Figure:
    """A ``kernel``×``kernel`` window on a ``size``×``size`` input, one row per
    ``(stride, padding)`` of ``settings``: the padded input (zeros in grey) with the window's
    positions along the first row outlined, and the output they fill, in matching colours."""
    if not settings:
        raise CourseError("show_padding_stride needs at least one (stride, padding) setting.")
    figure = new_figure(figsize=(8, 2.9 * len(settings)), layout="constrained")
    axes = figure.subplots(len(settings), 2, squeeze=False, width_ratios=[1.6, 1])
    for (left, right), (stride, padding) in zip(axes, settings, strict=True):
        if stride < 1 or padding < 0 or kernel > size + 2 * padding:
            raise CourseError(f"no window fits: size {size}, kernel {kernel}, padding {padding}.")
        padded = np.pad(np.arange(1, size * size + 1).reshape(size, size), padding)
        out = torch.nn.functional.conv2d(
            torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=stride,
            padding=padding,
        ).shape[-1]  # fmt: skip
        colours = np.ones((*padded.shape, 3))
        if padding:
            colours[:padding], colours[-padding:] = _PADDING, _PADDING
            colours[:, :padding], colours[:, -padding:] = _PADDING, _PADDING
        _draw_grid(
            left,
            padded,
            title=f"input {size}×{size}, padding {padding}, {kernel}×{kernel} window, stride {stride}",
            colours=colours,
            fontsize=7,
        )
        out_colours = np.ones((out, out, 3))
        for position, (colour, style) in enumerate((("tab:orange", "-"), ("tab:blue", "--"))):
            if position < out:
                _outline(left, 0, position * stride, kernel, kernel, colour, 3.0, style)
                out_colours[0, position] = _light(colour)
        _draw_grid(right, np.zeros((out, out)), title=f"output {out}×{out}", colours=out_colours)
        for text in right.texts:
            text.set_visible(False)
    figure.suptitle(
        "padding adds zeros around the input; the stride is the window's step\n"
        "(the window's first two positions, and the output values they give)"
    )
    return figure


def _light(name: str) -> np.ndarray:
    """A colour name as RGB, lightened so that numbers drawn on it stay readable."""
    from matplotlib.colors import to_rgb

    return 0.55 * np.array(to_rgb(name)) + 0.45


@skipped_while_grading
def show_max_pooling(values, *, size: int = 2) -> Figure:
    """Max pooling of ``values (H, W)`` by ``size``×``size`` windows with stride ``size``: each
    window in its own colour, its largest value in bold, and the output."""
    grid = _grid_array(values, "values")
    if grid.shape[0] % size or grid.shape[1] % size:
        raise CourseError(f"the grid {grid.shape} does not split into {size}×{size} windows.")
    output = torch.nn.functional.max_pool2d(torch.tensor(grid)[None, None], size)[0, 0].numpy()
    palette = ["tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:red", "tab:cyan"]
    colours, out_colours = np.ones((*grid.shape, 3)), np.ones((*output.shape, 3))
    bold = np.zeros(grid.shape, dtype=bool)
    for i in range(output.shape[0]):
        for j in range(output.shape[1]):
            colour = _light(palette[(i * output.shape[1] + j) % len(palette)])
            block = (slice(i * size, (i + 1) * size), slice(j * size, (j + 1) * size))
            colours[block] = colour
            out_colours[i, j] = colour
            window = grid[block]
            a, b = np.unravel_index(window.argmax(), window.shape)
            bold[i * size + a, j * size + b] = True
    figure = new_figure(figsize=(7, 3.4), layout="constrained")
    axes = figure.subplots(1, 2, width_ratios=[grid.shape[1], output.shape[1] + 1])
    _draw_grid(
        axes[0], grid, title=f"input {grid.shape[0]}×{grid.shape[1]}", colours=colours, bold=bold
    )
    _draw_grid(
        axes[1], output, title=f"max pooling {size}×{size}, stride {size}", colours=out_colours
    )
    figure.suptitle("each window keeps its largest value")
    return figure


@skipped_while_grading
def show_relu(values) -> Figure:
    """ReLU, max(0, x): its curve, and a grid ``values (H, W)`` before and after."""
    grid = _grid_array(values, "values")
    after = torch.relu(torch.tensor(grid)).numpy()
    figure = new_figure(figsize=(10, 3.3), layout="constrained")
    axes = figure.subplots(1, 3, width_ratios=[1.3, 1, 1])
    x = np.linspace(-3, 3, 121)
    axes[0].plot(x, torch.relu(torch.tensor(x)).numpy(), color="tab:blue", linewidth=2)
    axes[0].axhline(0, color="grey", linewidth=0.6)
    axes[0].axvline(0, color="grey", linewidth=0.6)
    axes[0].set_title("ReLU(x) = max(0, x)", fontsize=10)
    axes[0].set_xlabel("x")
    axes[0].grid(alpha=0.3)
    negative = np.ones((*grid.shape, 3))
    negative[grid < 0] = _light("tab:red")
    zeroed = np.ones((*grid.shape, 3))
    zeroed[grid < 0] = _PADDING
    _draw_grid(axes[1], grid, title="before (negatives in red)", colours=negative)
    _draw_grid(axes[2], after, title="after ReLU", colours=zeroed)
    return figure


@skipped_while_grading
def show_softmax_cross_entropy(
    scores, target: int, class_names: Sequence[str] | None = None
) -> Figure:
    """One image's raw ``scores (K,)`` -> softmax probabilities -> cross-entropy loss for the
    true class ``target``, with the numbers of each step."""
    logits = _grid_array(scores, "scores", ndim=1)
    classes = len(logits)
    if not 0 <= target < classes:
        raise CourseError(f"target must be a class in 0..{classes - 1}; got {target}.")
    names = (
        [str(name) for name in class_names]
        if class_names is not None
        else list(map(str, range(classes)))
    )
    if len(names) != classes:
        raise CourseError(f"{classes} scores but {len(names)} class names.")
    tensor = torch.tensor(logits)
    probabilities = torch.softmax(tensor, dim=0).numpy()
    loss = float(torch.nn.functional.cross_entropy(tensor[None], torch.tensor([target])))
    figure = new_figure(figsize=(11, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    colours = ["lightgrey"] * classes
    colours[target] = "tab:green"
    panels = (
        (logits, "1. raw scores (logits) z", "{:.1f}"),
        (np.exp(logits), "2. exp(z), all positive", "{:.2f}"),
        (probabilities, f"3. softmax: exp(z) / {np.exp(logits).sum():.2f}", "{:.2f}"),
    )
    for axis, (heights, title, form) in zip(axes, panels, strict=True):
        axis.bar(range(classes), heights, color=colours)
        axis.set_xticks(range(classes), names, fontsize=8, rotation=45 if classes > 5 else 0)
        axis.axhline(0, color="grey", linewidth=0.6)
        axis.set_title(title, fontsize=10)
        for index, height in enumerate(heights):
            axis.text(index, height, form.format(height), ha="center",
                      va="bottom" if height >= 0 else "top", fontsize=8)  # fmt: skip
        axis.margins(y=0.2)
    figure.suptitle(
        f"true class {names[target]} (green): cross-entropy loss = −log p({names[target]}) "
        f"= −log {probabilities[target]:.2f} = {loss:.2f}",
        fontsize=11,
    )
    return figure
