"""Figures for the lab: image grids, first-layer filters and training curves (headless-safe)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .errors import CourseError
from .training import History

__all__ = ["LabFigure", "show_filters", "show_history", "show_images", "to_displayable"]


class LabFigure(Figure):
    """A matplotlib Figure that Jupyter displays as a PNG without pyplot or ``%matplotlib``.

    Figures are built without pyplot, so nothing is drawn twice and no global state changes;
    Jupyter shows one when it is the value of a cell, and ``savefig`` works headless.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()


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
    figure = LabFigure(figsize=(max(2.0 * ncols, 4.0), 2.2 * nrows), layout="constrained")
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


def show_filters(
    weights: torch.Tensor | torch.nn.Conv2d, *, channel: int | None = None, ncols: int = 8
) -> Figure:
    """The filters of a convolution, one tile each.

    PyTorch stores a convolution's weights as ``(out_channels, in_channels, kH, kW)``. Filters
    with 3 input channels are drawn in colour (each rescaled to [0, 1]); otherwise, or when
    ``channel`` is given, that one input channel is drawn in grey on a shared colour scale.
    """
    if isinstance(weights, torch.nn.Conv2d):
        weights = weights.weight
    if not isinstance(weights, torch.Tensor) or weights.ndim != 4:
        found = tuple(weights.shape) if hasattr(weights, "shape") else type(weights).__name__
        raise CourseError(
            f"show_filters expects a Conv2d or its weights (out, in, kH, kW); got {found}."
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
    figure = LabFigure(figsize=(max(1.2 * ncols, 4.0), 1.2 * nrows + 0.5), layout="constrained")
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
    what = "RGB" if colour else f"input channel {channel}"
    figure.suptitle(f"{count} filters of {array.shape[2]}x{array.shape[3]} ({what})")
    return figure


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
    figure = LabFigure(figsize=(5 * len(panels), 3.5), layout="constrained")
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
