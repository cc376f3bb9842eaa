"""Tests of cnn_course.training: seeding, the fast-mode switch, predict/evaluate and History."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from cnn_course import training
from cnn_course.errors import CourseError
from cnn_course.training import History


class Probe(nn.Module):
    """A tiny model that records, for every forward call, its mode, grad state and batch size."""

    def __init__(self, features: int = 4, classes: int = 3):
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.calls: list[tuple[bool, bool, int]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled(), len(images)))
        return self.linear(images.flatten(1))


# --- seeding and fast mode ------------------------------------------------------------------


def _draws() -> tuple:
    return (
        random.random(),
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
        nn.Linear(3, 2).weight.detach().flatten().tolist(),
    )


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    """Does the same seed give the same Python, NumPy and PyTorch draws (and model init), another seed others?"""
    training.seed_everything(7)
    first = _draws()
    training.seed_everything(7)
    again = _draws()
    training.seed_everything(8)
    other = _draws()
    assert first == again
    for mine, theirs in zip(first, other, strict=True):
        assert mine != theirs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", False),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        (" OFF ", False),
        ("False", False),
        ("1", True),
        ("yes", True),
        ("true", True),
    ],
)
def test_fast_mode_reads_the_environment(monkeypatch, value, expected):
    """Does $CNN_COURSE_FAST switch shortened mode on for "1"/"yes" and off for ""/"0"/"false"/"no"/"off"?"""
    monkeypatch.setenv("CNN_COURSE_FAST", value)
    assert training.fast_mode() is expected
    assert training.epochs(full=10, fast=3) == (3 if expected else 10)


def test_fast_mode_is_off_when_unset(monkeypatch):
    """Is training full-length when $CNN_COURSE_FAST is not set at all?"""
    monkeypatch.delenv("CNN_COURSE_FAST", raising=False)
    assert training.fast_mode() is False
    assert training.epochs(12, 4) == 12


# --- predict --------------------------------------------------------------------------------


def test_predict_runs_in_eval_mode_without_grad_and_batches_the_rest():
    """Is every batch run in eval mode under no_grad, with a short last batch when N % batch_size != 0?"""
    model = Probe()
    images = torch.randn(10, 1, 2, 2)
    outputs = training.predict(model, images, batch_size=4)
    assert model.calls == [(False, False, 4), (False, False, 4), (False, False, 2)]
    assert outputs.shape == (10, 3) and not outputs.requires_grad
    model.eval()
    with torch.no_grad():
        assert torch.allclose(outputs, model.linear(images.flatten(1)))


def test_predict_switches_dropout_off():
    """With Dropout(p=0.99), are the outputs the untouched inputs (eval mode), not mostly zeros?"""
    model = nn.Sequential(nn.Flatten(), nn.Dropout(p=0.99))
    model.train()
    images = torch.ones(50, 1, 2, 2)
    assert torch.equal(training.predict(model, images, batch_size=16), torch.ones(50, 4))
    assert model.training
    assert not torch.equal(model(images), torch.ones(50, 4))  # the same model, in train mode


def test_predict_leaves_batchnorm_statistics_alone():
    """Does a BatchNorm model in train mode keep its running statistics through predict?"""
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten())
    model.train()
    images = torch.randn(8, 1, 2, 2) * 5 + 3
    outputs = training.predict(model, images, batch_size=3)
    batch_norm = model[0]
    assert int(batch_norm.num_batches_tracked) == 0
    assert torch.equal(batch_norm.running_mean, torch.zeros(1))
    assert torch.allclose(outputs, images.flatten(1) / (1 + batch_norm.eps) ** 0.5)


@pytest.mark.parametrize("was_training", [True, False])
def test_predict_restores_the_training_flag(was_training):
    """Is the model's train/eval flag the same after predict as before?"""
    model = Probe()
    model.train(was_training)
    training.predict(model, torch.randn(3, 1, 2, 2))
    assert model.training is was_training
    assert model.calls == [(False, False, 3)]


def test_predict_restores_the_training_flag_when_the_model_fails():
    """When the forward pass raises, is the model still put back in train mode?"""

    class Broken(Probe):
        def forward(self, images):
            raise RuntimeError("boom")

    model = Broken()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        training.predict(model, torch.randn(2, 1, 2, 2))
    assert model.training


def test_predict_restores_each_submodule_mode():
    """Does a frozen BatchNorm (eval) inside a model in train mode stay in eval after predict?"""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    model.train()
    model[1].eval()
    training.predict(model, torch.randn(2, 1, 2, 2))
    assert model.training and not model[1].training


def test_predict_wrong_input_is_explained():
    """Are inputs that are not (N, C, H, W) tensors refused with the shape or type found?"""
    model = Probe()
    with pytest.raises(CourseError, match=r"\(N, C, H, W\) with N > 0; got \(2, 2, 2\)"):
        training.predict(model, torch.zeros(2, 2, 2))
    with pytest.raises(CourseError, match=r"\(N, C, H, W\) with N > 0; got \(0, 1, 2, 2\)"):
        training.predict(model, torch.zeros(0, 1, 2, 2))
    with pytest.raises(CourseError, match=r"torch tensor of images \(N, C, H, W\); got a list"):
        training.predict(model, [[0.0]])
    with pytest.raises(CourseError, match="batch_size must be a positive integer; got 0"):
        training.predict(model, torch.zeros(2, 1, 2, 2), batch_size=0)
    assert model.calls == []


# --- evaluate -------------------------------------------------------------------------------


def _logits_model() -> nn.Module:
    """Images shaped (N, 1, 1, K) are their own logits."""
    return nn.Flatten()


def test_evaluate_returns_a_float_fraction_over_uneven_batches():
    """Is accuracy a Python float fraction, right when N is not a multiple of batch_size?"""
    logits = torch.tensor(
        [[0.9, 0.1, 0.0], [0.0, 0.1, 0.9], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]
    ).view(5, 1, 1, 3)
    labels = torch.tensor([0, 2, 2, 1, 1])  # predicted 0, 2, 1, 1, 0
    accuracy = training.evaluate(_logits_model(), logits, labels, batch_size=2)
    assert type(accuracy) is float
    assert accuracy == pytest.approx(3 / 5)
    assert training.evaluate(_logits_model(), logits, torch.tensor([0, 2, 1, 1, 0])) == 1.0
    assert training.evaluate(_logits_model(), logits, torch.tensor([1, 1, 0, 0, 1])) == 0.0


def test_evaluate_uses_eval_mode_without_grad():
    """Does evaluate go through predict's eval/no_grad path and restore train mode?"""
    model = Probe(features=4, classes=3)
    model.train()
    training.evaluate(model, torch.randn(7, 1, 2, 2), torch.zeros(7, dtype=torch.int64), 5)
    assert model.calls == [(False, False, 5), (False, False, 2)]
    assert model.training


def test_evaluate_mismatched_lengths_are_explained():
    """Are 5 images with 4 labels refused with both counts?"""
    with pytest.raises(CourseError, match="5 images but 4 labels"):
        training.evaluate(_logits_model(), torch.zeros(5, 1, 1, 3), torch.zeros(4))


def test_evaluate_refuses_labels_that_are_not_one_dimensional():
    """Are (N, 1) labels refused rather than silently broadcast into a wrong accuracy?"""
    logits = torch.eye(2).view(2, 1, 1, 2)
    with pytest.raises(CourseError):
        training.evaluate(_logits_model(), logits, torch.tensor([[0], [1]]))


# --- History --------------------------------------------------------------------------------


def test_history_add_getitem_and_len():
    """Does add record one float per metric per epoch, readable by name, with len = epochs?"""
    history = History()
    assert len(history) == 0
    history.add(loss=torch.tensor(0.5), accuracy=np.float32(0.75))
    history.add(loss=0.25, accuracy=1)
    assert history["loss"] == [0.5, 0.25] and history["accuracy"] == [0.75, 1.0]
    assert all(type(value) is float for value in history["loss"] + history["accuracy"])
    assert len(history) == 2
    history.add(val_loss=0.3)  # a metric recorded from a later epoch on
    assert len(history) == 2 and history["val_loss"] == [0.3]
    with pytest.raises(KeyError):
        history["precision"]


def test_history_copies_the_lists_it_starts_from():
    """Does History(metrics) copy the lists, so adding epochs leaves the caller's dict alone?"""
    start = {"loss": [1.0, 0.5]}
    history = History(start)
    history.add(loss=0.25)
    assert start == {"loss": [1.0, 0.5]} and history["loss"] == [1.0, 0.5, 0.25]
    assert len(history) == 3


def test_history_repr_shows_epochs_and_last_values():
    """Does repr give the epoch count and each metric's last value to 4 decimals?"""
    history = History()
    assert repr(history) == "History(0 epochs)"
    history.add(loss=0.5, accuracy=0.8)
    history.add(loss=0.123456, accuracy=0.9)
    assert repr(history) == "History(2 epochs: loss=0.1235, accuracy=0.9000)"
