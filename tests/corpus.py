"""Sample submissions: the solution, the untouched stub, right variants and typical mistakes.

Each sample is the built solution notebook with a few exact edits, so the corpus follows the
lab as it changes (an edit that no longer applies fails loudly). ``expected`` gives the score
each question must get; ``python tests/grade_corpus.py`` grades the whole corpus.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
SOLUTION = REPO / "notebooks" / "solution" / "cnn_lab.ipynb"
STUDENT = REPO / "notebooks" / "student" / "cnn_lab.ipynb"
FULL = {
    "q1_mnist_model": 3.0,
    "q2_loss_optimizer": 1.0,
    "q3_vector_to_class": 2.0,
    "q4_cnn_accuracy": 2.0,
    "q5_mnist_training": 3.0,
    "q6_cifar_model": 3.0,
    "q7_cifar_training": 4.0,
}


@dataclass(frozen=True)
class Sample:
    """A submission made from the solution by exact text edits, and the scores it must get."""

    name: str
    edits: tuple[tuple[str, str], ...]
    expected: dict[str, float]
    fault: str = ""  # words the feedback must contain for the question(s) it loses
    fast: bool = False  # part of the subset CI grades
    base: Path = field(default=SOLUTION)

    def notebook(self) -> nbformat.NotebookNode:
        notebook = copy.deepcopy(nbformat.read(self.base, as_version=4))
        for old, new in self.edits:
            hits = [cell for cell in notebook.cells if old in cell.source]
            if len(hits) != 1:
                raise AssertionError(f"{self.name}: edit {old!r} matches {len(hits)} cells, not 1")
            hits[0].source = hits[0].source.replace(old, new, 1)
        return notebook


def scores(**lost: float) -> dict[str, float]:
    """Full marks except the points lost per question."""
    return {question: points - lost.get(question, 0.0) for question, points in FULL.items()}


MNIST_LINEAR = "    nn.Linear(n_h_2 * 14 * 14, nb_classes),\n)"
MNIST_SECOND_RELU = '    nn.Conv2d(n_h_1, n_h_2, kernel_size=kernel_size, stride=1, padding="same"),\n    nn.ReLU(),\n'

CIFAR_SEQUENTIAL = """cifar_model = nn.Sequential(
    nn.Conv2d(n_h_0, n_h_1, kernel_size=kernel_size, padding="same"),
    nn.ReLU(),
    nn.Conv2d(n_h_1, n_h_2, kernel_size=kernel_size, padding="same"),
    nn.ReLU(),
    nn.MaxPool2d(pool_size, pool_size),
    nn.Conv2d(n_h_2, n_h_3, kernel_size=kernel_size, padding="same"),
    nn.ReLU(),
    nn.MaxPool2d(pool_size, pool_size),
    nn.Flatten(),
    nn.Linear(n_h_3 * 8 * 8, n_hidden),
    nn.ReLU(),
    nn.Linear(n_hidden, nb_classes),
)
"""

SAMPLES = [
    Sample("solution", (), scores(), fast=True),
    Sample(
        "untouched_stub", (), {q: 0.0 for q in FULL}, "NotImplementedError", fast=True, base=STUDENT
    ),
    Sample(
        "right_other_spellings",
        (
            (
                "mnist_model = nn.Sequential(\n",
                "mnist_model = nn.Sequential()\nfor layer in [\n",
            ),
            (MNIST_LINEAR, "    nn.Linear(6272, 10),\n]:\n    mnist_model.append(layer)"),
            (
                'nn.Conv2d(n_h_0, n_h_1, kernel_size=kernel_size, stride=1, padding="same")',
                "nn.Conv2d(1, 32, 3, 1, 1)",
            ),
            (
                "    probabilities = torch.softmax(x, dim=1)\n    y = torch.argmax(probabilities, dim=1)",
                "    y = x.argmax(1)",
            ),
            (
                "accuracy = (predict == labels).float().mean().item()",
                "accuracy = (predict == labels).sum().item() / len(labels)",
            ),
            # an nn.Module subclass with F.relu / F.max_pool2d / x.view in forward
            (
                CIFAR_SEQUENTIAL,
                "import torch.nn.functional as F\n\n\n"
                "class CifarNet(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n"
                "        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)\n"
                "        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)\n"
                "        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)\n"
                "        self.fc1 = nn.Linear(32 * 8 * 8, 256)\n"
                "        self.fc2 = nn.Linear(256, 10)\n\n"
                "    def forward(self, x):\n"
                "        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)\n"
                "        x = F.max_pool2d(F.relu(self.conv3(x)), 2)\n"
                "        x = x.view(x.size(0), -1)\n"
                "        return self.fc2(F.relu(self.fc1(x)))\n\n\n"
                "cifar_model = CifarNet()\n",
            ),
            # n_epochs = 1 typed into the locked settings cell: the released cell runs instead
            ('n_epochs = lab.training["mnist"].num_epochs', "n_epochs = 1"),
        ),
        scores(),
        'learning_rate = lab.training["mnist"].learning_rate',  # the locked cell it restored
        fast=True,
    ),
    Sample(
        "wrong_linear_input",
        ((MNIST_LINEAR, "    nn.Linear(n_h_2 * 7 * 7, nb_classes),\n)"),),
        scores(q1_mnist_model=1.0, q5_mnist_training=3.0),
        "Linear(6272, 10)",
        fast=True,
    ),
    Sample(
        "missing_relu",
        ((MNIST_SECOND_RELU, MNIST_SECOND_RELU.replace("    nn.ReLU(),\n", "")),),
        scores(q1_mnist_model=1.0),
        "expected ReLU",
    ),
    Sample(
        "argmax_over_batch",
        (
            (
                "    y = torch.argmax(probabilities, dim=1)",
                "    y = torch.argmax(probabilities, dim=0)",
            ),
        ),
        scores(q3_vector_to_class=2.0, q5_mnist_training=3.0, q7_cifar_training=4.0),
        "dim=0",
    ),
    Sample(
        "accuracy_as_count",
        (
            (
                "accuracy = (predict == labels).float().mean().item()",
                "accuracy = (predict == labels).sum().item()",
            ),
        ),
        # The histories' accuracies over 1 cost no points: a history is feedback only.
        scores(q4_cnn_accuracy=1.0),
        "divide by N",
    ),
    Sample(
        "softmax_before_loss",
        ((MNIST_LINEAR, "    nn.Linear(n_h_2 * 14 * 14, nb_classes),\n    nn.Softmax(dim=1),\n)"),),
        # Softmax then CrossEntropyLoss learns too slowly: 2 epochs stay under the threshold.
        scores(q1_mnist_model=1.0, q5_mnist_training=3.0),
        "applies the softmax itself",
    ),
    Sample(
        "bce_loss",
        (("HERE\ncriterion = nn.CrossEntropyLoss()", "HERE\ncriterion = nn.BCELoss()"),),
        scores(q2_loss_optimizer=0.5, q5_mnist_training=3.0),
        "BCELoss",
    ),
    Sample(
        "no_optimizer_step",
        (("        cifar_optimizer.step()\n", ""),),
        scores(q7_cifar_training=4.0),
        "training loop",
        fast=True,
    ),
    Sample(
        "no_zero_grad",
        (("        cifar_optimizer.zero_grad()\n", ""),),
        # Gradients pile up over the epoch: the loss does not go down and accuracy stays low.
        scores(q7_cifar_training=4.0),
        "training loop",
    ),
    Sample(
        "nhwc_input",
        (
            (
                "        predict = cifar_model(imgs)\n",
                "        predict = cifar_model(imgs.permute(0, 2, 3, 1))\n",
            ),
        ),
        scores(q7_cifar_training=4.0),
        "training loop",
    ),
]
