"""cnn-course grade against real `nbgrader autograde`: the same submissions, side by side, in one run.

    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_nbgrader.py [--students 2] [--jobs 2]

The anchor is nbgrader as a course would run it: its own course layout (``source/``,
``release/``, ``submitted/``, ``autograded/``) and gradebook, the lab's solution notebook as
nbgrader source (``notebooks/solution/<lab>.ipynb``, with nbgrader's cell metadata), released by
``nbgrader generate_assignment``, each student's submission (the solution) autograded by
``nbgrader autograde``, which executes the whole lab at full length, unsandboxed, in one kernel
per student, one student after the other (cell timeout raised to 1,800 s, since its default 30 s
stops the training cells; the lab has no nbgrader test cells, its hidden tests being
cnn-course's, so nbgrader's time is the execution and its own bookkeeping). Then ``cnn-course grade`` grades the same ``submitted/`` folder with
``--jobs 1`` and ``--jobs N`` (sandboxed, shortened mode, the hidden tests, feedback and
gradebook). Every row must have been graded as expected: nbgrader's autograded notebook of
each student there, with no error output, and its gradebook score at its maximum; each
cnn-course row ``graded`` with the lab's full marks (the points of its front matter). Then it
prints wall time, seconds per submission and submissions per minute of each, and the
throughput ratios to nbgrader; otherwise, instead of any figure, one line per row that was
not graded as expected, and exits 1. A benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import checks  # benchmarks/checks.py, beside this script
import nbformat

from cnn_course import settings
from cnn_course_instructor.grading.results import Status, SubmissionResult

REPO = Path(__file__).resolve().parents[1]
COURSE_ID = "cnn-course-bench"  # nbgrader's name for the benchmark's course


def nbgrader_course(folder: Path, lab: str, students: list[str]) -> None:
    """nbgrader's course layout: the lab as source, released, and each student's submission."""
    source = folder / "source" / lab
    source.mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "solution" / f"{lab}.ipynb", source / f"{lab}.ipynb")
    (folder / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(folder)!r}\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        "c.ClearSolutions.begin_solution_delimeter = '--- START CODE HERE'\n"
        "c.ClearSolutions.end_solution_delimeter = '--- END CODE HERE'\n"
        "c.Execute.timeout = 1800\n"
    )
    nbgrader(folder, "generate_assignment", lab, "--force")
    for student in students:
        submitted = folder / "submitted" / student / lab
        submitted.mkdir(parents=True)
        shutil.copy(source / f"{lab}.ipynb", submitted / f"{lab}.ipynb")


def nbgrader(folder: Path, *argv: str) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in (settings.FAST_ENV, settings.GRADING_ENV)
    }
    # nbgrader runs `alembic` (from this venv) by name, in the course folder: an absolute PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"nbgrader {' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def nbgrader_row(course: Path, lab: str, student: str) -> checks.Row:
    """What ``nbgrader autograde`` left for one student, as a row: ``graded`` with its gradebook
    score when its autograded notebook is there without an error output and the gradebook has
    its submission, else ``crashed`` with what is missing or which cells raised."""
    from nbgrader.api import Gradebook, MissingEntry

    problems, score, maximum = [], 0.0, 0.0
    database = course / "gradebook.db"
    if not database.is_file():  # (opening a missing one would create it)
        problems.append(f"no gradebook ({database.name})")
    else:
        with Gradebook(f"sqlite:///{database}", course_id=COURSE_ID) as gradebook:
            try:
                submission = gradebook.find_submission(lab, student)
                score, maximum = submission.score, submission.max_score
            except MissingEntry:
                problems.append("no submission in nbgrader's gradebook")
    path = course / "autograded" / student / lab / f"{lab}.ipynb"
    if path.is_file():
        cells = nbformat.read(path, as_version=4).cells
        problems += [
            f"cell {number} raised {output.get('ename', '?')}: {output.get('evalue', '')}"
            for number, cell in enumerate(cells)
            for output in cell.get("outputs", [])
            if output.get("output_type") == "error"
        ]
    else:
        problems.append(f"no autograded notebook ({path.relative_to(course)})")
    status = Status.CRASHED if problems else Status.GRADED
    result = SubmissionResult(
        student, lab, path.name, status, "; ".join(problems), {"nbgrader": score}, maximum
    )
    return checks.Row(student, result, maximum)


def cnn_course_arm(
    jobs: int, wall: float, results: list[SubmissionResult], students: list[str], full_marks: float
) -> checks.Arm:
    """A ``cnn-course grade`` run: every student's row must be the solution's full marks."""
    by_student = {result.student: result for result in results}
    rows = tuple(checks.Row(student, by_student.get(student), full_marks) for student in students)
    return checks.Arm("cnn-course grade", jobs, wall, rows)


def report(arms: list[checks.Arm]) -> int:
    """Print each run (the first is nbgrader's) and its ratio to nbgrader, and whether the
    cnn-course grades agree across --jobs; or why no ratio is printed (then 1)."""
    refused = checks.refusal(arms)
    if refused:
        print("\n".join(refused))
        return 1
    anchor = arms[0].wall
    print(
        f"{'run':20} {'jobs':>4} {'wall s':>8} {'s/submission':>13} {'subm./min':>10} {'vs nbgrader':>12}"
    )
    for run in arms:
        count = len(run.rows)
        print(
            f"{run.name:20} {run.jobs:>4} {run.wall:>8.1f} {run.wall / count:>13.1f} "
            f"{60 * count / run.wall:>10.2f} {anchor / run.wall:>11.2f}x"
        )
    totals = []
    for run in arms[1:]:
        rows_of = [(row.student, row.result.status.value, row.result.total) for row in run.rows]
        print(f"cnn-course --jobs {run.jobs}: {rows_of}")
        totals.append(rows_of)
    same = all(rows_of == totals[0] for rows_of in totals)
    print(f"cnn-course grades identical across --jobs: {'yes' if same else 'NO'}")
    return 0 if same else 1


def main() -> int:
    from cnn_course_instructor.course import Course
    from cnn_course_instructor.grading.run import grade_class

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--lab", default="cnn_lab")
    args = parser.parse_args()
    students = [f"student{number:02d}" for number in range(args.students)]
    full_marks = sum(question.points for question in Course(REPO).lab(args.lab).graded.values())
    print(
        f"{len(students)} submissions ({args.lab}, the solution: {full_marks:g} points each), "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    print(f"load average at the start: {_load()}")
    work = Path(tempfile.mkdtemp(prefix="bench-nbgrader-"))
    arms = []
    try:
        course = work / "nbgrader"
        nbgrader_course(course, args.lab, students)
        print("running nbgrader autograde", flush=True)
        started = time.perf_counter()
        nbgrader(course, "autograde", args.lab)
        wall = time.perf_counter() - started
        rows = tuple(nbgrader_row(course, args.lab, student) for student in students)
        arms.append(checks.Arm("nbgrader autograde", 1, wall, rows))
        for jobs in dict.fromkeys((1, args.jobs)):
            out = work / f"cnn-course-jobs{jobs}"
            out.mkdir()
            if jobs != 1:  # the same secret inputs as the first run: the grades must be the same
                shutil.copy(work / "cnn-course-jobs1" / ".grading-seed", out / ".grading-seed")
            print(f"running cnn-course grade --jobs {jobs}", flush=True)
            started = time.perf_counter()
            results = grade_class(
                course / "submitted",
                out,
                course=Course(REPO),
                lab=args.lab,
                jobs=jobs,
                progress=lambda _: None,
            )
            wall = time.perf_counter() - started
            arms.append(cnn_course_arm(jobs, wall, results, students, full_marks))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {_load()}")
    return report(arms)


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
