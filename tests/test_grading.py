"""Tests of grading: hidden tests on plain records (unit), submissions, reports, a class (slow)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, full_marks, tiny_cifar_arrays, write_tiny_mnist, write_tiny_pack
from torch import nn

from cnn_course import judging
from cnn_course.errors import CourseError
from cnn_course.labs.cnn_lab import specs as lab1_specs
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.outputs import feedback_html
from cnn_course_instructor.grading.rebuild import RebuildError, rebuild
from cnn_course_instructor.grading.registry import Context
from cnn_course_instructor.grading.results import Status, SubmissionResult, TestResult
from cnn_course_instructor.grading.run import grade_class
from cnn_course_instructor.grading.submissions import Submission, find_submissions, lab_of
from cnn_course_instructor.sandbox import sandbox_available

COURSE = Course(REPO)
CONTENT = COURSE.content("cnn_lab")
REFERENCE = CONTENT.reference
INPUTS = CONTENT.grading_inputs(seed=7)
SAMPLE_COURSE = Path(__file__).parent / "samples" / "build_repo"
OPTIM_FACTS = {
    "criterion": "CrossEntropyLoss",
    "optimizer": "Adam",
    "lr": 1e-3,
    "covers_model": True,
    "model_parameters": 10,
}


def judge(record: dict, question: str) -> dict[str, TestResult]:
    """The hidden tests of one question on ``record``, by test name."""
    context = Context(CONTENT.lab, INPUTS)
    results = CONTENT.tests.run(record, context, questions={question})
    return {r.name: r for r in results}


# --- rebuilding -------------------------------------------------------------------------------


def test_rebuilt_model_computes_exactly_what_the_original_did():
    """Does a model rebuilt from plain records give the same outputs as the student's object?"""
    torch.manual_seed(0)
    original = REFERENCE.cifar_model()
    records = judging.layer_records(original, (3, 32, 32))
    copy = rebuild(records)
    images = torch.rand(4, 3, 32, 32)
    original.eval()
    assert torch.equal(copy(images), original(images))
    fresh = rebuild(records, with_weights=False)
    assert not torch.equal(fresh[0].weight, original[0].weight)


@pytest.mark.parametrize("guarded", [False, True], ids=["torch-fx", "one-real-run"])
def test_model_written_with_functional_operations_is_graded_like_its_sequential_twin(guarded):
    """Is an nn.Module using F.relu / F.max_pool2d / .view in forward judged and rebuilt exactly,
    also when its forward has a shape guard and an assert, which torch.fx cannot follow?"""
    from test_checks import FunctionalCifar

    torch.manual_seed(0)
    original = FunctionalCifar(guarded=guarded)
    records = judging.layer_records(original, (3, 32, 32))
    assert records["error"] is None
    results = judge({"cifar_model": records, "cifar_optim": OPTIM_FACTS}, "q11_cifar_model")
    assert all(r.passed for r in results.values()), results
    images = torch.rand(4, 3, 32, 32)
    original.eval()
    assert torch.allclose(rebuild(records)(images), original(images), atol=1e-6)


@pytest.mark.parametrize("spelling", ["view", "flatten", "reshape", "contiguous-view"])
def test_each_way_to_flatten_in_forward_is_rebuilt_exactly(spelling):
    """Is an MNIST network flattened by .view, torch.flatten, torch.reshape or
    .contiguous().view rebuilt into a network that computes what it did?"""
    from test_checks import FunctionalMnist

    torch.manual_seed(0)
    original = FunctionalMnist(spelling)
    records = judging.layer_records(original, (1, 28, 28))
    assert records["error"] is None
    assert [layer["kind"] for layer in records["layers"]][-2:] == ["Flatten", "Linear"]
    images = torch.rand(4, 1, 28, 28)
    original.eval()
    assert torch.allclose(rebuild(records)(images), original(images), atol=1e-6)


class _View(nn.Module):
    """A flattening layer as tutorials wrote it before nn.Flatten."""

    def forward(self, x):
        return x.view(x.size(0), -1)


class _Relu(nn.Module):
    def forward(self, x):
        return F.relu(x)


class _FakeReLU(nn.Module):
    """An identity passing itself off as torch.nn's ReLU by its name and module."""

    __module__ = "torch.nn.modules.activation"

    def forward(self, x):
        return x


_FakeReLU.__name__ = _FakeReLU.__qualname__ = "ReLU"


def _mnist_sequential(activation, flatten) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        activation(),
        nn.Conv2d(32, 32, 3, padding=1),
        activation(),
        nn.MaxPool2d(2),
        flatten(),
        nn.Linear(6272, 10),
    )


@pytest.mark.parametrize(
    "activation, flatten", [(nn.ReLU, _View), (_Relu, nn.Flatten)], ids=["own-view", "own-relu"]
)
def test_layers_of_the_student_s_own_classes_are_judged_by_what_they_compute(activation, flatten):
    """Is an nn.Sequential holding layers of the student's own classes (a View, a Relu calling
    F.relu) judged and rebuilt like torch.nn's twin, whatever the classes are called?"""
    torch.manual_seed(0)
    original = _mnist_sequential(activation, flatten)
    layers, error = judging.describe_model(original, (1, 28, 28))
    assert error is None and judging.compare_layers(layers, lab1_specs.MNIST_LAYERS) == []
    images = torch.rand(4, 1, 28, 28)
    original.eval()
    rebuilt = rebuild(judging.layer_records(original, (1, 28, 28)))
    assert torch.allclose(rebuilt(images), original(images), atol=1e-6)


class _FunctionalWithFakeReLU(nn.Module):
    """F.max_pool2d and torch.flatten in forward (what torch.fx traces), and a _FakeReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.relu, self.fc = _FakeReLU(), nn.Linear(6272, 10)

    def forward(self, x):
        x = F.max_pool2d(self.relu(self.conv2(self.relu(self.conv1(x)))), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize(
    "model",
    [lambda: _mnist_sequential(_FakeReLU, nn.Flatten), _FunctionalWithFakeReLU],
    ids=["sequential", "functional"],
)
def test_a_layer_named_like_torch_s_is_judged_by_what_it_does(model):
    """Is an identity layer calling itself torch.nn's ReLU (name and module) seen as no layer?"""
    layers, error = judging.describe_model(model(), (1, 28, 28))
    assert error is None
    kinds = [layer.kind for layer in layers]
    assert kinds == ["Conv2d", "Conv2d", "MaxPool2d", "Flatten", "Linear"]
    assert "expected ReLU()" in judging.compare_layers(layers, lab1_specs.MNIST_LAYERS)[0]


class _Swallowing(nn.Module):
    """A forward that catches every exception around an operation the grader cannot rebuild."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        x = self.conv(x)
        try:
            x = x * 2
        except Exception:
            pass
        return self.fc(torch.flatten(x, 1))


def test_a_refusal_the_forward_catches_is_still_reported():
    """Does a forward that swallows the tracer's refusal still get the refusal as its error?"""
    _, error = judging.describe_model(_Swallowing(), (1, 28, 28))
    assert error is not None and "the operator * (.mul())" in error


@pytest.mark.parametrize("guarded", [False, True], ids=["torch-fx", "one-real-run"])
def test_model_the_grader_cannot_rebuild_is_told_which_operation(guarded):
    """Does a residual connection lose the architecture points with a message naming the +?"""
    from test_checks import FunctionalCifar

    model = FunctionalCifar(residual=True, guarded=guarded)
    records = judging.layer_records(model, (3, 32, 32))
    results = judge({"cifar_model": records, "cifar_optim": OPTIM_FACTS}, "q11_cifar_model")
    assert not results["classifier output"].passed
    assert "the operator +" in results["classifier output"].message


def test_rebuild_refuses_unknown_layers_and_wrong_tensors():
    """Are layer types outside the whitelist and tensors of the wrong shape refused?"""
    records = judging.layer_records(REFERENCE.mnist_model(), (1, 28, 28))
    records["layers"][0]["kind"] = "EvilLayer"
    with pytest.raises(RebuildError, match="does not rebuild EvilLayer"):
        rebuild(records)
    records = judging.layer_records(REFERENCE.mnist_model(), (1, 28, 28))
    records["layers"][-1]["tensors"]["weight"] = torch.zeros(3, 3)
    with pytest.raises(RebuildError, match="tensor weight has the wrong shape"):
        rebuild(records)


def test_reference_models_have_the_lab_models_parameters_biases_included():
    """Do the reference networks hold as many parameters as the lab's (72,298 for MNIST)?"""
    lab_mnist = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6272, 10),
    )
    count = sum(p.numel() for p in REFERENCE.mnist_model().parameters())
    assert count == sum(p.numel() for p in lab_mnist.parameters()) == 72_298


def test_reference_models_follow_the_tables_students_are_given():
    """Do the reference networks match, layer by layer, the specs the visible checks use?"""
    for model, spec, shape in (
        (REFERENCE.mnist_model(), lab1_specs.MNIST_LAYERS, (1, 28, 28)),
        (REFERENCE.cifar_model(), lab1_specs.CIFAR_LAYERS, (3, 32, 32)),
    ):
        layers, error = judging.describe_model(model, shape)
        assert error is None and judging.compare_layers(layers, spec) == []


# --- hidden tests on plain records ------------------------------------------------------------


def calls(function, key: str) -> dict:
    return {
        key: judging.call_record(
            function, INPUTS["scores" if key == "vector_to_class" else "predictions"]
        )
    }


def test_vector_to_class_right_answers_score_full_marks_even_on_ties():
    """Does a correct vector_to_class get every case, either tied index being accepted?"""
    for function in (lambda x: torch.argmax(x, dim=1), lambda x: x.max(1).indices):
        results = judge(calls(function, "vector_to_class"), "q6_vector_to_class")
        assert all(r.passed for r in results.values()), results


@pytest.mark.parametrize(
    ("function", "keyword"),
    [
        (lambda x: torch.argmax(x, dim=0), "dim=0"),
        (lambda x: torch.argmax(x), "without dim="),
        (lambda x: torch.max(x, 1), "returned a torch.return_types.max"),
        (lambda x: None, "`return` statement"),
        (lambda x: x.argmax(dim=1).float(), "integer classes"),
        (lambda x: torch.softmax(x, 1).argmax(1, keepdim=True), "keepdim"),
        (lambda x: x.argmin(dim=1), "rows wrong"),
    ],
    ids=["dim0", "no-dim", "max-tuple", "no-return", "float", "keepdim", "argmin"],
)
def test_vector_to_class_mistakes_are_named(function, keyword):
    """Does each typical vector_to_class mistake lose points with a message naming it?"""
    results = judge(calls(function, "vector_to_class"), "q6_vector_to_class")
    failed = [r for r in results.values() if not r.passed]
    assert failed and all(keyword in r.message for r in failed[:1]), results


@pytest.mark.parametrize(
    ("function", "passed", "keyword"),
    [
        (lambda p, y: (p == y).float().mean().item(), True, ""),
        (lambda p, y: float((p == y).sum()) / len(y), True, ""),
        (lambda p, y: __import__("numpy").mean(p.numpy() == y.numpy()), True, ""),
        (lambda p, y: int((p == y).sum()), False, "divide by N"),
        (lambda p, y: (p == y).float().mean(), False, ".item()"),
        (lambda p, y: 100 * (p == y).float().mean().item(), False, "percentage"),
        (lambda p, y: (p.view(-1, 1) == y).float().mean().item(), False, "N x N table"),
        (lambda p, y: None, False, "`return` statement"),
        (lambda p, y: torch.tensor(0.5).numpy(), False, ""),
    ],
    ids=[
        "item",
        "sum-len",
        "numpy-float64",
        "count",
        "tensor",
        "percent",
        "broadcast",
        "none",
        "numpy-0d",
    ],
)
def test_cnn_accuracy_spellings_and_mistakes(function, passed, keyword):
    """Do right spellings (NumPy numbers included) pass, and each mistake name its fault?"""
    results = judge(calls(function, "cnn_accuracy"), "q7_cnn_accuracy")
    if passed:
        assert all(r.passed for r in results.values()), results
    else:
        failed = [r for r in results.values() if not r.passed]
        assert failed and keyword in " ".join(r.message for r in failed), results


def test_architecture_tests_accept_spellings_and_name_the_first_fault():
    """Is padding=1 accepted like 'same', and a missing ReLU named at its layer?"""
    same = nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, (3, 3), padding=(1, 1)), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6272, 10),
    )  # fmt: skip
    record = {"mnist_model": judging.layer_records(same, (1, 28, 28))}
    assert all(r.passed for r in judge(record, "q4_mnist_model").values())
    del same[3]
    results = judge({"mnist_model": judging.layer_records(same, (1, 28, 28))}, "q4_mnist_model")
    assert results["convolutions"].passed and results["classifier output"].passed
    assert "layer 3: expected ReLU()" in results["activations and pooling in order"].message
    softmax = nn.Sequential(*REFERENCE.mnist_model(), nn.Softmax(dim=1))
    results = judge({"mnist_model": judging.layer_records(softmax, (1, 28, 28))}, "q4_mnist_model")
    assert [r.passed for r in results.values()] == [True, True, False]
    assert "applies the softmax itself" in results["classifier output"].message
    missing = judge({"mnist_model": {"error": "NameError: x"}}, "q4_mnist_model")
    assert [r.message for r in missing.values()] == ["NameError: x"] * 3


@pytest.mark.parametrize(
    ("make", "keyword"),
    [
        (lambda m: (nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), lr=1e-3)), ""),
        (lambda m: (nn.BCELoss(), torch.optim.Adam(m.parameters(), lr=1e-3)), "BCELoss"),
        (lambda m: (nn.CrossEntropyLoss, torch.optim.Adam(m.parameters(), lr=1e-3)), "call it"),
        (lambda m: (nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), lr=1e-3)), "Adam"),
        (lambda m: (nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), lr=0.01)), "0.001"),
        (
            lambda m: (nn.CrossEntropyLoss(), torch.optim.Adam(nn.Linear(2, 2).parameters())),
            "parameters()",
        ),
    ],
    ids=["right", "bce", "class", "sgd", "lr", "other-parameters"],
)
def test_loss_and_optimiser_faults_are_named(make, keyword):
    """Does each loss or optimiser fault lose points with a message naming it?"""
    model = REFERENCE.mnist_model()
    criterion, optimizer = make(model)
    record = {"mnist_optim": judging.optimizer_record(criterion, optimizer, model)}
    results = judge(record, "q5_loss_optimizer")
    if not keyword:
        assert all(r.passed for r in results.values())
    else:
        failed = [r for r in results.values() if not r.passed]
        assert len(failed) == 1 and keyword in failed[0].message, results


def conv2d_by_loops(x, weight, bias, stride=1, padding=0):
    """A right answer as a student writes it: zero padding, then one window at a time."""
    c_out, c_in, k_h, k_w = weight.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    h_out = (padded.shape[1] - k_h) // stride + 1
    w_out = (padded.shape[2] - k_w) // stride + 1
    out = torch.empty(c_out, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            patch = padded[:, i * stride : i * stride + k_h, j * stride : j * stride + k_w]
            out[:, i, j] = (weight * patch).sum(dim=(1, 2, 3)) + bias
    return out


def conv2d_record(function) -> dict:
    return {"conv2d": judging.call_record(function, INPUTS["convolutions"])}


@pytest.mark.parametrize(
    ("function", "failed", "keyword"),
    [
        (conv2d_by_loops, 0, ""),
        (lambda x, w, b, s=1, p=0: torch.nn.functional.conv2d(x[None], w, b, s, p)[0], 0, ""),
        (lambda x, w, b, s=1, p=0: conv2d_by_loops(x, w.flip(2, 3), b, s, p), 4, "flipped"),
        (lambda x, w, b, s=1, p=0: conv2d_by_loops(x, w, 0 * b, s, p), 4, "bias is missing"),
        (lambda x, w, b, s=1, p=0: conv2d_by_loops(x, w, b, s, 0), 2, "padding is missing"),
        (lambda x, w, b, s=1, p=0: conv2d_by_loops(x, w, b, 1, p), 2, "stride is missing"),
        (lambda x, w, b, s=1, p=0: conv2d_by_loops(x, w, b, s, p).double(), 0, ""),
    ],
    ids=["loops", "torch", "flipped", "no-bias", "no-padding", "no-stride", "float64"],
)
def test_conv2d_is_judged_against_torch_on_the_grader_inputs(function, failed, keyword):
    """Does a right conv2d get every case, and each typical mistake lose exactly the cases it
    gets wrong (padding and stride: the two cases that use them), with the fault named?"""
    results = judge(conv2d_record(function), "q1_conv2d")
    wrong = [r for r in results.values() if not r.passed]
    assert len(results) == 4 and len(wrong) == failed, results
    assert all(keyword in r.message for r in wrong), results


def test_grader_inputs_change_with_the_seed_and_use_strides_and_paddings():
    """Are the convolution inputs drawn afresh per seed, covering stride 2 and padding 1?"""
    other = CONTENT.grading_inputs(seed=8)["convolutions"]
    assert not torch.equal(other[1][0], INPUTS["convolutions"][1][0])
    assert {(case[3], case[4]) for case in INPUTS["convolutions"]} == {
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
    }


@pytest.mark.parametrize(
    ("function", "passed", "keyword"),
    [
        (lambda n, k, s=1, p=0: (n + 2 * p - k) // s + 1, 4, ""),
        (lambda n, k, s=1, p=0: int(__import__("numpy").floor((n + 2 * p - k) / s)) + 1, 4, ""),
        (lambda n, k, s=1, p=0: (n + 2 * p - k) / s + 1, 0, "floor division"),
        (lambda n, k, s=1, p=0: (n + p - k) // s + 1, 2, "2 × padding"),
        (lambda n, k, s=1, p=0: torch.tensor((n + 2 * p - k) // s + 1), 0, "Python int"),
    ],
    ids=["floor-division", "numpy-floor", "true-division", "padding-once", "tensor"],
)
def test_output_size_cases_and_mistakes(function, passed, keyword):
    """Does a right output size pass all four cases, and each mistake fail with its fault named?"""
    record = {"conv_output_size": judging.call_record(function, INPUTS["sizes"])}
    results = judge(record, "q2_output_size")
    assert sum(r.passed for r in results.values()) == passed, results
    assert all(keyword in r.message for r in results.values() if not r.passed)


def test_parameter_counts_are_judged_against_the_layers_themselves():
    """Do right counts pass, a count without biases fail with its fault named, and the total
    count hold the MNIST network's 72,298 parameters (weights and biases)?"""

    def record(conv, linear, total) -> dict:
        return {
            "conv_parameters": judging.call_record(conv, INPUTS["convs"]),
            "linear_parameters": judging.call_record(linear, INPUTS["linears"]),
            "mnist_parameters": judging.plain(total),
        }

    def conv(i, o, k):
        return o * (i * k * k + 1)

    def linear(i, o):
        return o * (i + 1)

    results = judge(record(conv, linear, 72_298), "q3_parameter_count")
    assert len(results) == 4 and all(r.passed for r in results.values()), results
    results = judge(record(lambda i, o, k: o * i * k * k, linear, 72_224), "q3_parameter_count")
    wrong = [r for r in results.values() if not r.passed]
    assert len(wrong) == 3 and all("biases are missing" in r.message for r in wrong), results
    missing = judge({"mnist_parameters": {"error": "NameError: x"}}, "q3_parameter_count")
    assert missing["mnist_parameters: the whole MNIST model"].message == "NameError: x"


@pytest.mark.parametrize(
    ("model", "passed"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 91), nn.ReLU(), nn.Linear(91, 10)), [1, 1]),
        (
            nn.Sequential(
                nn.Flatten(),
                nn.Linear(784, 80),
                nn.ReLU(),
                nn.Linear(80, 80),
                nn.ReLU(),
                nn.Linear(80, 10),
            ),
            [1, 1],
        ),  # fmt: skip
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)), [1, 0]),
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 91), nn.Linear(91, 10)), [0, 1]),
    ],
    ids=["one-hidden-layer", "two-hidden-layers", "too-wide", "no-activation"],
)
def test_mlp_is_judged_on_its_layers_and_its_parameter_budget(model, passed):
    """Is the MLP graded on being fully connected with an activation, and on a budget close to
    the CNN's, each fault on its own test?"""
    results = judge({"mlp_model": judging.layer_records(model, (1, 28, 28))}, "q9_mlp_model")
    assert [int(r.passed) for r in results.values()] == passed, results


# --- finding submissions and reports ----------------------------------------------------------


def test_submissions_are_found_in_both_layouts_and_given_their_lab(tmp_path):
    """Are nbgrader's submitted/<student>/<lab>/ and flat <student>.ipynb folders both read,
    each submission's lab told from its folder, its metadata or --lab?"""
    for student in ("ann", "bo"):
        folder = tmp_path / "course" / "submitted" / student / "cnn_lab"
        folder.mkdir(parents=True)
        (folder / "cnn_lab.ipynb").write_text("{}")
    found = find_submissions(tmp_path / "course", ["cnn_lab", "sample_lab"])
    assert [(s.student, s.folder_lab) for s in found] == [("ann", "cnn_lab"), ("bo", "cnn_lab")]
    flat = tmp_path / "flat"
    flat.mkdir()
    student = nbformat.read(REPO / "notebooks/student/cnn_lab.ipynb", as_version=4)
    nbformat.write(student, flat / "cy.ipynb")
    (flat / "dee.ipynb").write_text("{not json")
    cy, dee = find_submissions(flat, ["cnn_lab", "sample_lab"])
    assert lab_of(cy, ["cnn_lab", "sample_lab"]) == "cnn_lab"  # from its metadata
    assert lab_of(dee, ["cnn_lab", "sample_lab"]) is None
    assert lab_of(dee, ["cnn_lab"]) == "cnn_lab"  # one lab: no guess needed
    assert lab_of(dee, ["cnn_lab", "sample_lab"], forced="sample_lab") == "sample_lab"
    (flat / "bad name.ipynb").write_text("{}")
    (flat / "trailing\n.ipynb").write_text("{}")
    unusable = [s for s in find_submissions(flat, ["cnn_lab"]) if s.problem]
    assert len(unusable) == 2  # each gets its own invalid row; the class goes on
    assert all(s.student.startswith("unusable-name-") for s in unusable)
    assert any("'bad name' is not a usable student id" in s.problem for s in unusable)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match="No submissions found"):
        find_submissions(tmp_path / "empty", ["cnn_lab"])
    assert Submission("x", Path("x")).folder_lab is None


def test_feedback_opens_with_what_to_fix_escaped_and_holds_results_only():
    """Does the page list the failed tests first, by exercise, escape student text, and show
    an infrastructure failure as such?"""
    lab = CONTENT.lab
    points = {q: question.points for q, question in lab.graded.items()}
    result = SubmissionResult.from_tests(
        Status.GRADED,
        "cell 3: <script>alert(1)</script>",
        [TestResult("q4_mnist_model", "convolutions", 1, 0, "got <b>")],
        points,
        student="ann",
        lab="cnn_lab",
    )
    page = feedback_html(result, lab)
    assert "<script>" not in page and "&lt;script&gt;" in page and "got &lt;b&gt;" in page
    label = lab.graded["q4_mnist_model"].label
    assert page.index("What to fix") < page.index(f"{label} (q4_mnist_model): 0 / 3")
    crashed = SubmissionResult.from_tests(Status.CRASHED, "kernel died", [], points, student="bo")
    assert "your work is safe" in feedback_html(crashed, lab)


# --- grading for real -------------------------------------------------------------------------


@pytest.fixture
def tiny_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=60)
    write_tiny_pack(root, tiny_cifar_arrays())
    monkeypatch.setenv("CNN_COURSE_CACHE", str(tmp_path / "cache"))
    return root


@contextlib.contextmanager
def answerless_server(path: Path):
    """A Unix socket at ``path`` whose every connection is closed unanswered, as by a judge
    server whose judging process died."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)

    def close_each() -> None:
        with contextlib.suppress(OSError):
            while True:
                listener.accept()[0].close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    try:
        yield str(path)
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=10)


@pytest.mark.slow
def test_a_second_lab_is_graded_end_to_end_with_its_own_tests(tiny_root, tmp_path, monkeypatch):
    """Does the sample course's lab grade with its own hidden tests: solution full, stub zero,
    in nbgrader's layout, with its own grades.csv? And with one job, does each submission run
    only once the kernel before it has ended, the next one loading meanwhile?"""
    from cnn_course_instructor import build
    from cnn_course_instructor.grading import local

    events = []

    def logged(name, method):
        def call(self, *args, **options):
            value = method(self, *args, **options)
            event = (name, Path(self.job.notebook).parent.name.split("-")[0])
            if event not in events:  # (ran and finish call start again: nothing more)
                events.append(event)
            return value

        return call

    for name in ("__init__", "start", "ran"):  # (finish: in a thread of its own)
        monkeypatch.setattr(local.Started, name, logged(name, getattr(local.Started, name)))

    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    build.build(course_root)
    for student, kind in (("ann", "solution"), ("bo", "student")):
        folder = tmp_path / "class" / "submitted" / student / "sample_lab"
        folder.mkdir(parents=True)
        notebook = nbformat.read(course_root / f"notebooks/{kind}/sample_lab.ipynb", as_version=4)
        environment = (
            "import os\nprint(sorted(k for k in os.environ if k.startswith(('MALLOC', 'OMP'))))"
        )
        notebook.cells.append(nbformat.v4.new_code_cell(environment))
        nbformat.write(notebook, folder / "sample_lab.ipynb")
    results = grade_class(
        tmp_path / "class",
        tmp_path / "out",
        course=Course(course_root),
        data_root=tiny_root,
        sandbox=sandbox_available() is None,
        progress=lambda _: None,
    )
    by_student = {r.student: r for r in results}
    assert by_student["ann"].status is Status.GRADED and by_student["ann"].total == 2
    executed = nbformat.read(tmp_path / "out/sample_lab/executed/ann.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0].text.strip() == str(  # one torch thread, kept memory
        ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS"]
    )
    assert by_student["bo"].total == 0 and "not implemented" in by_student["bo"].tests[0].message
    rows = list(csv.DictReader((tmp_path / "out/sample_lab/grades.csv").open()))
    assert [row["student"] for row in rows] == ["ann", "bo"]
    assert list(rows[0]) == [
        "student", "q1_double", "q2_explain", "total", "max", "status", "by_hand", "submitted",
        "hours_late",
    ]  # fmt: skip
    # The preflight ran while ann's kernel loaded, and ended before ann's first cell ran.
    assert events.index(("start", "preflight")) < events.index(("start", "ann"))
    assert [event for event in events if event[1] != "preflight"] == [
        ("__init__", "ann"),
        ("start", "ann"),
        ("__init__", "bo"),  # loads while ann runs
        ("ran", "ann"),
        ("start", "bo"),  # runs while ann is judged
        ("ran", "bo"),
    ]


@pytest.mark.slow
def test_calibrate_grades_the_solution_once_per_seed(tiny_root, tmp_path, capsys):
    """Does `cnn-course calibrate` run the lab's own solution shortened, one line per seed?"""
    from cnn_course_instructor import build, cli

    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    build.build(course_root)
    argv = ["calibrate", "sample_lab", "--seeds", "3", "4", "--repo", str(course_root)]
    assert cli.main([*argv, "--data-root", str(tiny_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[:2]] == ["seed 3: total 2", "seed 4: total 2"]
    assert lines[2].startswith("lowest:")


@pytest.mark.slow
def test_grading_restores_locked_cells_but_calibration_runs_its_seeded_setup(tiny_root, tmp_path):
    """Does a changed locked cell run as released when grading, and as written when calibrating
    (whose seeds live in the locked setup cell)? The changed cell makes the solution wrong."""
    from cnn_course_instructor import build
    from cnn_course_instructor.grading.job import GradingRun, Job
    from cnn_course_instructor.grading.worker import grade_notebook

    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    build.build(course_root)
    solution = nbformat.read(course_root / "notebooks/solution/sample_lab.ipynb", as_version=4)
    changed = next(cell for cell in solution.cells if cell.source == "factor = 2")
    changed.source = "factor = 3"
    nbformat.write(solution, tmp_path / "changed.ipynb")
    totals = {}
    with answerless_server(tmp_path / "judge.sock") as server:
        for restore in (True, False):
            work = tmp_path / f"work-{restore}"
            work.mkdir()
            sockets = {"sample_lab": server} if restore else {}  # no answer: a judge of its own
            run = GradingRun(str(course_root), 0, str(tiny_root), sandboxed=False)
            job = Job(
                run=run.with_judges(sockets),
                lab="sample_lab",
                notebook=str(tmp_path / "changed.ipynb"),
                result=str(work / "result.json"),
                executed=str(work / "executed.ipynb"),
                work=str(work),
                restore_locked=restore,
            )
            result = grade_notebook(job)
            totals[restore] = (result.total, len(result.changed_locked_cells))
    assert totals == {True: (2, 1), False: (0, 0)}


@pytest.mark.slow
@pytest.mark.realdata
def test_the_graded_class_has_its_table_report_feedback_and_gradebook(graded_class):
    """Graded with part 1's fast corpus (whose scores test_corpus.py checks), is a broken file
    invalid, and do the grade table, the report, the feedback and nbgrader's gradebook hold
    every submission, with no feedback quoting a line of the autograder?"""
    results = graded_class.results
    assert results["broken"].status is Status.INVALID and results["broken"].total == 0

    full = sum(full_marks(graded_class.lab).values())
    out = graded_class.out / graded_class.lab
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert [row["student"] for row in rows] == sorted(results)
    assert rows[0].keys() >= {"q4_mnist_model", "q12_cifar_training", "total", "max", "status"}
    assert SubmissionResult.read(out / "results" / "solution.json").total == full
    locked = (out / "feedback" / "right_other_spellings.html").read_text()
    assert "Locked cells were changed" in locked and "learning_rate = lab.training" in locked
    report = (out / "report" / "index.html").read_text()
    assert "right_other_spellings" in report and "Submissions that need a human look" in report

    hidden = {
        line.strip()
        for path in (REPO / "autograder").rglob("*.py")
        for line in path.read_text().splitlines()
        if len(line.strip()) > 25 and not line.strip().startswith(("#", '"""', "import", "from"))
    }
    for page in (out / "feedback").glob("*.html"):
        text = page.read_text()
        assert not [line for line in hidden if line in text], page.name

    from nbgrader.api import Gradebook

    with Gradebook(
        f"sqlite:///{graded_class.out / 'gradebook.db'}", course_id="cnn-course"
    ) as book:
        assert book.find_submission(graded_class.lab, "solution").score == full
        assert book.find_submission(graded_class.lab, "untouched_stub").score == 0


@pytest.mark.slow
@pytest.mark.realdata
def test_the_executed_solution_ran_clean_and_the_stub_stopped_at_its_first_exercise(graded_class):
    """Did the solution run clean, in grading mode, and the stub stop where its first exercise,
    conv2d, is first used?

    In grading mode no figure is drawn and no exploration view predicts (no test reads them);
    each says so in its output.
    """
    executed = graded_class.out / "cnn_lab" / "executed"
    solution = nbformat.read(executed / "solution.ipynb", as_version=4)
    outputs = [o for cell in solution.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not [o for o in outputs if "image/png" in o.get("data", {})]
    plain = [o.get("data", {}).get("text/plain", "") for o in outputs]
    skipped = [text.split(":")[0] for text in plain if "not shown while grading" in text]
    # MNIST's and CIFAR-10's image browsers and confusion matrices, one feature-map viewer
    views = ["confusion_matrix"] * 2 + ["feature_maps"] + ["image_browser"] * 2
    assert sorted(name for name in skipped if name in views) == sorted(views), skipped
    assert {name for name in skipped if name not in views} >= {"show_images", "show_filters"}
    stub = nbformat.read(executed / "untouched_stub.ipynb", as_version=4)
    errors = [
        (index, o.ename)
        for index, cell in enumerate(stub.cells)
        for o in cell.get("outputs", [])
        if o.output_type == "error"
    ]
    assert errors and errors[0][1] == "NotImplementedError"
    first_exercise = [cell.get("id") for cell in stub.cells].index("q1-conv2d")
    assert errors[0][0] > first_exercise and "conv2d(" in stub.cells[errors[0][0]].source


@pytest.mark.realdata
def test_trained_model_with_the_wrong_number_of_scores_loses_its_points_without_a_crash(
    real_root, use_real_cache
):
    """Does a CIFAR model with 9 outputs fail the accuracy test with a message, not a crash?"""
    torch.manual_seed(0)
    model = REFERENCE.cifar_model()
    model[-1] = nn.Linear(256, 9)
    record = {"cifar_model": judging.layer_records(model, (3, 32, 32))}
    context = Context(CONTENT.lab, INPUTS, real_root)
    results = CONTENT.tests.run(record, context, questions={"q12_cifar_training"})
    accuracy = next(r for r in results if "accuracy" in r.name)
    assert not accuracy.passed and not accuracy.error, accuracy
    assert "the model gives 9 scores per image where the 10 classes need 10 scores" in (
        accuracy.message
    )


def test_a_made_up_history_earns_nothing_but_a_wrong_one_is_still_reported():
    """Is the training history feedback only: 0 points, yet a failure shown as a failure?"""
    record = {"mnist_history": {"loss": [1.0, 2.0], "accuracy": [0.5, 0.4]}}
    results = judge(record, "q8_mnist_training")
    history = next(r for r in results.values() if "history" in r.name or "per epoch" in r.name)
    assert history.points == 0 and not history.passed and "did not go down" in history.message
    page = feedback_html(
        SubmissionResult.from_tests(Status.GRADED, "", [history], {"q8_mnist_training": 3}),
        CONTENT.lab,
    )
    assert "What to fix" in page and "did not go down" in page
    assert (
        SubmissionResult.from_json(
            SubmissionResult.from_tests(
                Status.GRADED, "", [history], {"q8_mnist_training": 3}
            ).to_json()
        )
        .tests[0]
        .passed
        is False
    )


@pytest.mark.stress
@pytest.mark.slow
def test_a_class_graded_under_cpu_load_gets_the_grades_it_gets_idle(tiny_root, tmp_path):
    """Do two busy processes per core change no grade and no status, for work within budget?"""
    from test_execute import BURN_TWO_SECONDS, busy_machine

    from cnn_course_instructor import build

    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    build.build(course_root)
    submissions = tmp_path / "class"
    submissions.mkdir()
    solution = nbformat.read(course_root / "notebooks/solution/sample_lab.ipynb", as_version=4)
    nbformat.write(solution, submissions / "ann.ipynb")
    solution.cells.insert(3, nbformat.v4.new_code_cell(BURN_TWO_SECONDS))  # 2 CPU-seconds
    nbformat.write(solution, submissions / "cy.ipynb")
    nbformat.write(
        nbformat.read(course_root / "notebooks/student/sample_lab.ipynb", as_version=4),
        submissions / "bo.ipynb",
    )

    def grades(out: str) -> dict:
        results = grade_class(
            submissions,
            tmp_path / out,
            course=Course(course_root),
            data_root=tiny_root,
            sandbox=sandbox_available() is None,
            jobs=2,
            cell_timeout=4,
            progress=lambda _: None,
        )
        return {r.student: (r.status, r.scores, [t.passed for t in r.tests]) for r in results}

    idle = grades("idle")
    with busy_machine():
        loaded = grades("loaded")
    assert loaded == idle
    assert idle["cy"][0] is Status.GRADED and idle["cy"][1] == {"q1_double": 2.0}


def test_notes_name_each_cell_by_its_exercise():
    """Does the feedback name a failing cell by the exercise it answers or follows and its
    first line of code (comments skipped), never by an index?"""
    from cnn_course_instructor.grading.worker import cell_names

    student = nbformat.read(REPO / "notebooks/solution/cnn_lab.ipynb", as_version=4)
    names = cell_names(student, CONTENT.lab)
    answer = next(
        i
        for i, c in enumerate(student.cells)
        if c.metadata.get("nbgrader", {}).get("grade_id") == "q4_mnist_model"
    )
    label = CONTENT.lab.graded["q4_mnist_model"].label
    assert names[answer] == f'your answer to {label} ("mnist_model = nn.Sequential(")'
    following = student.cells[answer + 1].source.strip().splitlines()[0][:37]
    assert names[answer + 1].startswith(f'the cell "{following}')
    assert names[answer + 1].endswith(f" after {label}")
    assert names[0].startswith('the cell "') and "after" not in names[0]


# --- starting the next submission while one runs ------------------------------------------------


def test_the_kernel_preloads_what_the_first_cell_imports():
    """Are the first code cell's modules (and torch's compiler, with torch) what a grading
    kernel loads before it answers, whatever the cell's spelling?"""
    from cnn_course_instructor.grading.worker import setup_imports

    first = "import torch\nfrom torch import nn\nfrom cnn_course import checks, data\nx = 1\n"
    cells = [nbformat.v4.new_markdown_cell("# lab"), nbformat.v4.new_code_cell(first)]
    assert setup_imports(nbformat.v4.new_notebook(cells=cells)) == (
        "torch",
        "torch.nn",
        "cnn_course",
        "cnn_course.checks",
        "cnn_course.data",
        "torch._dynamo",
    )
    deep = "x = " + "-" * 200_000 + "1"  # a hostile first cell: too long to read, or too deep
    for source in ("from . import x\nimport json", "def broken(:", "", deep, deep[:19_000]):
        cells = [nbformat.v4.new_code_cell(source)]
        assert setup_imports(nbformat.v4.new_notebook(cells=cells)) in ((), ("json",))
    assert setup_imports(nbformat.v4.new_notebook()) == ()


@pytest.mark.slow
@pytest.mark.skipif(
    sandbox_available() is not None and not os.environ.get("CNN_COURSE_REQUIRE_SANDBOX"),
    reason=f"{sandbox_available()}",
)
def test_a_sandboxed_kernel_loads_its_preload_before_the_first_cell(tmp_path):
    """Are the preloaded modules loaded when the hook runs (a missing one ignored), is the hook
    called once, and does what it raises end the run with the kernel gone?"""
    from cnn_course_instructor.grading.kernel import run_notebook
    from cnn_course_instructor.sandbox import Sandbox

    calls = []
    cells = ["import sys\nprint('wave' in sys.modules, 'colorsys' in sys.modules)", "print(2)"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    box = Sandbox(preload=("no_such_module_anywhere", "wave"))
    execution = run_notebook(
        notebook, cwd=tmp_path, sandboxed=box, before_cells=lambda: calls.append(1)
    )
    assert execution.error_name is None and calls == [1]
    assert notebook.cells[0].outputs[0].text == "True False\n"

    class Stop(Exception):
        pass

    def stop() -> None:
        raise Stop

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    with pytest.raises(Stop):  # (and a kernel with nothing to preload starts)
        run_notebook(notebook, cwd=tmp_path, sandboxed=Sandbox(), before_cells=stop)
    assert "outputs" not in notebook.cells[0] or not notebook.cells[0].outputs


@pytest.mark.slow
def test_a_gated_worker_grades_on_go_and_ends_without_a_result_otherwise(tiny_root, tmp_path):
    """Does a worker started ahead say "ready" and wait for "go" (its time counted from then),
    say "ran" once its kernel has ended, and end with no result and no process left when the
    grader closes its input instead?"""
    from cnn_course_instructor import build
    from cnn_course_instructor.grading.job import GradingRun, Job
    from cnn_course_instructor.grading.local import probe_plan

    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    build.build(course_root)
    course = Course(course_root)
    run = GradingRun.here(
        course, 3, tiny_root, sandboxed=sandbox_available() is None, cell_timeout=60
    )
    outcomes = {}
    for name, answer in (("go", "go\n"), ("closed", "")):
        work = tmp_path / name
        work.mkdir()
        (work / "plan.pt").write_bytes(probe_plan(course, "sample_lab", 3))
        status, told = os.pipe()
        job = Job(
            run=run,
            lab="sample_lab",
            notebook=str(course_root / "notebooks/solution/sample_lab.ipynb"),
            result=str(work / "result.json"),
            executed=str(work / "executed.ipynb"),
            work=str(work),
            plan=str(work / "plan.pt"),
            gated=True,
            status_fd=told,
        )
        job.write(work / "job.json")
        worker = subprocess.Popen(
            [sys.executable, "-m", "cnn_course_instructor.grading.worker", str(work / "job.json")],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            pass_fds=(told,),
        )
        os.close(told)
        with os.fdopen(status, "rb") as said:
            assert said.readline() == b"ready\n"  # waiting at the gate: nothing has run
            time.sleep(1.0)
            assert worker.poll() is None and not (work / "result.json").exists()
            begun = time.perf_counter()
            _, stderr = worker.communicate(answer, timeout=300)
            elapsed = time.perf_counter() - begun
            rest = said.read()  # (to the end: neither the kernel nor the judge holds the pipe)
        outcomes[name] = worker.returncode, (work / "result.json").exists(), rest
        with pytest.raises(ProcessLookupError):  # the kernel, the judge, their sandboxes: gone
            os.killpg(worker.pid, 0)
        if name == "go":
            result = SubmissionResult.read(work / "result.json")
            assert result.status is Status.GRADED and result.total == 2, stderr[-2000:]
            assert result.seconds <= elapsed  # not the wait at the gate
    assert outcomes == {"go": (0, True, b"ran\n"), "closed": (3, False, b"")}


@pytest.mark.slow
def test_the_run_s_judge_server_judges_each_record_apart_and_workers_can_do_without_it(
    tiny_root, tmp_path
):
    """Does the judge server of a run (sandboxed, as the scheduler starts it) judge the records
    sent on connections open at once, each on its own? Does a worker fall back on a judge of
    its own when the server is gone, or gives no answer?"""
    import io

    from cnn_course_instructor.grading.job import GradingRun, Job
    from cnn_course_instructor.grading.local import judge_servers
    from cnn_course_instructor.grading.worker import _judge, _judge_for

    course = Course(SAMPLE_COURSE)
    run = GradingRun.here(
        course, 5, tiny_root, sandboxed=sandbox_available() is None, cell_timeout=60
    )
    (numbers, *_), (whole, *_) = course.content("sample_lab").grading_inputs(5)["numbers"]

    def record(first: torch.Tensor) -> bytes:
        buffer = io.BytesIO()
        torch.save({"double": [{"tensor": first}, {"tensor": whole * 2}]}, buffer)
        return buffer.getvalue()

    right, wrong = record(numbers * 2), record(numbers * 3)
    job = Job(run=run, lab="sample_lab", notebook="", result="", executed="", work=str(tmp_path))

    def judged_at(socket_path: str) -> Job:
        return dataclasses.replace(job, run=run.with_judges({"sample_lab": socket_path}))

    with judge_servers(run, {"sample_lab"}, tmp_path / "judge") as sockets:
        served = judged_at(sockets["sample_lab"])
        with _judge_for(served) as one, _judge_for(served) as other:
            assert isinstance(one, socket.socket) and isinstance(other, socket.socket)
            answers = [_judge(other, wrong), _judge(one, right)]
        with _judge_for(served) as third:
            unusable = _judge(third, b"not a record")
    assert [test.passed for test in answers[0]] == [False, True]
    assert [test.passed for test in answers[1]] == [True, True]
    assert unusable.reason.startswith("the grading record is unreadable")
    assert not unusable.graders  # the record's fault, not the grader's
    assert not Path(sockets["sample_lab"]).parent.exists()  # the server ended, its folder gone

    gone = judged_at(sockets["sample_lab"])
    assert not isinstance(_judge_for(gone), contextlib.closing)  # a judge of its own
    with answerless_server(tmp_path / "answerless.sock") as path:
        with _judge_for(judged_at(path)) as connection:
            assert _judge(connection, right) is None  # the worker asks a judge of its own


# A judge whose loading and judging are stand-ins: loading burns the CPU seconds the request
# says (as loading torch and the tests does), and a record b"spin" spins in Python, b"stuck"
# in one C call (no Python handler runs until it returns), anything else is judged at once.
# The CPU budget is 1 s, its grace 1 s.
_CPU_JUDGE = """
import json, socket, sys, time
from cnn_course_instructor.grading import judge

def prepared(request):
    end = time.process_time() + request["loading"]
    while time.process_time() < end:
        pass

    def judged(record):
        if record == b"spin":
            while True:
                pass
        if record == b"stuck":
            sum(range(10**13))
        return []

    return judged

judge._prepared = prepared
judge.JUDGE_CPU_SECONDS, judge.JUDGE_CPU_GRACE = 1, 1
if sys.argv[2] == "--serve":
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sys.argv[3])
    listener.listen()
    judge.serve(json.loads(open(sys.argv[1]).read()), listener)
else:
    sys.exit(judge.main(sys.argv[1:]))
"""
_CPU_SPENT = "the grader's tests used more than 1 s of CPU time on this record and were stopped"


def _cpu_request(tmp_path: Path, loading: float = 0.0) -> Path:
    """A request for ``_CPU_JUDGE``: ``loading`` CPU seconds, a wall-clock limit far away."""
    path = tmp_path / "judge.json"
    path.write_text(json.dumps({"loading": loading, "timeout": 600}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "record, loading, answer",
    [(b"spin", 0.0, {"unusable": _CPU_SPENT}), (b"quick", 1.5, {"tests": []})],
    ids=["spinning", "quick-after-a-costly-load"],
)
def test_a_judge_answers_unusable_once_a_record_spends_its_cpu_budget(
    tmp_path, record, loading, answer
):
    """Does a judge of one record whose judging spins past its CPU budget answer that the
    record was unusable, and why, rather than run to the worker's 900 s? Does a record judged
    at once still get its results after a load that used more than the budget (the budget
    counts from the record on)?"""
    argv = [sys.executable, "-c", _CPU_JUDGE, str(_cpu_request(tmp_path, loading)), "-"]
    done = subprocess.run(argv, input=record, capture_output=True, timeout=60)
    found = json.loads(done.stdout.decode().splitlines()[-1])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    if "unusable" in answer:
        assert found["unusable"].startswith(answer["unusable"]), found
        assert "make its layers smaller" in found["unusable"]
    else:
        assert found == answer


def test_a_judge_stuck_in_one_call_ends_at_its_hard_cpu_limit(tmp_path):
    """Does a judge stuck in one long C call, where no Python handler runs, still end (killed
    at the budget plus its grace), so that the worker's fallback takes over?"""
    argv = [sys.executable, "-c", _CPU_JUDGE, str(_cpu_request(tmp_path)), "-"]
    started = time.monotonic()
    done = subprocess.run(argv, input=b"stuck", capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and done.stdout == b""
    assert time.monotonic() - started < 30


def test_each_process_of_a_judge_server_has_its_own_cpu_budget(tmp_path):
    """Does a judge server's process for a connection whose record spins answer "unusable"
    with the CPU message, while the server's next process judges a record as usual?"""
    path = tmp_path / "judge.sock"
    argv = [sys.executable, "-c", _CPU_JUDGE, str(_cpu_request(tmp_path)), "--serve", str(path)]
    server = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = []
        for record in (b"spin", b"quick"):
            with socket.socket(socket.AF_UNIX) as connection:
                connection.settimeout(30)
                connection.connect(str(path))
                connection.sendall(record)
                connection.shutdown(socket.SHUT_WR)
                answers.append(json.loads(connection.makefile("rb").read()))
    finally:
        server.kill()
        server.wait(timeout=10)
    assert answers[0]["unusable"].startswith(_CPU_SPENT), answers
    assert answers[1] == {"tests": []}


def test_a_judge_server_that_cannot_start_is_a_warning_and_workers_judge_alone(
    monkeypatch, tmp_path
):
    """Does a lab whose judge server fails to start get no socket (its workers start judges of
    their own), with a warning naming the lab and the reason, rather than a failed run?"""
    from cnn_course_instructor.grading import local
    from cnn_course_instructor.grading.job import GradingRun

    def cannot(*args, **options):
        raise OSError("no uid left to lease")

    monkeypatch.setattr(local, "judge_started", cannot)
    run = GradingRun.here(Course(SAMPLE_COURSE), 0, tmp_path, sandboxed=False, cell_timeout=60)
    with (
        pytest.warns(UserWarning, match="no judge server for sample_lab: no uid left to lease"),
        local.judge_servers(run, {"sample_lab"}, tmp_path / "judge") as sockets,
    ):
        assert sockets == {}


def test_the_gradebook_is_made_while_the_class_runs_and_a_failure_is_left_to_the_reports(
    tmp_path,
):
    """Does the early step create nbgrader's gradebook with the lab's questions, and leave a
    gradebook it cannot make to the reports (no exception, nothing written)?"""
    from nbgrader.api import Gradebook
    from nbgrader.dbutil import ALEMBIC_DIR
    from sqlalchemy import text

    from cnn_course_instructor.grading.run import _prepare_reports

    lab = Course(REPO).lab("cnn_lab")
    _prepare_reports(tmp_path / "gradebook.db", [lab])
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", course_id="cnn-course") as book:
        cells = book.find_notebook(lab.id, lab.id).grade_cells
        assert sorted(cell.name for cell in cells) == sorted(lab.questions)  # hand-graded ones too
        stamp = book.db.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    # Stamped, as nbgrader stamps a new gradebook, with its newest migration: the one that no
    # other migration revises.
    revisions, revised = set(), set()
    for script in (Path(ALEMBIC_DIR) / "versions").glob("*.py"):
        source = script.read_text()
        revisions |= set(re.findall(r"^revision = '(\w+)'", source, re.M))
        revised |= set(re.findall(r"^down_revision = '(\w+)'", source, re.M))
    assert len(revisions) >= 6 and stamp == list(revisions - revised)
    _prepare_reports(tmp_path / "missing" / "gradebook.db", [lab])
    assert not (tmp_path / "missing").exists()
