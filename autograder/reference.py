"""Reference architectures and training recipes of the lab (instructor side only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnn_course.data import ImageSet
from cnn_course.training import History, seed_everything

__all__ = ["CIFAR_RECIPE", "MNIST_RECIPE", "Recipe", "cifar_model", "mnist_model", "train_model"]


@dataclass(frozen=True)
class Recipe:
    """How the lab trains a model: Adam with a fixed learning rate on shuffled mini-batches."""

    epochs: int
    fast_epochs: int
    learning_rate: float
    batch_size: int


MNIST_RECIPE = Recipe(epochs=10, fast_epochs=2, learning_rate=1e-3, batch_size=32)
CIFAR_RECIPE = Recipe(epochs=12, fast_epochs=4, learning_rate=1e-3, batch_size=64)
CIFAR_HIDDEN = 256


def mnist_model() -> nn.Sequential:
    """The MNIST network: two 'same' 3x3 convolutions with ReLU, one 2x2 max-pool, a linear layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3, padding="same"),
        nn.ReLU(),
        nn.Conv2d(32, 32, kernel_size=3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(32 * 14 * 14, 10),
    )


def cifar_model(hidden: int = CIFAR_HIDDEN) -> nn.Sequential:
    """The CIFAR-10 network: three 'same' convolutions, two max-pools, two linear layers."""
    return nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=3, padding="same"),
        nn.ReLU(),
        nn.Conv2d(32, 32, kernel_size=3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 32, kernel_size=3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def train_model(
    model: nn.Module,
    train_set: ImageSet,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
) -> History:
    """Train with Adam and cross-entropy; return per-epoch mean loss and accuracy."""
    seed_everything(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    criterion = nn.CrossEntropyLoss()
    loader = train_set.loader(batch_size=batch_size, shuffle=True, seed=seed)
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
