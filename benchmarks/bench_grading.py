"""Grading throughput: a class of N copies of real submissions, serial against parallel, in one run.

    CNN_COURSE_DATA=../shared/data PYTHONPATH=tests .venv/bin/python benchmarks/bench_grading.py [--copies 6] [--jobs 2]

Both runs grade the same notebooks with the same secret inputs, in sandboxes. Prints the wall
time of each, the throughput ratio, the median seconds per submission, and whether every
grade is identical.
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

import nbformat

from cnn_course_instructor.course import Course
from cnn_course_instructor.scheduler import grade_class

REPO = Path(__file__).resolve().parents[1]


def make_class(folder: Path, copies: int) -> None:
    """``copies`` submissions cycling through the solution and a few typical mistakes."""
    from corpus import SAMPLES  # the sample corpus of tests/ (run from there: see the docstring)

    kinds = [
        s
        for s in SAMPLES
        if s.name in ("solution", "missing_relu", "no_optimizer_step", "accuracy_as_count")
    ]
    folder.mkdir(parents=True)
    for number in range(copies):
        sample = kinds[number % len(kinds)]
        nbformat.write(sample.notebook(), folder / f"student{number:02d}_{sample.name}.ipynb")


def timed(submissions: Path, out: Path, jobs: int) -> tuple[float, list]:
    started = time.perf_counter()
    results = grade_class(
        submissions, out, course=Course(REPO), jobs=jobs, force=True, progress=lambda _: None
    )
    return time.perf_counter() - started, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        make_class(work / "submitted", args.copies)
        serial_out, parallel_out = work / "serial", work / "parallel"
        serial_time, serial = timed(work / "submitted", serial_out, 1)
        parallel_out.mkdir()
        shutil.copy(serial_out / ".grading-seed", parallel_out / ".grading-seed")
        parallel_time, parallel = timed(work / "submitted", parallel_out, args.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    same = [(r.scores, r.status) for r in serial] == [(r.scores, r.status) for r in parallel]
    print(f"{args.copies} submissions on {os.cpu_count()} cores, sandboxed, shortened mode")
    print(
        f"{'run':10} {'jobs':>4} {'wall s':>8} {'s/submission (median)':>22} {'submissions/min':>16}"
    )
    for name, jobs, wall, results in (
        ("serial", 1, serial_time, serial),
        ("parallel", args.jobs, parallel_time, parallel),
    ):
        median = statistics.median(r.seconds for r in results)
        print(f"{name:10} {jobs:>4} {wall:>8.1f} {median:>22.1f} {60 * len(results) / wall:>16.2f}")
    print(f"throughput ratio parallel/serial: {serial_time / parallel_time:.2f}x")
    print(f"grades identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
