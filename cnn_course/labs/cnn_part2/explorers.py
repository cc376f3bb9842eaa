"""Part 2's explorers: the maps of your own functions side by side, and an epsilon slider over
your FGSM images (widgets in JupyterLab, a figure anywhere else)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnn_course.errors import CourseError
from cnn_course.plots import Skipped
from cnn_course.training import grading_mode, predict

from . import figures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from cnn_course.display import WidgetView, ipywidgets_module, picture, png, static_wanted
from cnn_course.widgets import check_images

__all__ = [
    "FgsmExplorer",
    "MapExplorer",
    "explain_maps",
    "fgsm_explorer",
]


def _maps_figure(model, images, labels, class_names, functions, layer, index, chosen):
    """The image ``index`` and its three maps for class ``chosen`` (None: the predicted class)."""
    saliency_map, occlusion_map, grad_cam = functions
    image = images[index : index + 1]
    predicted = int(predict(model, image).argmax(dim=1))
    target = predicted if chosen is None else int(chosen)
    classes = torch.tensor([target])
    maps = {
        "saliency": saliency_map(model, image, classes),
        "occlusion": occlusion_map(model, image[0], target).unsqueeze(0),
        "Grad-CAM": grad_cam(model, layer, image, classes),
    }
    true = int(labels[index])
    caption = (
        f"image {index}: true {class_names[true]}, predicted {class_names[predicted]}; "
        f"maps for {class_names[target]}"
    )
    return figures.show_maps(image, maps, titles=[f"image {index}"], title=caption)


class MapExplorer(WidgetView):
    """An image, a class, and the saliency, occlusion and Grad-CAM maps for that class."""

    def __init__(self, model, images, labels, class_names, functions, layer, *, index: int = 0):
        ipw = ipywidgets_module()
        self.model, self.images, self.labels = model, images, labels
        self.class_names, self.functions, self.layer = list(class_names), functions, layer
        self.slider = ipw.IntSlider(
            value=index, min=0, max=len(images) - 1, description="image", continuous_update=False
        )
        options = [("predicted class", -1)] + [(n, i) for i, n in enumerate(self.class_names)]
        self.target = ipw.Dropdown(options=options, value=-1, description="class")
        self.image = picture(ipw)
        self.widget = ipw.VBox([ipw.HBox([self.slider, self.target]), self.image])
        self.widget.add_class("cnn-course-map-explorer")
        self.slider.observe(self._draw, names="value")
        self.target.observe(self._draw, names="value")
        self._draw()

    def _draw(self, change=None) -> None:
        chosen = None if self.target.value < 0 else self.target.value
        figure = _maps_figure(
            self.model,
            self.images,
            self.labels,
            self.class_names,
            self.functions,
            self.layer,
            self.slider.value,
            chosen,
        )
        self.image.value = png(figure)


def explain_maps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    saliency_map,
    occlusion_map,
    grad_cam,
    *,
    layer: nn.Module,
    index: int = 0,
    static: bool | None = None,
) -> MapExplorer | Figure:
    """Pick one of ``images (N, C, H, W)`` and a class: its saliency, occlusion and Grad-CAM maps.

    The three functions are yours (exercises of part 2); ``layer`` is the layer Grad-CAM looks
    at. Without a widget frontend, or with ``static=True``, the maps of image ``index`` for its
    predicted class are returned as a figure.
    """
    check_images(images, labels, class_names, "explain_maps")
    functions = (saliency_map, occlusion_map, grad_cam)
    if not all(callable(function) for function in functions):
        raise CourseError(
            "explain_maps needs your three functions: saliency_map, occlusion_map, grad_cam."
        )
    if not 0 <= index < len(images):
        raise CourseError(f"index must be in 0..{len(images) - 1}; got {index}.")
    if grading_mode():
        return Skipped("explain_maps")
    if static_wanted(static):
        return _maps_figure(model, images, labels, class_names, functions, layer, index, None)
    return MapExplorer(model, images, labels, class_names, functions, layer, index=index)


def _fgsm_figure(model, images, labels, class_names, fgsm, epsilon: float) -> Figure:
    fooled = fgsm(model, images, labels, epsilon)
    before = predict(model, images).argmax(dim=1)
    after = predict(model, fooled).argmax(dim=1)
    changed = int((before != after).sum())
    title = f"epsilon = {epsilon:g}: {changed} of {len(images)} predictions changed"
    return figures.show_adversarial(images, fooled, labels, before, after, class_names, title=title)


def _sweep_epsilons(epsilon: float, largest: float) -> list[float]:
    """The epsilons the static fallback draws: none, half, the chosen one, twice it, the largest."""
    wanted = (0.0, epsilon / 2, epsilon, 2 * epsilon, largest)
    return sorted({round(value, 6) for value in wanted if 0 <= value <= largest})


def _fgsm_sweep_figure(model, images, labels, class_names, fgsm, epsilons) -> Figure:
    attacks = []
    for epsilon in epsilons:
        attacked = images if epsilon == 0 else fgsm(model, images, labels, epsilon)
        attacks.append((epsilon, attacked, predict(model, attacked).argmax(dim=1)))
    return figures.show_epsilons(
        images,
        labels,
        attacks,
        class_names,
        title="FGSM with growing epsilon (what the slider would show): wrong predictions in red",
    )


class FgsmExplorer(WidgetView):
    """A slider for FGSM's epsilon, with the images and what the network makes of them."""

    def __init__(self, model, images, labels, class_names, fgsm, *, epsilon: float, largest: float):
        ipw = ipywidgets_module()
        self.model, self.images, self.labels = model, images, labels
        self.class_names, self.fgsm = list(class_names), fgsm
        self.slider = ipw.FloatSlider(
            value=epsilon,
            min=0.0,
            max=largest,
            step=largest / 50,
            readout_format=".3f",
            description="epsilon",
            continuous_update=False,
        )
        self.image = picture(ipw)
        self.widget = ipw.VBox([self.slider, self.image])
        self.widget.add_class("cnn-course-fgsm-explorer")
        self.slider.observe(self._draw, names="value")
        self._draw()

    def _draw(self, change=None) -> None:
        figure = _fgsm_figure(
            self.model, self.images, self.labels, self.class_names, self.fgsm, self.slider.value
        )
        self.image.value = png(figure)


def fgsm_explorer(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    fgsm,
    *,
    epsilon: float = 0.01,
    largest: float = 0.05,
    static: bool | None = None,
) -> FgsmExplorer | Figure:
    """FGSM images of ``images (N, C, H, W)`` for an ``epsilon`` chosen with a slider.

    ``fgsm(model, images, labels, epsilon)`` is yours (part 2). Without a widget frontend, or
    with ``static=True``, a figure shows the images attacked with several epsilons, one row
    each: 0, half of ``epsilon``, ``epsilon``, twice it, and ``largest``.
    """
    check_images(images, labels, class_names, "fgsm_explorer")
    if not callable(fgsm):
        raise CourseError("fgsm_explorer needs your function fgsm(model, images, labels, epsilon).")
    if not 0 <= epsilon <= largest:
        raise CourseError(f"epsilon must be between 0 and {largest:g}; got {epsilon!r}.")
    if grading_mode():
        return Skipped("fgsm_explorer")
    if static_wanted(static):
        epsilons = _sweep_epsilons(epsilon, largest)
        return _fgsm_sweep_figure(model, images, labels, class_names, fgsm, epsilons)
    return FgsmExplorer(model, images, labels, class_names, fgsm, epsilon=epsilon, largest=largest)
