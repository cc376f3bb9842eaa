"""Visible checks: run one after an exercise to see what was expected and what was found.

Each check records the student's objects and judges them with the rules of ``judging``, the
same rules and messages the grader's hidden tests use, on small worked examples.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import judging
from .judging import CIFAR_LAYERS, MNIST_LAYERS, LayerSpec, Verdict

__all__ = [
    "CheckReport",
    "q4_mnist_model",
    "q5_loss_optimizer",
    "q6_vector_to_class",
    "q7_cnn_accuracy",
    "q8_mnist_training",
    "q11_cifar_model",
    "q12_cifar_training",
    "q1_conv2d",
    "q2_output_size",
    "q3_parameter_count",
    "q9_mlp_model",
]


# --- reports --------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """The outcome of a check: one row per test, an HTML table in Jupyter and text elsewhere."""

    title: str
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, passed: bool, problem: str = "", note: str = "") -> bool:
        """Record one test; ``problem`` is shown when it failed, ``note`` when it passed."""
        self.rows.append((name, bool(passed), note if passed else problem))
        return bool(passed)

    def verdict(self, name: str, verdict: Verdict) -> bool:
        """Record one judgement of ``judging``, with its message."""
        return self.add(name, verdict.passed, verdict.message, verdict.message)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)

    def summary(self) -> str:
        if self.passed:
            return "All tests passed!"
        failed = sum(not ok for _, ok, _ in self.rows)
        return f"{failed} of {len(self.rows)} tests failed."

    def __str__(self) -> str:
        lines = [f"{self.title}"]
        for name, ok, message in self.rows:
            mark = "ok  " if ok else "FAIL"
            lines.append(f"  [{mark}] {name}" + (f": {message}" if message else ""))
        lines.append(self.summary())
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join(
            "<tr><td style='text-align:left'>{}</td><td style='color:{}'>{}</td>"
            "<td style='text-align:left'>{}</td></tr>".format(
                html.escape(name),
                "green" if ok else "#c00",
                "✔ passed" if ok else "✘ failed",
                html.escape(message),
            )
            for name, ok, message in self.rows
        )
        colour = "green" if self.passed else "#c00"
        return (
            f"<div class='cnn-course-check'><b>{html.escape(self.title)}</b>"
            f"<table><thead><tr><th style='text-align:left'>check</th><th>result</th>"
            f"<th style='text-align:left'>details</th></tr></thead><tbody>{body}</tbody></table>"
            f"<b style='color:{colour}'>{html.escape(self.summary())}</b></div>"
        )


# --- architectures ----------------------------------------------------------------------------


def _architecture(report: CheckReport, model, spec: Sequence[LayerSpec], input_shape) -> None:
    if not report.add(
        "is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    ):
        return
    layers, error = judging.describe_model(model, input_shape)
    if not report.add("forward pass on a dummy batch", error is None, error or ""):
        return
    report.verdict("convolutions", judging.convolutions_verdict(layers, spec))
    report.verdict("activations and pooling in order", judging.layer_order_verdict(layers, spec))
    report.verdict("classifier output", judging.classifier_verdict(layers, spec, error))
    mismatches = judging.compare_layers(layers, spec)
    total = sum(layer.parameters for layer in layers)
    report.add(
        f"{len(spec)} layers as in the table",
        not mismatches,
        "; ".join(mismatches),
        note=f"{total:,} trainable parameters",
    )


def _loss_optimizer(report, criterion, optimizer, model, model_name: str, learning_rate) -> None:
    facts = judging.optimizer_record(criterion, optimizer, model)
    report.verdict("loss function", judging.loss_verdict(facts))
    report.verdict("optimiser", judging.optimizer_verdict(facts, model_name, learning_rate))


def q4_mnist_model(model) -> CheckReport:
    """Check ``mnist_model`` layer by layer against the MNIST table."""
    report = CheckReport("q4_mnist_model")
    _architecture(report, model, MNIST_LAYERS, (1, 28, 28))
    return report


def q5_loss_optimizer(criterion, optimizer, model, learning_rate: float) -> CheckReport:
    """Check the loss and the optimiser chosen for ``mnist_model``."""
    report = CheckReport("q5_loss_optimizer")
    _loss_optimizer(report, criterion, optimizer, model, "mnist_model", learning_rate)
    return report


def q11_cifar_model(model, criterion, optimizer, learning_rate: float) -> CheckReport:
    """Check ``cifar_model`` against the CIFAR-10 table, with its loss and optimiser."""
    report = CheckReport("q11_cifar_model")
    _architecture(report, model, CIFAR_LAYERS, (3, 32, 32))
    _loss_optimizer(report, criterion, optimizer, model, "cifar_model", learning_rate)
    return report


# --- functions --------------------------------------------------------------------------------

# Worked examples: small enough to redo by hand.
CLASS_CASES = (
    ("scores of shape (2, 3)", torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.0]])),
    ("a single row (1, 4)", torch.tensor([[0.1, 0.2, 0.9, -0.3]])),
)
ACCURACY_CASE = (torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4]))  # 3 right of 4


def q6_vector_to_class(vector_to_class) -> CheckReport:
    """Check ``vector_to_class`` on two small worked cases."""
    report = CheckReport("q6_vector_to_class")
    if not report.add(
        "is a function", callable(vector_to_class), f"got {type(vector_to_class).__name__}"
    ):
        return report
    outputs = judging.call_record(vector_to_class, [(scores,) for _, scores in CLASS_CASES])
    for (name, scores), output in zip(CLASS_CASES, outputs, strict=True):
        report.verdict(name, judging.classes_verdict(output, scores))
    return report


def q7_cnn_accuracy(cnn_accuracy) -> CheckReport:
    """Check ``cnn_accuracy`` on a small worked case: 3 right out of 4."""
    report = CheckReport("q7_cnn_accuracy")
    if not report.add(
        "is a function", callable(cnn_accuracy), f"got {type(cnn_accuracy).__name__}"
    ):
        return report
    (output,) = judging.call_record(cnn_accuracy, [ACCURACY_CASE])
    report.verdict("accuracy of 3 right out of 4", judging.fraction_verdict(output, *ACCURACY_CASE))
    report.verdict("returns a Python number", judging.number_verdict(output))
    return report


# --- training ---------------------------------------------------------------------------------


def _training(title: str, model, history, n_epochs: int) -> CheckReport:
    report = CheckReport(title)
    report.add(
        "model is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    )
    try:
        record = judging.history_record(history)
    except TypeError as exc:
        report.add("history is a training.History", False, str(exc))
        return report
    report.verdict(
        "one mean loss and accuracy per epoch, loss going down",
        judging.history_verdict(record, n_epochs),
    )
    return report


def q8_mnist_training(model, history, n_epochs: int) -> CheckReport:
    """Check the MNIST training run's per-epoch record."""
    return _training("q8_mnist_training", model, history, n_epochs)


def q12_cifar_training(model, history, n_epochs: int) -> CheckReport:
    """Check the CIFAR-10 training run's per-epoch record."""
    return _training("q12_cifar_training", model, history, n_epochs)


# --- convolution by hand, sizes and parameter counts -------------------------------------------


def _is_function(report: CheckReport, function) -> bool:
    return report.add("is a function", callable(function), f"got {type(function).__name__}")


def _filters(*shape: int) -> torch.Tensor:
    """Small whole-number weights, so that a case can be redone by hand."""
    return (torch.arange(math.prod(shape), dtype=torch.float32) % 5 - 2).view(shape)


# (name, image (C_in, H, W), filters (C_out, C_in, kH, kW), bias (C_out,), stride, padding)
CONVOLUTION_CASES = (
    (
        "one channel 4x4, a 3x3 edge filter",
        torch.arange(16, dtype=torch.float32).view(1, 4, 4),
        torch.tensor([[[[1.0, 0.0, -1.0]] * 3]]),
        torch.tensor([0.5]),
        1,
        0,
    ),
    (
        "two channels, two filters, padding 1",
        torch.arange(50, dtype=torch.float32).view(2, 5, 5) / 10,
        _filters(2, 2, 3, 3),
        torch.tensor([1.0, -1.0]),
        1,
        1,
    ),
    (
        "stride 2",
        torch.arange(49, dtype=torch.float32).view(1, 7, 7),
        _filters(3, 1, 3, 3),
        torch.zeros(3),
        2,
        0,
    ),
)
# (size, kernel, stride, padding): 'same' padding, pooling, rounding down, everything at once
SIZE_CASES = ((28, 3, 1, 1), (28, 2, 2, 0), (8, 3, 2, 0), (32, 5, 2, 2))


def q1_conv2d(conv2d) -> CheckReport:
    """Check ``conv2d(x, weight, bias, stride, padding)`` against ``F.conv2d`` on small cases."""
    report = CheckReport("q1_conv2d")
    if not _is_function(report, conv2d):
        return report
    cases = [case[1:] for case in CONVOLUTION_CASES]
    outputs = judging.call_record(conv2d, cases)
    for (name, *_), case, output in zip(CONVOLUTION_CASES, cases, outputs, strict=True):
        report.verdict(name, judging.conv2d_verdict(output, *case))
    return report


def q2_output_size(conv_output_size) -> CheckReport:
    """Check ``conv_output_size(size, kernel_size, stride, padding)`` on four layers."""
    report = CheckReport("q2_output_size")
    if not _is_function(report, conv_output_size):
        return report
    outputs = judging.call_record(conv_output_size, SIZE_CASES)
    for case, output in zip(SIZE_CASES, outputs, strict=True):
        name = "size {}, kernel {}, stride {}, padding {}".format(*case)
        report.verdict(name, judging.output_size_verdict(output, *case))
    return report


def q3_parameter_count(conv_parameters, linear_parameters, mnist_parameters) -> CheckReport:
    """Check the two counting functions on one layer each, and the MNIST model's total."""
    report = CheckReport("q3_parameter_count")
    if _is_function(report, conv_parameters):
        (output,) = judging.call_record(conv_parameters, [(3, 16, 5)])
        report.verdict(
            "conv_parameters(3, 16, 5)",
            judging.parameter_count_verdict(output, nn.Conv2d(3, 16, 5)),
        )
    if _is_function(report, linear_parameters):
        (output,) = judging.call_record(linear_parameters, [(100, 7)])
        report.verdict(
            "linear_parameters(100, 7)",
            judging.parameter_count_verdict(output, nn.Linear(100, 7)),
        )
    report.verdict(
        "mnist_parameters, the whole MNIST model",
        judging.parameter_count_verdict(
            judging.plain(mnist_parameters), judging.parametrised_layers(MNIST_LAYERS)
        ),
    )
    return report


def q9_mlp_model(model) -> CheckReport:
    """Check ``mlp_model``: fully connected layers only, about as many parameters as the CNN."""
    report = CheckReport("q9_mlp_model")
    if not report.add(
        "is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    ):
        return report
    layers, error = judging.describe_model(model, (1, 28, 28))
    report.verdict(
        "fully connected layers only, raw scores out",
        judging.mlp_verdict(layers, MNIST_LAYERS[-1].output_shape, error),
    )
    budget = sum(p.numel() for p in judging.parametrised_layers(MNIST_LAYERS).parameters())
    report.verdict("about as many parameters as the CNN", judging.budget_verdict(layers, budget))
    return report
