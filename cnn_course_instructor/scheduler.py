"""Grade a class: each submission in its own worker process, some at once, every result kept."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cnn_course import data
from cnn_course.errors import CourseError

from . import preflight as checks
from .course import Course
from .execute import EXECUTED_LIMIT
from .records import Status, SubmissionResult
from .reports import fill_gradebook, write_reports, write_text
from .safefiles import UnsafeFile, read_regular, remove_tree
from .sandbox import sandbox_available
from .submissions import SUBMISSION_LIMIT, Submission, find_submissions, lab_of, read
from .worker import CELL_TIMEOUT, Job, grading_plan, judge_started, unix_address

__all__ = [
    "SUBMISSION_TIMEOUT",
    "UNKNOWN_LAB",
    "Graded",
    "UnsandboxedWarning",
    "grade_class",
    "grade_submission",
    "grading_settings",
    "preflight",
]

# The grader's safety net for one worker, in wall time from its first cell: a worker that has
# not ended by then is killed and its row is a `grader error`, graded again by a rerun. It is
# never a grade: the student's budgets are the worker's, in CPU time and the notebook's own
# time, which the machine's load does not change (a submission of 15 CPU-seconds takes about 5
# minutes on a machine 20 times oversubscribed).
SUBMISSION_TIMEOUT = 7200
# Every kernel and judge a local run starts computes with one torch thread (see _Started).
ONE_TORCH_THREAD = {"OMP_NUM_THREADS": "1"}
UNKNOWN_LAB = "unknown-lab"  # where submissions go whose lab cannot be told
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
    progress=print,
) -> list[SubmissionResult]:
    """Grade every submission into ``out/<lab>/``; resume where a previous run stopped.

    Each submission's lab is ``lab`` when given, else its nbgrader folder's, else the one its
    notebook's metadata names. Up to ``jobs`` submissions run at once, each in its own worker
    process and sandboxed kernel (one torch thread each). Each result is
    written to ``out/<lab>/results/<student>.json`` as soon as it is known, so an interrupted
    run, even by ``kill -9``, loses at most the submissions in progress. Then each lab's
    ``grades.csv``, feedback pages and the gradebook entries are rewritten from all results.
    A file that cannot be graded (an unusable name, a link, not a regular file, too large) gets
    its own ``invalid`` row. One run at a time may use ``out``: a second one refuses to start.
    ``sandbox=False`` runs student code unsandboxed, with a warning: trusted code only.
    With ``scheduler`` (a Dask scheduler's address), the submissions are graded on its workers
    instead, each with its own sandbox and data root; results come back here, where they are
    written as in a local run (``jobs`` and ``data_root`` are then unused).

    Before any row is written, ``preflight`` checks the ground (here, or on every Dask worker)
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
    submissions_folder = Path(submissions_folder).absolute()
    submissions = find_submissions(submissions_folder, labs)
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
    root = data.resolve_root(data_root)
    if scheduler is None:  # on a cluster, each worker checks its own ground
        checks.require(checks.environment_checks(course, root.path, sandbox))
        warm_data(root.path)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out), _cluster(scheduler, sandbox, progress) as cluster:
        remove_tree(out / WORK)  # what a killed run left: the lock says no run uses it now
        (out / WORK).mkdir()
        return _grade(
            submissions,
            out,
            course,
            labs,
            lab,
            jobs,
            force,
            root.path,
            sandbox,
            cell_timeout,
            progress,
            cluster,
        )


def _cluster(scheduler: str | None, sandbox: bool, progress):
    """A client of the Dask scheduler at ``scheduler``, its workers checked; None: grade here."""
    if scheduler is None:
        return contextlib.nullcontext()
    from .distributed_grading import connect

    return connect(scheduler, sandbox, progress)


def warm_data(data_root: Path) -> None:
    """Fail early if the data is missing, and warm the cache the kernels read."""
    for loader in (data.load_mnist, data.load_cifar10):
        loader("test", root=data_root)


def _grade(
    submissions,
    out,
    course,
    labs,
    lab,
    jobs,
    force,
    data_root,
    sandbox,
    cell_timeout,
    progress,
    cluster=None,
) -> list[SubmissionResult]:
    assigned = [(s, lab_id_of(s, labs, lab)) for s in submissions]
    todo = [(s, lab_id) for s, lab_id in assigned if force or _owed(out, lab_id, s)]
    progress(
        f"{len(submissions)} submissions, {len(submissions) - len(todo)} already graded, "
        f"{len(todo)} to grade"
    )
    seed = _grading_seed(out)
    reported = sorted({lab_id for _, lab_id in assigned} & set(labs))
    graded_labs = sorted({lab_id for _, lab_id in todo if lab_id in labs})

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

    early = None
    if cluster is not None:
        from .distributed_grading import grade_on_cluster, preflight_workers

        gate.run(
            lambda: (
                todo
                and preflight_workers(cluster, course, graded_labs, seed, sandbox, cell_timeout)
            )
        )
        gate.wait()
        early = _prepare_reports_early(out, course, reported, gate)
        grade_on_cluster(cluster, todo, course, labs, seed, sandbox, cell_timeout, record, progress)
    else:
        settings = grading_settings(course, seed, data_root, sandbox, cell_timeout)
        servers = contextlib.ExitStack()
        sockets = servers.enter_context(
            judge_servers(course, set(graded_labs), settings, out / WORK / "judge")
        )
        # The preflight runs while the first workers load (gated): none runs its first cell,
        # and no row is written, before it has passed.
        gate.run(lambda: todo and preflight(course, graded_labs, settings, out / WORK, sockets))
        early = _prepare_reports_early(out, course, reported, gate)
        queue, taking = iter(todo), threading.Lock()

        def take() -> tuple[Submission, str, _Started] | None:
            """The next submission to grade, its worker started and gated; screened-out ones
            are recorded on the way."""
            while True:
                with taking:
                    item = next(queue, None)
                if item is None:
                    return None
                submission, lab_id = item
                screened = screen(submission, lab_id, labs)
                if isinstance(screened, bytes):
                    started = _Started(
                        screened,
                        submission.student,
                        lab_id,
                        course,
                        {**settings, "judge_socket": sockets.get(lab_id, "")},
                        out / WORK,
                        gated=True,
                    )
                    return submission, lab_id, started
                record(submission, lab_id, screened)

        def judged(submission: Submission, lab_id: str, running: _Started) -> None:
            """Record a finished worker's result; a grader error is graded once more first,
            by a worker of its own."""
            graded = running.finish()
            if graded.result.status.needs_rerun:
                progress(f"  {submission.student} ({lab_id}): {graded.result.reason[:200]}; again")
                options = {**settings, "judge_socket": sockets.get(lab_id, "")}
                again = _Started(
                    running.content, submission.student, lab_id, course, options, out / WORK
                )
                graded = again.finish()
            record(submission, lab_id, graded)

        def slot(judging: ThreadPoolExecutor) -> None:
            """Grade submissions one after the other: each one runs while the one before it
            is judged, then the next one's kernel starts (and loads its imports) and gets its
            judge (a process of the lab's judge server)."""
            current, running, waiting = take(), None, None
            try:
                while current is not None:
                    submission, lab_id, running = current
                    gate.wait()
                    running.start()
                    if waiting is not None:  # then the next loads: one process at a time
                        waiting.result()  # beside the one that runs
                    current = take()
                    running.ran()
                    waiting = judging.submit(judged, submission, lab_id, running)
                    running = None
            finally:  # (on an error: what this slot had started ends, ungraded)
                for left in (running, current[2] if current is not None else None):
                    if left is not None:
                        left.cancel()
                if waiting is not None:
                    waiting.result()

        width = max(1, jobs)
        with servers, ThreadPoolExecutor(width) as pool, ThreadPoolExecutor(width) as judging:
            for done in [pool.submit(slot, judging) for _ in range(width)]:
                done.result()
    if early is not None:
        early.join()
    results = [SubmissionResult.read(_result_path(out, lab_id, s)) for s, lab_id in assigned]
    for lab_id in labs:
        mine = [r for r in results if r.lab == lab_id]
        if mine:
            write_reports(out / lab_id, mine, course.lab(lab_id), out / "gradebook.db")
    return results


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


def preflight(
    course: Course, labs: list[str], settings: dict, work_parent: Path, sockets: dict[str, str]
) -> None:
    """Grade, for each lab, a notebook of the lab's setup cell and one image of each dataset,
    exactly as a submission is graded (its own worker, sandboxed kernel and the lab's judge);
    PreflightFailed, with the cause, when it does not come back graded without an error."""
    found = []
    for lab in labs:

        def grade(content: bytes, lab: str = lab) -> Graded:
            options = {**settings, "judge_socket": sockets.get(lab, ""), "restore_locked": False}
            return _Started(content, "preflight", lab, course, options, work_parent).finish()

        found.append(checks.kernel_check(lab, grade, course))
    checks.require(found)


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


def lab_id_of(submission: Submission, labs: list[str], forced: str | None) -> str:
    """The lab a submission is graded as, or ``UNKNOWN_LAB`` when it cannot be told."""
    return lab_of(submission, labs, forced) or UNKNOWN_LAB


def screen(submission: Submission, lab_id: str, labs: list[str]) -> bytes | Graded:
    """The submission's bytes, read safely once, or the ``invalid`` result of a file that cannot
    be graded (an unusable name, an unknown lab, a link, not a regular file, too large)."""

    def invalid(reason: str) -> Graded:
        return Graded(SubmissionResult.from_tests(Status.INVALID, reason, [], {}), None)

    if submission.problem is not None:
        return invalid(submission.problem)
    if lab_id == UNKNOWN_LAB:
        return invalid(
            f"cannot tell which lab this notebook is for (labs: {', '.join(labs)}); "
            "grade it with --lab, or put it in submitted/<student>/<lab>/"
        )
    try:
        return read(submission, SUBMISSION_LIMIT)
    except UnsafeFile as problem:
        return invalid(f"{problem} (at most {SUBMISSION_LIMIT:,} bytes)")


class _exclusive:
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


@dataclass(frozen=True)
class Graded:
    """One submission's result, and its executed notebook (at most ``EXECUTED_LIMIT`` bytes)."""

    result: SubmissionResult
    executed: bytes | None


def grading_settings(
    course: Course, seed: int, data_root: Path, sandbox: bool, cell_timeout: int
) -> dict:
    """What every worker ``Job`` of a run shares: the course, seed, data root and limits here."""
    return {
        "course": str(course.root),
        "seed": seed,
        "data_root": str(Path(data_root).resolve()),
        "cell_timeout": cell_timeout,
        "sandboxed": sandbox,
        "cache_entries": tuple(str(p) for p in data.cache_entries(data_root)),
    }


@contextlib.contextmanager
def judge_servers(
    course: Course, labs: set[str], settings: dict, folder: Path
) -> Iterator[dict[str, str]]:
    """A judge server for each lab (``judge --serve``, sandboxed as a judge is) on a Unix socket
    in ``folder`` (made here, private: it holds the run's seed; a run's own, under ``OUT/.work``,
    where the next run finds and removes what a killed one left); the lab's socket paths. Each
    loads torch, the tests and the images once for the whole run, rather than once a submission
    (2 CPU-seconds); workers connect to it, and start a judge of their own if it is gone. Ended,
    and the folder removed, on exit. Started by the thread that grades: the sandbox ends with
    it."""
    folder = Path(folder)
    folder.mkdir(mode=0o700)
    sockets: dict[str, str] = {}
    try:
        with contextlib.ExitStack() as servers:
            for index, lab in enumerate(sorted(labs)):
                path = folder / f"{index}.sock"
                work = folder / str(index)
                work.mkdir()
                job = Job(lab=lab, notebook="", result="", executed="", work=str(work), **settings)
                try:
                    with (
                        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener,
                        unix_address(path) as address,
                    ):
                        listener.bind(address)
                        listener.listen(64)
                        fd = listener.fileno()
                        servers.enter_context(
                            judge_started(
                                job,
                                ["--serve", str(fd)],
                                pass_fds=(fd,),
                                env=ONE_TORCH_THREAD,
                            )
                        )
                    # (closed here: once the server ends, connecting to it fails)
                except Exception as exc:  # noqa: BLE001 - the workers judge without it
                    warnings.warn(f"no judge server for {lab}: {exc}", stacklevel=2)
                    continue
                sockets[lab] = str(path)
            yield sockets
    finally:
        remove_tree(folder)


def _plan(course: Course, lab: str, seed: int) -> bytes:
    """The probe's plan for a lab and seed, made once per run (and per Dask worker): each
    worker process then starts without torch. One thread at a time: a lab's draw may seed
    torch's global generator, which two threads drawing at once would share."""
    with _PLAN_LOCK:
        return _plan_once(course, lab, seed)


_PLAN_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _plan_once(course: Course, lab: str, seed: int) -> bytes:
    return grading_plan(course.content(lab), seed)


def grade_submission(*submission, **options) -> Graded:
    """Grade one submission's bytes in a worker process of its own, in a folder of its own under
    ``work_parent`` (removed after): the same code on this machine and on a Dask worker; a
    grader error is graded once more. Takes what :class:`_Started` takes, ``gated`` aside."""
    graded = _Started(*submission, **options).finish()
    if graded.result.status.needs_rerun:  # the grader's own failure: once more
        graded = _Started(*submission, **options).finish()
    return graded


class _Started:
    """A submission's worker process, started. A gated one loads its kernel and judge, then
    waits for :meth:`start` (or :meth:`finish`) before its first cell; :meth:`ran` tells when
    its kernel has ended and only the judging is left."""

    def __init__(
        self,
        content: bytes,
        student: str,
        lab: str,
        course: Course,
        settings: dict,
        work_parent: Path,
        gated: bool = False,
    ):
        self.lab, self.gated, self.content = lab, gated, content
        self.points = {qid: q.points for qid, q in course.lab(lab).graded.items()}
        self.started = time.perf_counter()
        self.deadline: float | None = None if gated else self.started + SUBMISSION_TIMEOUT
        self.status, self.heard = -1, b""  # the worker's status pipe (gated), what it said
        self.local = local = Path(tempfile.mkdtemp(prefix=f"{student}-", dir=work_parent))
        told = -1
        try:
            notebook = local / "submission.ipynb"
            notebook.write_bytes(content)  # the grader's own copy: nothing reads the file again
            plan = local / "grader_plan.pt"
            plan.write_bytes(_plan(course, lab, settings["seed"]))
            if gated:
                self.status, told = os.pipe()
            self.job = Job(
                lab=lab,
                notebook=str(notebook),
                result=str(local / "result.json"),
                executed=str(local / "executed.ipynb"),
                work=str(local),
                plan=str(plan),
                gated=gated,
                status_fd=told,
                **settings,
            )
            self.job.write(local / "job.json")
            # One torch thread for the kernel and the judge: a slot's other work (the next
            # submission loading, the one before judged) and the other slots use the other cores.
            env = {**os.environ, **ONE_TORCH_THREAD}
            command = [
                sys.executable,
                "-m",
                "cnn_course_instructor.worker",
                str(local / "job.json"),
            ]
            self.process = subprocess.Popen(
                command,
                cwd=local,
                env=env,
                stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                pass_fds=(told,) if gated else (),
            )
        except BaseException:
            self._close()
            remove_tree(local)
            raise
        finally:
            if told >= 0:
                os.close(told)  # the worker's end

    def start(self) -> None:
        """Let a gated worker run its first cell once it waits for it (kernel and judge loaded,
        or ended: an invalid notebook, say); its time limit counts from here."""
        if self.deadline is not None:
            return
        deadline = time.perf_counter() + SUBMISSION_TIMEOUT
        self._heard("ready", deadline)
        self.started, self.deadline = time.perf_counter(), deadline
        with contextlib.suppress(OSError):  # (one that already ended has nothing to read it)
            self.process.stdin.write("go\n")
            self.process.stdin.flush()

    def ran(self) -> None:
        """Wait until the started worker's kernel has ended (or the worker, or its time)."""
        self.start()
        self._heard("ran", self.deadline)

    def _heard(self, word: str, deadline: float) -> None:
        """Wait until the worker says ``word`` on its status pipe, closes it, or ``deadline``."""
        line = f"{word}\n".encode()
        while self.status >= 0 and line not in self.heard:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([self.status], [], [], left)[0]:
                return
            said = os.read(self.status, 4096)
            if not said:  # the worker ended
                self._close()
            self.heard = self.heard[-64:] + said

    def _close(self) -> None:
        if self.status >= 0:
            os.close(self.status)
            self.status = -1

    def _failed(self, status: Status, reason: str) -> SubmissionResult:
        return SubmissionResult.from_tests(
            status,
            reason,
            [],
            self.points,
            lab=self.lab,
            seconds=time.perf_counter() - self.started,
        )

    def finish(self) -> Graded:
        """Let the worker run (gated), wait for it, and return its result; the folder goes."""
        job, process = self.job, self.process
        try:
            self.start()
            left = max(0.0, self.deadline - time.perf_counter())
            _, stderr = process.communicate(timeout=left)
            executed = None
            if Path(job.executed).is_file():  # written by the worker within EXECUTED_LIMIT
                executed = read_regular(Path(job.executed), EXECUTED_LIMIT, "the executed notebook")
            if Path(job.result).is_file():
                return Graded(SubmissionResult.read(Path(job.result)), executed)
            tail = (stderr or "").strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
            reason = (
                f"the grading process failed on the grader's side ({tail[0][:300]}); rerun the "
                "same command to grade it"
            )
            return Graded(self._failed(Status.GRADER_ERROR, reason), executed)
        except subprocess.TimeoutExpired:
            self._kill()
            reason = (
                f"the grading process had not ended after {SUBMISSION_TIMEOUT} s (the grader's "
                "safety net; the machine may be overloaded); rerun the same command to grade it"
            )
            return Graded(self._failed(Status.GRADER_ERROR, reason), None)
        finally:
            self._close()
            remove_tree(self.local)

    def cancel(self) -> None:
        """End the worker without grading (it has not been let run); the folder goes."""
        try:
            self._kill()
        finally:
            self._close()
            remove_tree(self.local)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker and all it started
        self.process.communicate()
