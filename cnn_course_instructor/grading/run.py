"""Grade a class: the run's stages in order, every result kept.

find the submissions -> check the ground (``preflight``) -> grade each submission (``local``
slots, or a Dask ``cluster``) -> keep each result as it comes (``record``) -> write the outputs
(``outputs``: grades.csv, feedback, the gradebook; ``report``: the class report).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from cnn_course import data
from cnn_course.errors import CourseError

from ..course import Course
from ..safefiles import remove_tree
from ..sandbox import sandbox_available
from . import cluster, local, preflight
from .job import CELL_TIMEOUT, GradingRun
from .outputs import fill_gradebook, write_outputs, write_text
from .report import write_class_report
from .results import Graded, SubmissionResult
from .submissions import Submission, find_submissions, lab_id_of

__all__ = ["WORK", "UnsandboxedWarning", "grade_class"]

WORK = ".work"  # OUT/.work: the grader's own folders, one per submission in progress


class UnsandboxedWarning(UserWarning):
    """Student code is about to run without a sandbox (``--no-sandbox``)."""


def grade_class(
    submissions_folder: Path,
    out: Path,
    *,
    course: Course,
    lab: str | None = None,
    jobs: int = 1,
    force: bool = False,
    data_root: Path | None = None,
    sandbox: bool = True,
    cell_timeout: int = CELL_TIMEOUT,
    scheduler: str | None = None,
    progress: Callable[[str], None] = print,
) -> list[SubmissionResult]:
    """Grade every submission into ``out/<lab>/``; resume where a previous run stopped.

    Each submission's lab is ``lab`` when given, else its nbgrader folder's, else the one its
    notebook's metadata names. Up to ``jobs`` submissions run at once, each in its own worker
    process and sandboxed kernel (one torch thread each). Each result is written to
    ``out/<lab>/results/<student>.json`` as soon as it is known, so an interrupted run, even by
    ``kill -9``, loses at most the submissions in progress. Then each lab's ``grades.csv``,
    feedback pages, gradebook entries and class report are rewritten from all results. A file
    that cannot be graded (an unusable name, a link, not a regular file, too large) gets its own
    ``invalid`` row. One run at a time may use ``out``: a second one refuses to start.
    ``sandbox=False`` runs student code unsandboxed, with a warning: trusted code only. With
    ``scheduler`` (a Dask scheduler's address), the submissions are graded on its workers
    instead, each with its own sandbox and data root; results come back here, where they are
    written as in a local run (``jobs`` and ``data_root`` are then unused).

    Before any row is written, the preflight checks the ground (here, or on every Dask worker)
    and raises PreflightFailed with the cause when grading cannot work. A row the grader could
    not grade on its side (``grader error``) is tried once more, never replaces an earlier
    result, and is graded again by the next run without ``force``.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise CourseError(
            f"--out {out} is a file; expected a folder for the grades (new, or one a previous "
            "run wrote). Give another --out."
        )
    labs = list(course.labs)
    if lab is not None:
        course.lab(lab)  # refuse an unknown --lab at once
    for lab_id in labs:
        course.content(lab_id)  # every lab's hidden tests load and agree with its front matter
    submissions = find_submissions(Path(submissions_folder).absolute(), labs)
    if scheduler is None and sandbox and (reason := sandbox_available()):
        raise CourseError(
            f"Cannot sandbox student code: {reason}. Grading runs every kernel under bubblewrap; "
            "--no-sandbox runs student code unprotected (trusted code only)."
        )
    if not sandbox:
        message = (
            "grading WITHOUT a sandbox (--no-sandbox): student code runs as you, with your "
            "files and network. Use it for trusted notebooks only."
        )
        warnings.warn(message, UnsandboxedWarning, stacklevel=2)
        progress(f"WARNING: {message}")
    root = data.resolve_root(data_root).path
    if scheduler is None:  # on a cluster, each worker checks its own ground
        preflight.require(preflight.environment_checks(course, root, sandbox))
        preflight.warm_data(root)
    out.mkdir(parents=True, exist_ok=True)
    with _Exclusive(out), _client(scheduler, sandbox, progress) as client:
        remove_tree(out / WORK)  # what a killed run left: the lock says no run uses it now
        (out / WORK).mkdir()
        run = GradingRun.here(
            course, _grading_seed(out), root, sandboxed=sandbox, cell_timeout=cell_timeout
        )
        assigned = [(s, lab_id_of(s, labs, lab)) for s in submissions]
        _grade(run, course, assigned, out, jobs=jobs, force=force, client=client, progress=progress)
        results = [SubmissionResult.read(_result_path(out, i, s)) for s, i in assigned]
    for lab_id in labs:
        mine = [r for r in results if r.lab == lab_id]
        if mine:
            write_outputs(out / lab_id, mine, course.lab(lab_id), out / "gradebook.db")
            write_class_report(out / lab_id, course.lab(lab_id))
    return results


def _client(scheduler: str | None, sandbox: bool, progress):
    """A client of the Dask scheduler at ``scheduler``, its workers checked; None: grade here."""
    if scheduler is None:
        return contextlib.nullcontext()
    return cluster.connect(scheduler, sandbox, progress)


def _grade(
    run: GradingRun,
    course: Course,
    assigned: list[tuple[Submission, str]],
    out: Path,
    *,
    jobs: int,
    force: bool,
    client,
    progress: Callable[[str], None],
) -> None:
    """Grade the submissions that have no usable result (all of them with ``force``), here or
    on the cluster, recording each result once the preflight has passed."""
    labs = list(course.labs)
    todo = [(s, lab_id) for s, lab_id in assigned if force or _owed(out, lab_id, s)]
    progress(
        f"{len(assigned)} submissions, {len(assigned) - len(todo)} already graded, "
        f"{len(todo)} to grade"
    )
    graded_labs = sorted({lab_id for _, lab_id in todo if lab_id in labs})
    reported = sorted({lab_id for _, lab_id in assigned} & set(labs))
    gate = _Gate()

    def record(submission: Submission, lab_id: str, graded: Graded) -> None:
        """Keep one submission's result: the only place results and executed notebooks are
        written, whichever machine graded it, once the preflight has passed; a regraded
        student's files are replaced whole, but never by a grader error (the earlier result
        stays, and the next run tries again)."""
        gate.wait()
        result = graded.result
        path = _result_path(out, lab_id, submission)
        path.parent.mkdir(parents=True, exist_ok=True)
        if result.status.needs_rerun and _kept(path):
            progress(
                f"  {submission.student} ({lab_id}): {result.status} ({result.reason[:200]}); "
                "the earlier result is kept"
            )
            return
        if graded.executed is not None:
            (out / lab_id / "executed").mkdir(exist_ok=True)
            executed = graded.executed.decode("utf-8", errors="replace")  # nbformat wrote it
            write_text(out / lab_id / "executed" / f"{submission.student}.ipynb", executed)
        result.student, result.lab, result.notebook = (
            submission.student,
            lab_id,
            str(submission.path),
        )
        write_text(path, result.to_json())
        progress(
            f"  {submission.student} ({lab_id}): {result.status}, {result.total:g}/{result.max:g} "
            f"({result.seconds:.0f} s)"
        )

    if client is not None:
        gate.run(lambda: todo and cluster.preflight_workers(client, course, graded_labs, run))
        gate.wait()
        early = _prepare_reports_early(out, course, reported, gate)
        cluster.grade_on_cluster(client, run, todo, labs, course, record)
        early.join()
        return
    work = out / WORK
    with local.judge_servers(run, set(graded_labs), work / "judge") as sockets:
        run = run.with_judges(sockets)
        # The preflight runs while the first workers load (gated): none runs its first cell,
        # and no row is written, before it has passed.
        gate.run(
            lambda: todo and preflight.require(preflight.kernel_checks(run, graded_labs, work))
        )
        early = _prepare_reports_early(out, course, reported, gate)
        local.grade_here(run, todo, labs, jobs, work, record, progress, ready=gate.wait)
    early.join()


class _Gate:
    """The preflight, run in a thread of its own (``run``): ``wait`` returns once it has
    passed, and raises why it failed, in every thread that waits."""

    def __init__(self):
        self.done, self.error = threading.Event(), None

    def run(self, check: Callable[[], object]) -> None:
        def checked() -> None:
            try:
                check()
            except BaseException as error:  # noqa: BLE001 - raised again by wait()
                self.error = error
            finally:
                self.done.set()

        threading.Thread(target=checked, name="preflight", daemon=True).start()

    def wait(self) -> None:
        self.done.wait()
        if isinstance(self.error, CourseError):
            raise type(self.error)(str(self.error))
        if self.error is not None:
            raise self.error


def _owed(out: Path, lab: str, submission: Submission) -> bool:
    """True when a submission has no usable result yet: none, unreadable, or a grader error."""
    return not _kept(_result_path(out, lab, submission))


def _kept(path: Path) -> bool:
    """True when ``path`` holds a usable result (one a grader error must not replace)."""
    try:
        return not SubmissionResult.read(path).status.needs_rerun
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _prepare_reports_early(
    out: Path, course: Course, labs: list[str], gate: _Gate
) -> threading.Thread:
    """``_prepare_reports`` in a thread, once the preflight has passed."""

    def prepare() -> None:
        with contextlib.suppress(Exception):
            gate.wait()
            _prepare_reports(out / "gradebook.db", [course.lab(i) for i in labs])

    early = threading.Thread(target=prepare)
    early.start()
    return early


def _prepare_reports(gradebook: Path, labs: list) -> None:
    """While the first submissions run: create the gradebook with each lab's questions (nbgrader
    runs alembic to create a database: 2.5 s) and load what the reports import (1.8 s), so the
    reports end the run sooner. Whatever fails here, the reports try again and say why."""
    with contextlib.suppress(Exception):
        import matplotlib.figure  # noqa: F401  (the class report's histograms)

        for lab in labs:
            fill_gradebook(gradebook, lab, [])


class _Exclusive:
    """Hold ``out/.lock`` for the run: a second run on the same output folder refuses to start."""

    def __init__(self, out: Path):
        self.path = out / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CourseError(
                f"Another `cnn-course grade` is using {self.path.parent} (pid {holder}). Wait "
                "for it to finish, or grade into another --out folder."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _result_path(out: Path, lab: str, submission: Submission) -> Path:
    return out / lab / "results" / f"{submission.student}.json"


def _grading_seed(out: Path) -> int:
    """One secret seed per output folder: the same inputs on resume, new ones for a new class."""
    path = out / ".grading-seed"
    if not path.is_file():
        write_text(path, str(secrets.randbits(31)))
    return int(path.read_text())
