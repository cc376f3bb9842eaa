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
gradebook). Prints wall time, seconds per submission and submissions per minute of each, and
the throughput ratios to nbgrader. A benchmark, not a test: it asserts nothing about speed.
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

REPO = Path(__file__).resolve().parents[1]


def nbgrader_course(folder: Path, lab: str, students: list[str]) -> None:
    """nbgrader's course layout: the lab as source, released, and each student's submission."""
    source = folder / "source" / lab
    source.mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "solution" / f"{lab}.ipynb", source / f"{lab}.ipynb")
    (folder / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(folder)!r}\n"
        "c.CourseDirectory.course_id = 'cnn-course-bench'\n"
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
        k: v for k, v in os.environ.items() if k not in ("CNN_COURSE_FAST", "CNN_COURSE_GRADING")
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


def main() -> int:
    from cnn_course_instructor.course import Course
    from cnn_course_instructor.scheduler import grade_class

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--lab", default="cnn_lab")
    args = parser.parse_args()
    students = [f"student{number:02d}" for number in range(args.students)]
    count = len(students)
    print(f"{count} submissions ({args.lab}, the solution), {os.cpu_count()} cores", flush=True)
    print(f"load average at the start: {_load()}")
    print(
        f"{'run':20} {'jobs':>4} {'wall s':>8} {'s/submission':>13} {'subm./min':>10} {'vs nbgrader':>12}"
    )

    def row(name: str, jobs: int, wall: float) -> None:  # printed as soon as it is measured
        line = f"{name:20} {jobs:>4} {wall:>8.1f} {wall / count:>13.1f} {60 * count / wall:>10.2f}"
        print(f"{line} {anchor / wall:>11.2f}x", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-nbgrader-"))
    totals = {}
    try:
        course = work / "nbgrader"
        nbgrader_course(course, args.lab, students)
        started = time.perf_counter()
        nbgrader(course, "autograde", args.lab)
        anchor = time.perf_counter() - started
        graded = sorted(p.name for p in (course / "autograded").iterdir())
        if graded != students:
            sys.exit(f"nbgrader autograded {graded}, expected {students}")
        row("nbgrader autograde", 1, anchor)
        for jobs in dict.fromkeys((1, args.jobs)):
            out = work / f"cnn-course-jobs{jobs}"
            out.mkdir()
            if totals:  # the same secret inputs as the first run: the grades must be the same
                shutil.copy(work / "cnn-course-jobs1" / ".grading-seed", out / ".grading-seed")
            started = time.perf_counter()
            results = grade_class(
                course / "submitted",
                out,
                course=Course(REPO),
                lab=args.lab,
                jobs=jobs,
                progress=lambda _: None,
            )
            row("cnn-course grade", jobs, time.perf_counter() - started)
            totals[jobs] = [(r.student, r.status.value, r.total) for r in results]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {_load()}")
    for jobs, rows_of in totals.items():
        print(f"cnn-course --jobs {jobs}: {rows_of}")
    same = len({tuple(rows_of) for rows_of in totals.values()}) == 1
    print(f"cnn-course grades identical across --jobs: {'yes' if same else 'NO'}")
    return 0 if same else 1


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
