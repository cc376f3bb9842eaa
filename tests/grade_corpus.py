"""Grade the whole sample corpus and compare every score with its expected value.

    cd tests && CNN_COURSE_DATA=../../shared/data ../.venv/bin/python grade_corpus.py [--lab cnn_part2] [--jobs 2] [--fast-only]

Prints the score table (expected/got per question), seconds per submission, and exits 1
when any score differs from the corpus's expectation or a lost question's feedback does not
name its fault.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import corpus_part2
import nbformat
from corpus import REPO, SAMPLES, Sample

from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.results import SubmissionResult
from cnn_course_instructor.grading.run import grade_class

CORPORA = {"cnn_lab": SAMPLES, "cnn_part2": corpus_part2.SAMPLES}  # lab -> its sample corpus


def write_corpus(samples: list[Sample], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        nbformat.write(sample.notebook(), folder / f"{sample.name}.ipynb")


def compare(sample: Sample, result: SubmissionResult) -> list[str]:
    """Every way the result differs from what the sample must get."""
    problems = [
        f"{question}: expected {expected:g}, got {result.scores[question]:g}"
        for question, expected in sample.expected.items()
        if abs(result.scores[question] - expected) > 1e-6
    ]
    if sample.fault:
        messages = " ".join(
            [*(t.message for t in result.tests), result.reason, *result.changed_locked_cells]
        )
        if sample.fault not in messages:
            problems.append(f"no feedback names the fault ({sample.fault!r})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", choices=sorted(CORPORA), default="cnn_lab")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--fast-only", action="store_true", help="only the subset CI grades")
    parser.add_argument("--out", type=Path, help="keep the grading output here")
    args = parser.parse_args()
    samples = [s for s in CORPORA[args.lab] if s.fast or not args.fast_only]
    work = Path(tempfile.mkdtemp(prefix="corpus-"))
    write_corpus(samples, work / "submissions")
    started = time.perf_counter()
    results = grade_class(
        work / "submissions",
        args.out or work / "out",
        course=Course(REPO),
        lab=args.lab,
        jobs=args.jobs,
        force=True,
    )
    wall = time.perf_counter() - started
    by_name = {r.student: r for r in results}
    questions = list(samples[0].expected)
    print(
        f"\n{'sample':32} "
        + " ".join(f"{q.split('_')[0]:>9}" for q in questions)
        + "    total  seconds"
    )
    failures = 0
    for sample in samples:
        result = by_name[sample.name]
        cells = [
            f"{result.scores[q]:g}"
            + (
                ""
                if abs(result.scores[q] - sample.expected[q]) < 1e-6
                else f"≠{sample.expected[q]:g}"
            )
            for q in questions
        ]
        print(
            f"{sample.name:32} "
            + " ".join(f"{c:>9}" for c in cells)
            + f"  {result.total:>7g}  {result.seconds:>7.1f}"
        )
        for problem in compare(sample, result):
            failures += 1
            print(f"    MISMATCH {problem}")
    seconds = [r.seconds for r in results]
    print(
        f"\n{len(results)} submissions in {wall:.0f} s with {args.jobs} job(s); per submission: "
        f"median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s"
    )
    print("all scores as expected" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
