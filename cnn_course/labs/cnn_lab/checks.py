"""Part 1's visible checks: run one after an exercise to see what was expected and what was found.

Each records the student's objects and judges them with the rules the grader's hidden tests use
(``judging`` and this lab's ``verdicts``), on small worked examples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnn_course import judging
from cnn_course.checks import (
    CheckReport,
    architecture,
    is_function,
    loss_and_optimizer,
    training_record,
)

from . import verdicts
from .specs import CIFAR_LAYERS, MNIST_LAYERS

__all__ = [
    "q1_conv2d",
    "q2_output_size",
    "q3_parameter_count",
    "q4_mnist_model",
    "q5_loss_optimizer",
    "q6_vector_to_class",
    "q7_cnn_accuracy",
    "q8_mnist_training",
    "q9_mlp_model",
    "q11_cifar_model",
    "q12_cifar_training",
]


def q4_mnist_model(model) -> CheckReport:
    """Check ``mnist_model`` layer by layer against the MNIST table."""
    report = CheckReport("q4_mnist_model")
    architecture(report, model, MNIST_LAYERS, (1, 28, 28))
    return report


def q5_loss_optimizer(criterion, optimizer, model, learning_rate: float) -> CheckReport:
    """Check the loss and the optimiser chosen for ``mnist_model``."""
    report = CheckReport("q5_loss_optimizer")
    loss_and_optimizer(report, criterion, optimizer, model, "mnist_model", learning_rate)
    return report


def q11_cifar_model(model, criterion, optimizer, learning_rate: float) -> CheckReport:
    """Check ``cifar_model`` against the CIFAR-10 table, with its loss and optimiser."""
    report = CheckReport("q11_cifar_model")
    architecture(report, model, CIFAR_LAYERS, (3, 32, 32))
    loss_and_optimizer(report, criterion, optimizer, model, "cifar_model", learning_rate)
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
    if not is_function(report, vector_to_class):
        return report
    outputs = judging.call_record(vector_to_class, [(scores,) for _, scores in CLASS_CASES])
    for (name, scores), output in zip(CLASS_CASES, outputs, strict=True):
        report.verdict(name, judging.classes_verdict(output, scores))
    return report


def q7_cnn_accuracy(cnn_accuracy) -> CheckReport:
    """Check ``cnn_accuracy`` on a small worked case: 3 right out of 4."""
    report = CheckReport("q7_cnn_accuracy")
    if not is_function(report, cnn_accuracy):
        return report
    (output,) = judging.call_record(cnn_accuracy, [ACCURACY_CASE])
    report.verdict("accuracy of 3 right out of 4", judging.fraction_verdict(output, *ACCURACY_CASE))
    report.verdict("returns a Python number", judging.number_verdict(output))
    return report


# --- training ---------------------------------------------------------------------------------


def q8_mnist_training(model, history, n_epochs: int) -> CheckReport:
    """Check the MNIST training run's per-epoch record."""
    return training_record("q8_mnist_training", model, history, n_epochs)


def q12_cifar_training(model, history, n_epochs: int) -> CheckReport:
    """Check the CIFAR-10 training run's per-epoch record."""
    return training_record("q12_cifar_training", model, history, n_epochs)


# --- convolution by hand, sizes and parameter counts -------------------------------------------


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
# (size, kernel, stride, padding): 'same' padding; pooling an odd size (2.5 steps fit: round()
# keeps 2, math.ceil goes up); 5.5 steps (round() goes up too); 10 and a third steps, padding 2.
# No two nearly right counts give the same four values (see verdicts.output_size_verdicts).
SIZE_CASES = ((28, 3, 1, 1), (7, 2, 2, 0), (14, 3, 2, 0), (32, 5, 3, 2))


def q1_conv2d(conv2d) -> CheckReport:
    """Check ``conv2d(x, weight, bias, stride, padding)`` against ``F.conv2d`` on small cases."""
    report = CheckReport("q1_conv2d")
    if not is_function(report, conv2d):
        return report
    cases = [case[1:] for case in CONVOLUTION_CASES]
    outputs = judging.call_record(conv2d, cases)
    for (name, *_), case, output in zip(CONVOLUTION_CASES, cases, outputs, strict=True):
        report.verdict(name, verdicts.conv2d_verdict(output, *case))
    return report


def q2_output_size(conv_output_size) -> CheckReport:
    """Check ``conv_output_size(size, kernel_size, stride, padding)`` on four layers."""
    report = CheckReport("q2_output_size")
    if not is_function(report, conv_output_size):
        return report
    outputs = judging.call_record(conv_output_size, SIZE_CASES)
    for case, verdict in zip(
        SIZE_CASES, verdicts.output_size_verdicts(outputs, SIZE_CASES), strict=True
    ):
        name = "size {}, kernel {}, stride {}, padding {}".format(*case)
        report.verdict(name, verdict)
    return report


def q3_parameter_count(conv_parameters, linear_parameters, mnist_parameters) -> CheckReport:
    """Check the two counting functions on one layer each, and the MNIST model's total."""
    report = CheckReport("q3_parameter_count")
    if is_function(report, conv_parameters):
        (output,) = judging.call_record(conv_parameters, [(3, 16, 5)])
        report.verdict(
            "conv_parameters(3, 16, 5)",
            verdicts.parameter_count_verdict(output, nn.Conv2d(3, 16, 5)),
        )
    if is_function(report, linear_parameters):
        (output,) = judging.call_record(linear_parameters, [(100, 7)])
        report.verdict(
            "linear_parameters(100, 7)",
            verdicts.parameter_count_verdict(output, nn.Linear(100, 7)),
        )
    report.verdict(
        "mnist_parameters, the whole MNIST model",
        verdicts.model_parameter_count_verdict(judging.plain(mnist_parameters), MNIST_LAYERS),
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
        verdicts.mlp_verdict(layers, MNIST_LAYERS[-1].output_shape, error),
    )
    budget = sum(p.numel() for p in verdicts.parametrised_layers(MNIST_LAYERS).parameters())
    report.verdict("about as many parameters as the CNN", verdicts.budget_verdict(layers, budget))
    return report
