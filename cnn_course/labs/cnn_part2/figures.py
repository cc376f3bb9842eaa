"""Part 2's figures: maps over images, fooled images, curves and the patches that excite a
filter most (headless-safe)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnn_course.errors import CourseError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from cnn_course.plots import new_figure, skipped_while_grading, to_displayable

__all__ = [
    "receptive_field",
    "show_adversarial",
    "show_curve",
    "show_epsilons",
    "show_maps",
    "show_patches",
]


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


@skipped_while_grading
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
    drawn over the image in grey with ``overlay``. Each map's title gives its lowest and highest
    values, and a colour bar below the maps says what the colours mean. ``titles`` labels each
    row's image.
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
    ranges = {
        name: values.detach().cpu().float().flatten(1).aminmax(dim=1)
        for name, values in maps.items()
    }
    ncols = 1 + len(shown)
    bar = 0.8 if shown else 0.0  # room for the colour bar below the maps
    height = 2.25 * count + 0.4 + bar
    figure = new_figure(figsize=(2.0 * ncols, height), layout="constrained")
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
            axis.imshow(
                values[row], cmap="inferno", alpha=0.6 if overlay else None, vmin=0.0, vmax=1.0
            )
            low, high = (float(limit[row]) for limit in ranges[name])
            axis.set_title(f"{name}\n{low:.2g} to {high:.2g}", fontsize=8)
        for axis in axes[row]:
            axis.axis("off")
    if shown:  # the colours themselves, not blended with an image
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        colour_bar = figure.colorbar(
            ScalarMappable(Normalize(0.0, 1.0), cmap="inferno"),
            ax=axes[:, 1:],
            location="bottom",
            fraction=0.15 / height,  # of the maps' height: a bar 0.15 inches high
            shrink=0.8,
            aspect=30,
            pad=0.1 / height,
            ticks=[0.0, 1.0],
        )
        colour_bar.ax.set_xticklabels(["lowest", "highest"], fontsize=8)
        colour_bar.set_label("each map's own range", fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


@skipped_while_grading
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
    figure = new_figure(figsize=(max(1.9 * count, 4.0), 6.4), layout="constrained")
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


@skipped_while_grading
def show_epsilons(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    attacks: Sequence[tuple[float, torch.Tensor, Sequence[int] | torch.Tensor]],
    class_names: Sequence[str],
    *,
    title: str | None = None,
) -> Figure:
    """The same ``images (N, C, H, W)`` attacked with growing epsilons, one row per epsilon.

    ``attacks`` holds ``(epsilon, adversarial images (N, C, H, W), predictions (N,))``, one per
    row (epsilon 0: the originals). Each image is titled with the predicted class, in red when
    it is not the true one (named under the bottom row); each row says how many are wrong.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        found = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise CourseError(f"show_epsilons expects images shaped (N, C, H, W); got {found}.")
    if not attacks:
        raise CourseError("show_epsilons needs at least one (epsilon, images, predictions).")
    count = len(images)
    for epsilon, adversarials, predicted in attacks:
        if tuple(adversarials.shape) != tuple(images.shape) or len(predicted) != count:
            raise CourseError(
                f"show_epsilons: the attack with epsilon {epsilon:g} gave images "
                f"{tuple(adversarials.shape)} and {len(predicted)} predictions; expected "
                f"{tuple(images.shape)} and {count}."
            )
    rows = len(attacks)
    figure = new_figure(figsize=(1.5 * count + 1.2, 1.75 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, count, squeeze=False)
    for row, (epsilon, adversarials, predicted) in enumerate(attacks):
        wrong = 0
        for index in range(count):
            axis = axes[row, index]
            axis.imshow(to_displayable(adversarials[index]), cmap="gray", vmin=0.0, vmax=1.0)
            guess, true = int(predicted[index]), int(labels[index])
            wrong += guess != true
            axis.set_title(
                class_names[guess], fontsize=9, color="black" if guess == true else "tab:red"
            )
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(f"epsilon {epsilon:g}\n{wrong} of {count} wrong", fontsize=9)
    for index in range(count):
        axes[-1, index].set_xlabel(f"true: {class_names[int(labels[index])]}", fontsize=9)
    figure.suptitle(title or "Growing epsilon, one row each (wrong predictions in red)")
    return figure


@skipped_while_grading
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
    figure = new_figure(figsize=(5.0, 3.5), layout="constrained")
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


@skipped_while_grading
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
    figure = new_figure(figsize=(max(1.6 * count, 4.0), 3.6), layout="constrained")
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
