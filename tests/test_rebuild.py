"""Tests of rebuilding models from records and of the budget the judge holds them to: shapes
computed at every batch size the judge uses, refusals a student can act on."""

from __future__ import annotations

import copy
import time
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from test_checks import FLATTENINGS, FunctionalCifar, FunctionalMnist
from torch import nn

from cnn_course import judging
from cnn_course.labs.cnn_part2 import verdicts as lab2_verdicts
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading import rebuild as rebuild_module
from cnn_course_instructor.grading.judge import _within_budget, judged_batch_sizes
from cnn_course_instructor.grading.rebuild import (
    REBUILT_KINDS,
    RebuildError,
    over_budget,
    rebuild,
    refused_records,
)
from cnn_course_instructor.grading.registry import Context

COURSE = Course(REPO)
PART1, PART2 = COURSE.content("cnn_lab"), COURSE.content("cnn_part2")
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
REFUSED = "The grader did not evaluate it"


def records_of(model: nn.Module, shape: tuple[int, ...]) -> dict:
    """The records the probe makes of ``model`` (its kernel traces it on a dummy batch)."""
    torch.manual_seed(0)
    return judging.layer_records(model, shape)


def appended(records: dict, layer: nn.Module) -> dict:
    """``records`` with ``layer`` recorded after its last layer, as a crafted record holds it
    (the student's kernel could not have traced it: its input does not fit at batch 2)."""
    crafted = copy.deepcopy(records)
    tensors = {name: tensor.detach().clone() for name, tensor in layer.state_dict().items()}
    crafted["layers"].append(
        {
            "kind": type(layer).__name__,
            "config": judging.layer_config(layer),
            "output_shape": None,
            "tensors": tensors,
        }
    )
    return crafted


# --- what the judge refuses -----------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [
        [nn.Conv2d(1, 4, 3), nn.Flatten(start_dim=2)],
        [nn.Conv2d(1, 4, 3), nn.Flatten(start_dim=2), nn.Linear(676, 676)],
    ],
    ids=["flatten-start-dim-2", "flatten-then-linear"],
)
def test_a_convolution_given_an_unbatched_activation_is_refused_at_once_naming_the_layer(before):
    """Is a Conv2d fed a 3-d activation, which PyTorch runs as one unbatched image whose channels
    are the judge's 100 images, refused in well under a second, naming the layer, the shape it
    got and what it expects?"""
    records = appended(records_of(nn.Sequential(*before), MNIST), nn.Conv2d(100, 8, 3))
    start = time.perf_counter()
    message = over_budget(records, MNIST, judged_batch_sizes(PART1.lab))
    elapsed = time.perf_counter() - start
    index = len(before)
    assert message.startswith(f"layer {index} (Conv2d) got an input of shape (N, 4, ")
    assert "where it expects a batch of images (N, C, H, W) with C = 100" in message
    assert "taken as one image" in message and message.endswith(REFUSED)
    assert elapsed < 0.5  # measured: 0.2 ms; the judge it replaces ran for 900 s


@pytest.mark.parametrize("start, end", [(0, -1), (0, 1), (-4, 2)])
def test_a_flatten_merging_the_batch_is_refused(start, end):
    """Is a Flatten from dimension 0 (the batch's images merged into one), followed by a Linear
    that fits only the judge's batch of 100, refused with the Flatten named?"""
    records = records_of(nn.Sequential(nn.Flatten(start, end)), MNIST)
    merged = 100 * 784 if end == -1 else 100
    records = appended(records, nn.Linear(merged, 10))
    message = over_budget(records, MNIST, judged_batch_sizes(PART1.lab))
    assert message.startswith("layer 0 (Flatten) got an input of shape (N, 1, 28, 28)")
    assert "start_dim >= 1" in message and message.endswith(REFUSED)


def _mnist_records() -> dict:
    return records_of(PART1.reference.mnist_model(), MNIST)


def _set(index: int, key: str, value: object):
    def edit(records: dict) -> None:
        records["layers"][index]["config"][key] = value

    return edit


def _config(index: int, value: object):
    def edit(records: dict) -> None:
        records["layers"][index]["config"] = value

    return edit


def _drop(index: int, key: str):
    def edit(records: dict) -> None:
        del records["layers"][index]["config"][key]

    return edit


# The reference MNIST model's layers: 0 Conv2d, 1 ReLU, 2 Conv2d, 3 ReLU, 4 MaxPool2d,
# 5 Flatten, 6 Linear.
MALFORMED = {
    "fractional kernel": (_set(0, "kernel", (3.5, 3)), "layer 0 (Conv2d) has kernel = (3.5, 3)"),
    "zero kernel": (_set(0, "kernel", (0, 3)), "layer 0 (Conv2d) has kernel = (0, 3)"),
    "kernel not a pair": (_set(0, "kernel", 3), "layer 0 (Conv2d) has kernel = 3"),
    "negative padding": (_set(0, "padding", (-1, 1)), "layer 0 (Conv2d) has padding = (-1, 1)"),
    "huge stride": (_set(2, "stride", (10**40, 1)), "layer 2 (Conv2d) has stride = (1000"),
    "channels as text": (_set(0, "in", "1"), "layer 0 (Conv2d) has in = '1'"),
    "no channels": (_set(2, "out", None), "layer 2 (Conv2d) has out = None"),
    "groups not dividing": (_set(2, "groups", 5), "layer 2 (Conv2d) has groups = 5"),
    "negative dilation": (_set(0, "dilation", (1, -2)), "layer 0 (Conv2d) has dilation"),
    "missing kernel": (_drop(0, "kernel"), "layer 0 (Conv2d) has no kernel setting"),
    "settings not a dict": (_config(2, ["conv"]), "layer 2 (Conv2d) has settings of type list"),
    "pooling of three": (_set(4, "kernel", (2, 2, 2)), "layer 4 (MaxPool2d) has kernel"),
    "zero pooling stride": (_set(4, "stride", (0, 2)), "layer 4 (MaxPool2d) has stride"),
    "pooling window too large": (_set(4, "kernel", (29, 2)), "window (29, 2)"),
    "flatten out of range": (_set(5, "start_dim", 4), "layer 5 (Flatten) has start_dim = 4"),
    "flatten dims reversed": (_set(5, "end_dim", 0), "layer 5 (Flatten) has start_dim after"),
    "fractional flatten": (_set(5, "start_dim", 1.0), "layer 5 (Flatten) has start_dim = 1.0"),
    "in not a number": (_set(6, "in", float("nan")), "layer 6 (Linear) has in = nan"),
    "huge output": (_set(6, "out", 2**40), "layer 6 (Linear) has out = 1099511627776"),
    "wrong in_features": (_set(6, "in", 1568), "where it expects (N, 1568)"),
    "kernel larger than the image": (
        _set(0, "kernel", (31, 3)),
        "layer 0 (Conv2d) got an input of shape (N, 1, 28, 28), where it expects images at least",
    ),
}


@pytest.mark.parametrize("edit, words", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_settings_are_refused_not_raised(edit, words):
    """Is a record with settings PyTorch cannot take, or that cannot give a shape (fractions,
    zeros, negative or huge sizes, missing keys, a window larger than the image), refused with
    the layer and the setting named, rather than raising or being left to the tests?"""
    records = _mnist_records()
    edit(records)
    message = over_budget(records, MNIST, judged_batch_sizes(PART1.lab))
    assert isinstance(message, str) and words in message and message.endswith(REFUSED)


def _better_records() -> dict:
    return records_of(PART2.reference.better_model(), CIFAR)


@pytest.mark.parametrize(
    "edit, words",
    [
        (_set(1, "eps", "x"), "layer 1 (BatchNorm2d) has eps = 'x'"),
        (_set(1, "momentum", "fast"), "layer 1 (BatchNorm2d) has momentum = 'fast'"),
        (_set(1, "num_features", 16), "layer 1 (BatchNorm2d) got an input of shape (N, 32, 32"),
    ],
    ids=["eps", "momentum", "features"],
)
def test_malformed_batch_normalisation_is_refused_not_raised(edit, words):
    """Is part 2's network with unusable batch normalisation settings refused, layer named?"""
    records = _better_records()
    edit(records)
    message = over_budget(records, CIFAR, judged_batch_sizes(PART2.lab))
    assert isinstance(message, str) and words in message and message.endswith(REFUSED)


@pytest.mark.parametrize(
    "records",
    [{"layers": "conv"}, {"layers": [1, 2]}, {"layers": None}, []],
    ids=["text", "numbers", "none", "list"],
)
def test_a_record_that_holds_no_layers_is_refused_not_raised(records):
    """Is a model record that is no list of layer dicts refused with a message?"""
    message = over_budget(records, MNIST)
    assert "holds no list of layers" in message and message.endswith(REFUSED)


def test_a_layer_the_grader_does_not_rebuild_is_left_to_rebuild_to_report():
    """Is a record with a layer kind the grader does not rebuild left to ``rebuild`` (which the
    tests report), as before, and is it never rebuilt?"""
    records = _mnist_records()
    records["layers"][1]["kind"] = "EvilLayer"
    assert over_budget(records, MNIST, judged_batch_sizes(PART1.lab)) is None
    with pytest.raises(RebuildError, match="does not rebuild EvilLayer"):
        rebuild(records)


def test_a_pooling_window_counts_toward_the_compute_budget():
    """Is a padded image pooled by a huge window (15 billion reads per image, and almost no
    multiply-add of a convolution: 11 s per image on a CPU) refused by the compute budget?"""
    padded = records_of(nn.Sequential(nn.Conv2d(1, 1, 1, padding=336)), MNIST)
    records = appended(padded, nn.MaxPool2d(350, 1))  # (recorded by hand: 11 s to trace)
    message = over_budget(records, MNIST, judged_batch_sizes(PART1.lab))
    assert message.startswith("the model needs 15,092,612,500 multiply-adds for one image")


def test_a_tiny_record_of_a_huge_layer_is_refused_by_its_parameters():
    """Is a record of a Linear(6000, 6000) (36 million parameters, yet a few KB once its
    weight is a zero-stride tensor, and within the activation and compute budgets for an image)
    refused before anything gives those parameters memory?"""
    small = records_of(nn.Sequential(nn.Flatten(), nn.Linear(784, 6_000)), MNIST)
    huge = {
        "weight": torch.zeros(1).expand(6_000, 6_000),
        "bias": torch.zeros(1).expand(6_000),
    }
    small["layers"].append(
        {
            "kind": "Linear",
            "config": {"in": 6_000, "out": 6_000},
            "output_shape": None,
            "tensors": huge,
        }
    )
    started = time.perf_counter()
    message = over_budget(small, MNIST, judged_batch_sizes(PART1.lab))
    assert message.startswith("the model has 40,716,000 parameters"), message
    assert REFUSED in message and time.perf_counter() - started < 5


def test_the_budget_is_per_image_whatever_the_batch_size(monkeypatch):
    """Does a layer's count per image come out the same at each batch size the judge uses?
    (No record is within the budget at batch 1 yet over it at 100: every accepted layer keeps
    the batch first; those that do not are refused by shape, as above.)"""
    records = _mnist_records()
    monkeypatch.setattr(rebuild_module, "LAYER_BUDGET", 0)
    for batch in judged_batch_sizes(PART1.lab):
        message = over_budget(records, MNIST, (batch,))
        assert message.startswith("a layer of the model outputs 25,088 values for one 1x28x28")


# --- what the judge accepts -------------------------------------------------------------------


class _NamedMnist(nn.Sequential):
    """The MNIST table with named layers (an OrderedDict), as a corpus sample writes it."""

    def __init__(self):
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(1, 32, kernel_size=(3, 3), padding=1),
                relu1=nn.ReLU(inplace=True),
                conv2=nn.Conv2d(32, 32, 3, padding=(1, 1)),
                relu2=nn.ReLU(),
                pool=nn.MaxPool2d(2),
                flatten=nn.Flatten(start_dim=1),
                fc=nn.Linear(6272, 10, bias=True),
            )
        )


class _TwoPartCifar(nn.Module):
    """The CIFAR-10 table as features and classifier, flattened in forward (a corpus sample)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class _LeakyCifar(nn.Module):
    """Functional leaky ReLUs, average pooling and dropout in forward."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 5, padding=2), nn.Conv2d(16, 32, 3, stride=2)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.1), 2)
        x = F.dropout(F.leaky_relu(self.conv2(x)), 0.3, self.training)
        return self.fc(torch.flatten(x, 1))


def _every_kind() -> nn.Sequential:
    """One network holding every kind of layer the grader rebuilds."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding="same"), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, stride=2, dilation=2, groups=4), nn.LeakyReLU(0.2),
        nn.AvgPool2d(2, 1), nn.Identity(), nn.Flatten(), nn.Linear(32 * 5 * 5, 64),
        nn.BatchNorm1d(64), nn.GELU(), nn.Dropout(0.2), nn.Linear(64, 32), nn.ELU(), nn.Tanh(),
        nn.Linear(32, 10), nn.Sigmoid(), nn.LogSoftmax(dim=1), nn.Softmax(dim=-1),
    )  # fmt: skip


def _solution_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 91), nn.ReLU(), nn.Linear(91, 10))


def _cifar_with(*extra_classifier: nn.Module) -> nn.Sequential:
    reference = PART1.reference.cifar_model()
    return nn.Sequential(*reference[:-2], *extra_classifier)


RIGHT_MODELS = {
    "part 1 MNIST (reference)": (PART1, lambda: PART1.reference.mnist_model(), MNIST),
    "part 1 CIFAR-10 (reference)": (PART1, lambda: PART1.reference.cifar_model(), CIFAR),
    "part 1 MLP (solution)": (PART1, _solution_mlp, MNIST),
    "part 2 better network (reference)": (PART2, PART2.reference.better_model, CIFAR),
    "named layers": (PART1, _NamedMnist, MNIST),
    "features and classifier": (PART1, _TwoPartCifar, CIFAR),
    "functional CIFAR-10": (PART1, FunctionalCifar, CIFAR),
    "functional CIFAR-10, guarded": (PART1, lambda: FunctionalCifar(guarded=True), CIFAR),
    **{
        f"functional MNIST, {spelling}": (PART1, lambda s=spelling: FunctionalMnist(s), MNIST)
        for spelling in FLATTENINGS
    },
    "leaky, average pooling, dropout": (PART1, _LeakyCifar, CIFAR),
    "batch-normalised classifier": (
        PART1,
        lambda: _cifar_with(nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10)),
        CIFAR,
    ),
    "softmax at the end (a mistake, yet computable)": (
        PART1,
        lambda: _cifar_with(nn.ReLU(), nn.Linear(256, 10), nn.Softmax(dim=1)),
        CIFAR,
    ),
    "nine scores (a mistake, yet computable)": (
        PART1,
        lambda: _cifar_with(nn.ReLU(), nn.Linear(256, 9)),
        CIFAR,
    ),
    "every kind of layer": (PART2, _every_kind, CIFAR),
}


@pytest.mark.parametrize("content, make, shape", RIGHT_MODELS.values(), ids=RIGHT_MODELS.keys())
def test_right_models_are_accepted_at_every_batch_size_the_judge_uses(content, make, shape):
    """Is every model of the labs' solutions, and every right variant of the corpora (named
    layers, functional forwards, batch normalisation, dropout, average pooling, other
    activations...), recorded as the probe records it, accepted at each batch size the judge
    runs it at, with the sizes a forward pass of the rebuilt model gives there?"""
    records = records_of(make(), shape)
    assert records["error"] is None
    batch_sizes = judged_batch_sizes(content.lab)
    assert over_budget(records, shape, batch_sizes) is None
    model = rebuild(records, with_weights=False, device="meta").eval()
    sizes: list[int] = []
    for layer in model:
        layer.register_forward_hook(lambda _m, _i, output: sizes.append(output.numel()))
    for batch in batch_sizes:
        sizes.clear()
        model(torch.empty(batch, *shape, device="meta"))  # PyTorch's own shapes, costing nothing
        outputs = list(sizes)
        measured = rebuild_module._measured(records["layers"], shape, batch)
        assert measured["largest"] * batch == max(outputs)
        assert measured["activations"] * batch == sum(outputs)


def test_the_grader_s_own_network_is_accepted():
    """Is part 2's grader network (the records its functions are called on) within budget?"""
    records = PART2.reference.grader_model_records(seed=3)
    assert over_budget(records, CIFAR, judged_batch_sizes(PART2.lab)) is None


def test_every_kind_the_grader_rebuilds_is_measured():
    """Does the budget know each layer kind ``rebuild`` rebuilds, so that none is refused or
    left unmeasured for its kind alone?"""
    kinds = {layer["kind"] for layer in records_of(_every_kind(), CIFAR)["layers"]}
    assert kinds == REBUILT_KINDS


def test_the_judge_s_batch_sizes_come_from_the_labs():
    """Are the batch sizes the judge checks one image, predict's, and the labs' training
    schedules' (from the front matter), all of them?"""
    from cnn_course.training import PREDICT_BATCH

    for content in (PART1, PART2):
        schedules = {schedule.batch_size for schedule in content.lab.training.values()}
        assert set(judged_batch_sizes(content.lab)) == {1, PREDICT_BATCH, *schedules}
    assert {32, 64} <= set(judged_batch_sizes(PART1.lab))


# --- what the tests see of a refused model ------------------------------------------------------


def test_a_refused_model_keeps_its_layer_table_points_and_is_never_rebuilt():
    """Does a model whose Linear does not fit its input (a usual mistake, refused by shape)
    still earn its convolution and layer-order points, with the classifier's fault named, while
    nothing rebuilds or evaluates it?"""
    model = PART1.reference.mnist_model()
    model[-1] = nn.Linear(32 * 7 * 7, 10)
    record = {"mnist_model": records_of(model, MNIST)}
    _within_budget(record, PART1.contract.probe, judged_batch_sizes(PART1.lab))
    refused = record["mnist_model"]["refused"]
    assert refused.startswith("layer 6 (Linear) got an input of shape (N, 6272)")
    results = PART1.tests.run(record, Context(PART1.lab, {}), questions={"q4_mnist_model"})
    assert [result.score for result in results] == [1.0, 1.0, 0.0]
    assert "expected the linear layers Linear(6272, 10), got Linear(1568, 10)" in (
        results[2].message
    )
    with pytest.raises(RebuildError, match=REFUSED):
        rebuild(record["mnist_model"])
    with pytest.raises(RebuildError, match=REFUSED):
        rebuild(record["mnist_model"], with_weights=False)  # no retraining either


def test_a_refused_model_holds_no_values_and_its_loading_is_not_compared():
    """Are a refused model's tensors kept as shapes only (parameters still counted), and is the
    part 2 loading test told the refusal rather than comparing values it does not have?"""
    records = _better_records()
    records["layers"][1]["config"]["num_features"] = 16
    refusal = over_budget(records, CIFAR, judged_batch_sizes(PART2.lab))
    refused = refused_records(records, refusal)
    weights = [layer["tensors"].get("weight") for layer in refused["layers"]]
    assert all(weight is None or weight.device.type == "meta" for weight in weights)
    counts = [layer.parameters for layer in judging.layers_from_records(refused)]
    assert counts == [layer.parameters for layer in judging.layers_from_records(records)]
    verdict = lab2_verdicts.same_weights_verdict(refused, refused)
    assert not verdict.passed and verdict.message == refusal
