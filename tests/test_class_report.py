"""Tests of the class report: histograms, grouped faults, and the submissions needing a look."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO

from cnn_course_instructor.cli import main
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.report import summarise, write_class_report
from cnn_course_instructor.grading.results import Status, SubmissionResult, TestResult

LAB = Course(REPO).lab("cnn_lab")
POINTS = {question.id: question.points for question in LAB.graded.values()}


def result(student: str, status=Status.GRADED, reason="", tests=()) -> SubmissionResult:
    """A result in which every question not named in ``tests`` has full marks."""
    tests = list(tests)
    failed = {test.question for test in tests}
    tests += [
        TestResult(question, "all", points, points, "")
        for question, points in POINTS.items()
        if question not in failed and status is Status.GRADED
    ]
    return SubmissionResult.from_tests(
        status, reason, tests, POINTS, student=student, lab="cnn_lab"
    )


def low_accuracy(value: float) -> TestResult:
    return TestResult(
        "q12_cifar_training",
        "trained model reaches 0.30 accuracy",
        4,
        1,
        f"accuracy {value:.4f} on unseen images, below 0.30",
    )


@pytest.fixture
def graded(tmp_path: Path) -> Path:
    """OUT/cnn_lab/results as `grade` leaves it: five students, one crashed, one grader error."""
    folder = tmp_path / "cnn_lab"
    (folder / "results").mkdir(parents=True)
    results = [
        result("ann"),
        result("bo", tests=[low_accuracy(0.1234)]),
        result("cy", tests=[low_accuracy(0.2500)]),
        result("dee", Status.CRASHED, "the kernel died (exit code -9)"),
        result(
            "eve",
            tests=[
                TestResult("q6_vector_to_class", "ties", 0.5, 0, "IndexError: boom", error=True)
            ],
        ),
    ]
    for item in results:
        (folder / "results" / f"{item.student}.json").write_text(item.to_json())
    return folder


def test_faults_that_differ_only_in_numbers_are_counted_together(graded):
    """Do two low accuracies with different values make one fault, counted twice, named by student?"""
    summary = summarise(graded, LAB)
    q7 = next(item for item in summary.questions if item.question.id == "q12_cifar_training")
    assert [(fault.count, fault.students) for fault in q7.faults] == [(2, ["bo", "cy"])]
    assert q7.full_marks == 2  # ann and eve; dee crashed and scores nothing
    assert [item.question.exercise for item in summary.questions] == sorted(
        q.exercise for q in LAB.graded.values()
    )


def test_crashes_and_grader_errors_are_listed_for_a_human_look(graded):
    """Are the crashed submission and the one whose hidden test raised listed, with why?"""
    attention = {item.student: item.why for item in summarise(graded, LAB).attention}
    assert set(attention) == {"dee", "eve"}
    assert "kernel died" in attention["dee"]
    assert "1 hidden test raised inside the grader (q6_vector_to_class: ties)" in attention["eve"]


@pytest.mark.parametrize(
    "changed, said",
    [
        (['cell 33 ("learning_rate = ..."): edited'], 'cell 33 ("learning_rate = ..."): edited'),
        (
            [f'cell {n} ("x"): deleted' for n in range(40)] + ['cell 50 ("y"): edited'],
            "41 locked cells changed (40 deleted, 1 edited; the released ones ran instead): "
            'cell 0 ("x"): deleted; cell 1 ("x"): deleted; cell 2 ("x"): deleted; and 38 more',
        ),
    ],
    ids=["one-named", "many-counted"],
)
def test_changed_locked_cells_are_named_or_counted_for_a_look(graded, changed, said):
    """Is a student who changed a locked cell listed, the cell named, and a notebook that
    changed dozens counted rather than listed cell by cell?"""
    item = result("fay")
    item.changed_locked_cells[:] = changed
    (graded / "results" / "fay.json").write_text(item.to_json())
    attention = {item.student: item.why for item in summarise(graded, LAB).attention}
    assert said in attention["fay"]


def test_report_page_shows_histograms_and_skips_files_the_grader_did_not_write(graded):
    """Is the page written with one PNG per question, and a planted link or huge file skipped?"""
    (graded / "results" / "zed.json").symlink_to("/etc/passwd")
    with (graded / "results" / "huge.json").open("wb") as big:
        big.truncate(5 * 1024 * 1024)
    page = write_class_report(graded, LAB)
    text = page.read_text()
    for question in LAB.graded:
        png = page.parent / f"{question}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{question}.png"' in text
    assert "zed.json: not a regular file" in text and "huge.json: larger than" in text
    assert "root:" not in text
    assert text.index("Exercise 1") < text.index("Exercise 7")


def test_report_command_writes_every_graded_lab_and_refuses_an_empty_folder(
    graded, tmp_path, capsys
):
    """Does `cnn-course report OUT` write the page, and explain an OUT with no results?"""
    assert main(["report", str(graded.parent), "--repo", str(REPO)]) == 0
    assert "report/index.html" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--repo", str(REPO)]) == 2
    error = capsys.readouterr().err
    assert "no graded lab in" in error and "cnn-course grade --out OUT" in error
    assert os.listdir(empty) == []
