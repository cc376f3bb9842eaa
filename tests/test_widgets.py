"""Tests of cnn_course.widgets: the training monitor and the explorers, with and without widgets."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread
from torch import nn

from cnn_course import display, plots, widgets
from cnn_course.errors import CourseError
from cnn_course.training import History, predict

NAMES = ("cat", "dog", "<bird>")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _no_frontend_guess(monkeypatch):
    """Every test decides for itself whether a widget frontend is there."""
    monkeypatch.delenv(widgets.WIDGETS_ENV, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, len(NAMES)),
    )


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def predicted(model, images) -> torch.Tensor:
    return predict(model, images).argmax(dim=1)


@pytest.fixture
def labels(model, images) -> torch.Tensor:
    """The model's own predictions, except for images 2 and 7: exactly two mistakes."""
    labels = predicted(model, images).clone()
    labels[[2, 7]] = (labels[[2, 7]] + 1) % len(NAMES)
    return labels


def pixels(png: bytes) -> np.ndarray:
    """The picture a PNG holds; it must be a real picture, not a blank one."""
    png = bytes(png)  # ipywidgets keeps a memoryview
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    array = imread(io.BytesIO(png))
    assert len(np.unique(array.reshape(-1, array.shape[-1]), axis=0)) > 10, "a blank picture"
    return array


def figure_png(figure: Figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return pixels(buffer.getvalue())


def bar_lengths(axis) -> list[float]:
    return [patch.get_width() for patch in axis.patches]


# --- where are we? ----------------------------------------------------------------------------


def test_importing_widgets_has_no_side_effects():
    """Does importing cnn_course.widgets leave pyplot, ipywidgets, tqdm and rcParams alone?"""
    code = (
        "import sys, matplotlib\n"
        "def settings():  # read without resolving the backend, which imports pyplot\n"
        "    return {k: dict.__getitem__(matplotlib.rcParams, k) for k in matplotlib.rcParams}\n"
        "before = settings()\n"
        "import cnn_course.widgets\n"
        "assert settings() == before, 'rcParams changed'\n"
        "loaded = [m for m in ('matplotlib.pyplot', 'ipywidgets', 'tqdm.notebook', 'IPython') "
        "if m in sys.modules]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert done.stderr == ""


def test_widget_frontend_is_guessed_and_can_be_overridden(monkeypatch):
    """Is there no widget frontend outside a kernel, even under a Jupyter server, unless forced?"""
    assert not display.in_kernel()
    assert not display.widget_frontend()
    monkeypatch.setenv("JPY_SESSION_NAME", "/tmp/lab.ipynb")
    assert not display.widget_frontend()  # set, but this process is no kernel
    monkeypatch.setattr(display, "in_kernel", lambda: True)
    assert display.widget_frontend()  # a kernel started by a Jupyter server
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert not display.widget_frontend()  # a kernel run by nbclient (CI, grading)
    monkeypatch.setenv(widgets.WIDGETS_ENV, "1")
    assert display.widget_frontend()
    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    monkeypatch.setenv("JPY_SESSION_NAME", "/tmp/lab.ipynb")
    assert not display.widget_frontend()


def test_without_ipywidgets_everything_is_static(monkeypatch, model, images, labels):
    """Without ipywidgets, is the default a figure, and is asking for a widget explained?"""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ipywidgets" else real_find_spec(name, *a),
    )
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` fails
    monkeypatch.setenv(widgets.WIDGETS_ENV, "1")
    assert not widgets.widget_frontend()
    assert isinstance(widgets.image_browser(model, images, labels, NAMES), Figure)
    with pytest.raises(CourseError, match="ipywidgets is not installed.*static=True"):
        widgets.image_browser(model, images, labels, NAMES, static=False)


# --- training monitor -------------------------------------------------------------------------


def run_epochs(monitor: widgets.TrainingMonitor, results: list[tuple[float, float]]) -> None:
    """A training loop's shape: three batches an epoch, then the epoch's means."""
    loader = [(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))] * 3
    for loss, accuracy in results:
        seen = 0
        for images, _labels in monitor.batches(loader):
            seen += len(images)
        assert seen == 6
        monitor.end_epoch(loss=loss, accuracy=accuracy)


def test_monitor_text_mode_records_history_and_prints_bars_to_stdout(capsys):
    """In plain text, are the epochs recorded and one bar per epoch printed, nothing on stderr?"""
    history = History()
    monitor = widgets.TrainingMonitor(history, 2, title="MNIST")
    assert not monitor.use_widgets
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would reach stderr in a notebook
        run_epochs(monitor, [(0.9, 0.6), (0.4, torch.tensor(0.85))])
    assert history.metrics == {"loss": [0.9, 0.4], "accuracy": [0.6, pytest.approx(0.85)]}
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = [part.strip() for part in re.split(r"[\r\n]+", captured.out) if part.strip()]
    finals = [line for line in lines if "100%" in line]
    assert len(finals) == 2
    assert finals[0].startswith("MNIST epoch 1/2: 100%")
    assert "3/3" in finals[0] and finals[0].endswith("loss 0.9000, accuracy 0.6000]")
    assert finals[1].startswith("MNIST epoch 2/2: 100%")
    assert finals[1].endswith("loss 0.4000, accuracy 0.8500]")
    assert captured.out.endswith("\n")


def test_monitor_without_batches_prints_the_epoch_line(capsys):
    """Is an epoch recorded without monitor.batches still recorded and reported?"""
    history = History()
    monitor = widgets.TrainingMonitor(history, 3)
    monitor.end_epoch(loss=1.5)
    assert history.metrics == {"loss": [1.5]}
    assert capsys.readouterr().out == "epoch 1/3: loss 1.5000\n"


def test_monitor_widget_mode_uses_notebook_bars_and_writes_nothing(capsys):
    """With widgets, is each epoch a tqdm widget bar, filled, green, showing its values?"""
    ipywidgets = pytest.importorskip("ipywidgets")
    history = History()
    monitor = widgets.TrainingMonitor(history, 2, title="CIFAR-10", widgets=True)
    run_epochs(monitor, [(2.1, 0.2), (1.7, 0.35)])
    assert history.metrics == {"loss": [2.1, 1.7], "accuracy": [0.2, 0.35]}
    assert len(monitor.bars) == 2
    for number, bar in enumerate(monitor.bars, start=1):
        label, progress, numbers = bar.container.children
        assert isinstance(progress, ipywidgets.FloatProgress)
        assert progress.value == progress.max == 3
        assert progress.bar_style == "success"
        assert f"CIFAR-10 epoch {number}/2" in label.value.replace("\u2007", " ")
    numbers = monitor.bars[1].container.children[2].value.replace("\u2007", " ")
    assert "loss 1.7000, accuracy 0.3500" in numbers
    assert capsys.readouterr() == ("", "")


def test_monitor_marks_an_interrupted_epoch(capsys):
    """When the loop body fails, is the epoch's bar closed and marked, with nothing recorded?"""
    pytest.importorskip("ipywidgets")
    history = History()
    monitor = widgets.TrainingMonitor(history, 2, widgets=True)
    loader = [torch.zeros(1)] * 4
    with pytest.raises(NotImplementedError):
        for _ in monitor.batches(loader):
            raise NotImplementedError("the student's line")
    bar = monitor.bars[0]
    assert bar.container.children[1].bar_style == "danger" and bar.n == 0
    assert len(history) == 0
    assert capsys.readouterr().err == ""


class FakeHandle:
    """What IPython's display(..., display_id=True) returns: a handle to update in place."""

    def __init__(self, shown):
        self.shown = [shown]

    def update(self, obj):
        self.shown.append(obj)


def test_monitor_redraws_one_plot_in_place_in_a_kernel(monkeypatch, capsys):
    """In a kernel, is one output shown at once and replaced by the curves after each epoch?"""
    import IPython.display

    handles = []

    def fake_display(obj, raw=False, display_id=False):
        assert raw and display_id
        handles.append(FakeHandle(obj))
        return handles[-1]

    monkeypatch.setattr(widgets, "in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    history = History()
    monitor = widgets.TrainingMonitor(history, 3, title="MNIST", widgets=False)
    assert len(handles) == 1
    assert "appear after the first epoch" in handles[0].shown[0]["text/plain"]
    run_epochs(monitor, [(0.9, 0.6), (0.5, 0.8)])
    plots_shown = handles[0].shown[1:]
    assert len(handles) == 1 and len(plots_shown) == 2
    last = plots_shown[-1]
    assert isinstance(last, plots.LabFigure)
    loss_axis, accuracy_axis = last.axes
    assert list(loss_axis.lines[0].get_ydata()) == [0.9, 0.5]
    assert list(accuracy_axis.lines[0].get_ydata()) == [0.6, 0.8]
    assert loss_axis.get_xlim() == (0.5, 3.5)  # room for all planned epochs from the start
    assert last.get_suptitle() == "MNIST"
    figure_png(last)
    assert capsys.readouterr().err == ""


def test_monitor_refuses_what_it_cannot_record():
    """Are a non-History, a bad epoch count and an empty end_epoch explained?"""
    with pytest.raises(CourseError, match="training.History"):
        widgets.TrainingMonitor({"loss": []}, 2)
    with pytest.raises(CourseError, match="positive integer"):
        widgets.TrainingMonitor(History(), 0)
    with pytest.raises(CourseError, match="end_epoch needs"):
        widgets.TrainingMonitor(History(), 1).end_epoch()


# --- image browser ----------------------------------------------------------------------------


def test_image_browser_static_shows_images_with_their_probabilities(model, images, labels):
    """Does the static browser draw the first images (top row) above the first mistakes
    (bottom row), beside their predicted probabilities, under a title true of both?"""
    figure = widgets.image_browser(model, images, labels, NAMES, count=4)
    assert isinstance(figure, plots.LabFigure)
    assert figure.get_suptitle() == (
        "Top: the first 2 of 12 images. Bottom: the first 2 mistakes after them (2 mistakes in all)"
    )
    shown = [axis for axis in figure.axes if axis.get_images()]
    bars = [axis for axis in figure.axes if axis.patches]
    assert len(shown) == len(bars) == 4
    probabilities = torch.softmax(predict(model, images), dim=1)
    for index, picture, chart in zip((0, 1, 2, 7), shown, bars, strict=True):
        assert np.allclose(bar_lengths(chart), probabilities[index].numpy())
        assert [label.get_text() for label in chart.get_yticklabels()] == list(NAMES)
        assert picture.get_title().startswith(f"image {index}\ntrue: {NAMES[int(labels[index])]}")
    assert [same_colour(picture.title.get_color(), "tab:red") for picture in shown] == [
        False, False, True, True,
    ]  # fmt: skip
    figure_png(figure)


def test_image_browser_static_title_speaks_of_mistakes_only_when_it_draws_them(
    model, images, labels
):
    """Does the fallback draw the mistakes its title counts, never one twice (a mistake among
    the first images is not drawn again below), and, when there are none, say so?"""
    figure = widgets.image_browser(model, images, labels, NAMES, count=6)
    drawn = [axis.get_title().split("\n")[0] for axis in figure.axes if axis.get_images()]
    assert drawn == ["image 0", "image 1", "image 2", "image 7"]
    assert figure.get_suptitle().endswith("the first 1 mistake after them (2 mistakes in all)")
    early = labels.clone()
    early[7] = predicted(model, images)[7]  # the one mistake left is in the top row
    figure = widgets.image_browser(model, images, early, NAMES, count=6)
    assert figure.get_suptitle() == "The first 3 of 12 images (1 mistake in all)"
    right = predicted(model, images)
    clean = widgets.image_browser(model, images, right, NAMES, count=3)
    assert clean.get_suptitle() == "The first 3 of 12 images (no mistakes)"
    with pytest.raises(CourseError, match="count must be a positive integer"):
        widgets.image_browser(model, images, labels, NAMES, count=0, static=True)


def same_colour(first, second) -> bool:
    from matplotlib.colors import same_color

    return bool(same_color(first, second))


def test_image_browser_static_mistakes_only(model, images, labels):
    """With mistakes_only, are exactly the mistakes drawn, each with a red bar?"""
    figure = widgets.image_browser(model, images, labels, NAMES, mistakes_only=True, static=True)
    assert figure.get_suptitle() == "The first 2 of 2 mistakes"
    charts = [axis for axis in figure.axes if axis.patches]
    assert len(charts) == 2
    for index, chart in zip((2, 7), charts, strict=True):
        colours = [patch.get_facecolor() for patch in chart.patches]
        assert same_colour(colours[int(labels[index])], "tab:green")
        assert any(same_colour(colour, "tab:red") for colour in colours)
    right = predicted(model, images)
    with pytest.raises(CourseError, match="No mistakes"):
        widgets.image_browser(model, images, right, NAMES, mistakes_only=True, static=True)


def test_image_browser_widget_follows_its_slider_buttons_and_toggle(model, images, labels):
    """Do the slider, the buttons and the mistakes toggle change the picture and caption?"""
    ipywidgets = pytest.importorskip("ipywidgets")
    browser = widgets.image_browser(model, images, labels, NAMES, static=False)
    assert isinstance(browser, widgets.ImageBrowser)
    assert isinstance(browser.slider, ipywidgets.IntSlider)
    assert isinstance(browser.widget, ipywidgets.VBox)
    assert WIDGET_VIEW in browser._repr_mimebundle_()
    assert (browser.slider.min, browser.slider.max) == (0, 11)
    first = browser.image.value
    pixels(first)
    assert browser.caption.value.startswith("image 0 of 12 (2 mistakes in all)")
    browser.slider.value = 7  # as the frontend does when the slider moves
    assert browser.current == 7
    assert browser.image.value != first
    assert "image 7 of 12" in browser.caption.value and "wrong" in browser.caption.value
    browser.next_button.click()
    assert browser.current == 8
    browser.previous_button.click()
    browser.previous_button.click()
    assert browser.current == 6
    browser.mistakes_toggle.value = True
    assert browser.shown == [2, 7]
    assert (browser.slider.value, browser.slider.max) == (0, 1)
    assert browser.current == 2 and browser.caption.value.startswith("mistake 1 of 2")
    browser.next_button.click()
    browser.next_button.click()  # stops at the last mistake
    assert browser.current == 7
    browser.mistakes_toggle.value = False
    assert browser.slider.max == 11 and browser.current == 0


def test_image_browser_caption_escapes_class_names(model, images, labels):
    """Are class names written into the caption's HTML escaped?"""
    pytest.importorskip("ipywidgets")
    browser = widgets.image_browser(model, images, labels, NAMES, static=False)
    bird = next(i for i in range(len(images)) if 2 in (int(labels[i]), int(browser.predictions[i])))
    browser.slider.value = bird
    assert "&lt;bird&gt;" in browser.caption.value and "<bird>" not in browser.caption.value


def test_image_browser_without_mistakes_says_so(model, images):
    """With nothing wrong, does the mistakes view say so instead of failing?"""
    pytest.importorskip("ipywidgets")
    right = predicted(model, images)
    browser = widgets.image_browser(model, images, right, NAMES, static=False, mistakes_only=True)
    assert browser.current is None
    assert "No mistakes" in browser.caption.value
    assert browser.image.layout.display == "none" and browser.slider.disabled


def test_explorers_explain_wrong_inputs(model, images, labels):
    """Are images of the wrong shape and a wrong number of class names explained?"""
    with pytest.raises(CourseError, match=r"\(N, C, H, W\)"):
        widgets.image_browser(model, images[0], labels, NAMES)
    with pytest.raises(CourseError, match="12 images and 3 labels"):
        widgets.confusion_matrix(model, images, labels[:3], NAMES)
    with pytest.raises(CourseError, match=r"outputs of shape \(12, 3\) but there are 2 class"):
        widgets.image_browser(model, images, labels, NAMES[:2])


# --- confusion matrix -------------------------------------------------------------------------


def test_confusion_counts_rows_are_true_classes():
    """Is entry (t, p) the number of images of class t predicted as p?"""
    counts = plots.confusion_counts(torch.tensor([0, 0, 1, 2, 2, 2]), [0, 1, 1, 2, 0, 2], 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(CourseError, match="rather than scores"):
        plots.confusion_counts([0, 1], [0, 5], 3)
    with pytest.raises(CourseError, match="2 labels but 1 predictions"):
        plots.confusion_counts([0, 1], [0], 3)


def test_confusion_matrix_static_shows_counts_and_class_names(model, images, labels):
    """Does the static confusion matrix write every count, name the classes and the accuracy?"""
    figure = widgets.confusion_matrix(model, images, labels, NAMES, title="tiny")
    axis = figure.axes[0]
    expected = plots.confusion_counts(labels, predicted(model, images), 3)
    written = np.array([int(text.get_text()) for text in axis.texts]).reshape(3, 3)
    assert np.array_equal(written, expected)
    assert [label.get_text() for label in axis.get_xticklabels()] == list(NAMES)
    assert axis.get_xlabel() == "predicted class" and axis.get_ylabel() == "true class"
    assert axis.get_title() == "tiny\n12 images, accuracy 83.3%"
    figure_png(figure)


def test_confusion_matrix_normalized_rows_sum_to_one(labels):
    """With normalize, does each row show fractions of its true class?"""
    figure = plots.show_confusion(labels, labels, NAMES, normalize=True)
    values = np.array([float(text.get_text()) for text in figure.axes[0].texts]).reshape(3, 3)
    present = np.bincount(labels.numpy(), minlength=3) > 0
    assert np.allclose(values.sum(axis=1)[present], 1.0)


def test_confusion_widget_switches_scale_and_shows_examples(model, images, labels):
    """Do the scale buttons redraw the matrix, and does picking a confusion show its images?"""
    pytest.importorskip("ipywidgets")
    explorer = widgets.confusion_matrix(model, images, labels, NAMES, static=False)
    assert isinstance(explorer, widgets.ConfusionExplorer)
    counts = pixels(explorer.matrix.value)
    explorer.normalize.value = True
    assert explorer.matrix.value != b"" and not np.array_equal(
        pixels(explorer.matrix.value), counts
    )
    pairs = [value for _, value in explorer.pair.options if value is not None]
    confusions = {(int(labels[i]), int(predicted(model, images)[i])) for i in (2, 7)}
    assert set(pairs) == confusions
    assert explorer.example_images.layout.display == "none"
    explorer.pair.value = pairs[0]
    assert explorer.example_images.layout.display is None
    pixels(explorer.example_images.value)
    explorer.pair.value = None
    assert explorer.example_images.layout.display == "none"


# --- feature maps -----------------------------------------------------------------------------


def test_feature_maps_static_shows_the_first_convolution(model, images):
    """Does the static viewer draw the input and one map per channel of the first convolution?"""
    figure = widgets.feature_maps(model, images, index=3)
    tiles = [axis for axis in figure.axes if axis.get_images()]
    assert [axis.get_title() for axis in tiles] == ["input", "0", "1", "2", "3"]
    expected = model[0](images[3:4]).detach()[0]
    assert np.allclose(np.ma.getdata(tiles[2].get_images()[0].get_array()), expected[1].numpy())
    assert figure.get_suptitle() == "layer 0: Conv2d(1 -> 4, 3x3) -> (4, 8, 8), image 3"
    pooled = widgets.feature_maps(model, images, layer=2, static=True)
    assert "layer 2: MaxPool2d -> (4, 4, 4)" in pooled.get_suptitle()
    assert (
        widgets.feature_maps(model, images, layer=model[1])
        .get_suptitle()
        .startswith("layer 1: ReLU")
    )
    figure_png(figure)


def test_feature_maps_refuses_unknown_layers(model, images):
    """Are a layer without image outputs and an index out of range explained?"""
    with pytest.raises(
        CourseError, match="No layer 4 with image-shaped outputs; choose among 0, 1, 2"
    ):
        widgets.feature_maps(model, images, layer=4)
    with pytest.raises(CourseError, match="index must be in 0..11"):
        widgets.feature_maps(model, images, index=12)


def test_feature_map_viewer_follows_layer_and_image(model, images):
    """Do the layer list and the image slider redraw, with filters shown for convolutions only?"""
    pytest.importorskip("ipywidgets")
    viewer = widgets.feature_maps(model, images, static=False)
    assert isinstance(viewer, widgets.FeatureMapViewer)
    assert [label for label, _ in viewer.layer.options] == [
        "layer 0: Conv2d(1 -> 4, 3x3) -> (4, 8, 8)",
        "layer 1: ReLU -> (4, 8, 8)",
        "layer 2: MaxPool2d -> (4, 4, 4)",
    ]
    assert viewer.filters.layout.display is None
    pixels(viewer.filters.value)
    first = viewer.maps.value
    viewer.slider.value = 5
    assert viewer.maps.value != first
    viewer.layer.value = 2
    assert viewer.filters.layout.display == "none"
    pixels(viewer.maps.value)
    assert WIDGET_VIEW in viewer._repr_mimebundle_()


# --- part 2's explorers -----------------------------------------------------------------------


def colour_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, len(NAMES)),
    ).eval()  # fmt: skip


def fgsm(model, images, labels, epsilon):
    x = images.clone().requires_grad_()
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    return (images + epsilon * x.grad.sign()).clamp(0, 1).detach()


def test_fgsm_explorer_static_draws_several_epsilons_not_the_previous_figure():
    """Without widgets, does the FGSM explorer draw one row per epsilon (0, half, the chosen
    one, twice it, the largest), each image as fgsm made it, rather than the figure of the
    chosen epsilon alone that the lab's previous cell already drew?"""
    from cnn_course.labs.cnn_part2 import explorers, figures

    model, labels = colour_model(), torch.tensor([0, 1, 2])
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    figure = explorers.fgsm_explorer(model, images, labels, NAMES, fgsm, static=True)
    tiles = [axis for axis in figure.axes if axis.get_images()]
    assert len(tiles) == 5 * 3
    rows = [tiles[3 * row].get_ylabel().split("\n")[0] for row in range(5)]
    assert rows == ["epsilon 0", "epsilon 0.005", "epsilon 0.01", "epsilon 0.02", "epsilon 0.05"]
    largest = fgsm(model, images, labels, 0.05)
    for index in range(3):
        expected = largest[index].permute(1, 2, 0).numpy()
        assert np.allclose(np.ma.getdata(tiles[12 + index].get_images()[0].get_array()), expected)
    before = predict(model, largest).argmax(dim=1)
    for index, axis in enumerate(tiles[12:]):
        assert axis.get_title() == NAMES[int(before[index])]
    previous = figures.show_adversarial(
        images, fgsm(model, images, labels, 0.01), labels, before, before, NAMES
    )
    assert figure_png(figure).shape != figure_png(previous).shape
    assert figure.get_suptitle() != previous.get_suptitle()


def test_map_figures_have_a_colour_bar_and_say_each_map_s_range():
    """Do the maps of part 2 (and the map explorer's fallback) come with a colour bar, and does
    each map's title give the lowest and highest values it was rescaled from?"""
    from cnn_course.labs.cnn_part2 import explorers, figures

    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    saliency = torch.stack([torch.full((8, 8), 0.5), torch.arange(64.0).view(8, 8) / 100])
    saliency[0, 0, 0] = 0.25
    figure = figures.show_maps(images, {"saliency": saliency, "Grad-CAM": torch.rand(2, 2, 2)})
    bars = [axis for axis in figure.axes if getattr(axis, "_colorbar", None)]
    assert len(bars) == 1
    assert [tick.get_text() for tick in bars[0].get_xticklabels()] == ["lowest", "highest"]
    titles = [axis.get_title() for axis in figure.axes if axis.get_images()]
    assert titles[1] == "saliency\n0.25 to 0.5" and titles[4] == "saliency\n0 to 0.63"
    figure_png(figure)

    model = colour_model()

    def saliency_map(model, images, classes):
        return images.mean(dim=1)

    def occlusion_map(model, image, label, patch_size=8, stride=4):
        return image[0, ::4, ::4]

    def grad_cam(model, layer, images, classes):
        return images[:, 0, ::2, ::2]

    labels = torch.tensor([0, 1])
    explorer = explorers.explain_maps(
        model, images, labels, NAMES, saliency_map, occlusion_map, grad_cam, layer=model[1],
        static=True,
    )  # fmt: skip
    assert sum(bool(getattr(axis, "_colorbar", None)) for axis in explorer.axes) == 1


def test_grading_mode_skips_what_no_test_reads(monkeypatch):
    """While grading, do views and figures return at once, without predicting or drawing?"""
    from cnn_course import plots, widgets

    class Exploding(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("a view predicted while grading")

    monkeypatch.setenv("CNN_COURSE_GRADING", "1")
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    names = [str(i) for i in range(10)]
    for view in (
        widgets.image_browser(Exploding(), images, labels, names),
        widgets.confusion_matrix(Exploding(), images, labels, names),
        widgets.feature_maps(Exploding(), images),
    ):
        assert "not shown while grading" in repr(view)
    assert "not shown while grading" in repr(plots.show_images(images, labels, names))
    with pytest.raises(CourseError):  # the student's mistakes still raise
        widgets.image_browser(Exploding(), images, labels[:2], names)
    monkeypatch.setenv("CNN_COURSE_GRADING", "0")
    assert plots.show_images(images, labels, names)._repr_png_()[:4] == b"\x89PNG"


def test_grading_never_imports_matplotlib():
    """A grading kernel calls figure helpers and views without importing matplotlib (0.5 s)."""
    script = """
import sys, torch
from cnn_course import checks, data, labs, plots, training, widgets
from cnn_course.labs.cnn_lab import checks, figures
from cnn_course.labs.cnn_part2 import checks, explorers, figures
plots.show_images(torch.rand(2, 1, 5, 5), [0, 1], ["a", "b"])
plots.show_filters(torch.rand(4, 1, 3, 3))
widgets.TrainingMonitor(training.History(), 1, title="t")
print(sorted(name for name in sys.modules if name.split(".")[0] == "matplotlib"))
"""
    env = {**os.environ, "CNN_COURSE_GRADING": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
