"""Tests of the autograder: hidden tests on plain records (unit) and grading real submissions (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import REPO
from corpus import SAMPLES
from torch import nn

from autograder import hidden_tests
from autograder.grading import feedback_html, find_submissions, grade_class
from autograder.probe import probe_source
from autograder.rebuild import RebuildError, rebuild
from autograder.reference import cifar_model, mnist_model
from autograder.sandbox import sandbox_available
from cnn_course import checks
from cnn_course.errors import CourseError

INPUTS = hidden_tests.grading_inputs(seed=7)
SANDBOX = sandbox_available() is None  # tests/test_sandbox.py covers the sandbox itself


def by_name(results) -> dict[str, hidden_tests.TestResult]:
    return {r.name: r for r in results}


# --- rebuilding and probing -----------------------------------------------------------------


def test_rebuilt_model_computes_exactly_what_the_original_did():
    """Does a model rebuilt from plain records give the same outputs as the student's object?"""
    torch.manual_seed(0)
    original = cifar_model()
    records = checks.layer_records(original, (3, 32, 32))
    copy = rebuild(records)
    images = torch.rand(4, 3, 32, 32)
    original.eval()
    assert torch.equal(copy(images), original(images))
    fresh = rebuild(records, with_weights=False)
    assert not torch.equal(fresh[0].weight, original[0].weight)


def test_rebuild_refuses_unknown_layers_and_wrong_tensors():
    """Are layer types outside the whitelist and tensors of the wrong shape refused?"""
    records = checks.layer_records(mnist_model(), (1, 28, 28))
    records["layers"][0]["kind"] = "EvilLayer"
    with pytest.raises(RebuildError, match="does not rebuild EvilLayer"):
        rebuild(records)
    records = checks.layer_records(mnist_model(), (1, 28, 28))
    records["layers"][-1]["tensors"]["weight"] = torch.zeros(3, 3)
    with pytest.raises(RebuildError, match="tensor weight has the wrong shape"):
        rebuild(records)


def test_probe_records_plain_data_readable_without_running_code(tmp_path):
    """Does the probe cell, run in a notebook-like namespace, save a weights_only-loadable record?"""
    inputs_path, output_path = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save(INPUTS, inputs_path)
    namespace = {
        "mnist_model": mnist_model(),
        "vector_to_class": lambda x: x.argmax(dim=1),
        "cnn_accuracy": lambda p, y: (p == y).float().mean().item(),
    }
    exec(probe_source(str(inputs_path), str(output_path)), namespace)
    record = torch.load(output_path, weights_only=True)
    assert len(record["mnist_model"]["layers"]) == 7
    assert record["cifar_model"] == {
        "error": "NameError: `cifar_model` is not defined (did its cell run without error?)"
    }
    assert record["cnn_accuracy"][1] == {"type": "float", "value": 1.0}
    assert "_cnn_course_probe" not in namespace


# --- hidden tests on plain records -------------------------------------------------------------


def _function_record(function, cases):
    outputs = []
    for args in cases:
        try:
            value = function(*args)
            if isinstance(value, torch.Tensor):
                outputs.append({"tensor": value})
            else:
                outputs.append({"type": type(value).__name__, "value": float(value)})
        except Exception as exc:
            outputs.append({"error": f"{type(exc).__name__}: {exc}"})
    return outputs


def test_vector_to_class_right_answers_score_full_marks_even_on_ties():
    """Does a correct vector_to_class get every case, either tied index being accepted?"""
    record = _function_record(lambda x: torch.argmax(x, dim=1), INPUTS["vector_to_class"])
    results = hidden_tests._vector_to_class_tests("q3", record, INPUTS["vector_to_class"], 2.0)
    assert sum(r.score for r in results) == 2.0
    last_index = _function_record(
        lambda x: 9 - torch.argmax(x.flip(1), dim=1), INPUTS["vector_to_class"]
    )
    results = by_name(
        hidden_tests._vector_to_class_tests("q3", last_index, INPUTS["vector_to_class"], 2.0)
    )
    assert results["rows with tied maxima"].passed


def test_vector_to_class_mistakes_are_named():
    """Are the batch-axis argmax, float classes and overflowing exp caught with specific messages?"""
    cases = INPUTS["vector_to_class"]
    over_batch = by_name(
        hidden_tests._vector_to_class_tests(
            "q3", _function_record(lambda x: x.argmax(0), cases), cases, 2
        )
    )
    assert "argmax over dim=0" in over_batch["random scores (64, 10)"].message
    floats = _function_record(lambda x: x.argmax(1).float(), cases)
    assert (
        "integer classes"
        in by_name(hidden_tests._vector_to_class_tests("q3", floats, cases, 2))[
            "random scores (64, 10)"
        ].message
    )

    def manual_softmax(x):
        e = torch.exp(x)
        return torch.argmax(e / e.sum(dim=1, keepdim=True), dim=1)

    results = by_name(
        hidden_tests._vector_to_class_tests("q3", _function_record(manual_softmax, cases), cases, 2)
    )
    assert results["random scores (64, 10)"].passed and not results["very large scores"].passed


def test_cnn_accuracy_count_and_tensor_mistakes():
    """Is a count caught with a hint, and a tensor result costing only the 'number' case?"""
    cases = INPUTS["cnn_accuracy"]
    count = by_name(
        hidden_tests._cnn_accuracy_tests(
            "q4", _function_record(lambda p, y: (p == y).sum().item(), cases), cases, 2
        )
    )
    assert "divide by N" in count["fraction of right predictions"].message
    assert count["no prediction right"].passed and count["returns a Python number"].passed
    tensor = hidden_tests._cnn_accuracy_tests(
        "q4", _function_record(lambda p, y: (p == y).float().mean(), cases), cases, 2
    )
    assert [r.passed for r in tensor] == [True, True, True, False]
    assert "use .item()" in tensor[-1].message


def test_architecture_tests_accept_spellings_and_name_the_first_fault():
    """Is padding=1 accepted like 'same', and a missing ReLU named at its layer?"""
    weights = {
        "convolutions": 1.0,
        "activations and pooling in order": 1.0,
        "classifier output": 1.0,
    }
    same = nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, (3, 3), padding=(1, 1)), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6272, 10),
    )  # fmt: skip
    results = hidden_tests._architecture_tests(
        "q1", checks.layer_records(same, (1, 28, 28)), checks.MNIST_LAYERS, weights
    )
    assert all(r.passed for r in results)
    del same[3]
    results = by_name(
        hidden_tests._architecture_tests(
            "q1", checks.layer_records(same, (1, 28, 28)), checks.MNIST_LAYERS, weights
        )
    )
    assert results["convolutions"].passed and results["classifier output"].passed
    assert "layer 3: expected ReLU()" in results["activations and pooling in order"].message
    softmax = nn.Sequential(*mnist_model(), nn.Softmax(dim=1))
    records = checks.layer_records(softmax, (1, 28, 28))
    results = by_name(hidden_tests._architecture_tests("q1", records, checks.MNIST_LAYERS, weights))
    assert [r.passed for r in results.values()] == [True, True, False]
    assert "applies the softmax itself" in results["classifier output"].message
    missing = hidden_tests._architecture_tests(
        "q1", {"error": "NameError: x"}, checks.MNIST_LAYERS, weights
    )
    assert [r.message for r in missing] == ["NameError: x"] * 3


# --- finding submissions and reports ---------------------------------------------------------


def test_submissions_are_found_in_both_layouts(tmp_path):
    """Are nbgrader's submitted/<student>/<assignment>/ and a flat <student>.ipynb folder both read?"""
    for student in ("ann", "bo"):
        folder = tmp_path / "course" / "submitted" / student / "cnn_lab"
        folder.mkdir(parents=True)
        (folder / "cnn_lab.ipynb").write_text("{}")
    found = find_submissions(tmp_path / "course", "cnn_lab", "cnn_lab")
    assert [(s.student, s.path.parent.parent.name) for s in found] == [("ann", "ann"), ("bo", "bo")]
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "cy.ipynb").write_text("{}")
    assert [s.student for s in find_submissions(tmp_path / "flat", "cnn_lab", "cnn_lab")] == ["cy"]
    (tmp_path / "flat" / "bad name.ipynb").write_text("{}")
    with pytest.raises(CourseError, match="Unusable student ids"):
        find_submissions(tmp_path / "flat", "cnn_lab", "cnn_lab")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match="No submissions found"):
        find_submissions(tmp_path / "empty", "cnn_lab", "cnn_lab")


def test_feedback_is_escaped_and_holds_results_only():
    """Does the feedback page escape student text and show scores and messages per question?"""
    result = {
        "student": "ann",
        "status": "graded",
        "reason": "<script>alert(1)</script>",
        "scores": {"q1": 1.0},
        "total": 1.0,
        "max": 2.0,
        "tests": [
            {
                "question": "q1",
                "name": "conv",
                "points": 2.0,
                "score": 1.0,
                "passed": False,
                "message": "got <b>",
            }
        ],
    }
    page = feedback_html(result, {"q1": 2.0})
    assert "<script>" not in page and "&lt;script&gt;" in page and "got &lt;b&gt;" in page
    assert "1 / 2" in page


# --- grading real submissions ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_fast_corpus_grades_as_expected(real_root, real_cache, tmp_path, monkeypatch):
    """Do the CI subset's submissions get their expected scores, with feedback naming each fault?"""
    from grade_corpus import compare, write_corpus

    monkeypatch.setenv("CNN_COURSE_CACHE", str(real_cache))
    samples = [s for s in SAMPLES if s.fast]
    write_corpus(samples, tmp_path / "submitted")
    (tmp_path / "submitted" / "broken.ipynb").write_text("{not json")
    out = tmp_path / "out"
    results = {
        r["student"]: r
        for r in grade_class(
            tmp_path / "submitted",
            out,
            jobs=2,
            data_root=real_root,
            sandbox=SANDBOX,
            progress=lambda _: None,
        )
    }
    for sample in samples:
        assert compare(sample, results[sample.name]) == [], sample.name
    assert results["broken"]["status"] == "invalid notebook" and results["broken"]["total"] == 0

    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert [row["student"] for row in rows] == sorted(results)
    assert rows[0].keys() >= {"q1_mnist_model", "q7_cifar_training", "total", "max", "status"}
    assert json.loads((out / "results" / "solution.json").read_text())["total"] == 18

    hidden = {
        line.strip()
        for path in (REPO / "autograder").glob("*.py")
        for line in path.read_text().splitlines()
        if len(line.strip()) > 25 and not line.strip().startswith(("#", '"""', "import", "from"))
    }
    for page in (out / "feedback").glob("*.html"):
        text = page.read_text()
        assert not [line for line in hidden if line in text], page.name

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", course_id="cnn-course") as gradebook:
        assert gradebook.find_submission("cnn_lab", "solution").score == 18
        assert gradebook.find_submission("cnn_lab", "untouched_stub").score == 0

    # A rerun resumes: nothing is regraded, nothing is lost or duplicated.
    again = grade_class(
        tmp_path / "submitted", out, data_root=real_root, sandbox=SANDBOX, progress=lambda _: None
    )
    assert [r["student"] for r in again] == [r["student"] for r in results.values()]
    assert len(list(csv.DictReader((out / "grades.csv").open()))) == len(results)


def test_corpus_edits_still_apply_to_the_lab():
    """Does every sample's edit still match exactly one cell of the current notebooks?"""
    for sample in SAMPLES:
        assert isinstance(sample.notebook(), nbformat.NotebookNode)
    assert Path(SAMPLES[0].base).is_file()
