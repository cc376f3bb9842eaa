"""Figures for the lab: images, predictions, filters, feature maps and curves (headless-safe)."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from .errors import CourseError
from .training import History, grading_mode

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Skipped",
    "confusion_counts",
    "receptive_field",
    "show_adversarial",
    "show_confusion",
    "show_convolution",
    "show_curve",
    "show_feature_maps",
    "show_filters",
    "show_history",
    "show_images",
    "show_max_pooling",
    "show_padding_stride",
    "show_maps",
    "show_patches",
    "show_probabilities",
    "show_relu",
    "show_softmax_cross_entropy",
    "to_displayable",
]


class Skipped:
    """What a figure or view returns while the grader runs the notebook: nothing to see."""

    def __init__(self, view: str):
        self.view = view

    def __repr__(self) -> str:
        return f"{self.view}: not shown while grading (nothing in it is graded)"


_Helper = TypeVar("_Helper", bound=Callable)


def _skipped_while_grading(helper: _Helper) -> _Helper:
    """A figure helper that returns :class:`Skipped` at once while grading: no hidden test reads
    a picture, so the grader neither draws it nor imports matplotlib."""

    @functools.wraps(helper)
    def shown(*args, **kwargs):
        if grading_mode():
            return Skipped(helper.__name__)
        return helper(*args, **kwargs)

    return shown  # type: ignore[return-value]


@functools.cache
def _lab_figure_class() -> type:
    from matplotlib.figure import Figure

    class LabFigure(Figure):
        """A matplotlib Figure that Jupyter displays as a PNG without pyplot or ``%matplotlib``.

        Figures are built without pyplot, so nothing is drawn twice and no global state
        changes; Jupyter shows one when it is the value of a cell, and ``savefig`` works
        headless.
        """

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=90)
            return buffer.getvalue()

    LabFigure.__module__, LabFigure.__qualname__ = __name__, "LabFigure"
    return LabFigure


def __getattr__(name: str):
    if name == "LabFigure":  # defined on first use: importing matplotlib takes half a second
        return _lab_figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _new_figure(**options) -> Figure:
    return _lab_figure_class()(**options)


def to_displayable(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image ``(C, H, W)`` (C = 1 or 3) as an array imshow draws: ``(H, W)`` or ``(H, W, 3)``."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise CourseError(
            f"Expected one image shaped (C, H, W) with C = 1 or 3; got {array.shape}."
        )
    if array.shape[0] == 1:
        return array[0]
    return np.clip(array.transpose(1, 2, 0), 0.0, 1.0)


@_skipped_while_grading
def show_images(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
    *,
    predictions: Sequence[int] | torch.Tensor | None = None,
    ncols: int = 5,
    title: str | None = None,
) -> Figure:
    """A grid of ``images (N, C, H, W)`` titled with class names (grey for C = 1, RGB for C = 3).

    With ``predictions``, each title reads "predicted (true: ...)" and mistakes are drawn in red.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        found = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise CourseError(f"show_images expects images shaped (N, C, H, W); got {found}.")
    count = len(images)
    if count == 0 or len(labels) != count:
        raise CourseError(f"show_images got {count} images and {len(labels)} labels.")
    if predictions is not None and len(predictions) != count:
        raise CourseError(f"show_images got {count} images and {len(predictions)} predictions.")
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    figure = _new_figure(figsize=(max(2.0 * ncols, 4.0), 2.2 * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(to_displayable(images[index]), cmap="gray", vmin=0.0, vmax=1.0)
        true_name = class_names[int(labels[index])]
        if predictions is None:
            axis.set_title(true_name, fontsize=10)
        else:
            predicted = int(predictions[index])
            wrong = predicted != int(labels[index])
            axis.set_title(
                f"{class_names[predicted]}\n(true: {true_name})",
                fontsize=9,
                color="tab:red" if wrong else "black",
            )
    if title:
        figure.suptitle(title)
    return figure


@_skipped_while_grading
def show_filters(
    weights: torch.Tensor | torch.nn.Conv2d, *, channel: int | None = None, ncols: int = 8
) -> Figure:
    """The filters of a convolution, one tile each.

    PyTorch stores a convolution's weights as ``(out_channels, in_channels, kH, kW)``. Filters
    with 3 input channels are drawn in colour (each rescaled to [0, 1]); otherwise, or when
    ``channel`` is given, that one input channel is drawn in grey on a shared colour scale.
    Weights ``(out_channels, kH, kW)``, one channel already selected, are drawn in grey.
    """
    if isinstance(weights, torch.nn.Conv2d):
        weights = weights.weight
    selected = isinstance(weights, torch.Tensor) and weights.ndim == 3
    if selected:
        weights = weights[:, None]
    if not isinstance(weights, torch.Tensor) or weights.ndim != 4:
        found = tuple(weights.shape) if hasattr(weights, "shape") else type(weights).__name__
        raise CourseError(
            "show_filters expects a Conv2d, its weights (out, in, kH, kW), or one channel of "
            f"them (out, kH, kW); got {found}."
        )
    array = weights.detach().cpu().numpy()
    count, in_channels = array.shape[:2]
    colour = channel is None and in_channels == 3
    if not colour:
        channel = 0 if channel is None else channel
        if not 0 <= channel < in_channels:
            raise CourseError(f"channel must be in 0..{in_channels - 1}; got {channel}.")
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    figure = _new_figure(figsize=(max(1.2 * ncols, 4.0), 1.2 * nrows + 0.5), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    limit = float(np.abs(array).max()) or 1.0
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index >= count:
            continue
        if colour:
            tile = array[index].transpose(1, 2, 0)
            low, high = tile.min(), tile.max()
            axis.imshow((tile - low) / (high - low if high > low else 1.0))
        else:
            axis.imshow(array[index, channel], cmap="gray", vmin=-limit, vmax=limit)
        axis.set_title(str(index), fontsize=7)
    what = "RGB" if colour else "one channel" if selected else f"input channel {channel}"
    figure.suptitle(f"{count} filters of {array.shape[2]}x{array.shape[3]} ({what})")
    return figure


@_skipped_while_grading
def show_history(
    history: History | Mapping[str, Sequence[float]], *, title: str | None = None
) -> Figure:
    """Training curves per epoch: accuracies (names containing "acc") on the right, others left."""
    metrics = history.metrics if isinstance(history, History) else dict(history)
    if not metrics or not any(len(values) for values in metrics.values()):
        raise CourseError("show_history needs at least one recorded epoch; the history is empty.")
    accuracies = {name: v for name, v in metrics.items() if "acc" in name.lower()}
    others = {name: v for name, v in metrics.items() if name not in accuracies}
    panels = [
        (label, group) for label, group in (("value", others), ("accuracy", accuracies)) if group
    ]
    figure = _new_figure(figsize=(5 * len(panels), 3.5), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (label, group) in zip(axes, panels, strict=True):
        for name, values in group.items():
            axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axis.set_xlabel("epoch")
        all_losses = all("loss" in name.lower() for name in group)
        axis.set_ylabel("loss" if label == "value" and all_losses else label)
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    return figure


@_skipped_while_grading
def show_probabilities(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    probabilities: torch.Tensor,
    class_names: Sequence[str],
    *,
    ncols: int = 2,
    title: str | None = None,
) -> Figure:
    """Each of ``images (N, C, H, W)`` beside a bar chart of its ``probabilities (N, K)``.

    The true class's bar is green. When the most probable class is another one, its bar and
    the image's title are red.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        found = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise CourseError(f"show_probabilities expects images shaped (N, C, H, W); got {found}.")
    count, classes = len(images), len(class_names)
    if count == 0 or len(labels) != count:
        raise CourseError(f"show_probabilities got {count} images and {len(labels)} labels.")
    shape = tuple(probabilities.shape) if hasattr(probabilities, "shape") else None
    if shape != (count, classes):
        raise CourseError(
            f"show_probabilities expects probabilities shaped (N, K) = ({count}, {classes}): "
            f"one row per image, one column per class name; got {shape}."
        )
    array = torch.as_tensor(probabilities).detach().cpu().float().numpy()
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    figure = _new_figure(
        figsize=(5.2 * ncols, max(2.4, 0.24 * classes + 0.8) * nrows), layout="constrained"
    )
    axes = figure.subplots(nrows, 2 * ncols, squeeze=False, width_ratios=[1, 1.4] * ncols)
    for index in range(nrows * ncols):
        image_axis, bar_axis = axes[index // ncols, 2 * (index % ncols) : 2 * (index % ncols) + 2]
        image_axis.axis("off")
        if index >= count:
            bar_axis.axis("off")
            continue
        true, predicted = int(labels[index]), int(array[index].argmax())
        wrong = predicted != true
        image_axis.imshow(to_displayable(images[index]), cmap="gray", vmin=0.0, vmax=1.0)
        image_axis.set_title(
            f"true: {class_names[true]}\npredicted: {class_names[predicted]} "
            f"({array[index, predicted]:.0%})",
            fontsize=9,
            color="tab:red" if wrong else "black",
        )
        colours = ["lightgrey"] * classes
        colours[true] = "tab:green"
        if wrong:
            colours[predicted] = "tab:red"
        bar_axis.barh(range(classes), array[index], color=colours)
        bar_axis.set_yticks(range(classes), [str(name) for name in class_names], fontsize=8)
        bar_axis.invert_yaxis()  # first class at the top
        bar_axis.set_xlim(0.0, 1.0)
        bar_axis.set_xlabel("probability", fontsize=8)
        bar_axis.tick_params(axis="x", labelsize=7)
        bar_axis.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def confusion_counts(
    labels: Sequence[int] | torch.Tensor,
    predictions: Sequence[int] | torch.Tensor,
    num_classes: int,
) -> np.ndarray:
    """The confusion matrix ``(K, K)`` of integer counts: row = true class, column = predicted."""
    true = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).ravel()
    predicted = np.asarray(torch.as_tensor(predictions).cpu(), dtype=np.int64).ravel()
    if len(true) != len(predicted):
        raise CourseError(f"{len(true)} labels but {len(predicted)} predictions: they must match.")
    outside = [v for v in (*true, *predicted) if not 0 <= v < num_classes][:3]
    if outside:
        raise CourseError(
            f"classes must be integers in 0..{num_classes - 1}; found {outside} "
            "(are the predictions classes, from vector_to_class, rather than scores?)"
        )
    counts = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@_skipped_while_grading
def show_confusion(
    labels: Sequence[int] | torch.Tensor,
    predictions: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
    *,
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """The confusion matrix of ``labels (N,)`` against ``predictions (N,)``, with class names.

    Row = true class, column = predicted class; the diagonal holds the right answers. With
    ``normalize`` each row is divided by its count: the fraction of each true class predicted
    as each class.
    """
    classes = len(class_names)
    counts = confusion_counts(labels, predictions, classes)
    totals = counts.sum(axis=1, keepdims=True)
    shown = counts / np.maximum(totals, 1) if normalize else counts
    size = max(4.0, 0.45 * classes + 2.0)
    figure = _new_figure(figsize=(size + 0.8, size), layout="constrained")
    axis = figure.subplots()
    picture = axis.imshow(shown, cmap="Blues", vmin=0.0)
    figure.colorbar(picture, ax=axis, shrink=0.8, label="fraction" if normalize else "images")
    limit = shown.max() or 1
    for true in range(classes):
        for predicted in range(classes):
            value = shown[true, predicted]
            text = f"{value:.2f}" if normalize else str(int(value))
            axis.text(
                predicted,
                true,
                text,
                ha="center",
                va="center",
                fontsize=7 if classes > 6 else 9,
                color="white" if value > 0.6 * limit else "black",
            )
    names = [str(name) for name in class_names]
    axis.set_xticks(range(classes), names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(classes), names, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else 0.0
    heading = title or "Confusion matrix"
    axis.set_title(f"{heading}\n{total:,} images, accuracy {accuracy:.1%}", fontsize=10)
    return figure


@_skipped_while_grading
def show_feature_maps(
    activations: torch.Tensor,
    *,
    image: torch.Tensor | None = None,
    ncols: int = 8,
    title: str | None = None,
) -> Figure:
    """The feature maps ``activations (C, H, W)`` of one image, one tile per channel.

    Each map has its own colour scale, from dark (its lowest value) to bright (its highest).
    With ``image (C, H, W)``, the input image is drawn first.
    """
    if not isinstance(activations, torch.Tensor) or activations.ndim != 3:
        found = tuple(activations.shape) if hasattr(activations, "shape") else None
        raise CourseError(
            "show_feature_maps expects the activations of one image, shaped (C, H, W); "
            f"got {found or type(activations).__name__}."
        )
    maps = activations.detach().cpu().float().numpy()
    tiles = [("input", to_displayable(image))] if image is not None else []
    tiles += [(str(channel), maps[channel]) for channel in range(len(maps))]
    ncols = max(1, min(ncols, len(tiles)))
    nrows = math.ceil(len(tiles) / ncols)
    figure = _new_figure(figsize=(max(1.3 * ncols, 4.0), 1.3 * nrows + 0.6), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for axis, tile in zip(axes, tiles + [None] * (len(axes) - len(tiles)), strict=True):
        axis.axis("off")
        if tile is None:
            continue
        name, array = tile
        if name == "input":
            axis.imshow(array, cmap="gray", vmin=0.0, vmax=1.0)
        else:
            axis.imshow(array, cmap="viridis")
        axis.set_title(name, fontsize=7)
    channels, height, width = maps.shape
    figure.suptitle(title or f"{channels} feature maps of {height}x{width}")
    return figure


# --- how the layers compute: small grids with their numbers ----------------------------------


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


_HIGHLIGHT = np.array([1.0, 0.85, 0.4])
_PADDING = np.array([0.85, 0.85, 0.85])


@_skipped_while_grading
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
    figure = _new_figure(
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


@_skipped_while_grading
def show_padding_stride(
    size: int = 5, kernel: int = 3, settings: Sequence[tuple[int, int]] = ((1, 0), (1, 1), (2, 1))
) -> Figure:
    """A ``kernel``×``kernel`` window on a ``size``×``size`` input, one row per
    ``(stride, padding)`` of ``settings``: the padded input (zeros in grey) with the window's
    positions along the first row outlined, and the output they fill, in matching colours."""
    if not settings:
        raise CourseError("show_padding_stride needs at least one (stride, padding) setting.")
    figure = _new_figure(figsize=(8, 2.9 * len(settings)), layout="constrained")
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


@_skipped_while_grading
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
    figure = _new_figure(figsize=(7, 3.4), layout="constrained")
    axes = figure.subplots(1, 2, width_ratios=[grid.shape[1], output.shape[1] + 1])
    _draw_grid(
        axes[0], grid, title=f"input {grid.shape[0]}×{grid.shape[1]}", colours=colours, bold=bold
    )
    _draw_grid(
        axes[1], output, title=f"max pooling {size}×{size}, stride {size}", colours=out_colours
    )
    figure.suptitle("each window keeps its largest value")
    return figure


@_skipped_while_grading
def show_relu(values) -> Figure:
    """ReLU, max(0, x): its curve, and a grid ``values (H, W)`` before and after."""
    grid = _grid_array(values, "values")
    after = torch.relu(torch.tensor(grid)).numpy()
    figure = _new_figure(figsize=(10, 3.3), layout="constrained")
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


@_skipped_while_grading
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
    figure = _new_figure(figsize=(11, 3.6), layout="constrained")
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


# --- part 2: maps, fooled images, patches ----------------------------------------------------------


def _upsampled(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Maps ``(N, h, w)`` resized to ``size`` (bilinear), each rescaled to [0, 1] for display."""
    maps = maps.detach().cpu().float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = torch.nn.functional.interpolate(
            maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False
        ).squeeze(1)
    low = maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
    high = maps.flatten(1).max(dim=1).values.view(-1, 1, 1)
    return ((maps - low) / (high - low).clamp_min(1e-12)).numpy()


@_skipped_while_grading
def show_maps(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    titles: Sequence[str] | None = None,
    overlay: bool = True,
    title: str | None = None,
) -> Figure:
    """One row per image of ``images (N, C, H, W)``: the image, then each of ``maps``.

    ``maps`` names tensors ``(N, h, w)`` (a saliency, occlusion or Grad-CAM map); each is
    resized to the image and rescaled from its lowest (dark) to its highest value (bright), and
    drawn over the image in grey with ``overlay``. ``titles`` labels each row's image.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        found = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise CourseError(f"show_maps expects images shaped (N, C, H, W); got {found}.")
    count, size = len(images), tuple(images.shape[-2:])
    for name, values in maps.items():
        if not isinstance(values, torch.Tensor) or values.ndim != 3 or len(values) != count:
            found = tuple(values.shape) if hasattr(values, "shape") else type(values).__name__
            raise CourseError(
                f"show_maps: the map {name!r} must be shaped ({count}, h, w), one per image; "
                f"got {found}."
            )
    shown = {name: _upsampled(values, size) for name, values in maps.items()}
    ncols = 1 + len(shown)
    figure = _new_figure(figsize=(2.0 * ncols, 2.1 * count + 0.4), layout="constrained")
    axes = figure.subplots(count, ncols, squeeze=False)
    for row in range(count):
        picture = to_displayable(images[row])
        axes[row, 0].imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
        axes[row, 0].set_title(titles[row] if titles else f"image {row}", fontsize=9)
        for column, (name, values) in enumerate(shown.items(), 1):
            axis = axes[row, column]
            if overlay:
                grey = picture if picture.ndim == 2 else picture.mean(axis=2)
                axis.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0)
                axis.imshow(values[row], cmap="inferno", alpha=0.6, vmin=0.0, vmax=1.0)
            else:
                axis.imshow(values[row], cmap="inferno", vmin=0.0, vmax=1.0)
            axis.set_title(name, fontsize=9)
        for axis in axes[row]:
            axis.axis("off")
    if title:
        figure.suptitle(title)
    return figure


@_skipped_while_grading
def show_adversarial(
    originals: torch.Tensor,
    adversarials: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    before: Sequence[int] | torch.Tensor,
    after: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
    *,
    title: str | None = None,
) -> Figure:
    """Originals (top row) above their adversarial images (middle) and the change, magnified
    (bottom), each titled with the class the network predicts; fooled predictions in red."""
    if originals.shape != adversarials.shape or originals.ndim != 4:
        raise CourseError(
            "show_adversarial expects originals and adversarial images of the same shape "
            f"(N, C, H, W); got {tuple(originals.shape)} and {tuple(adversarials.shape)}."
        )
    count = len(originals)
    figure = _new_figure(figsize=(max(1.9 * count, 4.0), 6.4), layout="constrained")
    axes = figure.subplots(3, count, squeeze=False)
    difference = (adversarials - originals).detach().cpu()
    scale = float(difference.abs().max()) or 1.0
    for index in range(count):
        true = int(labels[index])
        for row, (images, predicted) in enumerate(((originals, before), (adversarials, after))):
            axis = axes[row, index]
            axis.imshow(to_displayable(images[index]), cmap="gray", vmin=0.0, vmax=1.0)
            guess = int(predicted[index])
            axis.set_title(
                class_names[guess] + ("\n(true)" if row == 0 and guess == true else ""),
                fontsize=9,
                color="black" if guess == true else "tab:red",
            )
        change = (difference[index] / (2 * scale) + 0.5).clamp(0, 1)
        axes[2, index].imshow(to_displayable(change), cmap="gray", vmin=0.0, vmax=1.0)
        axes[2, index].set_title(f"change x{0.5 / scale:.0f}", fontsize=8)
        for axis in axes[:, index]:
            axis.axis("off")
    figure.suptitle(title or "Original (top), adversarial (middle), the change magnified (bottom)")
    return figure


@_skipped_while_grading
def show_curve(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
) -> Figure:
    """One curve of ``ys`` against ``xs`` with markers (an accuracy against epsilon, say)."""
    if len(xs) != len(ys) or len(xs) == 0:
        raise CourseError(f"show_curve needs as many x as y values; got {len(xs)} and {len(ys)}.")
    figure = _new_figure(figsize=(5.0, 3.5), layout="constrained")
    axis = figure.subplots()
    axis.plot(list(xs), [float(y) for y in ys], marker="o")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title)
    return figure


def receptive_field(
    model: torch.nn.Module, layer: torch.nn.Module, image_shape: tuple[int, ...], row: int, col: int
) -> tuple[slice, slice]:
    """The rows and columns of the input that the output of ``layer`` at ``(row, col)`` sees.

    Found by asking autograd which input pixels its value depends on, so it works for any
    stack of convolutions and pooling layers.
    """
    found = {}
    handle = layer.register_forward_hook(lambda module, args, output: found.update(a=output))
    x = torch.rand(1, *image_shape, requires_grad=True)
    was = model.training
    try:
        model.eval()
        model(x)
    finally:
        handle.remove()
        model.train(was)
    (gradient,) = torch.autograd.grad(found["a"][0, :, row, col].sum(), x)
    seen = gradient[0].abs().sum(dim=0) > 0
    rows, cols = seen.any(dim=1).nonzero().view(-1), seen.any(dim=0).nonzero().view(-1)
    if len(rows) == 0:  # a dead unit: show the place itself
        return slice(row, row + 1), slice(col, col + 1)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


@_skipped_while_grading
def show_patches(
    model: torch.nn.Module,
    layer: torch.nn.Module,
    images: torch.Tensor,
    places: torch.Tensor,
    *,
    title: str | None = None,
) -> Figure:
    """The patch of each image that the unit of ``layer`` at each place sees.

    ``places (k, 3)`` holds rows ``(image index, row, column)`` in the layer's output, as
    ``top_activations`` returns them. Each image is drawn with its patch outlined, then the
    patch alone, enlarged.
    """
    if not isinstance(places, torch.Tensor) or places.ndim != 2 or places.shape[1] != 3:
        found = tuple(places.shape) if hasattr(places, "shape") else type(places).__name__
        raise CourseError(f"show_patches expects places shaped (k, 3); got {found}.")
    from matplotlib.patches import Rectangle

    count = len(places)
    figure = _new_figure(figsize=(max(1.6 * count, 4.0), 3.6), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)
    for column, (index, row, col) in enumerate(places.tolist()):
        rows, cols = receptive_field(model, layer, tuple(images.shape[1:]), row, col)
        picture = to_displayable(images[index])
        axes[0, column].imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
        axes[0, column].add_patch(
            Rectangle(
                (cols.start - 0.5, rows.start - 0.5),
                cols.stop - cols.start,
                rows.stop - rows.start,
                fill=False,
                edgecolor="yellow",
                linewidth=1.5,
            )
        )
        axes[0, column].set_title(f"image {index}", fontsize=8)
        axes[1, column].imshow(picture[rows, cols], cmap="gray", vmin=0.0, vmax=1.0)
        for axis in axes[:, column]:
            axis.axis("off")
    figure.suptitle(title or "The patches that excite the unit most (top: where, bottom: what)")
    return figure
