"""Tests of cnn_course.checks: each typical mistake named in the feedback, and how reports render."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from IPython.core.formatters import DisplayFormatter
from torch import nn

from cnn_course import training
from cnn_course.checks import CheckReport
from cnn_course.labs.cnn_lab import checks

LEARNING_RATE = 0.001
N_EPOCHS = 3

# --- the references, and the mistakes students make ------------------------------------------


def mnist_layers() -> list[nn.Module]:
    """The MNIST table, layer by layer (``padding="same"`` as the solution spells it)."""
    return [
        nn.Conv2d(1, 32, kernel_size=3, stride=1, padding="same"),
        nn.ReLU(),
        nn.Conv2d(32, 32, kernel_size=3, stride=1, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(32 * 14 * 14, 10),
    ]


def cifar_layers() -> list[nn.Module]:
    """The CIFAR-10 table, layer by layer."""
    return [
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    ]


class FunctionalMnist(nn.Module):
    """The MNIST table as students often write it: layers as attributes, F.relu in forward."""

    def __init__(self, flatten: str = "view"):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 14 * 14, 10)
        self.flatten = flatten

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc(FLATTENINGS[self.flatten](x))


# Ways students flatten a batch of feature maps in forward, all right.
FLATTENINGS = {
    "view": lambda x: x.view(x.size(0), -1),
    "flatten": lambda x: torch.flatten(x, 1),
    "reshape": lambda x: torch.reshape(x, (x.shape[0], -1)),
    "contiguous-view": lambda x: x.contiguous().view(len(x), -1),
}


class FunctionalCifar(nn.Module):
    """The CIFAR-10 table with convolution blocks in an nn.Sequential and functional pooling;
    ``guarded``: its forward also takes one image, and asserts colour images (torch.fx cannot
    follow either)."""

    def __init__(self, residual: bool = False, guarded: bool = False):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 256)
        self.fc2 = nn.Linear(256, 10)
        self.residual = residual
        self.guarded = guarded

    def forward(self, x):
        if self.guarded:
            if x.dim() == 3:
                x = x.unsqueeze(0)
            assert x.shape[1] == 3, "expected colour images"
        x = self.block2(self.block1(x))
        x = F.max_pool2d(x, kernel_size=2, stride=2)
        y = F.relu(self.conv3(x))
        x = x + y if self.residual else y
        x = F.max_pool2d(x, 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def mnist_model(edit: Callable[[list[nn.Module]], object] | None = None) -> nn.Sequential:
    """The reference MNIST model, or a copy with ``edit`` applied to its list of layers."""
    layers = mnist_layers()
    if edit is not None:
        edit(layers)
    return nn.Sequential(*layers)


def cifar_model(edit: Callable[[list[nn.Module]], object] | None = None) -> nn.Sequential:
    """The reference CIFAR-10 model, or a copy with ``edit`` applied to its list of layers."""
    layers = cifar_layers()
    if edit is not None:
        edit(layers)
    return nn.Sequential(*layers)


def q2(criterion=None, optimizer=None, learning_rate: float = LEARNING_RATE) -> CheckReport:
    """``q5_loss_optimizer`` on the reference model, with the reference loss or optimiser swapped."""
    model = mnist_model()
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    optimizer = (optimizer or torch.optim.Adam)(model.parameters(), lr=learning_rate)
    return checks.q5_loss_optimizer(criterion, optimizer, model, LEARNING_RATE)


def q6(model: nn.Module, optimizer_over: nn.Module | None = None) -> CheckReport:
    """``q11_cifar_model`` with the reference loss and an Adam over ``optimizer_over`` (or the model)."""
    optimizer = torch.optim.Adam((optimizer_over or model).parameters(), lr=LEARNING_RATE)
    return checks.q11_cifar_model(model, nn.CrossEntropyLoss(), optimizer, LEARNING_RATE)


def history(losses: list[float], accuracies: list[float] | None = None) -> training.History:
    """A training history as the lab's loop records it, one ``add`` per epoch."""
    record = training.History()
    for loss, accuracy in zip(losses, accuracies or [0.5] * len(losses), strict=True):
        record.add(loss=loss, accuracy=accuracy)
    return record


def not_implemented(*args):
    """The student stub, as the notebook hands it out."""
    raise NotImplementedError


def vector_to_class(x: torch.Tensor) -> torch.Tensor:
    probabilities = torch.softmax(x, dim=1)
    return torch.argmax(probabilities, dim=1)


def cnn_accuracy(predict: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict == labels).float().mean().item()


def conv2d(x, weight, bias, stride=1, padding=0, flip=False, with_bias=True):
    """A convolution by hand with ``unfold``; ``flip`` and ``with_bias`` make two typical mistakes."""
    if flip:
        weight = weight.flip(-2, -1)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    c_out, _, k_h, k_w = weight.shape
    patches = padded.unfold(1, k_h, stride).unfold(2, k_w, stride)  # (C_in, H', W', kH, kW)
    out = torch.einsum("chwab,ocab->ohw", patches, weight)
    return out + bias.view(c_out, 1, 1) if with_bias else out


def conv_output_size(size, kernel_size, stride=1, padding=0):
    return (size + 2 * padding - kernel_size) // stride + 1


def conv_parameters(in_channels, out_channels, kernel_size):
    return out_channels * (in_channels * kernel_size**2 + 1)


def linear_parameters(in_features, out_features):
    return out_features * (in_features + 1)


MNIST_PARAMETERS = 72_298


def q10(conv=conv_parameters, linear=linear_parameters, total=MNIST_PARAMETERS) -> CheckReport:
    return checks.q3_parameter_count(conv, linear, total)


def mlp_model(hidden: int = 91, *extra: nn.Module) -> nn.Sequential:
    """An MLP of about the MNIST CNN's size (91 hidden units: 72,355 parameters)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10), *extra
    )


def failures(report: CheckReport) -> str:
    """The messages of the failed rows, one per line."""
    return "\n".join(f"{name}: {message}" for name, ok, message in report.rows if not ok)


MISTAKES = [
    # q8: a convolution by hand
    pytest.param(
        lambda: checks.q1_conv2d(lambda *args: conv2d(*args, flip=True)),
        "the filter is flipped",
        id="q8-flipped-filter",
    ),
    pytest.param(
        lambda: checks.q1_conv2d(lambda *args: conv2d(*args, with_bias=False)),
        "the bias is missing",
        id="q8-no-bias",
    ),
    pytest.param(
        lambda: checks.q1_conv2d(lambda x, w, b, s=1, p=0: conv2d(x, w, b, s, 0)),
        "the padding is missing",
        id="q8-no-padding",
    ),
    pytest.param(
        lambda: checks.q1_conv2d(lambda x, w, b, s=1, p=0: conv2d(x, w, b, 1, p)),
        "the stride is missing",
        id="q8-no-stride",
    ),
    pytest.param(
        lambda: checks.q1_conv2d(lambda *args: conv2d(*args)[None]),
        "without a batch dimension",
        id="q8-batch-dimension",
    ),
    pytest.param(
        lambda: checks.q1_conv2d(
            lambda x, w, b, s=1, p=0: torch.stack(
                [conv2d(x[c : c + 1], w[:, c : c + 1], b / len(x), s, p) for c in range(len(x))], 1
            )
        ),
        "sum over the input channels too",
        id="q8-channels-not-summed",
    ),
    pytest.param(lambda: checks.q1_conv2d(not_implemented), "not implemented yet", id="q8-stub"),
    # q9: output sizes
    pytest.param(
        lambda: checks.q2_output_size(lambda n, k, s=1, p=0: (n + 2 * p - k) / s + 1),
        "use // (floor division)",
        id="q9-true-division",
    ),
    pytest.param(
        lambda: checks.q2_output_size(lambda n, k, s=1, p=0: (n + p - k) // s + 1),
        "2 × padding in all",
        id="q9-padding-once",
    ),
    pytest.param(
        lambda: checks.q2_output_size(lambda n, k, s=1, p=0: (n + 2 * p - k) // s),
        "the + 1",
        id="q9-no-plus-one",
    ),
    pytest.param(
        lambda: checks.q2_output_size(lambda n, k, s=1, p=0: n + 2 * p - k + 1),
        "the stride is missing",
        id="q9-no-stride",
    ),
    # q10: parameter counts
    pytest.param(
        lambda: q10(conv=lambda i, o, k: o * i * k * k),
        "the biases are missing",
        id="q10-conv-without-biases",
    ),
    pytest.param(
        lambda: q10(conv=lambda i, o, k: o * (k * k + 1)),
        "spans all in_channels",
        id="q10-conv-one-channel",
    ),
    pytest.param(
        lambda: q10(linear=lambda i, o: i * o),
        "the biases are missing",
        id="q10-linear-without-biases",
    ),
    pytest.param(
        lambda: q10(total=72_224),
        "expected 72,298, got 72,224 (the biases are missing",
        id="q10-total-without-biases",
    ),
    pytest.param(
        lambda: q10(total=float(MNIST_PARAMETERS)),
        "a whole number",
        id="q10-total-float",
    ),
    # q11: the MLP
    pytest.param(
        lambda: checks.q9_mlp_model(mnist_model()),
        "an MLP flattens the image and uses nn.Linear only",
        id="q11-a-cnn",
    ),
    pytest.param(
        lambda: checks.q9_mlp_model(
            nn.Sequential(nn.Flatten(), nn.Linear(784, 91), nn.Linear(91, 10))
        ),
        "without an activation",
        id="q11-no-relu",
    ),
    pytest.param(
        lambda: checks.q9_mlp_model(mlp_model(512)),
        "407,050 parameters; the comparison is fair only with about the CNN's 72,298",
        id="q11-too-wide",
    ),
    pytest.param(
        lambda: checks.q9_mlp_model(mlp_model(91, nn.Softmax(dim=1))),
        "applies the softmax itself",
        id="q11-softmax",
    ),
    pytest.param(
        lambda: checks.q9_mlp_model(
            nn.Sequential(nn.Linear(784, 91), nn.ReLU(), nn.Linear(91, 10))
        ),
        "start with nn.Flatten()",
        id="q11-no-flatten",
    ),
    # q1: the MNIST architecture
    pytest.param(
        lambda: checks.q4_mnist_model(mnist_model(lambda layers: layers.pop(1))),
        "expected ReLU()",
        id="q1-missing-relu",
    ),
    pytest.param(
        lambda: checks.q4_mnist_model(
            mnist_model(lambda layers: layers.__setitem__(6, nn.Linear(32 * 28 * 28, 10)))
        ),
        "Linear(25088, 10)) whose input was (N, 6272)",
        id="q1-wrong-linear-input-size",
    ),
    pytest.param(
        lambda: checks.q4_mnist_model(mnist_model(lambda layers: layers.append(nn.Softmax(dim=1)))),
        "ends with Softmax: nn.CrossEntropyLoss applies the softmax itself",
        id="q1-trailing-softmax",
    ),
    pytest.param(
        lambda: q6(FunctionalCifar(residual=True)),
        "the operator + in forward does not take the previous layer's output",
        id="q6-residual-connection",
    ),
    pytest.param(
        lambda: q6(FunctionalCifar(residual=True, guarded=True)),
        "the operator + (.add()) in forward does not take the previous layer's output",
        id="q6-residual-connection-guarded",
    ),
    pytest.param(
        lambda: checks.q4_mnist_model(mnist_layers),
        "is a torch.nn.Module: got function",
        id="q1-not-a-module",
    ),
    # q2: loss and optimiser
    pytest.param(
        lambda: q2(criterion=nn.BCELoss()),
        "BCELoss is for yes/no (binary) targets",
        id="q2-bce-loss",
    ),
    pytest.param(
        lambda: q2(criterion=nn.CrossEntropyLoss),
        "call it, nn.CrossEntropyLoss()",
        id="q2-loss-class-not-called",
    ),
    pytest.param(
        lambda: q2(optimizer=torch.optim.SGD),
        "expected torch.optim.Adam, got SGD",
        id="q2-sgd",
    ),
    pytest.param(
        lambda: checks.q5_loss_optimizer(
            nn.CrossEntropyLoss(),
            torch.optim.Adam(mnist_model().parameters(), lr=LEARNING_RATE),
            mnist_model(),
            LEARNING_RATE,
        ),
        "does not hold mnist_model's parameters",
        id="q2-optimizer-over-another-model",
    ),
    pytest.param(
        lambda: q2(learning_rate=0.01),
        "learning rate learning_rate = 0.001, got 0.01",
        id="q2-learning-rate-0.01",
    ),
    pytest.param(
        lambda: checks.q5_loss_optimizer(
            nn.CrossEntropyLoss(), torch.optim.Adam, mnist_model(), LEARNING_RATE
        ),
        "optimizer is the class Adam itself",
        id="q2-optimizer-class-not-called",
    ),
    # q3: vector_to_class
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: torch.argmax(x, dim=0)),
        "argmax over dim=0 gives one value per class",
        id="q3-argmax-dim-0",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: torch.argmax(x)),
        "argmax without dim= flattens the whole batch",
        id="q3-argmax-without-dim",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: torch.max(x, 1)),
        "returned a torch.return_types.max (a pair of values and indices)",
        id="q3-torch-max-namedtuple",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: torch.argmax(x, dim=1).float()),
        "expected integer classes, got dtype torch.float32",
        id="q3-float-classes",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: torch.argmax(x, dim=1, keepdim=True)),
        "keepdim=True leaves a column",
        id="q3-keepdim-column",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: torch.argmin(x, dim=1)),
        "rows wrong; e.g. row 0: got class 0, the largest score is at 1",
        id="q3-argmin",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(not_implemented),
        "not implemented yet",
        id="q3-stub",
    ),
    pytest.param(
        lambda: checks.q6_vector_to_class(lambda x: None),
        "returned None, expected a tensor of shape (2,): is the `return` statement missing?",
        id="q3-no-return",
    ),
    # q4: cnn_accuracy
    pytest.param(
        lambda: checks.q7_cnn_accuracy(not_implemented),
        "not implemented yet",
        id="q4-stub",
    ),
    pytest.param(
        lambda: checks.q7_cnn_accuracy(lambda p, y: (p == y).sum().item()),
        "count of right predictions, 3: divide by N",
        id="q4-count",
    ),
    pytest.param(
        lambda: checks.q7_cnn_accuracy(lambda p, y: (p == y).float().mean()),
        "returned a tensor: use .item()",
        id="q4-tensor-not-number",
    ),
    pytest.param(
        lambda: checks.q7_cnn_accuracy(lambda p, y: 100 * (p == y).float().mean().item()),
        "a percentage: return a fraction between 0 and 1",
        id="q4-percentage",
    ),
    pytest.param(
        lambda: checks.q7_cnn_accuracy(lambda p, y: (p != y).float().mean().item()),
        "the fraction of wrong predictions",
        id="q4-fraction-wrong",
    ),
    pytest.param(
        lambda: checks.q7_cnn_accuracy(lambda p, y: (p.view(-1, 1) == y).float()),
        "comparing shapes (4, 1) and (4,) broadcasts to an N x N table",
        id="q4-broadcast-table",
    ),
    pytest.param(
        lambda: checks.q7_cnn_accuracy(lambda p, y: (p.view(-1, 1) == y).float().mean().item()),
        "mean of an N x N table: comparing shapes (4, 1) and (4,) broadcasts",
        id="q4-broadcast-then-mean",
    ),
    # q5 and q7: the training runs' histories
    pytest.param(
        lambda: checks.q8_mnist_training(mnist_model(), history([1.0, 0.5]), N_EPOCHS),
        "the training ran 3 epochs and the history holds 2 losses",
        id="q5-wrong-number-of-epochs",
    ),
    pytest.param(
        lambda: checks.q8_mnist_training(mnist_model(), history([1.0, 1.2, 1.0]), N_EPOCHS),
        "the mean loss did not go down",
        id="q5-loss-not-going-down",
    ),
    pytest.param(
        lambda: checks.q8_mnist_training(
            mnist_model(), history([1.0, 0.5, 0.2], [50.0, 80.0, 90.0]), N_EPOCHS
        ),
        "accuracies must be fractions between 0 and 1",
        id="q5-accuracy-as-percentage",
    ),
    pytest.param(
        lambda: checks.q8_mnist_training(mnist_model(), {"loss": [1.0, 0.5, 0.2]}, N_EPOCHS),
        "expected a training.History, got dict",
        id="q5-history-not-a-history",
    ),
    pytest.param(
        lambda: checks.q12_cifar_training(
            cifar_model(), history([2.0, float("nan"), float("nan")]), N_EPOCHS
        ),
        "NaN or infinite values: the training diverged",
        id="q7-diverged",
    ),
    # q6: the CIFAR-10 architecture with its loss and optimiser
    pytest.param(
        lambda: q6(cifar_model(lambda layers: layers.pop(10))),
        "expected ReLU()",
        id="q6-missing-relu-between-linears",
    ),
    pytest.param(
        lambda: q6(mnist_model()),
        "expected input[2, 3, 32, 32] to have 1 channels",
        id="q6-mnist-model-given",
    ),
    pytest.param(
        lambda: q6(cifar_model(), optimizer_over=mnist_model()),
        "does not hold cifar_model's parameters: pass cifar_model.parameters()",
        id="q6-optimizer-over-mnist-model",
    ),
]


@pytest.mark.parametrize(("run_check", "keyword"), MISTAKES)
def test_typical_mistake_fails_with_a_message_naming_it(run_check, keyword):
    """Does each typical mistake fail its visible check, with a message that names the fault?"""
    report = run_check()
    assert not report.passed
    assert "All tests passed!" not in str(report)
    assert keyword in failures(report), str(report)


REFERENCES = [
    pytest.param(lambda: checks.q1_conv2d(conv2d), id="q1_conv2d"),
    pytest.param(lambda: checks.q2_output_size(conv_output_size), id="q2_output_size"),
    pytest.param(lambda: q10(), id="q3_parameter_count"),
    pytest.param(lambda: checks.q9_mlp_model(mlp_model()), id="q9_mlp_model"),
    pytest.param(lambda: checks.q4_mnist_model(mnist_model()), id="q4_mnist_model"),
    pytest.param(lambda: q2(), id="q5_loss_optimizer"),
    pytest.param(lambda: checks.q6_vector_to_class(vector_to_class), id="q6_vector_to_class"),
    pytest.param(lambda: checks.q7_cnn_accuracy(cnn_accuracy), id="q7_cnn_accuracy"),
    pytest.param(
        lambda: checks.q8_mnist_training(mnist_model(), history([0.4, 0.2, 0.1]), N_EPOCHS),
        id="q8_mnist_training",
    ),
    pytest.param(lambda: q6(cifar_model()), id="q11_cifar_model"),
    pytest.param(lambda: q6(FunctionalCifar()), id="q11_cifar_model-functional"),
    pytest.param(lambda: q6(FunctionalCifar(guarded=True)), id="q11_cifar_model-guarded"),
    *(
        pytest.param(
            lambda spelling=spelling: checks.q4_mnist_model(FunctionalMnist(spelling)),
            id=f"q4_mnist_model-functional-{spelling}",
        )
        for spelling in FLATTENINGS
    ),
    pytest.param(
        lambda: checks.q12_cifar_training(cifar_model(), history([1.8, 1.4, 1.2]), N_EPOCHS),
        id="q12_cifar_training",
    ),
]


@pytest.mark.parametrize("run_check", REFERENCES)
def test_reference_answer_passes(run_check, request):
    """Does each question's reference answer pass its check, titled with the question id?"""
    report = run_check()
    assert report.passed, str(report)
    assert str(report).endswith("All tests passed!")
    assert report.title == request.node.callspec.id.split("-")[0]


@pytest.mark.parametrize(
    "accuracy",
    [
        pytest.param(lambda p, y: np.float64(cnn_accuracy(p, y)), id="numpy-float64"),
        pytest.param(lambda p, y: np.float32(cnn_accuracy(p, y)), id="numpy-float32"),
    ],
)
def test_any_real_number_is_accepted_as_the_accuracy(accuracy):
    """Is a NumPy scalar (from ``np.mean``) accepted as a number, like a Python float?"""
    report = checks.q7_cnn_accuracy(accuracy)
    assert report.passed and "All tests passed!" in str(report), str(report)


def test_accuracy_feedback_never_asks_for_a_tensor():
    """When cnn_accuracy returns nothing, does no row of its check ask for a tensor?"""
    report = checks.q7_cnn_accuracy(lambda predict, labels: None)
    assert not report.passed
    assert "expected a tensor" not in failures(report), str(report)
    assert "returned None, expected a number between 0 and 1" in failures(report), str(report)


# --- how reports render ----------------------------------------------------------------------


class Cells(HTMLParser):
    """The text of each table row, cell by cell."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self._in_cell = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data


def report() -> CheckReport:
    result = CheckReport("Exercise 1: <mnist_model>")
    result.add("is a torch.nn.Module", True, note="1,234 trainable parameters")
    result.add("7 layers as specified", False, "layer 6: expected Linear(6272, 10) & more")
    return result


def test_jupyter_gets_an_html_table_and_a_text_fallback():
    """Does Jupyter's formatter give an HTML table (one row per check) and plain text?"""
    bundle, _ = DisplayFormatter().format(report())
    assert set(bundle) == {"text/plain", "text/html"}
    html = bundle["text/html"]
    assert "&lt;mnist_model&gt;" in html and "<mnist_model>" not in html
    table = Cells()
    table.feed(html)
    assert table.rows == [
        ["check", "result", "details"],
        ["is a torch.nn.Module", "✔ passed", "1,234 trainable parameters"],
        ["7 layers as specified", "✘ failed", "layer 6: expected Linear(6272, 10) & more"],
    ]
    assert "1 of 2 tests failed." in html and "color:#c00" in html
    assert bundle["text/plain"] == str(report())


def test_text_report_marks_each_check_and_says_all_passed():
    """Does the text form mark each check, and end with "All tests passed!" when all pass?"""
    text = str(report()).splitlines()
    assert text == [
        "Exercise 1: <mnist_model>",
        "  [ok  ] is a torch.nn.Module: 1,234 trainable parameters",
        "  [FAIL] 7 layers as specified: layer 6: expected Linear(6272, 10) & more",
        "1 of 2 tests failed.",
    ]
    passing = CheckReport("q")
    passing.add("runs", True)
    assert str(passing).endswith("All tests passed!")
    assert "All tests passed!" in passing._repr_html_() and "color:green" in passing._repr_html_()
