"""A lab's grading contract: checked against its front matter when the course loads."""

from __future__ import annotations

import shutil
import sys

import pytest
from conftest import REPO

from cnn_course.errors import CourseError
from cnn_course.settings import ProbeKind
from cnn_course_instructor.contract import LabContract, calls, model, optimizer
from cnn_course_instructor.course import Course

SAMPLE = REPO / "tests" / "samples" / "build_repo"
GRADING = "autograder/sample_lab/__init__.py"


@pytest.fixture
def sample(tmp_path):
    """A copy of the sample course, its grading content loaded afresh by each test."""
    shutil.copytree(SAMPLE, tmp_path, dirs_exist_ok=True)
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None)).startswith(str(tmp_path)):
            del sys.modules[name]


def _edit(course_root, old: str, new: str, path: str = GRADING) -> None:
    file = course_root / path
    text = file.read_text()
    assert old in text, old
    file.write_text(text.replace(old, new))


def test_every_lab_of_the_course_exports_a_contract_that_agrees_with_its_front_matter():
    """Does each lab's grading content load as a LabContract whose probe steps are typed and
    whose plan is plain data?"""
    course = Course(REPO)
    for lab_id in course.labs:
        content = course.content(lab_id)
        assert isinstance(content.contract, LabContract)
        assert all(step.kind in ProbeKind for step in content.contract.probe)
        assert all(isinstance(step["kind"], str) for step in content.probe_plan)
        assert content.reference is not None


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "CONTRACT = LabContract(",
            "OTHER = LabContract(",
            "must end with `CONTRACT = LabContract",
        ),
        ("probe=(DOUBLE,)", "probe=(DOUBLE, DOUBLE)", "two probe steps record 'double'"),
        (
            '@tests.case("q1_double", points=1, name="whole numbers")',
            '@tests.case("q1_double", points=2, name="whole numbers")',
            "its tests add up to 3",
        ),
    ],
    ids=["no contract", "two steps, one key", "points"],
)
def test_a_contract_that_disagrees_with_its_lab_is_refused_saying_why(sample, old, new, words):
    """Is a lab whose grading content has no contract, records two steps under one key, or
    whose tests' points do not add up, refused when the course loads, naming the fault?"""
    _edit(sample, old, new)
    with pytest.raises(CourseError) as raised:
        Course(sample).content("sample_lab")
    assert words in str(raised.value)


def test_a_step_without_what_its_kind_reads_is_refused():
    """Is a model step without its input shape, or an optimizer step without its model, named?"""
    from cnn_course_instructor.contract import ProbeStep, Registry

    lab = Course(SAMPLE).lab("sample_lab")
    broken = LabContract(
        tests=Registry(),
        probe=(ProbeStep("m", ProbeKind.MODEL, "m"), ProbeStep("o", ProbeKind.OPTIMIZER)),
    )
    with pytest.raises(CourseError) as raised:
        broken.tests.check = lambda lab, where: None  # (points are another test's business)
        broken.check(lab, "here")
    message = str(raised.value)
    assert "probe step 'm' (model) needs input_shape" in message
    assert "probe step 'o' (optimizer) needs criterion, optimizer, model" in message


def test_a_lab_that_trains_a_model_needs_a_threshold_in_its_front_matter(sample):
    """Does a lab that records a trained model, on a dataset its front matter gives no accuracy
    threshold for, get refused with where to write it?"""
    _edit(sample, "probe=(DOUBLE,)", "probe=(DOUBLE, model('net', input_shape=(1, 28, 28)))")
    _edit(sample, "calls, need", "calls, model, need")
    with pytest.raises(
        CourseError, match="gives no accuracy threshold for it .`grading: thresholds:`"
    ):
        Course(sample).content("sample_lab")
    _edit(
        sample,
        "  training:\n",
        "  grading: {thresholds: {mnist: 0.5}}\n  training:\n",
        "source/sample_lab.md",
    )
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None)).startswith(str(sample)):
            del sys.modules[name]
    assert Course(sample).content("sample_lab").lab.thresholds == {"mnist": 0.5}


@pytest.mark.parametrize(
    "accuracy", [0, 1.5, "high", True], ids=["zero", "over one", "text", "a flag"]
)
def test_a_threshold_that_is_no_accuracy_is_refused(sample, accuracy):
    """Is a threshold outside (0, 1), or not a number, refused by name?"""
    _edit(
        sample,
        "  training:\n",
        f"  grading: {{thresholds: {{mnist: {accuracy}}}}}\n  training:\n",
        "source/sample_lab.md",
    )
    with pytest.raises(CourseError, match="must be an accuracy between 0 and 1"):
        Course(sample).lab("sample_lab")


def test_the_plan_the_kernel_receives_is_plain_data():
    """Is each step's plan the fields its kind reads, as plain strings, numbers and tuples?"""
    assert calls("f", inputs="xs").plain() == {
        "key": "f",
        "kind": "calls",
        "name": "f",
        "inputs": "xs",
    }
    assert model("net", input_shape=(3, 32, 32)).plain() == {
        "key": "net",
        "kind": "model",
        "name": "net",
        "input_shape": (3, 32, 32),
    }
    assert optimizer("o", criterion="c", optimizer="opt", model="net").plain() == {
        "key": "o",
        "kind": "optimizer",
        "criterion": "c",
        "optimizer": "opt",
        "model": "net",
    }


# The stress tier: a minute of training each. `make test` sees the same shared verdict send
# part 1's no_optimizer_step sample to its training loop (test_corpus.py).
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.stress
@pytest.mark.parametrize(
    ("lab", "question", "key", "build", "shape"),
    [
        ("cnn_lab", "q12_cifar_training", "cifar_model", "cifar_model", (3, 32, 32)),
        ("cnn_part2", "q3_better_training", "better_model", "better_model", (3, 32, 32)),
    ],
)
def test_every_lab_s_accuracy_test_tells_a_wrong_training_loop_from_a_wrong_model(
    real_root, use_real_cache, lab, question, key, build, shape
):
    """With the right architecture left untrained (a training loop that never steps), does each
    lab's accuracy test (one shared verdict) train it itself and send the student to the
    training loop?"""
    import torch

    from cnn_course import judging
    from cnn_course_instructor.grading.registry import Context

    content = Course(REPO).content(lab)
    torch.manual_seed(0)
    record = {key: judging.layer_records(getattr(content.reference, build)(), shape)}
    context = Context(content.lab, content.grading_inputs(3), real_root)
    (accuracy,) = [
        result
        for result in content.tests.run(record, context, questions={question})
        if "accuracy on unseen images" in result.name
    ]
    assert not accuracy.passed and not accuracy.error, accuracy
    assert "trained by the grader reaches" in accuracy.message, accuracy.message
    assert "look at the training loop" in accuracy.message
    assert accuracy.measured["retrained_accuracy"] >= content.lab.thresholds["cifar10"]
