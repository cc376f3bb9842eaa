"""Grade a class: each submission in its own worker process, some at once, every result kept."""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cnn_course import data
from cnn_course.errors import CourseError

from .course import Course
from .records import Status, SubmissionResult
from .reports import write_reports, write_text
from .sandbox import sandbox_available
from .submissions import Submission, find_submissions, lab_of
from .worker import CELL_TIMEOUT, Job

__all__ = ["SANDBOX_UID", "SUBMISSION_TIMEOUT", "UNKNOWN_LAB", "grade_class"]

SANDBOX_UID = 61000  # student code runs as SANDBOX_UID + slot, an id no account uses
SUBMISSION_TIMEOUT = 900
UNKNOWN_LAB = "unknown-lab"  # where submissions go whose lab cannot be told
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # where the installed packages live


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
    progress=print,
) -> list[SubmissionResult]:
    """Grade every submission into ``out/<lab>/``; resume where a previous run stopped.

    Each submission's lab is ``lab`` when given, else its nbgrader folder's, else the one its
    notebook's metadata names. Up to ``jobs`` submissions run at once, each in its own worker
    process and sandboxed kernel (one torch thread each when ``jobs`` > 1). Each result is
    written to ``out/<lab>/results/<student>.json`` as soon as it is known, so an interrupted
    run, even by ``kill -9``, loses at most the submissions in progress. Then each lab's
    ``grades.csv``, feedback pages and the gradebook entries are rewritten from all results.
    """
    labs = list(course.labs)
    if lab is not None:
        course.lab(lab)  # refuse an unknown --lab at once
    for lab_id in labs:
        course.content(lab_id)  # every lab's hidden tests load and agree with its front matter
    submissions_folder = Path(submissions_folder).absolute()
    submissions = find_submissions(submissions_folder, labs)
    if sandbox and (reason := sandbox_available()):
        raise CourseError(
            f"Cannot sandbox student code: {reason}. Run as root, or pass --no-sandbox (trusted code only)."
        )
    root = data.resolve_root(data_root)
    # Fail early if data is missing, and warm the cache the kernels read.
    for loader in (data.load_mnist, data.load_cifar10):
        loader("test", root=root.path)
    if sandbox:
        _share_read_only(data.cache_dir())
        _remove_orphaned_scratch()
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    assigned = [(s, lab_of(s, labs, lab) or UNKNOWN_LAB) for s in submissions]
    for lab_id in {lab_id for _, lab_id in assigned}:
        (out / lab_id / "results").mkdir(parents=True, exist_ok=True)
    todo = [
        (s, lab_id) for s, lab_id in assigned if force or not _result_path(out, lab_id, s).is_file()
    ]
    progress(
        f"{len(submissions)} submissions, {len(submissions) - len(todo)} already graded, "
        f"{len(todo)} to grade"
    )
    settings = {
        "course": str(course.root),
        "seed": _grading_seed(out),
        "data_root": str(root.path),
        "cell_timeout": cell_timeout,
        "hide": tuple(str(p) for p in _hidden_paths(course.root, out, submissions_folder)),
        "keep": tuple(str(p) for p in _kept_paths(root.path)),
    }
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(max(1, jobs)):
        slots.put(slot)

    def work(item: tuple[Submission, str]) -> None:
        submission, lab_id = item
        if lab_id == UNKNOWN_LAB:
            result = SubmissionResult.from_tests(
                Status.INVALID,
                f"cannot tell which lab this notebook is for (labs: {', '.join(labs)}); "
                "grade it with --lab, or put it in submitted/<student>/<lab>/",
                [],
                {},
            )
        else:
            slot = slots.get()
            try:
                uid = SANDBOX_UID + slot if sandbox else None  # one uid per concurrent sandbox
                threads = 1 if jobs > 1 else None
                result = _run_worker(submission, lab_id, settings, uid, threads, out, course)
            finally:
                slots.put(slot)
        result.student, result.lab, result.notebook = (
            submission.student,
            lab_id,
            str(submission.path),
        )
        write_text(_result_path(out, lab_id, submission), result.to_json())
        progress(
            f"  {submission.student} ({lab_id}): {result.status}, {result.total:g}/{result.max:g} "
            f"({result.seconds:.0f} s)"
        )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(work, todo))
    results = [SubmissionResult.read(_result_path(out, lab_id, s)) for s, lab_id in assigned]
    for lab_id in labs:
        mine = [r for r in results if r.lab == lab_id]
        if mine:
            write_reports(out / lab_id, mine, course.lab(lab_id), out / "gradebook.db")
    return results


def _result_path(out: Path, lab: str, submission: Submission) -> Path:
    return out / lab / "results" / f"{submission.student}.json"


def _share_read_only(folder: Path) -> None:
    """Let the sandboxed kernels read the data cache (they cannot write to it)."""
    if not folder.is_dir():
        return
    for path in [folder, *folder.rglob("*")]:
        if path.stat().st_uid == os.geteuid():
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def _hidden_paths(course_root: Path, out: Path, submissions: Path) -> list[Path]:
    """What student code must not see: the course repository and the folder the packages are
    installed from (but the student runtime), the grading output, every submission, the home."""
    roots = {course_root.resolve()}
    installed = any(
        PACKAGE_ROOT.is_relative_to(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix)
    )
    if not installed:  # a development checkout (pip install -e): hide all of it but the runtime
        roots.add(PACKAGE_ROOT)
    hidden = [entry for root in roots for entry in root.iterdir() if entry.name != "cnn_course"]
    return [*hidden, out, submissions, Path.home()]


def _kept_paths(data_root: Path) -> list[Path]:
    """What the kernel needs even where it lies inside a hidden tree."""
    return [
        PACKAGE_ROOT / "cnn_course",
        Path(sys.prefix),
        Path(sys.base_prefix),
        data_root.resolve(),
        data.cache_dir(),
    ]


def _grading_seed(out: Path) -> int:
    """One secret seed per output folder: the same inputs on resume, new ones for a new class."""
    path = out / ".grading-seed"
    if not path.is_file():
        write_text(path, str(secrets.randbits(31)))
    return int(path.read_text())


def _sandbox_root() -> Path:
    """Where scratch folders go: ``$CNN_COURSE_SANDBOX_ROOT``, else /var/lib/cnn-course/sandboxes.

    Not under /tmp: world-writable folders are hidden from student code.
    """
    root = Path(os.environ.get("CNN_COURSE_SANDBOX_ROOT") or "/var/lib/cnn-course/sandboxes")
    root.mkdir(parents=True, exist_ok=True)
    for folder in (root, root.parent):
        if folder.stat().st_uid == os.geteuid():
            folder.chmod(0o711)  # traversable, not listable
    return root


def _remove_orphaned_scratch() -> None:
    """Delete scratch folders of graders that no longer run (killed before they could clean up)."""
    for folder in _sandbox_root().iterdir():
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _run_worker(
    submission: Submission,
    lab: str,
    settings: dict,
    uid: int | None,
    threads: int | None,
    out: Path,
    course: Course,
) -> SubmissionResult:
    started = time.perf_counter()
    points = {qid: q.points for qid, q in course.lab(lab).graded.items()}
    local = Path(tempfile.mkdtemp(prefix=f"grade-{submission.student}-"))
    # The grader's pid in the name lets a later run remove what a killed run left behind.
    scratch = Path(
        tempfile.mkdtemp(prefix=f"{os.getpid()}-{submission.student}-", dir=_sandbox_root())
    )
    if uid is not None:
        os.chown(scratch, uid, uid)
    scratch.chmod(0o700)
    job = Job(
        lab=lab,
        notebook=str(submission.path.absolute()),
        result=str(local / "result.json"),
        executed=str(local / "executed.ipynb"),
        scratch=str(scratch),
        uid=uid,
        **settings,
    )
    job.write(local / "job.json")
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # the kernel inherits it: one torch thread each
    command = [sys.executable, "-m", "cnn_course_instructor.worker", str(local / "job.json")]
    process = subprocess.Popen(
        command,
        cwd=local,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def failed(status: Status, reason: str) -> SubmissionResult:
        return SubmissionResult.from_tests(
            status, reason, [], points, lab=lab, seconds=time.perf_counter() - started
        )

    try:
        _, stderr = process.communicate(timeout=SUBMISSION_TIMEOUT)
        if Path(job.executed).is_file():
            (out / lab / "executed").mkdir(exist_ok=True)
            shutil.copy(job.executed, out / lab / "executed" / f"{submission.student}.ipynb")
        if Path(job.result).is_file():
            return SubmissionResult.read(Path(job.result))
        tail = (stderr or "").strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
        return failed(Status.CRASHED, f"the grading process failed: {tail[0][:300]}")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the worker, its kernel and all they started
        process.wait()
        return failed(Status.TIMEOUT, f"still running after {SUBMISSION_TIMEOUT} s")
    finally:
        shutil.rmtree(local, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
