"""Figures every lab draws: images, predictions, filters, feature maps, training curves
(headless-safe); a lab's own figures are in its package (``cnn_course.labs.<lab>.figures``)."""

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
    "new_figure",
    "skipped_while_grading",
    "confusion_counts",
    "show_confusion",
    "show_feature_maps",
    "show_filters",
    "show_history",
    "show_images",
    "show_probabilities",
    "to_displayable",
]


class Skipped:
    """What a figure or view returns while the grader runs the notebook: nothing to see."""

    def __init__(self, view: str):
        self.view = view

    def __repr__(self) -> str:
        return f"{self.view}: not shown while grading (nothing in it is graded)"


_Helper = TypeVar("_Helper", bound=Callable)


def skipped_while_grading(helper: _Helper) -> _Helper:
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


def new_figure(**options) -> Figure:
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


@skipped_while_grading
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
    figure = new_figure(figsize=(max(2.0 * ncols, 4.0), 2.2 * nrows), layout="constrained")
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


@skipped_while_grading
def show_filters(
    weights: torch.Tensor | torch.nn.Conv2d, *, channel: int | None = None, ncols: int = 8
) -> Figure:
    """The filters of a convolution, one tile each.

    PyTorch stores a convolution's weights as ``(out_channels, in_channels, kH, kW)``. Filters
    with 3 input channels are drawn in colour (each rescaled to [0, 1]); otherwise, or when
    ``channel`` is given, that one input channel is drawn in grey on a shared colour scale
    (grey is zero), with a colour bar.
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
    width = max(1.2 * ncols, 4.0) + (0.0 if colour else 1.0)  # and room for the colour bar
    figure = new_figure(figsize=(width, 1.2 * nrows + 0.5), layout="constrained")
    grid = figure.subplots(nrows, ncols, squeeze=False)
    axes = grid.ravel()
    limit = float(np.abs(array).max()) or 1.0
    painted = None
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index >= count:
            continue
        if colour:
            tile = array[index].transpose(1, 2, 0)
            low, high = tile.min(), tile.max()
            axis.imshow((tile - low) / (high - low if high > low else 1.0))
        else:
            painted = axis.imshow(array[index, channel], cmap="gray", vmin=-limit, vmax=limit)
        axis.set_title(str(index), fontsize=7)
    if painted is not None:  # one shared scale: say what grey means
        figure.colorbar(painted, ax=grid, shrink=0.8, aspect=25, label="weight")
    what = "RGB" if colour else "one channel" if selected else f"input channel {channel}"
    figure.suptitle(f"{count} filters of {array.shape[2]}x{array.shape[3]} ({what})")
    return figure


@skipped_while_grading
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
    figure = new_figure(figsize=(5 * len(panels), 3.5), layout="constrained")
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


@skipped_while_grading
def show_probabilities(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    probabilities: torch.Tensor,
    class_names: Sequence[str],
    *,
    ncols: int = 2,
    title: str | None = None,
    captions: Sequence[str] | None = None,
) -> Figure:
    """Each of ``images (N, C, H, W)`` beside a bar chart of its ``probabilities (N, K)``.

    The true class's bar is green. When the most probable class is another one, its bar and
    the image's title are red. ``captions`` (one per image, e.g. "image 17") head the titles.
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
    if captions is not None and len(captions) != count:
        raise CourseError(f"show_probabilities got {count} images and {len(captions)} captions.")
    array = torch.as_tensor(probabilities).detach().cpu().float().numpy()
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    figure = new_figure(
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
        caption = f"{captions[index]}\n" if captions is not None else ""
        image_axis.set_title(
            f"{caption}true: {class_names[true]}\npredicted: {class_names[predicted]} "
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


@skipped_while_grading
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
    figure = new_figure(figsize=(size + 0.8, size), layout="constrained")
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


@skipped_while_grading
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
    figure = new_figure(figsize=(max(1.3 * ncols, 4.0), 1.3 * nrows + 0.6), layout="constrained")
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
