"""Grade a class on the workers of a Dask scheduler: submissions go out as bytes, results come back.

The client (``cnn-course grade --scheduler tcp://HOST:8786``) reads each submission safely, as a
local run does, and sends its bytes to a worker with the course's grading content (a small
archive of ``source/``, ``autograder/`` and the released notebooks). The worker grades it with
``local.grade_submission`` (the code a local run uses: its own worker process, sandbox and
judge) against its own data root, and returns the typed result with the executed notebook. Only
the client writes the output folder, so resuming, the lock and the reports work as in a local run.
A worker that dies mid-task has its task run again elsewhere by Dask; each student's result is
written once, under its own name, whichever attempt finished.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path

from cnn_course import data
from cnn_course.errors import CourseError

from ..course import Course
from ..sandbox import sandbox_available
from . import preflight
from .job import GradingRun, course_of
from .local import grade_submission
from .results import Graded, Status, SubmissionResult
from .submissions import Submission, screen

__all__ = [
    "COURSE_ARCHIVE_LIMIT",
    "CONNECT_TIMEOUT",
    "WORKER_WAIT",
    "connect",
    "course_archive",
    "grade_on_cluster",
    "grade_task",
    "preflight_workers",
    "tools_fingerprint",
    "worker_preflight",
    "worker_problem",
]

CONNECT_TIMEOUT = 10  # seconds to reach the scheduler
WORKER_WAIT = 60  # seconds to wait for a first worker
COURSE_ARCHIVE_LIMIT = 64_000_000  # bytes: the course's grading content sent to each task
_COURSE_PARTS = ("source", "autograder", "notebooks/student")
_unpacking = threading.Lock()


def connect(address: str, sandbox: bool, progress: Callable[[str], None] = print):
    """A client of the scheduler at ``address`` with at least one worker, every worker checked.

    Each worker must run the same grading code as this machine, reach its data root
    (``$CNN_COURSE_DATA`` on the worker) and, unless ``sandbox`` is False, have bubblewrap.
    """
    from distributed import Client

    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise CourseError(
            f"Cannot reach the Dask scheduler at {address!r} ({type(error).__name__}: "
            f"{str(error)[:200]}). Expected a running `dask scheduler`, as tcp://HOST:8786: start "
            "one on that machine and its workers with `dask worker tcp://HOST:8786`, or grade on "
            "this machine without --scheduler."
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT)
        except TimeoutError:
            raise CourseError(
                f"The Dask scheduler at {address} has no workers after {WORKER_WAIT} s. Start "
                f"some with `dask worker {address} --nthreads 1` on each grading machine (see "
                "README, Grading across machines)."
            ) from None
        answers = client.run(worker_problem, tools_fingerprint(), sandbox)
        problems = [f"{worker}: {problem}" for worker, problem in answers.items() if problem]
        if problems:
            raise CourseError(
                f"{len(problems)} of the {len(answers)} Dask workers at {address} cannot grade: "
                + "; ".join(problems)
                + ". Fix these workers (or stop them), then run the same command again."
            )
        threads = sum(client.nthreads().values())
        progress(f"Dask scheduler {address}: {len(answers)} workers, {threads} threads")
    except BaseException:
        client.close()
        raise
    return client


def grade_on_cluster(
    client,
    run: GradingRun,
    todo: list[tuple[Submission, str]],
    labs: list[str],
    course: Course,
    record: Callable[[Submission, str, Graded], None],
) -> None:
    """Grade ``todo`` (submission, lab) on the cluster; ``record`` each result as it arrives.

    At most a few tasks per worker thread are in flight, so a large class is read and sent as
    the workers free up, never held in memory whole. Each worker grades with ``run``'s seed and
    limits against its own copy of the course and its own data root.
    """
    from distributed import KilledWorker, as_completed

    archive = course_archive(course)
    window = max(4, 2 * sum(client.nthreads().values()))
    pending = iter(todo)
    owners: dict[str, tuple[Submission, str]] = {}
    running = as_completed(loop=client.loop)
    shared = run.to_dict()

    def submit_next() -> bool:
        for submission, lab_id in pending:
            screened = screen(submission, lab_id, labs)
            if isinstance(screened, Graded):  # invalid: nothing to send
                record(submission, lab_id, screened)
                continue
            future = client.submit(
                grade_task,
                archive,
                shared,
                lab_id,
                submission.student,
                screened,
                key=f"cnn-course-grade-{lab_id}-{submission.student}-{uuid.uuid4().hex[:8]}",
                pure=False,
            )
            owners[future.key] = (submission, lab_id)
            running.add(future)
            return True
        return False

    for _ in range(window):
        if not submit_next():
            break
    for future in running:
        submission, lab_id = owners.pop(future.key)
        try:
            result_json, executed = future.result()
        except KilledWorker as error:  # it took down a worker each time Dask tried it
            points = {qid: q.points for qid, q in course.lab(lab_id).graded.items()}
            reason = (
                f"the Dask workers grading it died each time it was tried ({error}); "
                "look at it by hand, or regrade it with --force"
            )
            graded = Graded(
                SubmissionResult.from_tests(Status.CRASHED, reason, [], points, lab=lab_id), None
            )
        except CourseError as error:
            raise CourseError(
                f"A Dask worker could not grade {submission.student} ({lab_id}): {error}"
            ) from None
        except Exception as error:
            raise CourseError(
                f"A Dask worker failed on {submission.student} ({lab_id}): "
                f"{type(error).__name__}: {str(error)[:300]}. Results so far are kept in the "
                "output folder; fix the worker and run the same command again to grade the rest."
            ) from None
        else:
            graded = Graded(SubmissionResult.from_json(result_json), executed)
        future.release()
        record(submission, lab_id, graded)
        submit_next()


def _worker_run(archive: bytes, shared: dict, base: Path) -> GradingRun:
    """The client's run as this worker grades it: the course unpacked here, its own data root
    and cache, the client's seed and limits (and no judge server: each worker judges alone)."""
    client_run = GradingRun.from_dict(shared)
    course = course_of(str(_unpack(archive, base)))
    return GradingRun.here(
        course,
        client_run.seed,
        _worker_data_root(),
        sandboxed=client_run.sandboxed,
        cell_timeout=client_run.cell_timeout,
    )


def grade_task(
    archive: bytes, shared: dict, lab: str, student: str, content: bytes
) -> tuple[str, bytes | None]:
    """On a Dask worker: grade one submission as a local run does; its result as JSON, and
    its executed notebook."""
    from distributed import get_worker

    worker = get_worker()
    base = Path(worker.local_directory) / "cnn-course"
    base.mkdir(exist_ok=True)
    try:
        run = _worker_run(archive, shared, base)
    except CourseError as error:
        raise CourseError(f"worker {worker.address}: {error}") from None
    (base / "work").mkdir(exist_ok=True)
    graded = grade_submission(run, lab, student, content, base / "work")
    return graded.result.to_json(), graded.executed


def preflight_workers(client, course: Course, labs: list[str], run: GradingRun) -> None:
    """Run ``worker_preflight`` on every worker at once; PreflightFailed naming each worker
    that cannot grade, and why, before any submission is sent."""
    archive = course_archive(course)
    answers = client.run(worker_preflight, archive, run.to_dict(), labs)
    failed = {worker: lines for worker, lines in answers.items() if lines}
    if failed:
        details = "\n".join(
            f"  - {worker}: {line}" for worker, lines in sorted(failed.items()) for line in lines
        )
        raise preflight.PreflightFailed(
            f"{len(failed)} of the {len(answers)} Dask workers cannot grade; nothing was "
            f"graded and no row was written:\n{details}\nFix these workers (or stop them), "
            "then run the same command again (`cnn-course doctor` on a worker checks it alone)."
        )


def worker_preflight(archive: bytes, shared: dict, labs: list[str], dask_worker=None) -> list[str]:
    """On a Dask worker (``client.run`` passes it as ``dask_worker``): the checks a local run
    makes before grading, its own sandbox, data root and a kernel graded as a submission for
    each lab (with a judge of its own); the failed ones, as lines (none: it can grade)."""
    base = Path(dask_worker.local_directory) / "cnn-course"
    base.mkdir(exist_ok=True)
    try:
        run = _worker_run(archive, shared, base)
    except CourseError as error:
        return [f"data root: {error}"]
    course = course_of(run.course)
    found = preflight.environment_checks(course, Path(run.data_root), run.sandboxed)
    if not any(check.ok is False for check in found):
        (base / "work").mkdir(exist_ok=True)
        found += preflight.kernel_checks(run, labs, base / "work")
    return [f"{check.name}: {check.detail}" for check in found if check.ok is False]


def worker_problem(fingerprint: str, sandbox: bool) -> str | None:
    """On a Dask worker: why it cannot grade for a client with these tools, or None."""
    if tools_fingerprint() != fingerprint:
        return (
            "its cnn-course tools differ from this machine's; install the same version of "
            "cnn-course[instructor] on every worker"
        )
    if sandbox and (reason := sandbox_available()):
        return f"cannot sandbox student code ({reason}); install bubblewrap on it"
    try:
        _worker_data_root()
    except CourseError as error:
        return f"{error} (set CNN_COURSE_DATA for the worker)"
    return None


@cache
def _worker_data_root() -> Path:
    """The worker's data root (its ``$CNN_COURSE_DATA``), checked and its cache warmed once."""
    root = data.resolve_root(None).path
    preflight.warm_data(root)
    return root


@cache
def tools_fingerprint() -> str:
    """A digest of the grading code (both packages' sources and templates): what must match."""
    import cnn_course
    import cnn_course_instructor

    hasher = hashlib.sha256()
    for package in (cnn_course, cnn_course_instructor):
        folder = Path(package.__file__).parent
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                hasher.update(str(path.relative_to(folder.parent)).encode() + b"\0")
                hasher.update(path.read_bytes())
    return hasher.hexdigest()


def course_archive(course: Course) -> bytes:
    """The course's grading content as a tar archive: its lab sources, hidden tests and
    released notebooks (regular files only), the same bytes for the same content."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for part in _COURSE_PARTS:
            folder = course.root / part
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.is_symlink() or not path.is_file() or "__pycache__" in path.parts:
                    continue
                info = tarfile.TarInfo(str(path.relative_to(course.root)))
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as file:
                    archive.addfile(info, file)
    content = buffer.getvalue()
    if len(content) > COURSE_ARCHIVE_LIMIT:
        raise CourseError(
            f"The course's grading content ({', '.join(_COURSE_PARTS)} in {course.root}) is "
            f"{len(content):,} bytes; at most {COURSE_ARCHIVE_LIMIT:,} bytes are sent with each task. "
            "Keep large files (data, checkpoints) out of those folders."
        )
    return content


def _unpack(archive: bytes, base: Path) -> Path:
    """The course folder of ``archive`` under ``base``, unpacked once per worker."""
    folder = base / f"course-{hashlib.sha256(archive).hexdigest()[:16]}"
    with _unpacking:
        if not folder.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=".course-", dir=base))
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
                tar.extractall(partial, filter="data")
            partial.chmod(0o755)  # mkdtemp's 0o700 would hide it from the judge's sandbox user
            os.replace(partial, folder)
    return folder
