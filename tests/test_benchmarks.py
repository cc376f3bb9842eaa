"""The benchmarks' refusal to print a ratio over rows that were not graded as expected.

Hand-made rows only: the benchmarks themselves take minutes and are run by hand.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from conftest import COURSE, corpus, full_marks

from cnn_course_instructor.grading.results import Status, SubmissionResult, TestResult

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ("checks", "bench_grading", "bench_nbgrader")
RATIO = re.compile(r"\d\.\d\dx")  # how the scripts print a ratio: 1.35x
LAB = "cnn_lab"  # the lab bench_grading grades
POINTS = full_marks(LAB)
TOTAL = sum(POINTS.values())  # full marks


@pytest.fixture(scope="module")
def bench():
    """The scripts imported as `python benchmarks/<script>.py` runs them: their folder first."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in SCRIPTS})
    for name in SCRIPTS:
        sys.modules.pop(name, None)


def result(
    student: str = "student00",
    status: Status = Status.GRADED,
    scores: dict[str, float] | None = None,
    reason: str = "",
    tests: list[TestResult] = (),
) -> SubmissionResult:
    """A cnn_lab result with full marks unless ``scores`` says otherwise."""
    scores = dict(POINTS) if scores is None else scores
    return SubmissionResult(
        student, LAB, f"{student}.ipynb", status, reason, scores, TOTAL, list(tests)
    )


def crashed(student: str = "student00") -> SubmissionResult:
    reason = "the grading process failed: bwrap: setting up uid map: Permission denied " * 5
    return result(student, Status.CRASHED, dict.fromkeys(POINTS, 0.0), reason)


def arm(bench, name: str, *rows, wall: float = 60.0, jobs: int = 1):
    return bench.checks.Arm(name, jobs, wall, tuple(rows))


def test_right_rows_pass(bench):
    """Do rows all graded with their expected totals, in every arm, print no refusal?"""
    row = bench.checks.Row("student00", result(), TOTAL)
    lower = result("student01", scores=dict(POINTS, q1_conv2d=0.0))
    other = bench.checks.Row("student01", lower, TOTAL - POINTS["q1_conv2d"])
    assert (
        bench.checks.refusal([arm(bench, "serial", row, other), arm(bench, "parallel", row)]) == []
    )


def test_crashed_row_refuses(bench):
    """Does a crashed row refuse the ratio, naming student, arm, status, totals, reason?"""
    right = bench.checks.Row("student00", result(), TOTAL)
    bad = bench.checks.Row("student01", crashed("student01"), TOTAL)
    lines = bench.checks.refusal(
        [arm(bench, "serial", right), arm(bench, "parallel", right, bad, jobs=2)]
    )
    assert len(lines) == 2
    assert lines[0].startswith(
        f"student01 [parallel, jobs 2]: crashed, total 0 vs expected {TOTAL:g}: the grading "
        "process failed: bwrap: setting up uid map: Permission denied"
    )
    assert lines[0].endswith(" ...") and len(lines[0]) < 200  # the reason shortened
    assert lines[1] == "no ratio printed: 1 of 3 rows were not graded as expected"


def test_crashed_row_refuses_whatever_its_total(bench):
    """Does a row that is not `graded` refuse the ratio even with the expected total?"""
    timeout = result(status=Status.TIMEOUT, reason="a cell ran past 600 s")
    lines = bench.checks.refusal(
        [arm(bench, "serial", bench.checks.Row("student00", timeout, TOTAL))]
    )
    assert lines[0] == (
        f"student00 [serial, jobs 1]: timeout, total {TOTAL:g} vs expected {TOTAL:g}: "
        "a cell ran past 600 s"
    )


def test_lower_total_refuses(bench):
    """Does a graded row that scored less than expected refuse the ratio?"""
    lower = result(scores=dict(POINTS, q12_cifar_training=0.0))
    lines = bench.checks.refusal(
        [arm(bench, "serial", bench.checks.Row("student00", lower, TOTAL))]
    )
    assert lines == [
        f"student00 [serial, jobs 1]: graded, total {TOTAL - POINTS['q12_cifar_training']:g} "
        f"vs expected {TOTAL:g}",
        "no ratio printed: 1 of 1 rows were not graded as expected",
    ]


def test_missing_and_off_rows_refuse(bench):
    """Do a submission with no result, a row the benchmark's own comparison faulted, and an
    arm with no rows at all each refuse the ratio?"""
    missing = bench.checks.Row("student00", None, TOTAL)
    faulted = bench.checks.Row("student01", result("student01"), TOTAL, ("q1_conv2d: expected 3",))
    lines = bench.checks.refusal([arm(bench, "serial", missing, faulted)])
    assert lines == [
        f"student00 [serial, jobs 1]: no result, expected total {TOTAL:g}",
        f"student01 [serial, jobs 1]: graded, total {TOTAL:g} vs expected {TOTAL:g}: "
        "q1_conv2d: expected 3",
        "no ratio printed: 2 of 2 rows were not graded as expected",
    ]
    assert bench.checks.refusal([arm(bench, "serial", faulted), arm(bench, "parallel")]) == [
        "no ratio printed: parallel measured no rows"
    ]


# --- bench_grading: the corpus samples' expectations, compared as `cnn-course corpus` does ------


def corpus_result(student: str, sample, status: Status = Status.GRADED) -> SubmissionResult:
    """What grading ``sample`` must give: its expected scores, feedback naming its fault."""
    return result(student, status, sample.expected(COURSE.lab(LAB)), reason=sample.fault)


def grading_class() -> dict:
    kinds = {sample.name: sample for sample in corpus(LAB)}
    return {
        "student00_solution": kinds["solution"],
        "student01_missing_relu": kinds["missing_relu"],
    }


def test_grading_report_prints_ratio_when_right(bench, capsys):
    """Does bench_grading print its ratio when every row got its sample's expected scores?
    (So that the refusal tests below can fail.)"""
    students = grading_class()
    results = [corpus_result(student, sample) for student, sample in students.items()]
    serial = bench.bench_grading.arm("serial", 1, 120.0, results, students)
    parallel = bench.bench_grading.arm("parallel", 2, 60.0, results, students)
    assert bench.bench_grading.report(serial, parallel) == 0
    out = capsys.readouterr().out
    assert "throughput ratio parallel/serial: 2.00x" in out and "grades identical: yes" in out


def test_grading_report_refuses_a_crashed_row(bench, capsys):
    """Does bench_grading print no ratio nor speed figure, but the bad row, when a row of the
    parallel run crashed, and exit non-zero?"""
    students = grading_class()
    results = [corpus_result(student, sample) for student, sample in students.items()]
    serial = bench.bench_grading.arm("serial", 1, 120.0, results, students)
    broken = [results[0], crashed("student01_missing_relu")]
    parallel = bench.bench_grading.arm("parallel", 2, 60.0, broken, students)
    assert bench.bench_grading.report(serial, parallel) == 1
    out = capsys.readouterr().out
    expected = sum(students["student01_missing_relu"].expected(COURSE.lab(LAB)).values())
    assert (
        f"student01_missing_relu [parallel, jobs 2]: crashed, total 0 vs expected {expected:g}:"
        in out
    )
    assert out.rstrip().endswith("no ratio printed: 1 of 4 rows were not graded as expected")
    assert not RATIO.search(out) and "120.0" not in out and "submissions/min" not in out


def test_grading_compares_questions_as_the_corpus_does(bench, capsys):
    """Does bench_grading refuse a row with the right total but points on the wrong questions,
    or feedback that does not name the sample's fault (`cnn-course corpus`'s comparison)?"""
    students = grading_class()
    solution, mistake = (sample.expected(COURSE.lab(LAB)) for sample in students.values())
    q1, q2 = solution["q1_conv2d"], solution["q2_output_size"]
    swapped = dict(solution, q1_conv2d=0.0, q2_output_size=q1 + q2)  # the same total
    results = [
        result("student00_solution", scores=swapped),
        result("student01_missing_relu", scores=mistake, reason="wrong"),
    ]
    run = bench.bench_grading.arm("serial", 1, 120.0, results, students)
    assert bench.bench_grading.report(run, run) == 1
    out = capsys.readouterr().out
    assert (
        f"student00_solution [serial, jobs 1]: graded, total {TOTAL:g} vs expected {TOTAL:g}: "
        f"q1_conv2d: expected {q1:g}, got 0; q2_output_size: expected {q2:g}, got {q1 + q2:g}"
    ) in out
    total = sum(mistake.values())
    assert (
        f"student01_missing_relu [serial, jobs 1]: graded, total {total:g} vs expected {total:g}: "
        "wrong; " in out
    )
    assert "no feedback names the fault" in out
    assert not RATIO.search(out)


# --- bench_nbgrader: the solution's full marks, and what nbgrader autograde left ----------------


def nbgrader_arms(bench, cnn_course_results: list[SubmissionResult]) -> list:
    students = ["student00", "student01"]
    nbgrader = [  # graded, nbgrader's score 0 of 0: the lab has no nbgrader test cells
        bench.checks.Row(student, result(student, scores={"nbgrader": 0.0}), 0.0)
        for student in students
    ]
    return [
        bench.checks.Arm("nbgrader autograde", 1, 600.0, tuple(nbgrader)),
        bench.bench_nbgrader.cnn_course_arm(1, 60.0, cnn_course_results, students, TOTAL),
    ]


def test_nbgrader_report_prints_ratio_when_right(bench, capsys):
    """Does bench_nbgrader print its ratios when every row is right? (So the next can fail.)"""
    arms = nbgrader_arms(bench, [result("student00"), result("student01")])
    assert bench.bench_nbgrader.report(arms) == 0
    assert "10.00x" in capsys.readouterr().out


def test_nbgrader_report_refuses_crashed_rows(bench, capsys):
    """Does bench_nbgrader print no ratio nor speed figure when every cnn-course row crashed
    (the sandbox failing), but one line per row, and exit non-zero?"""
    arms = nbgrader_arms(bench, [crashed("student00"), crashed("student01")])
    assert bench.bench_nbgrader.report(arms) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(
        f"student00 [cnn-course grade, jobs 1]: crashed, total 0 vs expected {TOTAL:g}: the grading "
        "process"
    )
    assert out.splitlines()[-1] == "no ratio printed: 2 of 4 rows were not graded as expected"
    assert not RATIO.search(out) and "600.0" not in out and "vs nbgrader" not in out


def test_nbgrader_report_refuses_a_lost_submission(bench, capsys):
    """Does bench_nbgrader refuse when cnn-course returned no row for a student?"""
    arms = nbgrader_arms(bench, [result("student00")])
    assert bench.bench_nbgrader.report(arms) == 1
    assert (
        f"student01 [cnn-course grade, jobs 1]: no result, expected total {TOTAL:g}"
        in capsys.readouterr().out
    )


@pytest.mark.filterwarnings("ignore:Object of type <SubmittedAssignment> not in session")
def test_nbgrader_row_reads_what_autograde_left(bench, tmp_path, monkeypatch):
    """Is an nbgrader row graded only when the student's autograded notebook exists without
    an error output and the gradebook holds the submission?"""
    from nbgrader.api import Gradebook

    # nbgrader runs `alembic` by name to create a gradebook
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", course_id="cnn-course-bench") as book:
        book.add_assignment("cnn_lab")
        for student in ("clean", "raised", "lost"):
            book.add_student(student)
            book.add_submission("cnn_lab", student)
    for student, source in (("clean", "x = 1"), ("raised", "1 / 0")):
        cell = nbformat.v4.new_code_cell(source)
        if student == "raised":
            cell.outputs = [
                nbformat.v4.new_output(
                    "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[]
                )
            ]
        folder = tmp_path / "autograded" / student / "cnn_lab"
        folder.mkdir(parents=True)
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / "cnn_lab.ipynb")
    rows = {
        student: bench.bench_nbgrader.nbgrader_row(tmp_path, "cnn_lab", student)
        for student in ("clean", "raised", "lost", "unknown")
    }
    assert bench.checks.is_expected(rows["clean"])
    assert [rows[s].result.status for s in rows] == [Status.GRADED] + [Status.CRASHED] * 3
    assert rows["raised"].result.reason == "cell 0 raised ZeroDivisionError: division by zero"
    assert (
        rows["lost"].result.reason
        == "no autograded notebook (autograded/lost/cnn_lab/cnn_lab.ipynb)"
    )
    assert rows["unknown"].result.reason.startswith("no submission in nbgrader's gradebook; ")
