"""Grade submissions on this machine: slots, each running one submission while the one before
it is judged and the next one loads; a judge server per lab; a worker process per submission.
"""

from __future__ import annotations

import contextlib
import functools
import os
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
from pathlib import Path

from ..course import Course
from ..safefiles import read_regular, remove_tree
from .job import GradingRun, Job, course_of
from .kernel import EXECUTED_LIMIT
from .results import Graded, Status, SubmissionResult
from .submissions import Submission, screen
from .worker import grading_plan, judge_started, unix_address

__all__ = [
    "ONE_TORCH_THREAD",
    "SUBMISSION_TIMEOUT",
    "Started",
    "grade_here",
    "grade_submission",
    "judge_servers",
    "probe_plan",
]

# The grader's safety net for one worker, in wall time from its first cell: a worker that has
# not ended by then is killed and its row is a `grader error`, graded again by a rerun. It is
# never a grade: the student's budgets are the worker's, in CPU time and the notebook's own
# time, which the machine's load does not change (a submission of 15 CPU-seconds takes about 5
# minutes on a machine 20 times oversubscribed).
SUBMISSION_TIMEOUT = 7200
# Every kernel and judge a local run starts computes with one torch thread (see Started).
ONE_TORCH_THREAD = {"OMP_NUM_THREADS": "1"}

Record = Callable[[Submission, str, Graded], None]


def grade_here(
    run: GradingRun,
    todo: list[tuple[Submission, str]],
    labs: list[str],
    jobs: int,
    work: Path,
    record: Record,
    progress: Callable[[str], None],
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Grade ``todo`` (submission, lab) in ``jobs`` slots on this machine, ``record``ing each
    result. ``ready`` is called before a worker runs its first cell (the run's preflight
    passes, or raises why not); the workers load meanwhile."""
    queue, taking = iter(todo), threading.Lock()

    def take() -> tuple[Submission, str, Started] | None:
        """The next submission to grade, its worker started and gated; screened-out ones are
        recorded on the way."""
        while True:
            with taking:
                item = next(queue, None)
            if item is None:
                return None
            submission, lab_id = item
            screened = screen(submission, lab_id, labs)
            if isinstance(screened, bytes):
                started = Started(run, lab_id, submission.student, screened, work, gated=True)
                return submission, lab_id, started
            record(submission, lab_id, screened)

    def judged(submission: Submission, lab_id: str, running: Started) -> None:
        """Record a finished worker's result; a grader error is graded once more first, by a
        worker of its own."""
        graded = running.finish()
        if graded.result.status.needs_rerun:
            progress(f"  {submission.student} ({lab_id}): {graded.result.reason[:200]}; again")
            graded = Started(run, lab_id, submission.student, running.content, work).finish()
        record(submission, lab_id, graded)

    def slot(judging: ThreadPoolExecutor) -> None:
        """Grade submissions one after the other: each one runs while the one before it is
        judged, then the next one's kernel starts (and loads its imports) and gets its judge
        (a process of the lab's judge server)."""
        current, running, waiting = take(), None, None
        try:
            while current is not None:
                submission, lab_id, running = current
                ready()
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
    with ThreadPoolExecutor(width) as pool, ThreadPoolExecutor(width) as judging:
        for done in [pool.submit(slot, judging) for _ in range(width)]:
            done.result()


@contextlib.contextmanager
def judge_servers(run: GradingRun, labs: set[str], folder: Path) -> Iterator[dict[str, str]]:
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
                job = Job(run=run, lab=lab, notebook="", result="", executed="", work=str(work))
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


def probe_plan(course: Course, lab: str, seed: int) -> bytes:
    """The probe's plan for a lab and seed, made once per run (and per Dask worker): each
    worker process then starts without torch. One thread at a time: a lab's draw may seed
    torch's global generator, which two threads drawing at once would share."""
    with _PLAN_LOCK:
        return _plan_once(course, lab, seed)


_PLAN_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _plan_once(course: Course, lab: str, seed: int) -> bytes:
    return grading_plan(course.content(lab), seed)


def grade_submission(
    run: GradingRun, lab: str, student: str, content: bytes, work_parent: Path
) -> Graded:
    """Grade one submission's bytes in a worker process of its own, in a folder of its own under
    ``work_parent`` (removed after): the same code on this machine and on a Dask worker; a
    grader error is graded once more."""
    graded = Started(run, lab, student, content, work_parent).finish()
    if graded.result.status.needs_rerun:  # the grader's own failure: once more
        graded = Started(run, lab, student, content, work_parent).finish()
    return graded


class Started:
    """A submission's worker process, started. A gated one loads its kernel and judge, then
    waits for :meth:`start` (or :meth:`finish`) before its first cell; :meth:`ran` tells when
    its kernel has ended and only the judging is left."""

    def __init__(
        self,
        run: GradingRun,
        lab: str,
        student: str,
        content: bytes,
        work_parent: Path,
        *,
        gated: bool = False,
        restore_locked: bool = True,
    ):
        self.run, self.lab, self.student, self.content = run, lab, student, content
        self.work_parent, self.gated = work_parent, gated
        course = course_of(run.course)
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
            plan.write_bytes(probe_plan(course, lab, run.seed))
            if gated:
                self.status, told = os.pipe()
            self.job = Job(
                run=run,
                lab=lab,
                notebook=str(notebook),
                result=str(local / "result.json"),
                executed=str(local / "executed.ipynb"),
                work=str(local),
                plan=str(plan),
                restore_locked=restore_locked,
                gated=gated,
                status_fd=told,
            )
            self.job.write(local / "job.json")
            # One torch thread for the kernel and the judge: a slot's other work (the next
            # submission loading, the one before judged) and the other slots use the other cores.
            env = {**os.environ, **ONE_TORCH_THREAD}
            command = [
                sys.executable,
                "-m",
                "cnn_course_instructor.grading.worker",
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
