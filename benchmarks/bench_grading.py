"""Grading throughput: a class of N copies of real submissions, serial against parallel, in one run.

    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_grading.py [--copies 6] [--jobs 2]

Both runs grade the same notebooks with the same secret inputs, in sandboxes: part 1's solution
and a few typical mistakes from its sample corpus (``autograder/cnn_lab/corpus.py``). Every row
of both runs must be graded with its sample's expected scores (compared as ``cnn-course corpus``
compares them); then it prints the wall time of each run, the throughput ratio, the median
seconds per submission, and whether every grade is identical. Otherwise it prints, instead of
any figure, one line per row that was not graded as expected, and exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import checks  # benchmarks/checks.py, beside this script
import nbformat

from cnn_course_instructor.corpus import Sample, compare, samples
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.results import Status, SubmissionResult
from cnn_course_instructor.grading.run import grade_class

REPO = Path(__file__).resolve().parents[1]
COURSE = Course(REPO)
LAB = "cnn_lab"  # its corpus's samples named in KINDS make the class
KINDS = ("solution", "missing_relu", "no_optimizer_step", "accuracy_as_count")


def make_class(folder: Path, copies: int) -> dict[str, Sample]:
    """``copies`` submissions cycling through the solution and a few typical mistakes: student
    name -> the sample each one is."""
    kinds = [s for s in samples(COURSE, LAB) if s.name in KINDS]
    folder.mkdir(parents=True)
    students = {}
    for number in range(copies):
        sample = kinds[number % len(kinds)]
        student = f"student{number:02d}_{sample.name}"
        nbformat.write(sample.notebook(COURSE, LAB), folder / f"{student}.ipynb")
        students[student] = sample
    return students


def timed(submissions: Path, out: Path, jobs: int) -> tuple[float, list[SubmissionResult]]:
    started = time.perf_counter()
    results = grade_class(
        submissions, out, course=COURSE, jobs=jobs, force=True, progress=lambda _: None
    )
    return time.perf_counter() - started, results


def arm(
    name: str,
    jobs: int,
    wall: float,
    results: list[SubmissionResult],
    students: dict[str, Sample],
) -> checks.Arm:
    """A measured run, each submission's row held against its sample's expected scores."""
    by_student = {result.student: result for result in results}
    lab = COURSE.lab(LAB)
    rows = []
    for student, sample in students.items():
        result = by_student.get(student)
        graded = result is not None and result.status is Status.GRADED
        problems = tuple(compare(sample, lab, result)) if graded else ()
        rows.append(checks.Row(student, result, sum(sample.expected(lab).values()), problems))
    return checks.Arm(name, jobs, wall, tuple(rows))


def report(serial: checks.Arm, parallel: checks.Arm) -> int:
    """Print the two runs side by side and their ratio, or why no ratio is printed (then 1)."""
    print(f"{len(serial.rows)} submissions on {os.cpu_count()} cores, sandboxed, shortened mode")
    refused = checks.refusal([serial, parallel])
    if refused:
        print("\n".join(refused))
        return 1
    print(
        f"{'run':10} {'jobs':>4} {'wall s':>8} {'s/submission (median)':>22} {'submissions/min':>16}"
    )
    for run in (serial, parallel):
        median = statistics.median(row.result.seconds for row in run.rows)
        per_minute = 60 * len(run.rows) / run.wall
        print(f"{run.name:10} {run.jobs:>4} {run.wall:>8.1f} {median:>22.1f} {per_minute:>16.2f}")
    print(f"throughput ratio parallel/serial: {serial.wall / parallel.wall:.2f}x")
    grades = [
        [(row.result.scores, row.result.status) for row in run.rows] for run in (serial, parallel)
    ]
    same = grades[0] == grades[1]
    print(f"grades identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        students = make_class(work / "submitted", args.copies)
        serial_out, parallel_out = work / "serial", work / "parallel"
        serial_time, serial = timed(work / "submitted", serial_out, 1)
        parallel_out.mkdir()
        shutil.copy(serial_out / ".grading-seed", parallel_out / ".grading-seed")
        parallel_time, parallel = timed(work / "submitted", parallel_out, args.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(
        arm("serial", 1, serial_time, serial, students),
        arm("parallel", args.jobs, parallel_time, parallel, students),
    )


if __name__ == "__main__":
    sys.exit(main())
