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
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path

import nbformat

from cnn_course import data
from cnn_course.errors import CourseError
from cnn_course.labs import Lab

from ..course import Course
from ..safefiles import remove_tree
from ..sandbox import sandbox_available
from . import cluster, local, preflight
from .job import CELL_TIMEOUT, GradingRun
from .nbgrader_course import out_book, released_notebook
from .outputs import duration, fill_gradebook, write_outputs, write_text
from .report import write_class_report
from .results import Graded, Status, SubmissionResult, read_results
from .submissions import (
    Submission,
    digest,
    find_submissions,
    lab_id_of,
    other_assignments,
    submitted_at,
)

__all__ = [
    "WORK",
    "UnsandboxedWarning",
    "due_date",
    "grade_class",
    "nbgrader_duedate",
    "rewrite_lab_outputs",
    "write_lab_outputs",
]

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
    students: Collection[str] | None = None,
    deadline: datetime | None = None,
    progress: Callable[[str], None] = print,
    live: bool = False,
) -> list[SubmissionResult]:
    """Grade every submission into ``out/<lab>/``; resume where a previous run stopped.

    Each submission's lab is ``lab`` when given, else its nbgrader folder's, else the one its
    notebook's metadata names. Up to ``jobs`` submissions run at once, each in its own worker
    process and sandboxed kernel (one torch thread each). Each result is written to
    ``out/<lab>/results/<student>.json`` as soon as it is known, so an interrupted run, even by
    ``kill -9``, loses at most the submissions in progress. A resume grades what has no usable
    result, and what changed since its result was graded (the file's sha256 is in the result).
    ``students`` (ids) grades those only. Then each lab's ``grades.csv``, feedback pages,
    gradebook entries and class report are rewritten from all of ``out``'s results, those of
    earlier runs included: no run drops another student's row. Late rows are marked against
    ``deadline`` (UTC), else the lab's due date in the nbgrader course's gradebook, else the one
    an earlier run left in ``out``'s. A file
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
    submissions_folder = Path(submissions_folder).absolute()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _Exclusive(out):  # before anything loads: a second run is refused at once
            labs = list(course.labs)
            if lab is not None:
                course.lab(lab)  # refuse an unknown --lab at once
            for lab_id in labs:  # every lab's hidden tests load and agree with its front matter
                course.content(lab_id)
            submissions = _chosen(
                find_submissions(submissions_folder, labs), students, submissions_folder
            )
            dues = {i: deadline or due_date(submissions_folder, out, i) for i in labs}
            others = other_assignments(submissions_folder, labs)
            if others:
                listed = ", ".join(
                    f"{name} ({count} student{'s' if count > 1 else ''})"
                    for name, count in others.items()
                )
                progress(f"not graded, no lab of this course: {listed}")
            assigned = [(s, lab_id_of(s, labs, lab)) for s in submissions]
            digests = {s: digest(s) for s, _ in assigned}
            todo = [(s, i) for s, i in assigned if force or _owed(out, i, s, digests[s])]
            changed = 0 if force else sum(_kept(_result_path(out, i, s)) for s, i in todo)
            progress(
                f"{len(assigned)} submissions, {len(assigned) - len(todo)} already graded, "
                f"{len(todo)} to grade" + (f" ({changed} changed since graded)" if changed else "")
            )
            if todo:  # a resume with nothing owed only rewrites the outputs
                root = _ground(course, data_root, sandbox, scheduler, progress)
                with _client(scheduler, sandbox, progress) as client:
                    # what a killed run left: the lock says no run uses it now
                    remove_tree(out / WORK)
                    (out / WORK).mkdir()
                    run = GradingRun.here(
                        course,
                        _grading_seed(out),
                        root,
                        sandboxed=sandbox,
                        cell_timeout=cell_timeout,
                    )
                    _grade(
                        run,
                        course,
                        todo,
                        digests,
                        out,
                        jobs=jobs,
                        client=client,
                        progress=progress,
                        live=live,
                    )
            results = [SubmissionResult.read(_result_path(out, i, s)) for s, i in assigned]
            for lab_id in sorted({result.lab for result in results} & set(labs)):
                progress(f"writing {lab_id}'s grades.csv, feedback pages, gradebook and report")
                released = released_notebook(course.root, lab_id)
                write_lab_outputs(out, course.lab(lab_id), dues[lab_id], progress, released)
            return results
    except BaseException:
        if created and _holds_nothing(out):
            remove_tree(out)  # refused before any result: nothing half-written left behind
        raise


def _ground(
    course: Course,
    data_root: Path | None,
    sandbox: bool,
    scheduler: str | None,
    progress: Callable[[str], None],
) -> Path:
    """Check the ground before any student code runs (here; on a cluster each worker checks
    its own): the sandbox, the data, the tools. The data root's path."""
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
        warnings.warn(message, UnsandboxedWarning, stacklevel=3)
        progress(f"WARNING: {message}")
    root = data.resolve_root(data_root).path
    if scheduler is None:
        # the option as given: a data root the instructor did not name is not "argument"
        preflight.require(preflight.environment_checks(course, data_root, sandbox))
        preflight.warm_data(root)
    return root


def rewrite_lab_outputs(
    out: Path,
    lab: Lab,
    progress: Callable[[str], None] = print,
    released: nbformat.NotebookNode | None = None,
) -> list[SubmissionResult]:
    """``write_lab_outputs`` after a run, with the due date that run left in OUT's gradebook
    (``cnn-course report`` and ``export``, after hand grading)."""
    deadline = nbgrader_duedate(out / "gradebook.db", lab.id)
    return write_lab_outputs(out, lab, deadline, progress, released)


def write_lab_outputs(
    out: Path,
    lab: Lab,
    deadline: datetime | None,
    progress: Callable[[str], None] = print,
    released: nbformat.NotebookNode | None = None,
) -> list[SubmissionResult]:
    """Rewrite the lab's grades.csv, feedback pages, gradebook entries (OUT's, and those of the
    nbgrader courses the notebooks came from, with their autograded notebooks: ``released`` is
    the lab's released notebook) and class report from every result in ``out/<lab>/results``
    (whichever run wrote it): the whole class, always. The results written from."""
    everyone, skipped = read_results(out / lab.id)
    for note in skipped:
        progress(f"  {lab.id}: skipped {note}")
    mine = [result for result in everyone if result.lab in ("", lab.id)]
    hand = write_outputs(
        out / lab.id, mine, lab, out / "gradebook.db", deadline, released, progress
    )
    write_class_report(out / lab.id, lab, hand)
    return mine


def _chosen(
    submissions: list[Submission], students: Collection[str] | None, folder: Path
) -> list[Submission]:
    """The submissions of ``students`` (all when None); an id with no submission is refused,
    with the ids that were found."""
    if students is None:
        return submissions
    found = {submission.student for submission in submissions}
    missing = sorted(set(students) - found)
    if missing:
        shown = ", ".join(sorted(found)[:10]) + (", ..." if len(found) > 10 else "")
        raise CourseError(
            f"--student {', '.join(missing)}: no such submission in {folder}; found "
            f"{len(found)} students ({shown}). Give the id as the submission names it (nbgrader's "
            "submitted/<id>/ folder, or <id>.ipynb)."
        )
    return [submission for submission in submissions if submission.student in set(students)]


def due_date(submissions_folder: Path, out: Path, lab: str) -> datetime | None:
    """The lab's due date (UTC): nbgrader's, in the course that holds ``submissions_folder``
    (its ``gradebook.db``, beside ``submitted/``), else the one an earlier run with
    ``--deadline`` left in ``out``'s gradebook; None when neither has one."""
    course = (
        submissions_folder.parent if submissions_folder.name == "submitted" else submissions_folder
    )
    for database in (course / "gradebook.db", out / "gradebook.db"):
        found = nbgrader_duedate(database, lab)
        if found is not None:
            return found
    return None


def nbgrader_duedate(database: Path, lab: str) -> datetime | None:
    """The lab's due date (UTC) in the nbgrader gradebook ``database``, or None: no such file,
    no such lab, no due date."""
    if not database.is_file() or database.is_symlink():
        return None
    try:
        # read-only, with plain SQL: nbgrader's Gradebook writes to a database as it opens it
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            rows = connection.execute(
                "SELECT duedate FROM assignment WHERE name = ?", (lab,)
            ).fetchall()
        finally:
            connection.close()
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None
    except (sqlite3.Error, ValueError, TypeError) as error:
        raise CourseError(
            f"{database} (an nbgrader gradebook) cannot be read for the "
            f"due date of {lab} ({type(error).__name__}: {error}). Give --deadline instead."
        ) from None


def _client(scheduler: str | None, sandbox: bool, progress):
    """A client of the Dask scheduler at ``scheduler``, its workers checked; None: grade here."""
    if scheduler is None:
        return contextlib.nullcontext()
    return cluster.connect(scheduler, sandbox, progress)


def _grade(
    run: GradingRun,
    course: Course,
    todo: list[tuple[Submission, str]],
    digests: dict[Submission, str],
    out: Path,
    *,
    jobs: int,
    client,
    progress: Callable[[str], None],
    live: bool = False,
) -> None:
    """Grade ``todo`` (submission, lab id), here or on the cluster, recording each result once
    the preflight has passed; ``live``: with a progress bar on the terminal."""
    labs = list(course.labs)
    graded_labs = sorted({lab_id for _, lab_id in todo if lab_id in labs})
    gate = _Gate()
    tally = _Tally(len(todo), live)
    progress = tally.lines(progress)
    try:

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
                    f"the earlier result is kept {tally.add(result.status)}"
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
            result.digest = digests[submission]
            when = submitted_at(submission)
            result.submitted_at = when.isoformat() if when else ""
            write_text(path, result.to_json())
            progress(
                f"  {submission.student} ({lab_id}): {result.status}, {result.total:g}/{result.max:g} "
                f"({result.seconds:.0f} s) {tally.add(result.status)}"
            )

        if client is not None:
            gate.run(lambda: todo and cluster.preflight_workers(client, course, graded_labs, run))
            gate.wait()
            early = _prepare_reports_early(out, course, graded_labs, gate)
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
            early = _prepare_reports_early(out, course, graded_labs, gate)
            local.grade_here(run, todo, labs, jobs, work, record, progress, ready=gate.wait)
        early.join()
    finally:
        tally.close()


class _Tally:
    """How far a run is, for the instructor's eyes only (no grade reads a clock): the
    submissions done of the run's, by status, and when the rest should be done at this pace.
    ``live``: a progress bar on the terminal (stderr) too, the lines printed above it."""

    def __init__(self, total: int, live: bool = False):
        self.total, self.started = total, time.monotonic()
        self.statuses: dict[str, int] = {}
        self.lock = threading.Lock()
        self.bar = None
        if live and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="notebook", desc="grading", dynamic_ncols=True)

    def add(self, status: Status) -> str:
        """Count one more finished submission; the line's tail: "[3/40: 3 graded; ~12 min left]"."""
        with self.lock:
            self.statuses[status.value] = self.statuses.get(status.value, 0) + 1
            done = sum(self.statuses.values())
            counts = ", ".join(f"{n} {name}" for name, n in sorted(self.statuses.items()))
            left = (time.monotonic() - self.started) / done * (self.total - done)
            if self.bar is not None:
                self.bar.set_postfix_str(counts, refresh=False)
                self.bar.update(1)
        eta = f"; ~{duration(left)} left" if done < self.total else ""
        return f"[{done}/{self.total}: {counts}{eta}]"

    def lines(self, progress: Callable[[str], None]) -> Callable[[str], None]:
        """``progress``, or, under a live bar, lines written above the bar."""
        if self.bar is None:
            return progress
        bar = self.bar
        return lambda text: bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def _holds_nothing(out: Path) -> bool:
    """True when ``out`` holds no result yet, only what a run makes before one."""
    return {path.name for path in out.iterdir()} <= {".lock", WORK, ".grading-seed"}


def _owed(out: Path, lab: str, submission: Submission, current: str) -> bool:
    """True when a submission has no usable result yet (none, unreadable, a grader error), or
    its file changed since (its sha256 ``current`` is not the one graded; a result from before
    digests were kept counts as unchanged)."""
    stored = _usable(_result_path(out, lab, submission))
    return stored is None or (stored.digest is not None and stored.digest != current)


def _kept(path: Path) -> bool:
    """True when ``path`` holds a usable result (one a grader error must not replace)."""
    return _usable(path) is not None


def _usable(path: Path) -> SubmissionResult | None:
    """The result ``path`` holds, read once; None when there is none, it cannot be read, or it
    is a grader error (owed again)."""
    try:
        stored = SubmissionResult.read(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return None if stored.status.needs_rerun else stored


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
            fill_gradebook(out_book(gradebook), lab, [])


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
