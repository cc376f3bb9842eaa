"""The ``cnn-course`` command line: data, build, grade and publish."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from cnn_course.errors import CourseError

from .grading.job import CELL_TIMEOUT
from .grading.submissions import UNKNOWN_LAB

__all__ = ["main"]


def _data_status(args: argparse.Namespace) -> int:
    from cnn_course import data

    from . import datatools

    root = data.resolve_root(args.root)
    print(f"data root: {root.describe()}")
    statuses = datatools.data_status(root.path)
    for status in statuses:
        if not status.found:
            print(f"{status.name:9} MISSING")
            continue
        counts = ", ".join(f"{split} {count:,}" for split, count in status.counts.items())
        bad = [check for check in status.checks if not check.ok]
        if not status.checks:
            integrity = "no known checksums for these files"
        elif bad:
            integrity = f"{len(bad)} of {len(status.checks)} files FAIL their checksum"
        else:
            integrity = f"{len(status.checks)} files match their checksums"
        print(f"{status.name:9} found: {status.source} at {status.path}")
        print(f"{'':9} images: {counts or 'unreadable'}; {integrity}")
    missing = [status.name for status in statuses if not status.found]
    if missing:
        print(
            f"\n{' and '.join(missing)} not found. Set {data.DATA_ENV} to the folder that holds "
            "the data (README, section Data), or load with download=True where there is internet."
        )
    corrupt = any(not check.ok for status in statuses for check in status.checks)
    return 1 if missing or corrupt else 0


def _data_verify(args: argparse.Namespace) -> int:
    from cnn_course import data

    from . import datatools

    root = data.resolve_root(args.root)
    print(f"data root: {root.describe()}")
    checks = datatools.verify_files(root.path)
    if not checks:
        print("No known data files found here; nothing to verify.")
        return 1
    for check in checks:
        verdict = "ok" if check.ok else ("MISSING" if check.actual is None else "MISMATCH")
        print(f"{verdict:8} {check.algorithm:6} {check.path}")
    failed = sum(not check.ok for check in checks)
    print(f"{len(checks) - failed} of {len(checks)} files verified.")
    return 1 if failed else 0


def _data_pack(args: argparse.Namespace) -> int:
    from cnn_course import data

    from . import datatools

    written = datatools.write_pack(args.out, root=args.root, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"Offline data root ready: set {data.DATA_ENV}={written[-1].parent}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import build

    repo = Path(args.repo)
    if args.check:
        problems = build.check_build(repo)
        for problem in problems:
            print(problem)
        if problems:
            print(
                f"\n{len(problems)} generated file(s) out of step with source/: run `cnn-course build`."
            )
            return 1
        print("notebooks/ is in step with source/.")
        return 0
    for path in build.build(repo):
        print(f"wrote {path.relative_to(repo.absolute())}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .course import Course
    from .grading.run import grade_class

    if args.jobs < 1:
        raise CourseError(f"--jobs must be 1 or more; got {args.jobs}.")
    if args.scheduler and args.data_root:
        raise CourseError(
            f"--data-root {args.data_root} names this machine's data, but with --scheduler the "
            "Dask workers grade, each with its own data root: set CNN_COURSE_DATA in each "
            "worker's environment instead, and drop --data-root."
        )
    deadline = _deadline(args.deadline) if args.deadline else None
    results = grade_class(
        Path(args.submissions),
        Path(args.out),
        course=Course(Path(args.repo)),
        students=args.student,
        deadline=deadline,
        lab=args.lab,
        jobs=args.jobs,
        force=args.force,
        data_root=args.data_root,
        sandbox=not args.no_sandbox,
        cell_timeout=args.cell_timeout,
        scheduler=args.scheduler,
        live=sys.stderr.isatty(),  # a progress bar on a terminal; plain lines in a log
    )
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    labs = sorted({result.lab for result in results})
    where = ", ".join(f"{args.out}/{lab}/grades.csv" for lab in labs if lab != UNKNOWN_LAB)
    print(
        f"{len(results)} submissions: {summary}."
        + (f" Grades of the class in {where}" if where else "")
    )
    unknown = [result.student for result in results if result.lab == UNKNOWN_LAB]
    if unknown:
        print(
            f"{len(unknown)} notebook(s) name no lab of this course and are in no grades.csv: "
            f"{', '.join(unknown[:10])}{', ...' if len(unknown) > 10 else ''} (their reasons: "
            f"{args.out}/{UNKNOWN_LAB}/results/). Grade them with --lab if they are for one."
        )
    owed = sum(result.status.needs_rerun for result in results)
    if owed:
        print(
            f"{owed} row(s) need a rerun: the grader failed on its side (status 'grader error', "
            "the reason says why). Run the same command again: it grades those rows, and only "
            "those, without --force."
        )
        return 1
    return 0


def _deadline(text: str):
    """``--deadline`` as a naive UTC datetime, as nbgrader keeps due dates."""
    from nbgrader.utils import parse_utc

    try:
        return parse_utc(text)
    except (ValueError, OverflowError, TypeError):
        raise CourseError(
            f"--deadline {text!r} is not a date and time: expected ISO 8601, e.g. "
            '"2026-12-01 23:59" (UTC), "2026-12-01T23:59+01:00" or "2026-12-01 23:59 Europe/Paris".'
        ) from None


def _doctor(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from cnn_course import data

    from .course import Course
    from .grading import preflight
    from .grading.job import GradingRun

    course = Course(Path(args.repo))
    print(f"cnn-course doctor on {preflight.machine_summary()}, course {course.root}")
    found = preflight.environment_checks(course, args.data_root, sandboxed=True)
    for check in found:
        print(check.line(), flush=True)
    if any(check.ok is False for check in found):
        print("\nGrading would stop before its first row: fix the FAIL lines above.")
        return 1
    if args.quick:
        print("\nEnvironment ok (--quick: no kernel started).")
        return 0
    labs = [args.lab] if args.lab else list(course.labs)
    run = GradingRun.here(course, 0, data.resolve_root(args.data_root).path)
    with tempfile.TemporaryDirectory(prefix="cnn-course-doctor-") as work:
        kernels = preflight.kernel_checks(run, labs, Path(work))
    for check in kernels:
        print(check.line())
    if any(check.ok is False for check in kernels):
        print("\nGrading would stop before its first row: fix the FAIL lines above.")
        return 1
    print("\nReady to grade.")
    return 0


def _corpus(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .corpus import grade_corpus
    from .course import Course

    course = Course(Path(args.repo))
    labs = [args.lab] if args.lab else list(course.labs)
    if args.lab:
        course.lab(args.lab)  # an unknown lab is refused by name
    failures = sum(
        grade_corpus(course, lab, jobs=args.jobs, fast_only=args.fast_only) for lab in labs
    )
    return 1 if failures else 0


def _new_lab(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .newlab import new_lab

    repo = Path(args.repo)
    written = new_lab(repo, args.name, args.title)
    print(f"Wrote the skeleton of {args.name}:")
    for path in written:
        print(f"  {path.relative_to(repo.absolute())}")
    print(
        "\nNext:\n"
        "  cnn-course build\n"
        f"      makes notebooks/student/{args.name}.ipynb and notebooks/solution/{args.name}.ipynb\n"
        f"  cnn-course corpus --lab {args.name}\n"
        "      grades its samples (the solution, the untouched stub, a mistake) for real\n"
        f"Then edit source/{args.name}.md and the files above into your lab (docs/authoring.md)."
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .course import Course
    from .grading.nbgrader_course import released_notebook
    from .grading.run import rewrite_lab_outputs

    out = Path(args.out)
    course = Course(Path(args.repo))
    for lab in _graded_labs(out, course, args.lab):
        released = released_notebook(course.root, lab)
        written = rewrite_lab_outputs(out, course.lab(lab), released=released)
        print(
            f"wrote {out / lab}/grades.csv, feedback/, report/index.html and the gradebook "
            f"({len(written)} students)"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .course import Course
    from .grading.export import export_lab
    from .grading.nbgrader_course import released_notebook

    out = Path(args.out)
    course = Course(Path(args.repo))
    labs = _graded_labs(out, course, args.lab)
    if args.to and len(labs) > 1:
        raise CourseError(
            f"--to {args.to} names one file, but {out} holds {len(labs)} graded labs "
            f"({', '.join(labs)}): add --lab, or leave --to out for one file per lab."
        )
    for lab in labs:
        to = Path(args.to) if args.to else None
        released = released_notebook(course.root, lab)
        print(f"wrote {export_lab(out, course.lab(lab), args.format, to, print, released)}")
    return 0


def _graded_labs(out, course, lab: str | None) -> list[str]:
    """``lab``, else every lab of the course graded in ``out``; refused when there is none."""
    labs = [lab] if lab else [p.parent.name for p in sorted(out.glob("*/results")) if p.is_dir()]
    labs = [one for one in labs if lab or one in course.labs]
    if lab:
        course.lab(lab)  # an unknown lab is refused by name
    if not labs:
        raise CourseError(
            f"no graded lab in {out}: expected {out}/<lab>/results/*.json, written by "
            "`cnn-course grade --out OUT`. Give the OUT folder of a grading run."
        )
    return labs


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .calibrate import calibrate
    from .course import Course

    calibrate(Course(Path(args.repo)), args.lab, args.seeds, data_root=args.data_root)
    return 0


def _publish_nbhosting(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import publish

    out = Path(args.out).resolve()
    written = publish.publish_nbhosting(Path(args.repo), out, force=args.force)
    total = 0
    for path in written:
        size = path.stat().st_size
        total += size
        print(f"wrote {path.relative_to(out).as_posix():45} {size:>10,} bytes")
    print(f"{len(written)} files, {total:,} bytes in {out}.")
    print(
        f"Next: commit and push {out} as its own git repository, and provision the data on the "
        f"nbhosting host ({out / 'README.md'})."
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnn-course", description="Build, run and grade the cnn-course labs."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data_parser = commands.add_parser("data", help="find, check and pack the datasets")
    data_commands = data_parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    root_help = "data root (default: $CNN_COURSE_DATA, else ./data)"
    status = data_commands.add_parser(
        "status", help="what is found where, with counts and checksums"
    )
    status.add_argument("--root", help=root_help)
    status.set_defaults(run=_data_status)
    verify = data_commands.add_parser("verify", help="check every known file's checksum")
    verify.add_argument("--root", help=root_help)
    verify.set_defaults(run=_data_verify)
    pack = data_commands.add_parser(
        "pack", help="write an offline data root for machines without internet"
    )
    pack.add_argument("out", help="folder to write (MNIST/raw/*.gz, CIFAR-10/*.npz, SHA256SUMS)")
    pack.add_argument("--root", help="where to read the data from; " + root_help)
    pack.add_argument("--force", action="store_true", help="replace pack files already in OUT")
    pack.set_defaults(run=_data_pack)

    build_parser = commands.add_parser(
        "build", help="build student and solution notebooks from source/ (through nbgrader)"
    )
    build_parser.add_argument("--repo", default=".", help="course repository (default: .)")
    build_parser.add_argument(
        "--check", action="store_true", help="fail when notebooks/ differs from a fresh build"
    )
    build_parser.set_defaults(run=_build)

    grade = commands.add_parser("grade", help="grade a folder of submissions (instructors)")
    grade.add_argument(
        "submissions", help="nbgrader's submitted/ folder, or a folder of <student>.ipynb"
    )
    grade.add_argument(
        "--out", required=True, help="where grades.csv, results/, feedback/ and gradebook.db go"
    )
    grade.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="submissions graded at once (default: cores)",
    )
    grade.add_argument(
        "--force", action="store_true", help="regrade submissions already graded in --out"
    )
    grade.add_argument(
        "--student",
        action="append",
        metavar="ID",
        help="grade only this student's submission (repeat for several; with --force: regrade "
        "them); grades.csv still holds the whole class",
    )
    grade.add_argument(
        "--deadline",
        metavar="WHEN",
        help="mark rows submitted after it as late (ISO 8601, UTC unless a zone is given, e.g. "
        '"2026-12-01 23:59"; default: the lab\'s due date in the nbgrader course, if any); '
        "no penalty is applied",
    )
    grade.add_argument("--data-root", help="data root (default: $CNN_COURSE_DATA, else ./data)")
    grade.add_argument("--repo", default=".", help="course repository (default: .)")
    grade.add_argument(
        "--lab", help="grade every submission as this lab (default: from each notebook)"
    )
    grade.add_argument(
        "--cell-timeout",
        type=int,
        default=CELL_TIMEOUT,
        help=f"CPU seconds a cell may use, or wait without computing (default {CELL_TIMEOUT})",
    )
    grade.add_argument(
        "--no-sandbox", action="store_true", help="run student code unsandboxed (trusted code only)"
    )
    grade.add_argument(
        "--scheduler",
        metavar="tcp://HOST:8786",
        help="grade on the workers of this Dask scheduler (default: on this machine, --jobs at "
        "once); see docs/dask.md",
    )
    grade.set_defaults(run=_grade)

    doctor = commands.add_parser(
        "doctor",
        help="check this machine for grading: sandbox, install places, data, a real kernel",
    )
    doctor.add_argument("--repo", default=".", help="course repository (default: .)")
    doctor.add_argument("--data-root", help="data root (default: $CNN_COURSE_DATA, else ./data)")
    doctor.add_argument("--lab", help="start a kernel for this lab only (default: every lab)")
    doctor.add_argument(
        "--quick", action="store_true", help="only the checks that start no kernel (seconds)"
    )
    doctor.set_defaults(run=_doctor)

    corpus = commands.add_parser(
        "corpus",
        help="grade each lab's sample corpus and compare every score with its expectation",
    )
    corpus.add_argument("--lab", help="only this lab (default: every lab with a corpus)")
    corpus.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    corpus.add_argument("--fast-only", action="store_true", help="only the samples CI grades")
    corpus.add_argument("--repo", default=".", help="course repository (default: .)")
    corpus.set_defaults(run=_corpus)

    new = commands.add_parser(
        "new-lab",
        help="write a working skeleton lab (source, checks, hidden tests, corpus) to edit",
    )
    new.add_argument("name", help="the lab's id, lower_snake_case, e.g. rnn_lab")
    new.add_argument("--title", help="its title (default: from the id)")
    new.add_argument("--repo", default=".", help="course repository (default: .)")
    new.set_defaults(run=_new_lab)

    report = commands.add_parser(
        "report",
        help="write a grading run's grades.csv, feedback, gradebook and class report again from "
        "its results and the points given by hand (after hand grading)",
    )
    report.add_argument("out", help="the --out folder of `cnn-course grade`")
    report.add_argument("--lab", help="only this lab (default: every lab graded in OUT)")
    report.add_argument("--repo", default=".", help="course repository (default: .)")
    report.set_defaults(run=_report)

    export = commands.add_parser(
        "export", help="write a graded lab's marks for nbgrader, Canvas or Moodle to import"
    )
    export.add_argument("out", help="the --out folder of `cnn-course grade`")
    export.add_argument(
        "--format",
        required=True,
        choices=("nbgrader", "canvas", "moodle"),
        help="nbgrader's CSV export, a Canvas gradebook import, or a Moodle grade import",
    )
    export.add_argument("--lab", help="only this lab (default: every lab graded in OUT)")
    export.add_argument("--to", help="the file to write (default: OUT/<lab>/export-FORMAT.csv)")
    export.add_argument("--repo", default=".", help="course repository (default: .)")
    export.set_defaults(run=_export)

    calibrate = commands.add_parser(
        "calibrate", help="measure the solution's trained accuracies over seeds (instructors)"
    )
    calibrate.add_argument("lab", help="the lab id, e.g. cnn_lab")
    calibrate.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    calibrate.add_argument("--repo", default=".", help="course repository (default: .)")
    calibrate.add_argument("--data-root", help="data root (default: $CNN_COURSE_DATA, else ./data)")
    calibrate.set_defaults(run=_calibrate)

    publish_parser = commands.add_parser(
        "publish", help="write the student-only course tree for a hosting platform (instructors)"
    )
    platforms = publish_parser.add_subparsers(
        dest="publish_platform", metavar="PLATFORM", required=True
    )
    nbhosting = platforms.add_parser(
        "nbhosting", help="a course tree for nbhosting: notebooks, modules/, .nbhosting/"
    )
    nbhosting.add_argument("out", help="folder to write (new or empty, or written by publish)")
    nbhosting.add_argument("--repo", default=".", help="course repository (default: .)")
    nbhosting.add_argument(
        "--force",
        action="store_true",
        help="update a tree publish wrote before (only the files in its manifest change)",
    )
    nbhosting.set_defaults(run=_publish_nbhosting)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 check failed, 2 usage or input error)."""
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CourseError as error:
        print(f"cnn-course: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnn-course: interrupted; nothing half-written was left behind.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
