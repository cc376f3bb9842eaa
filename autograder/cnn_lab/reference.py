"""Reference solutions of the lab: its two networks, built from the tables students are given."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnn_course.data import ImageSet
from cnn_course.judging import LayerSpec
from cnn_course.labs import Schedule
from cnn_course.labs.cnn_lab.specs import CIFAR_LAYERS, MNIST_LAYERS
from cnn_course.training import History, seed_everything
from cnn_course_instructor.grading.rebuild import rebuild

__all__ = ["cifar_model", "mnist_model", "train_model"]


def _from_spec(spec: Sequence[LayerSpec]) -> nn.Sequential:
    records = {
        "layers": [
            # convolutions and linear layers keep PyTorch's default bias, as the lab's do
            {
                "kind": layer.kind,
                "config": dict(layer.config),
                "tensors": {"bias": None} if layer.kind in ("Conv2d", "Linear") else {},
            }
            for layer in spec
        ]
    }
    return rebuild(records, with_weights=False)


def mnist_model() -> nn.Sequential:
    """The MNIST network of the lab's first table."""
    return _from_spec(MNIST_LAYERS)


def cifar_model() -> nn.Sequential:
    """The CIFAR-10 network of the lab's second table."""
    return _from_spec(CIFAR_LAYERS)


def train_model(
    model: nn.Module, train_set: ImageSet, schedule: Schedule, *, epochs: int, seed: int = 0
) -> History:
    """Train as the lab does: Adam and cross-entropy on shuffled mini-batches of the schedule."""
    seed_everything(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule.learning_rate)
    criterion = nn.CrossEntropyLoss()
    loader = train_set.loader(batch_size=schedule.batch_size, shuffle=True, seed=seed)
    history = History()
    model.train()
    for _ in range(epochs):
        total_loss, correct = 0.0, 0
        for images, labels in loader:
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += int((outputs.argmax(dim=1) == labels).sum())
        history.add(loss=total_loss / len(train_set), accuracy=correct / len(train_set))
    return history
