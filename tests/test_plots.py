"""Tests of cnn_course.plots on tiny synthetic tensors, rendered headless to PNG."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from matplotlib.image import imread

from cnn_course import plots
from cnn_course.errors import CourseError
from cnn_course.labs.cnn_lab import figures as lab1_figures
from cnn_course.training import History

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_renders(figure: Figure, tmp_path: Path, name: str = "figure.png") -> np.ndarray:
    """Save ``figure`` as PNG (no pyplot), check it is a real picture and return its pixels."""
    path = tmp_path / name
    figure.savefig(path)
    raw = path.read_bytes()
    assert raw.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(raw) > 2000, f"{path} holds only {len(raw)} bytes"
    pixels = imread(path)
    width, height = figure.get_size_inches() * figure.dpi
    assert pixels.shape[:2] == (round(height), round(width))
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10, "a blank picture"
    return pixels


def image_axes(figure: Figure) -> list:
    return [axis for axis in figure.axes if axis.get_images()]


def drawn(axis) -> np.ndarray:
    """The array an axis shows (imshow keeps a masked copy of what it was given)."""
    return np.ma.getdata(axis.get_images()[0].get_array())


def titles(figure: Figure) -> list[str]:
    return [axis.get_title() for axis in image_axes(figure)]


def colour_bars(figure: Figure) -> list:
    """The colour bars of a figure (each lives in an axis of its own)."""
    return [axis._colorbar for axis in figure.axes if getattr(axis, "_colorbar", None)]


# --- to_displayable -------------------------------------------------------------------------


def test_to_displayable_grey_is_two_dimensional():
    """Is a (1, H, W) image turned into the (H, W) array imshow draws in grey, values unchanged?"""
    image = torch.rand(1, 4, 6)
    array = plots.to_displayable(image)
    assert array.shape == (4, 6)
    assert np.array_equal(array, image[0].numpy())


def test_to_displayable_colour_is_channels_last_and_clipped():
    """Is a (3, H, W) image turned into (H, W, 3) with out-of-range values clipped to [0, 1]?"""
    image = torch.rand(3, 4, 6)
    image[0, 0, 0], image[2, 3, 5] = 1.5, -0.25
    array = plots.to_displayable(image)
    assert array.shape == (4, 6, 3)
    assert array[0, 0, 0] == 1.0 and array[3, 5, 2] == 0.0
    expected = np.clip(image.permute(1, 2, 0).numpy(), 0.0, 1.0)
    assert np.array_equal(array, expected)


def test_to_displayable_accepts_numpy_and_tensors_that_need_grad():
    """Are a NumPy image and a tensor that requires grad both accepted?"""
    image = torch.rand(3, 2, 2, requires_grad=True)
    assert plots.to_displayable(image).shape == (2, 2, 3)
    assert plots.to_displayable(np.zeros((1, 2, 5))).shape == (2, 5)


@pytest.mark.parametrize("shape", [(2, 4, 4), (4, 4), (1, 1, 4, 4)])
def test_to_displayable_rejects_other_shapes(shape):
    """Is an image that is not (C, H, W) with C = 1 or 3 refused with the shape it had?"""
    expected = re.escape(f"(C, H, W) with C = 1 or 3; got {shape}.")
    with pytest.raises(CourseError, match=expected):
        plots.to_displayable(torch.zeros(shape))


# --- show_images ----------------------------------------------------------------------------


def test_show_images_grey_grid(tmp_path):
    """Do 7 grey images fill 7 of 10 cells, as 2-D arrays on a fixed [0, 1] grey scale, titled by class?"""
    images = torch.rand(7, 1, 6, 6)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    figure = plots.show_images(images, labels, NAMES, ncols=5)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 10
    shown = image_axes(figure)
    assert len(shown) == 7
    for index, axis in enumerate(shown):
        image = axis.get_images()[0]
        assert drawn(axis).shape == (6, 6)
        assert np.array_equal(drawn(axis), images[index, 0].numpy())
        assert image.get_cmap().name == "gray" and image.get_clim() == (0.0, 1.0)
    assert titles(figure) == ["three", "one", "four", "one", "five", "nine", "two"]
    assert all(not axis.axison for axis in figure.axes)
    assert_renders(figure, tmp_path)


def test_show_images_colour_grid(tmp_path):
    """Are 3-channel images drawn as (H, W, 3) arrays in channel-last order?"""
    images = torch.rand(3, 3, 4, 5)
    figure = plots.show_images(images, [0, 8, 9], NAMES, title="colour")
    shown = image_axes(figure)
    assert len(shown) == len(figure.axes) == 3
    for index, axis in enumerate(shown):
        assert drawn(axis).shape == (4, 5, 3)
        assert np.array_equal(drawn(axis), images[index].permute(1, 2, 0).numpy())
    assert titles(figure) == ["zero", "eight", "nine"]
    assert figure.get_suptitle() == "colour"
    assert_renders(figure, tmp_path)


def test_show_images_marks_wrong_predictions_in_red(tmp_path):
    """With predictions, is each title the predicted name with "(true: ...)", red only when wrong?"""
    labels = torch.tensor([0, 1, 2, 3])
    predictions = torch.tensor([0, 7, 2, 1])
    figure = plots.show_images(torch.rand(4, 1, 5, 5), labels, NAMES, predictions=predictions)
    assert titles(figure) == [
        "zero\n(true: zero)",
        "seven\n(true: one)",
        "two\n(true: two)",
        "one\n(true: three)",
    ]
    red = [same_color(axis.title.get_color(), "tab:red") for axis in image_axes(figure)]
    assert red == [False, True, False, True]
    assert_renders(figure, tmp_path)


def test_show_images_errors_say_what_was_wrong():
    """Are wrong shapes and mismatched lengths refused with the numbers involved?"""
    with pytest.raises(CourseError, match=r"\(N, C, H, W\); got \(1, 28, 28\)"):
        plots.show_images(torch.zeros(1, 28, 28), [0], NAMES)
    with pytest.raises(CourseError, match=r"\(N, C, H, W\); got list"):
        plots.show_images([torch.zeros(1, 2, 2)], [0], NAMES)
    with pytest.raises(CourseError, match="got 2 images and 3 labels"):
        plots.show_images(torch.zeros(2, 1, 2, 2), [0, 1, 2], NAMES)
    with pytest.raises(CourseError, match="got 0 images and 0 labels"):
        plots.show_images(torch.zeros(0, 1, 2, 2), [], NAMES)
    with pytest.raises(CourseError, match="got 2 images and 1 predictions"):
        plots.show_images(torch.zeros(2, 1, 2, 2), [0, 1], NAMES, predictions=[0])
    with pytest.raises(CourseError, match=r"C = 1 or 3; got \(2, 2, 2\)"):
        plots.show_images(torch.zeros(1, 2, 2, 2), [0], NAMES)


# --- show_filters ---------------------------------------------------------------------------


def test_show_filters_rgb_draws_one_colour_tile_per_filter(tmp_path):
    """Does a Conv2d(3, 32, 3) give 32 RGB tiles, each its (3, 3, 3) filter rescaled to [0, 1]?"""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 32, 3)
    figure = plots.show_filters(conv)
    shown = image_axes(figure)
    assert len(shown) == 32 and len(figure.axes) == 32  # 4 rows of 8
    assert colour_bars(figure) == []  # each tile has its own scale: no colour bar can say it
    weight = conv.weight.detach()
    for index, axis in enumerate(shown):
        tile = drawn(axis)
        assert tile.shape == (3, 3, 3)
        assert tile.min() == 0.0 and tile.max() == pytest.approx(1.0)
        filt = weight[index].permute(1, 2, 0).numpy()  # (in=3, kH, kW) -> (kH, kW, 3)
        expected = (filt - filt.min()) / (filt.max() - filt.min())
        np.testing.assert_allclose(tile, expected, rtol=0, atol=1e-6)
    assert [axis.get_title() for axis in shown] == [str(i) for i in range(32)]
    assert figure.get_suptitle() == "32 filters of 3x3 (RGB)"
    assert_renders(figure, tmp_path)


def test_show_filters_grey_draws_weight_i_0_exactly(tmp_path):
    """Does a Conv2d(1, 8, 3) give 8 grey tiles equal to weight[i, 0] on one symmetric scale?"""
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 8, 3)
    figure = plots.show_filters(conv)
    shown = image_axes(figure)
    assert len(shown) == 8
    weight = conv.weight.detach().numpy()  # (out, in, kH, kW)
    limit = float(np.abs(weight).max())
    for index, axis in enumerate(shown):
        assert drawn(axis).shape == (3, 3)
        assert np.array_equal(drawn(axis), weight[index, 0])
        image = axis.get_images()[0]
        assert image.get_cmap().name == "gray" and image.get_clim() == (-limit, limit)
    assert figure.get_suptitle() == "8 filters of 3x3 (input channel 0)"
    (bar,) = colour_bars(figure)  # the one shared scale, said once
    assert bar.mappable.get_clim() == (-limit, limit) and bar.ax.get_ylabel() == "weight"
    assert_renders(figure, tmp_path)


def test_show_filters_channel_indexes_input_not_output():
    """With channel=c, is tile i weight[i, c] (out, in order), not weight[c, i]?"""
    torch.manual_seed(2)
    weight = torch.randn(16, 3, 5, 5)
    figure = plots.show_filters(weight, channel=2, ncols=4)
    shown = image_axes(figure)
    assert len(shown) == 16 and len(figure.axes) == 17  # and the colour bar
    for index, axis in enumerate(shown):
        assert np.array_equal(drawn(axis), weight[index, 2].numpy())
    assert figure.get_suptitle() == "16 filters of 5x5 (input channel 2)"


def test_show_filters_with_two_input_channels_defaults_to_channel_0():
    """Are filters with neither 1 nor 3 input channels drawn grey from channel 0 by default?"""
    weight = torch.randn(4, 2, 3, 3)
    shown = image_axes(plots.show_filters(weight))
    assert [drawn(axis).shape for axis in shown] == [(3, 3)] * 4
    assert np.array_equal(drawn(shown[3]), weight[3, 0].numpy())


@pytest.mark.parametrize("channel", [3, -1])
def test_show_filters_bad_channel_names_the_valid_range(channel):
    """Is a channel outside the input channels refused with the valid range?"""
    with pytest.raises(CourseError, match=rf"channel must be in 0\.\.2; got {channel}"):
        plots.show_filters(torch.nn.Conv2d(3, 4, 3), channel=channel)


def test_show_filters_wrong_input_is_explained():
    """Are 2-D weights and non-convolution layers refused with what was expected and found?"""
    with pytest.raises(CourseError, match=r"\(out, in, kH, kW\).*\(out, kH, kW\); got \(8, 3\)"):
        plots.show_filters(torch.zeros(8, 3))
    with pytest.raises(CourseError, match=r"Conv2d, its weights.*got Linear"):
        plots.show_filters(torch.nn.Linear(4, 2))


def test_show_filters_title_fits_with_few_filters(tmp_path):
    """With only two filters, does the whole suptitle fit inside the figure?"""
    figure = plots.show_filters(torch.nn.Conv2d(1, 2, 3))
    assert_renders(figure, tmp_path)
    extent, frame = figure._suptitle.get_window_extent(), figure.bbox
    assert frame.x0 <= extent.x0 and extent.x1 <= frame.x1


# --- show_history ---------------------------------------------------------------------------


def test_show_history_loss_left_accuracy_right(tmp_path):
    """Are loss curves drawn on the left axis and accuracy curves on the right, per epoch from 1?"""
    history = History()
    for loss, accuracy in [(1.0, 0.5), (0.6, 0.7), (0.4, 0.8)]:
        history.add(loss=loss, accuracy=accuracy, val_loss=loss + 0.1, val_accuracy=accuracy - 0.1)
    figure = plots.show_history(history, title="curves")
    assert isinstance(figure, Figure)
    loss_axis, accuracy_axis = figure.axes
    assert [line.get_label() for line in loss_axis.lines] == ["loss", "val_loss"]
    assert [line.get_label() for line in accuracy_axis.lines] == ["accuracy", "val_accuracy"]
    for axis in (loss_axis, accuracy_axis):
        for line in axis.lines:
            assert list(line.get_xdata()) == [1, 2, 3]
            assert list(line.get_ydata()) == history[line.get_label()]
        assert axis.get_xlabel() == "epoch" and axis.get_legend() is not None
    assert (loss_axis.get_ylabel(), accuracy_axis.get_ylabel()) == ("loss", "accuracy")
    assert loss_axis.get_position().x0 < accuracy_axis.get_position().x0
    assert figure.get_suptitle() == "curves"
    assert_renders(figure, tmp_path)


def test_show_history_accepts_a_plain_mapping(tmp_path):
    """Is a dict of lists drawn like a History?"""
    figure = plots.show_history({"loss": [0.9, 0.5], "accuracy": [0.6, 0.8]})
    loss_axis, accuracy_axis = figure.axes
    assert list(loss_axis.lines[0].get_ydata()) == [0.9, 0.5]
    assert list(accuracy_axis.lines[0].get_ydata()) == [0.6, 0.8]
    assert_renders(figure, tmp_path)


@pytest.mark.parametrize("history", [History(), {}, {"loss": []}], ids=["History", "dict", "empty"])
def test_show_history_empty_is_refused(history):
    """Is a history without a single recorded epoch refused with a plain explanation?"""
    with pytest.raises(CourseError, match="at least one recorded epoch; the history is empty"):
        plots.show_history(history)


# --- how the layers compute --------------------------------------------------------------


def grid_numbers(axis) -> list[str]:
    """The numbers a grid panel writes, row by row."""
    return [text.get_text() for text in axis.texts if text.get_visible()]


def test_show_convolution_writes_out_one_output_value_as_torch_computes_it(tmp_path):
    """Does the figure write the products under the window and the value F.conv2d gives there?"""
    image = torch.arange(20.0).view(4, 5) % 7
    kernel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    figure = lab1_figures.show_convolution(image, kernel, row=1, col=2, bias=0.5)
    assert_renders(figure, tmp_path)
    expected = torch.nn.functional.conv2d(
        image[None, None], kernel[None, None], torch.tensor([0.5])
    )
    assert expected.shape[-2:] == (2, 3)
    heading = figure.get_suptitle()
    assert heading.startswith(
        "output[1, 2] = 0×1 + 1×0 + 2×(-1) + 5×2 + 6×0 + 0×(-2) + 3×1 + 4×0 + 5×(-1) + 0.50 (bias)"
    )
    assert heading.endswith(f"= {expected[0, 0, 1, 2].item():.2f}")
    output_panel = figure.axes[2]
    assert grid_numbers(output_panel) == [f"{v:.2f}" for v in expected.view(-1).tolist()]


def test_show_convolution_refuses_a_kernel_larger_than_the_image_and_a_position_outside():
    """Are a kernel that does not fit and a position outside the output explained?"""
    with pytest.raises(CourseError, match="larger than the image"):
        lab1_figures.show_convolution(torch.zeros(2, 2), torch.zeros(3, 3))
    with pytest.raises(CourseError, match=r"must lie in the output of shape \(3, 3\)"):
        lab1_figures.show_convolution(torch.zeros(5, 5), torch.zeros(3, 3), row=3)
    with pytest.raises(CourseError, match="2-D grid"):
        lab1_figures.show_convolution(torch.zeros(1, 5, 5), torch.zeros(3, 3))


def test_show_padding_stride_draws_the_output_size_torch_gives(tmp_path):
    """Does each row show the padded input (zeros around) and an output of the size conv2d gives?"""
    settings = [(1, 0), (1, 1), (2, 1), (3, 2)]
    figure = lab1_figures.show_padding_stride(size=6, kernel=3, settings=settings)
    assert_renders(figure, tmp_path)
    for (stride, padding), (left, right) in zip(
        settings, np.reshape(figure.axes, (-1, 2)), strict=True
    ):
        size = torch.nn.functional.conv2d(
            torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 3, 3), stride=stride, padding=padding
        ).shape[-1]
        assert right.get_title() == f"output {size}×{size}"
        numbers = grid_numbers(left)
        assert len(numbers) == (6 + 2 * padding) ** 2
        assert numbers[: 6 + 2 * padding] == (
            ["0"] * (6 + 2 * padding) if padding else list(map(str, range(1, 7)))
        )
    with pytest.raises(CourseError, match="no window fits"):
        lab1_figures.show_padding_stride(size=2, kernel=5, settings=[(1, 0)])


def test_show_max_pooling_keeps_the_largest_value_of_each_window(tmp_path):
    """Does the output grid hold each window's maximum, and is that maximum bold in the input?"""
    values = torch.tensor([[1, 3, 2, 0], [5, 2, 1, 4], [0, 1, 7, 2], [3, 2, 1, 0]])
    figure = lab1_figures.show_max_pooling(values)
    assert_renders(figure, tmp_path)
    assert grid_numbers(figure.axes[1]) == ["5", "4", "3", "7"]
    bold = [t.get_text() for t in figure.axes[0].texts if t.get_fontweight() == "bold"]
    assert sorted(bold) == ["3", "4", "5", "7"]
    with pytest.raises(CourseError, match="does not split into 2×2 windows"):
        lab1_figures.show_max_pooling(torch.zeros(3, 4))


def test_show_relu_sets_negative_values_to_zero(tmp_path):
    """Is the grid after ReLU the grid before with its negative values replaced by 0?"""
    values = torch.tensor([[-2.0, 1.5], [3.0, -0.5]])
    figure = lab1_figures.show_relu(values)
    assert_renders(figure, tmp_path)
    assert grid_numbers(figure.axes[1]) == ["-2", "1.50", "3", "-0.50"]
    assert grid_numbers(figure.axes[2]) == ["0", "1.50", "3", "0"]


def test_show_softmax_cross_entropy_gives_the_loss_torch_computes(tmp_path):
    """Do the bars hold the softmax probabilities and the title the loss F.cross_entropy gives?"""
    scores = torch.tensor([2.0, 1.0, 0.1, -1.0])
    figure = lab1_figures.show_softmax_cross_entropy(scores, 1, ["cat", "dog", "ship", "car"])
    assert_renders(figure, tmp_path)
    loss = torch.nn.functional.cross_entropy(scores[None], torch.tensor([1])).item()
    assert figure.get_suptitle().endswith(f"= {loss:.2f}") and "p(dog)" in figure.get_suptitle()
    heights = [patch.get_height() for patch in figure.axes[2].patches]
    assert np.allclose(heights, torch.softmax(scores, 0).numpy())
    assert same_color(figure.axes[2].patches[1].get_facecolor(), "tab:green")
    with pytest.raises(CourseError, match="target must be a class in 0..3"):
        lab1_figures.show_softmax_cross_entropy(scores, 4)
    with pytest.raises(CourseError, match="4 scores but 2 class names"):
        lab1_figures.show_softmax_cross_entropy(scores, 0, ["a", "b"])


def test_show_filters_draws_one_selected_channel(tmp_path):
    """Are weights (out, kH, kW), one channel already selected, drawn as they are, in grey?"""
    weights = torch.randn(6, 3, 3, generator=torch.Generator().manual_seed(3))
    figure = plots.show_filters(weights)
    assert_renders(figure, tmp_path)
    axes = image_axes(figure)
    assert len(axes) == 6 and np.array_equal(drawn(axes[4]), weights[4].numpy())
    assert "one channel" in figure.get_suptitle()
    assert len(colour_bars(figure)) == 1


# --- headless -------------------------------------------------------------------------------


def test_plots_render_without_pyplot_or_a_display(tmp_path):
    """Do the figures render in a fresh process with no display and never import pyplot?"""
    script = (
        "import sys, torch\n"
        "from cnn_course import plots\n"
        "figure = plots.show_images(torch.rand(2, 3, 4, 4), [0, 1], ['a', 'b'])\n"
        "figure.savefig(sys.argv[1])\n"
        "plots.show_filters(torch.nn.Conv2d(1, 4, 3)).savefig(sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").read_bytes().startswith(PNG_SIGNATURE)
