"""Part 1's graded functions over many seeds: does every nearly right answer lose points with
its own fault named, and every right spelling keep full marks, whatever inputs are drawn?"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from cnn_course import judging
from cnn_course.labs.cnn_lab import checks
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.registry import Context

CONTENT = Course(REPO).content("cnn_lab")
# Every test runs on the first 2 seeds in `make test`, on the 38 next in the stress tier (CI).
SEED_SETS = [
    pytest.param(range(2), id="seeds 0-1"),
    pytest.param(range(2, 40), id="seeds 2-39", marks=pytest.mark.stress),
]


def conv2d(x, weight, bias, stride=1, padding=0, *, step=None, corner=False, one_side=False):
    """A convolution written as students write it, with switches for their typical mistakes."""
    c_out, c_in, k_h, k_w = weight.shape
    _, height, width = x.shape
    grow = padding if one_side else 2 * padding
    padded = torch.zeros(c_in, height + grow, width + grow)
    at = 0 if corner or one_side else padding
    padded[:, at : at + height, at : at + width] = x
    h_out = (padded.shape[1] - k_h) // stride + 1
    w_out = (padded.shape[2] - k_w) // stride + 1
    step = stride if step is None else step
    out = torch.zeros(c_out, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            patch = padded[:, i * step : i * step + k_h, j * step : j * step + k_w]
            out[:, i, j] = (weight * patch).sum(dim=(1, 2, 3)) + bias
    return out


def conv2d_true_division(x, weight, bias, stride=1, padding=0):
    h_out = (x.shape[1] + 2 * padding - weight.shape[2]) / stride + 1
    return torch.zeros(len(weight), h_out, h_out)


def conv_count(i, o, k):
    return o * (i * k * k + 1)


def linear_count(i, o):
    return o * (i + 1)


def counts(conv=conv_count, linear=linear_count, pooled=14):
    """conv_parameters, linear_parameters and the MNIST total they give."""
    total = conv(1, 32, 3) + conv(32, 32, 3) + linear(32 * pooled * pooled, 10)
    return {"conv_parameters": conv, "linear_parameters": linear, "mnist_parameters": total}


# question -> {mistake: (the answer, words that name it, whether every failed test names it)}
MISTAKES = {
    "q1_conv2d": {
        "flipped": (lambda x, w, b, s=1, p=0: conv2d(x, w.flip(2, 3), b, s, p), "flipped"),
        "no bias": (lambda x, w, b, s=1, p=0: conv2d(x, w, 0 * b, s, p), "the bias is missing"),
        "no padding": (lambda x, w, b, s=1, p=0: conv2d(x, w, b, s, 0), "the padding is missing"),
        "no stride": (lambda x, w, b, s=1, p=0: conv2d(x, w, b, 1, p), "the stride is missing"),
        "window moves 1": (
            lambda x, w, b, s=1, p=0: conv2d(x, w, b, s, p, step=1),
            "moves 1 pixel at a time",
        ),
        "image in the corner": (
            lambda x, w, b, s=1, p=0: conv2d(x, w, b, s, p, corner=True),
            "top left corner",
        ),
        "padding on one side": (
            lambda x, w, b, s=1, p=0: conv2d(x, w, b, s, p, one_side=True),
            "on one side only",  # with stride 2, the values of x in the corner
        ),
        "float size": (conv2d_true_division, "use // (floor division) for H_out"),
        "batch dimension": (lambda *args: conv2d(*args)[None], "without a batch dimension"),
    },
    "q2_output_size": {
        "round": (lambda n, k, s=1, p=0: round((n + 2 * p - k) / s) + 1, "round() goes to"),
        "half up": (lambda n, k, s=1, p=0: int((n + 2 * p - k) / s + 0.5) + 1, "int(x + 0.5)"),
        "ceil": (lambda n, k, s=1, p=0: math.ceil((n + 2 * p - k) / s) + 1, "as math.ceil does"),
        "true division": (lambda n, k, s=1, p=0: (n + 2 * p - k) / s + 1, "a float"),
        "padding once": (lambda n, k, s=1, p=0: (n + p - k) // s + 1, "2 × padding in all"),
        "no padding": (lambda n, k, s=1, p=0: (n - k) // s + 1, "the padding is missing"),
        "no stride": (lambda n, k, s=1, p=0: n + 2 * p - k + 1, "the stride is missing"),
        "no + 1": (lambda n, k, s=1, p=0: (n + 2 * p - k) // s, "(the + 1)"),
    },
    "q3_parameter_count": {
        "no biases": (
            counts(lambda i, o, k: o * i * k * k, lambda i, o: o * i),
            "biases are missing",
        ),
        "one bias": (
            counts(lambda i, o, k: o * i * k * k + 1, lambda i, o: o * i + 1),
            "not one for the whole layer",
        ),
        "bias per input": (
            counts(lambda i, o, k: i * (o * k * k + 1), lambda i, o: i * (o + 1)),
            "not one per input",
        ),
        "in_channels forgotten": (counts(lambda i, o, k: o * (k * k + 1)), "spans all in_channels"),
        "kernel_size once": (
            counts(lambda i, o, k: o * (i * k + 1)),
            "kernel_size ** 2 weights per input channel",
        ),
        "kernel_size * 2": (counts(lambda i, o, k: o * (i * k * 2 + 1)), "kernel_size * 2 doubles"),
        "kernel_size ^ 2": (counts(lambda i, o, k: o * (i * (k ^ 2) + 1)), "bitwise XOR"),
        "pooling forgotten": (counts(pooled=28), "the 2×2 pooling halves the height and the width"),
        "a layer left out": (
            {**counts(), "mnist_parameters": counts()["mnist_parameters"] - 9248},
            "the count leaves out convolution 2",
        ),
    },
    "q6_vector_to_class": {
        "argmax over dim=0": (lambda x: x.argmax(dim=0), "argmax over dim=0"),
        "no dim": (lambda x: x.argmax(), "without dim="),
        "keepdim": (lambda x: x.argmax(dim=1, keepdim=True), "keepdim=True"),
        "probabilities": (lambda x: torch.softmax(x, dim=1), "returned the probabilities"),
        "scores": (lambda x: x * 1.0, "one score per class"),
        "largest scores": (lambda x: x.max(dim=1).values, "largest scores themselves"),
        "largest probabilities": (
            lambda x: torch.softmax(x, 1).max(dim=1).values,
            "largest probabilities themselves",
        ),
        "float classes": (lambda x: x.argmax(dim=1).float(), "integer classes"),
        "argmin": (lambda x: x.argmin(dim=1), "(argmin)"),
        "softmax over dim=0": (
            lambda x: torch.softmax(x, dim=0).argmax(dim=1),
            "softmax over dim=0",
        ),
        "exp overflows": (
            lambda x: (torch.exp(x) / torch.exp(x).sum(1, keepdim=True)).argmax(dim=1),
            "overflows",
        ),
    },
    "q7_cnn_accuracy": {
        "count": (lambda p, y: (p == y).sum().item(), "divide by N"),
        "integer division": (lambda p, y: (p == y).sum().item() // len(y), "integer division"),
        "percentage": (lambda p, y: 100 * (p == y).float().mean().item(), "a percentage"),
        "wrong ones": (lambda p, y: (p != y).float().mean().item(), "fraction of wrong"),
        "tensor": (lambda p, y: (p == y).float().mean(), ".item()"),
        "broadcast": (lambda p, y: (p.view(-1, 1) == y).float().mean().item(), "N x N table"),
        "mean of booleans": (lambda p, y: (p == y).mean().item(), "holds True and False"),
    },
}
# mistakes whose answers can be the same tensor: a window of stride 2 never reaches the zeros
# padded on one side, after x (x in the corner, zeros on one side only)
# (and the shape of no padding at all, on some sizes)
SAME_VALUES = [
    {"padding on one side", "image in the corner"},
    {"padding on one side", "no padding"},
]
# the one test that only repeats what the function raised: it need not name the fault
REPEATS_THE_ERROR = {("q7_cnn_accuracy", "mean of booleans"): {"returns a Python number"}}

RIGHT = {
    "q1_conv2d": [
        conv2d,
        lambda x, w, b, s=1, p=0: F.conv2d(x[None], w, b, s, p)[0],
        lambda x, w, b, s=1, p=0: (
            torch.einsum(
                "chwab,ocab->ohw",
                F.pad(x, (p,) * 4).unfold(1, w.shape[2], s).unfold(2, w.shape[3], s),
                w,
            )
            + b.view(-1, 1, 1)
        ),
        lambda *args: conv2d(*args).double(),
    ],
    "q2_output_size": [
        lambda n, k, s=1, p=0: (n + 2 * p - k) // s + 1,
        lambda n, k, s=1, p=0: math.floor((n + 2 * p - k) / s) + 1,
        lambda n, k, s=1, p=0: int((n - k + 2 * p) / s) + 1,
        lambda n, k, s=1, p=0: int(np.floor((n + 2 * p - k) / s)) + 1,
        lambda n, k, s=1, p=0: np.int64((n + 2 * p - k) // s + 1),
    ],
    "q3_parameter_count": [
        counts(),
        counts(lambda i, o, k: i * o * k**2 + o, lambda i, o: i * o + o),
        counts(lambda i, o, k: sum(p.numel() for p in torch.nn.Conv2d(i, o, k).parameters())),
    ],
    "q6_vector_to_class": [
        lambda x: x.argmax(dim=1),
        lambda x: torch.argmax(torch.softmax(x, dim=1), dim=1),
        lambda x: torch.max(x, 1).indices,
        lambda x: torch.max(x, 1)[1],
        lambda x: x.argmax(dim=-1),
    ],
    "q7_cnn_accuracy": [
        lambda p, y: (p == y).float().mean().item(),
        lambda p, y: (p == y).sum().item() / len(y),
        lambda p, y: torch.eq(p, y).double().mean().item(),
        lambda p, y: np.mean(p.numpy() == y.numpy()),
        lambda p, y: float((p == y).sum()) / y.numel(),
    ],
}
KEYS = {  # what the probe records per question, and the inputs each function is called on
    "q1_conv2d": {"conv2d": "convolutions"},
    "q2_output_size": {"conv_output_size": "sizes"},
    "q3_parameter_count": {"conv_parameters": "convs", "linear_parameters": "linears"},
    "q6_vector_to_class": {"vector_to_class": "scores"},
    "q7_cnn_accuracy": {"cnn_accuracy": "predictions"},
}


def judge(question: str, answer, inputs: dict) -> list:
    """The hidden tests of ``question`` on what ``answer`` gives for ``inputs``."""
    record = {}
    for key, cases in KEYS[question].items():
        function = answer[key] if isinstance(answer, dict) else answer
        record[key] = judging.call_record(function, inputs[cases])
    if isinstance(answer, dict):
        record["mnist_parameters"] = judging.plain(answer["mnist_parameters"])
    return CONTENT.tests.run(record, Context(CONTENT.lab, inputs), questions={question})


@pytest.fixture(scope="module", params=SEED_SETS)
def inputs(request) -> dict[int, dict]:
    """The grader's inputs of each seed of the set: seed -> inputs."""
    return {seed: CONTENT.grading_inputs(seed) for seed in request.param}


@pytest.mark.parametrize(
    ("question", "mistake"), [(q, m) for q, table in MISTAKES.items() for m in table]
)
def test_each_mistake_fails_on_every_seed_with_its_own_fault_named(question, mistake, inputs):
    """Does the mistake fail at least one hidden test on every seed, each failed test naming
    it, and none naming another mistake of the question?"""
    answer, words = MISTAKES[question][mistake]
    others = {
        w
        for m, (_, w) in MISTAKES[question].items()
        if w != words and w not in words and {m, mistake} not in SAME_VALUES
    }
    quiet = REPEATS_THE_ERROR.get((question, mistake), set())
    for seed, drawn in inputs.items():
        failed = [r for r in judge(question, answer, drawn) if not r.passed]
        assert failed, f"seed {seed}: {mistake} passes every test"
        for result in failed:
            if result.name not in quiet:
                assert words in result.message, f"seed {seed}, {result.name}: {result.message}"
            named = [w for w in others if w in result.message]
            assert not named, f"seed {seed}, {result.name}: {result.message} names {named}"


@pytest.mark.parametrize(
    ("question", "index"), [(q, i) for q, answers in RIGHT.items() for i in range(len(answers))]
)
def test_right_spellings_pass_every_test_on_every_seed(question, index, inputs):
    """Does each right way to write the answer keep full marks, whatever the seed?"""
    for seed, drawn in inputs.items():
        results = judge(question, RIGHT[question][index], drawn)
        assert all(r.passed for r in results), (seed, [r.message for r in results if not r.passed])


VISIBLE = {
    "q1_conv2d": lambda answer: checks.q1_conv2d(answer),
    "q2_output_size": lambda answer: checks.q2_output_size(answer),
    "q3_parameter_count": lambda answer: checks.q3_parameter_count(**answer),
    "q6_vector_to_class": lambda answer: checks.q6_vector_to_class(answer),
    "q7_cnn_accuracy": lambda answer: checks.q7_cnn_accuracy(answer),
}
# mistakes the visible check's small cases cannot show (no large scores)
UNSEEN = {("q6_vector_to_class", "exp overflows")}


@pytest.mark.parametrize(
    ("question", "mistake"), [(q, m) for q, table in MISTAKES.items() for m in table]
)
def test_visible_checks_name_each_mistake_as_the_hidden_tests_do(question, mistake):
    """Does the visible check of the question fail the mistake with the same words?"""
    answer, words = MISTAKES[question][mistake]
    report = VISIBLE[question](answer)
    if (question, mistake) in UNSEEN:
        return
    failed = [message for _, ok, message in report.rows if not ok]
    assert failed and any(words in message for message in failed), str(report)
