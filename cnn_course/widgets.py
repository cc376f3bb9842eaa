"""Live training feedback and interactive explorers (ipywidgets), each with a static fallback."""

from __future__ import annotations

import html
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import plots
from .display import (
    WidgetView,
    in_kernel,
    ipywidgets_module,
    picture,
    png,
    static_wanted,
    widget_frontend,
)
from .errors import CourseError
from .plots import Skipped
from .settings import WIDGETS_ENV
from .training import History, grading_mode, predict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "WIDGETS_ENV",
    "ConfusionExplorer",
    "FeatureMapViewer",
    "ImageBrowser",
    "Skipped",
    "TrainingMonitor",
    "check_images",
    "confusion_matrix",
    "feature_maps",
    "image_browser",
    "in_kernel",
    "predicted_probabilities",
    "widget_frontend",
]

# --- training feedback -----------------------------------------------------------------------


class TrainingMonitor:
    """A progress bar per epoch and a live loss/accuracy plot for a hand-written training loop.

    ::

        monitor = widgets.TrainingMonitor(history, n_epochs, title="MNIST")
        for epoch in range(n_epochs):
            for imgs, labels in monitor.batches(train_loader):
                ...  # one optimisation step
            monitor.end_epoch(loss=mean_loss, accuracy=mean_accuracy)

    ``end_epoch`` records the epoch in ``history`` (a :class:`training.History`), shows the
    values on the bar and redraws the curves (:func:`plots.show_history`). In JupyterLab the
    bars are tqdm widgets; elsewhere (nbclient, grading, plain Python) they are text on
    stdout. Nothing is written to stderr. In a kernel the plot is one output replaced after
    every epoch, so the saved notebook keeps the final curves.
    """

    def __init__(
        self,
        history: History,
        n_epochs: int,
        *,
        title: str = "",
        plot: bool = True,
        widgets: bool | None = None,
    ):
        if not isinstance(history, History):
            raise CourseError(
                "TrainingMonitor records into a training.History; got "
                f"{type(history).__name__} (create one with `history = training.History()`)."
            )
        if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
            raise CourseError(f"n_epochs must be a positive integer; got {n_epochs!r}.")
        self.history = history
        self.n_epochs = n_epochs
        self.title = title
        self.use_widgets = widget_frontend() if widgets is None else bool(widgets)
        self.epoch = 0  # epochs started by this monitor
        self.bars: list = []  # one tqdm bar per epoch
        self._bar = None
        self._first_epoch = len(history)  # epochs recorded before this run
        self._plot = None
        if plot and in_kernel() and not grading_mode():
            from IPython.display import display

            waiting = f"{title + ': ' if title else ''}the curves appear after the first epoch."
            self._plot = display({"text/plain": waiting}, raw=True, display_id=True)

    def batches(self, loader: Iterable) -> Iterator:
        """The batches of ``loader`` (one epoch), counted by this epoch's progress bar."""
        self._close_bar()
        self.epoch += 1
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = self._bar = self._new_bar(total)
        self.bars.append(bar)
        finished = False
        try:
            for batch in loader:
                yield batch
                bar.update(1)
            finished = True
        finally:
            if not finished:  # an error or a `break` in the loop: the bar stops, marked
                self._close_bar()

    def end_epoch(self, **metrics: float) -> None:
        """Record this epoch's ``metrics`` (e.g. ``loss=0.31, accuracy=0.91``) and redraw."""
        if not metrics:
            raise CourseError(
                "end_epoch needs the epoch's values, e.g. monitor.end_epoch(loss=0.31, accuracy=0.91)."
            )
        self.history.add(**metrics)
        recorded = self.history.metrics
        summary = ", ".join(f"{name} {recorded[name][-1]:.4f}" for name in metrics)
        if self._bar is None:  # no batches() this epoch: still say what was recorded
            self.epoch += 1
            if not self.use_widgets:
                print(f"{self._label()}: {summary}", file=sys.stdout, flush=True)
        else:
            self._bar.set_postfix_str(summary, refresh=False)
            self._close_bar()
        self._redraw()

    def figure(self) -> Figure:
        """The curves recorded so far, as a figure (the live plot shows the same)."""
        figure = plots.show_history(self.history, title=self.title or None)
        last = max(self._first_epoch + self.n_epochs, len(self.history))
        for axis in figure.axes:
            axis.set_xlim(0.5, last + 0.5)
        return figure

    def _label(self) -> str:
        return f"{self.title + ' ' if self.title else ''}epoch {self.epoch}/{self.n_epochs}"

    def _new_bar(self, total: int | None):
        if self.use_widgets:  # what tqdm.auto picks in a kernel: the notebook widget
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(
                total=total, desc=self._label(), unit="batch", leave=True, display=in_kernel()
            )
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm(
            total=total,
            desc=self._label(),
            unit="batch",
            leave=True,
            file=sys.stdout,  # tqdm's default, stderr, counts as a failure in graded notebooks
            mininterval=0.1 if sys.stdout.isatty() else 1.0,
            dynamic_ncols=False,
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.close()

    def _redraw(self) -> None:
        if self._plot is not None:
            self._plot.update(self.figure())


# --- exploration: predictions ----------------------------------------------------------------


def check_images(images, labels, class_names, who: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        found = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise CourseError(f"{who} expects images shaped (N, C, H, W) with N > 0; got {found}.")
    if labels is not None and len(labels) != len(images):
        raise CourseError(f"{who} got {len(images)} images and {len(labels)} labels.")
    if class_names is not None and len(class_names) == 0:
        raise CourseError(f"{who} needs the class names, e.g. mnist_train.class_names.")


def predicted_probabilities(model: nn.Module, images: torch.Tensor, classes: int, who: str):
    """Softmax of the model's scores ``(N, K)``; outputs that already are probabilities stay."""
    outputs = predict(model, images).float()
    if outputs.ndim != 2 or outputs.shape[1] != classes:
        raise CourseError(
            f"{who}: the model gives outputs of shape {tuple(outputs.shape)} but there are "
            f"{classes} class names; expected (N, {classes})."
        )
    already = (outputs >= 0).all() and torch.allclose(outputs.sum(dim=1), torch.ones(len(outputs)))
    return outputs if already else torch.softmax(outputs, dim=1)


class ImageBrowser(WidgetView):
    """Images one at a time, with their true class and the predicted probabilities."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        probabilities: torch.Tensor,
        class_names: Sequence[str],
        *,
        mistakes_only: bool = False,
    ):
        ipw = ipywidgets_module()
        self.images, self.labels = images, torch.as_tensor(labels)
        self.probabilities, self.class_names = probabilities, list(class_names)
        self.predictions = probabilities.argmax(dim=1)
        self.mistakes = torch.nonzero(self.predictions != self.labels).flatten().tolist()
        self.slider = ipw.IntSlider(
            value=0, min=0, max=len(images) - 1, description="image", continuous_update=False
        )
        self.previous_button = ipw.Button(description="◀ previous", layout={"width": "auto"})
        self.next_button = ipw.Button(description="next ▶", layout={"width": "auto"})
        self.mistakes_toggle = ipw.ToggleButton(
            value=mistakes_only,
            description="show only mistakes",
            icon="filter",
            layout={"width": "auto"},
        )
        self.caption = ipw.HTML()
        self.image = picture(ipw)
        controls = ipw.HBox(
            [self.previous_button, self.slider, self.next_button, self.mistakes_toggle]
        )
        self.widget = ipw.VBox([controls, self.caption, self.image])
        self.widget.add_class("cnn-course-image-browser")
        self.slider.observe(self._show, names="value")
        self.mistakes_toggle.observe(self._filter, names="value")
        self.previous_button.on_click(lambda _: self._step(-1))
        self.next_button.on_click(lambda _: self._step(1))
        self._filter()

    @property
    def shown(self) -> list[int]:
        """Indices of the images the slider runs over: all of them, or only the mistakes."""
        return self.mistakes if self.mistakes_toggle.value else list(range(len(self.images)))

    @property
    def current(self) -> int | None:
        """Index of the image on display (None when there is nothing to show)."""
        shown = self.shown
        return shown[self.slider.value] if shown else None

    def _step(self, step: int) -> None:
        self.slider.value = min(max(self.slider.value + step, self.slider.min), self.slider.max)

    def _filter(self, change=None) -> None:
        count = len(self.shown)
        self.slider.unobserve(self._show, names="value")  # draw once, below
        try:
            self.slider.value = 0  # before max, which must stay >= value
            self.slider.max = max(count - 1, 0)
        finally:
            self.slider.observe(self._show, names="value")
        self.slider.description = "mistake" if self.mistakes_toggle.value else "image"
        for control in (self.slider, self.previous_button, self.next_button):
            control.disabled = count < 2
        self._show()

    def _show(self, change=None) -> None:
        index = self.current
        if index is None:
            self.caption.value = "<b>No mistakes</b>: every image is classified correctly."
            self.image.layout.display = "none"
            return
        true, predicted = int(self.labels[index]), int(self.predictions[index])
        where = (
            f"mistake {self.slider.value + 1} of {len(self.mistakes)}"
            if self.mistakes_toggle.value
            else f"image {index} of {len(self.images):,} ({len(self.mistakes):,} mistakes in all)"
        )
        verdict = "right" if true == predicted else "<span style='color:#c00'>wrong</span>"
        true_name, predicted_name = (html.escape(self.class_names[i]) for i in (true, predicted))
        self.caption.value = (
            f"{where}: true <b>{true_name}</b>, predicted <b>{predicted_name}</b> ({verdict})"
        )
        figure = plots.show_probabilities(
            self.images[index : index + 1],
            self.labels[index : index + 1],
            self.probabilities[index : index + 1],
            self.class_names,
            title=f"image {index}",
        )
        self.image.value = png(figure)
        self.image.layout.display = None


def image_browser(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    mistakes_only: bool = False,
    static: bool | None = None,
    count: int = 6,
) -> ImageBrowser | Figure:
    """Browse ``images (N, C, H, W)`` with ``labels (N,)`` and the model's probabilities.

    A slider and buttons step through the images; a toggle keeps only the mistakes. Without
    a widget frontend, or with ``static=True``, a figure is returned instead: the first
    ``count`` mistakes with ``mistakes_only``; otherwise the first images (top row) above the
    first mistakes after them (bottom row), ``count`` in all, none drawn twice.
    """
    check_images(images, labels, class_names, "image_browser")
    if grading_mode():
        return Skipped("image_browser")
    probabilities = predicted_probabilities(model, images, len(class_names), "image_browser")
    if not static_wanted(static):
        return ImageBrowser(images, labels, probabilities, class_names, mistakes_only=mistakes_only)
    labels = torch.as_tensor(labels)
    mistakes = torch.nonzero(probabilities.argmax(dim=1) != labels).flatten()
    chosen, ncols, what = _static_choice(len(images), mistakes, count, mistakes_only)
    return plots.show_probabilities(
        images[chosen],
        labels[chosen],
        probabilities[chosen],
        class_names,
        ncols=ncols,
        title=what,
        captions=[f"image {int(index)}" for index in chosen],
    )


def _counted(count: int, noun: str) -> str:
    """``1 mistake``, ``87 mistakes``, ``1,000 images``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _static_choice(
    total: int, mistakes: torch.Tensor, count: int, mistakes_only: bool
) -> tuple[torch.Tensor, int, str]:
    """Which images the static browser draws, in how many columns, and a title true of them."""
    if count < 1:
        raise CourseError(f"count must be a positive integer; got {count!r}.")
    if mistakes_only:
        if len(mistakes) == 0:
            raise CourseError(f"No mistakes among the {total} images: nothing to show.")
        chosen = mistakes[:count]
        return chosen, 3, f"The first {len(chosen)} of {_counted(len(mistakes), 'mistake')}"
    in_all = f"{_counted(len(mistakes), 'mistake')} in all" if len(mistakes) else "no mistakes"
    if len(mistakes) == 0 or count < 2:
        chosen = torch.arange(min(count, total))
        return chosen, 3, f"The first {len(chosen)} of {_counted(total, 'image')} ({in_all})"
    first = torch.arange(min((count + 1) // 2, total))  # the top row
    wrong = mistakes[mistakes >= len(first)][: count - len(first)]  # the bottom row: no repeats
    if len(wrong) == 0:  # every mistake is in the top row already
        return first, 3, f"The first {len(first)} of {_counted(total, 'image')} ({in_all})"
    title = (
        f"Top: the first {len(first)} of {_counted(total, 'image')}. Bottom: the first "
        f"{_counted(len(wrong), 'mistake')} after them ({in_all})"
    )
    return torch.cat([first, wrong]), max(len(first), len(wrong)), title


class ConfusionExplorer(WidgetView):
    """The confusion matrix, counts or fractions, and example images for any confusion."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        predictions: torch.Tensor,
        class_names: Sequence[str],
        *,
        title: str | None = None,
        examples: int = 10,
    ):
        ipw = ipywidgets_module()
        self.images, self.labels, self.predictions = images, torch.as_tensor(labels), predictions
        self.class_names, self.title, self.examples = list(class_names), title, examples
        counts = plots.confusion_counts(self.labels, predictions, len(self.class_names))
        pairs = [
            (int(counts[t, p]), t, p)
            for t in range(len(counts))
            for p in range(len(counts))
            if t != p and counts[t, p]
        ]
        options = [("(pick a confusion to see its images)", None)] + [
            (f"true {self.class_names[t]}, predicted {self.class_names[p]}: {n} images", (t, p))
            for n, t, p in sorted(pairs, key=lambda pair: (-pair[0], pair[1], pair[2]))
        ]
        self.normalize = ipw.ToggleButtons(
            options=[("counts", False), ("fraction of each true class", True)],
            value=False,
            style={"button_width": "auto"},
        )
        self.pair = ipw.Dropdown(
            options=options, value=None, description="examples", layout={"width": "32em"}
        )
        self.matrix = picture(ipw)
        self.example_images = picture(ipw, display="none")
        self.widget = ipw.VBox(
            [ipw.HBox([self.normalize, self.pair]), self.matrix, self.example_images]
        )
        self.widget.add_class("cnn-course-confusion")
        self.normalize.observe(self._draw_matrix, names="value")
        self.pair.observe(self._draw_examples, names="value")
        self._draw_matrix()

    def _draw_matrix(self, change=None) -> None:
        figure = plots.show_confusion(
            self.labels,
            self.predictions,
            self.class_names,
            normalize=self.normalize.value,
            title=self.title,
        )
        self.matrix.value = png(figure)

    def _draw_examples(self, change=None) -> None:
        if self.pair.value is None:
            self.example_images.layout.display = "none"
            return
        true, predicted = self.pair.value
        chosen = torch.nonzero((self.labels == true) & (self.predictions == predicted)).flatten()
        shown = chosen[: self.examples]
        figure = plots.show_images(
            self.images[shown],
            self.labels[shown],
            self.class_names,
            predictions=self.predictions[shown],
            title=f"true {self.class_names[true]}, predicted {self.class_names[predicted]}: "
            f"{len(shown)} of {len(chosen)} images",
        )
        self.example_images.value = png(figure)
        self.example_images.layout.display = None


def confusion_matrix(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    title: str | None = None,
    static: bool | None = None,
) -> ConfusionExplorer | Figure:
    """The model's confusion matrix on ``images (N, C, H, W)`` with ``labels (N,)``.

    The widget switches between counts and fractions and shows the images of any
    confusion; without a widget frontend, or with ``static=True``, the matrix is a figure.
    """
    check_images(images, labels, class_names, "confusion_matrix")
    if grading_mode():
        return Skipped("confusion_matrix")
    predictions = predicted_probabilities(
        model, images, len(class_names), "confusion_matrix"
    ).argmax(1)
    if static_wanted(static):
        return plots.show_confusion(labels, predictions, class_names, title=title)
    return ConfusionExplorer(images, labels, predictions, class_names, title=title)


# --- exploration: inside the network ---------------------------------------------------------


def _spatial_layers(model: nn.Module, image: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """``(name, layer, output shape (C, H, W))`` of each leaf layer whose output is an image."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    shapes: dict[int, tuple] = {}
    order: list[int] = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and id(module) not in shapes:
            shapes[id(module)] = tuple(output.shape[1:])
            order.append(id(module))

    handles = [module.register_forward_hook(record) for _, module in leaves]
    try:
        predict(model, image)
    finally:
        for handle in handles:
            handle.remove()
    by_id = {id(module): (name, module) for name, module in leaves}
    return [(*by_id[key], shapes[key]) for key in order]


def _activations(model: nn.Module, layer: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The output ``(C, H, W)`` of ``layer`` for one ``image (1, C, H, W)``."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        predict(model, image)
    finally:
        handle.remove()
    return captured[0][0]


def _layer_label(name: str, layer: nn.Module, shape: tuple) -> str:
    if isinstance(layer, nn.Conv2d):
        kernel = "x".join(map(str, layer.kernel_size))
        kind = f"Conv2d({layer.in_channels} -> {layer.out_channels}, {kernel})"
    else:
        kind = type(layer).__name__
    return f"layer {name}: {kind} -> ({', '.join(map(str, shape))})"


class FeatureMapViewer(WidgetView):
    """Pick a layer and an image: the layer's feature maps for it, and its filters if a conv."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        layers: list[tuple[str, nn.Module, tuple]],
        *,
        layer: int = 0,
        index: int = 0,
    ):
        ipw = ipywidgets_module()
        self.model, self.images, self.layers = model, images, layers
        self.layer = ipw.Dropdown(
            options=[(_layer_label(*entry), position) for position, entry in enumerate(layers)],
            value=layer,
            description="layer",
            layout={"width": "34em"},
        )
        self.slider = ipw.IntSlider(
            value=index, min=0, max=len(images) - 1, description="image", continuous_update=False
        )
        self.maps = picture(ipw)
        self.filters = picture(ipw)
        self.widget = ipw.VBox([ipw.HBox([self.layer, self.slider]), self.maps, self.filters])
        self.widget.add_class("cnn-course-feature-maps")
        self.layer.observe(self._draw_all, names="value")
        self.slider.observe(self._draw_maps, names="value")
        self._draw_all()

    def _draw_all(self, change=None) -> None:
        _, module, _ = self.layers[self.layer.value]
        if isinstance(module, nn.Conv2d):
            channel = None if module.in_channels == 3 else 0
            self.filters.value = png(plots.show_filters(module, channel=channel))
            self.filters.layout.display = None
        else:
            self.filters.layout.display = "none"
        self._draw_maps()

    def _draw_maps(self, change=None) -> None:
        self.maps.value = png(
            _feature_figure(
                self.model, self.images, self.layers[self.layer.value], self.slider.value
            )
        )


def _feature_figure(model, images, entry, index: int) -> Figure:
    name, module, shape = entry
    image = images[index : index + 1]
    return plots.show_feature_maps(
        _activations(model, module, image),
        image=image[0],
        title=f"{_layer_label(name, module, shape)}, image {index}",
    )


def feature_maps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    layer: str | int | nn.Module | None = None,
    index: int = 0,
    static: bool | None = None,
) -> FeatureMapViewer | Figure:
    """What each layer of ``model`` makes of ``images (N, C, H, W)``: its feature maps.

    ``layer`` names the layer shown first (as in ``model.named_modules()``, e.g. ``0`` for
    ``model[0]``, or the layer itself); by default the first convolution. Without a widget
    frontend, or with ``static=True``, the feature maps of that layer for image ``index`` are
    returned as a figure.
    """
    check_images(images, None, None, "feature_maps")
    if not 0 <= index < len(images):
        raise CourseError(f"index must be in 0..{len(images) - 1}; got {index}.")
    if grading_mode():
        return Skipped("feature_maps")
    layers = _spatial_layers(model, images[:1])
    if not layers:
        raise CourseError("feature_maps found no layer whose output is an image (N, C, H, W).")
    if layer is None:
        convs = [i for i, (_, m, _) in enumerate(layers) if isinstance(m, nn.Conv2d)]
        position = convs[0] if convs else 0
    else:
        matches = [
            i for i, (name, module, _) in enumerate(layers) if module is layer or name == str(layer)
        ]
        if not matches:
            names = ", ".join(name for name, _, _ in layers)
            raise CourseError(
                f"No layer {layer!r} with image-shaped outputs; choose among {names}."
            )
        position = matches[0]
    if static_wanted(static):
        return _feature_figure(model, images, layers[position], index)
    return FeatureMapViewer(model, images, layers, layer=position, index=index)
