"""Grade a class: find submissions, run each in its own process, keep every result, report."""

from __future__ import annotations

import csv
import html
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
import torch

from cnn_course import data
from cnn_course.errors import CourseError

from .execute import OUTPUT_LIMIT, run_notebook
from .hidden_tests import GradingContext, grading_inputs, run_hidden_tests
from .probe import probe_source
from .sandbox import Limits, kernel_argv, sandbox_available

__all__ = ["Submission", "find_submissions", "grade_class", "grade_notebook", "load_questions"]

REPO = Path(__file__).resolve().parents[1]
LAB_SOURCE = REPO / "source" / "cnn_lab.md"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
CELL_TIMEOUT = 300
SANDBOX_UID = 61000  # student code runs as SANDBOX_UID + slot, an id no account uses
SUBMISSION_TIMEOUT = 900


@dataclass(frozen=True)
class Submission:
    """One student's notebook."""

    student: str
    path: Path


def load_questions(source: Path = LAB_SOURCE) -> tuple[str, dict[str, float]]:
    """The assignment name and each question's points, as declared in the lab's front matter."""
    from cnn_course.build import read_source

    config = read_source(source).metadata["cnn_course"]
    points = {question: float(spec["points"]) for question, spec in config["questions"].items()}
    return str(config.get("assignment", source.stem)), points


def find_submissions(folder: Path, assignment: str, notebook: str) -> list[Submission]:
    """Submissions in nbgrader's ``submitted/<student>/<assignment>/`` layout, or ``<student>.ipynb``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CourseError(f"{folder} is not a folder of submissions.")
    if (folder / "submitted").is_dir():
        folder = folder / "submitted"
    nested = sorted(path for path in folder.glob(f"*/{assignment}") if path.is_dir())
    submissions = []
    if nested:
        for assignment_folder in nested:
            student = assignment_folder.parent.name
            candidates = sorted(assignment_folder.glob("*.ipynb"))
            preferred = assignment_folder / f"{notebook}.ipynb"
            path = preferred if preferred.exists() else (candidates[0] if candidates else preferred)
            submissions.append(Submission(student, path))
    else:
        submissions = [Submission(path.stem, path) for path in sorted(folder.glob("*.ipynb"))]
    if not submissions:
        raise CourseError(
            f"No submissions found in {folder}: expected nbgrader's submitted/<student>/{assignment}/"
            f"{notebook}.ipynb layout or a flat folder of <student>.ipynb files."
        )
    bad = [s.student for s in submissions if not STUDENT_ID.match(s.student)]
    if bad:
        raise CourseError(
            f"Unusable student ids (letters, digits and _.@+- only): {', '.join(bad[:5])}"
        )
    return submissions


# --- one submission, in its own process ----------------------------------------------------


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs to grade one submission (passed to it as JSON)."""

    notebook: str
    result: str
    executed: str
    scratch: str
    seed: int
    data_root: str
    points: dict[str, float]  # question id -> points, read once from the lab by the parent
    cell_timeout: int = CELL_TIMEOUT
    uid: int | None = None  # None: no sandbox (development only)
    hide: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()


def grade_notebook(job: Job) -> dict:
    """Execute one submission with the probe appended, then judge the plain record it leaves.

    Runs in a worker process of its own; the student's code runs in a Jupyter kernel, in a
    sandbox when ``job.uid`` is set. Returns the result as plain JSON-ready data.
    """
    started = time.perf_counter()
    points = job.points
    try:
        notebook = nbformat.read(job.notebook, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # any unreadable file is an invalid notebook, whatever the reason
        return _outcome(
            "invalid notebook", f"{type(exc).__name__}: {str(exc)[:300]}", [], points, started
        )
    if not any(cell.cell_type == "code" for cell in notebook.cells):
        return _outcome("invalid notebook", "the notebook has no code cells", [], points, started)
    scratch = Path(job.scratch)
    inputs = grading_inputs(job.seed)
    inputs_path, probe_path = scratch / "grader_inputs.pt", scratch / "probe.pt"
    torch.save(inputs, inputs_path)
    inputs_path.chmod(0o644)
    notebook.cells.append(
        nbformat.v4.new_code_cell(probe_source(str(inputs_path), str(probe_path)))
    )
    env = {
        "CNN_COURSE_FAST": "1",
        "CNN_COURSE_DATA": job.data_root,
        "CNN_COURSE_CACHE": str(data.cache_dir()),
        "MPLBACKEND": "Agg",
    }
    kernel = None
    if job.uid is not None:
        for name in (
            "HOME",
            "MPLCONFIGDIR",
            "IPYTHONDIR",
            "TMPDIR",
            "JUPYTER_RUNTIME_DIR",
            "JUPYTER_DATA_DIR",
        ):
            env[name] = str(scratch)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / ".torchinductor")  # torch would use /tmp
        env["USER"] = env["LOGNAME"] = "student"
        paths = [Path(p) for p in job.keep]
        kernel = kernel_argv(job.uid, scratch, [Path(p) for p in job.hide], paths, Limits())
    execution = run_notebook(
        notebook,
        cwd=scratch,
        env=env,
        cell_timeout=job.cell_timeout,
        allow_errors=True,
        kernel_argv=kernel,
    )
    notebook.cells.pop()  # the probe is the grader's, not part of the student's record
    nbformat.write(notebook, job.executed)
    errors = [
        p.text.splitlines()[-1] if p.text.strip() else p.text
        for p in execution.problems
        if p.kind == "error"
    ]
    notes = "; ".join(dict.fromkeys(errors[:8]))
    if execution.truncated:
        notes = f"output over {OUTPUT_LIMIT:,} bytes was dropped; {notes}"
    if not probe_path.is_file():
        status = {"CellTimeoutError": "timeout"}.get(execution.error_name or "", "crashed")
        if any(error.startswith("MemoryError") for error in errors):
            status = "out of memory"
        what = execution.error_name or "no grading record was written"
        return _outcome(
            status,
            f"the kernel stopped before grading ({what}). {notes}".strip(),
            [],
            points,
            started,
        )
    try:
        probe = torch.load(probe_path, weights_only=True)
    except Exception as exc:  # a record the student's code tampered with is unusable
        return _outcome("crashed", f"the grading record is unreadable: {exc}", [], points, started)
    results = run_hidden_tests(probe, inputs, points, GradingContext(Path(job.data_root)))
    return _outcome("graded", notes, [r.to_dict() for r in results], points, started)


def _outcome(
    status: str, reason: str, results: list[dict], points: dict[str, float], started: float
) -> dict:
    scores = {question: 0.0 for question in points}
    for result in results:
        scores[result["question"]] += result["score"]
    return {
        "status": status,
        "reason": reason,
        "scores": {question: round(score, 3) for question, score in scores.items()},
        "total": round(sum(scores.values()), 3),
        "max": sum(points.values()),
        "tests": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- the class ------------------------------------------------------------------------------


def grade_class(
    submissions_folder: Path,
    out: Path,
    *,
    jobs: int = 1,
    force: bool = False,
    data_root: Path | None = None,
    sandbox: bool = True,
    cell_timeout: int = CELL_TIMEOUT,
    progress=print,
) -> list[dict]:
    """Grade every submission into ``out``; resume where a previous run stopped unless ``force``.

    Up to ``jobs`` submissions run at once, each in its own worker process and sandboxed
    kernel (one torch thread each when ``jobs`` > 1). Each result is written to
    ``out/results/<student>.json`` as soon as it is known, so an interrupted run, even by
    ``kill -9``, loses at most the submissions in progress. Then ``grades.csv``, the feedback
    pages and nbgrader's gradebook are rewritten from all results.
    """
    assignment, points = load_questions()
    submissions_folder = Path(submissions_folder).absolute()
    submissions = find_submissions(submissions_folder, assignment, LAB_SOURCE.stem)
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
    (out / "results").mkdir(parents=True, exist_ok=True)
    todo = [
        s for s in submissions if force or not (out / "results" / f"{s.student}.json").is_file()
    ]
    progress(
        f"{len(submissions)} submissions, {len(submissions) - len(todo)} already graded, {len(todo)} to grade"
    )
    job_base = {
        "seed": _grading_seed(out),
        "data_root": str(root.path),
        "points": points,
        "cell_timeout": cell_timeout,
        "hide": tuple(str(p) for p in _hidden_paths(out, submissions_folder)),
        "keep": tuple(str(p) for p in _kept_paths(root.path)),
    }
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(max(1, jobs)):
        slots.put(slot)

    def work(submission: Submission) -> None:
        slot = slots.get()
        try:
            uid = SANDBOX_UID + slot if sandbox else None  # one uid per concurrent sandbox
            result = _run_worker(submission, job_base, uid, 1 if jobs > 1 else None, out)
        finally:
            slots.put(slot)
        result = {"student": submission.student, "notebook": str(submission.path), **result}
        _write_json(out / "results" / f"{submission.student}.json", result)
        progress(
            f"  {submission.student}: {result['status']}, {result['total']:g}/{result['max']:g} ({result['seconds']:.0f} s)"
        )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(work, todo))
    results = [json.loads((out / "results" / f"{s.student}.json").read_text()) for s in submissions]
    write_reports(out, results, assignment, points)
    return results


def _share_read_only(folder: Path) -> None:
    """Let the sandboxed kernels read the data cache (they cannot write to it)."""
    if not folder.is_dir():
        return
    for path in [folder, *folder.rglob("*")]:
        if path.stat().st_uid == os.geteuid():
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def _hidden_paths(out: Path, submissions: Path) -> list[Path]:
    """What student code must not see: the instructor's repository but the helper package,
    the grading output, every submission, the instructor's home."""
    repo = [entry for entry in REPO.iterdir() if entry.name != "cnn_course"]
    return [*repo, out, submissions, Path.home()]


def _kept_paths(data_root: Path) -> list[Path]:
    """What the kernel needs even where it lies inside a hidden tree."""
    return [
        REPO / "cnn_course",
        Path(sys.prefix),
        Path(sys.base_prefix),
        data_root.resolve(),
        data.cache_dir(),
    ]


def _grading_seed(out: Path) -> int:
    """One secret seed per output folder: the same inputs on resume, new ones for a new class."""
    path = out / ".grading-seed"
    if not path.is_file():
        _write_text(path, str(secrets.randbits(31)))
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
    submission: Submission, job_base: dict, uid: int | None, threads: int | None, out: Path
) -> dict:
    started = time.perf_counter()
    local = Path(tempfile.mkdtemp(prefix=f"grade-{submission.student}-"))
    # The grader's pid in the name lets a later run remove what a killed run left behind.
    scratch = Path(
        tempfile.mkdtemp(prefix=f"{os.getpid()}-{submission.student}-", dir=_sandbox_root())
    )
    if uid is not None:
        os.chown(scratch, uid, uid)
    scratch.chmod(0o700)
    job = Job(
        notebook=str(submission.path.absolute()),
        result=str(local / "result.json"),
        executed=str(local / "executed.ipynb"),
        scratch=str(scratch),
        uid=uid,
        **job_base,
    )
    (local / "job.json").write_text(json.dumps(asdict(job)))
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # the kernel inherits it: one torch thread each
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "autograder.runner", str(local / "job.json")]
    process = subprocess.Popen(
        command,
        cwd=local,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=SUBMISSION_TIMEOUT)
        if Path(job.executed).is_file():
            (out / "executed").mkdir(exist_ok=True)
            shutil.copy(job.executed, out / "executed" / f"{submission.student}.ipynb")
        if Path(job.result).is_file():
            return json.loads(Path(job.result).read_text())
        tail = (stderr or "").strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
        return _outcome(
            "crashed",
            f"the grading process failed: {tail[0][:300]}",
            [],
            job.points,
            started,
        )
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the worker, its kernel and all they started
        process.wait()
        return _outcome(
            "timeout",
            f"still running after {SUBMISSION_TIMEOUT} s",
            [],
            job.points,
            started,
        )
    finally:
        shutil.rmtree(local, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


# --- reports --------------------------------------------------------------------------------


def write_reports(
    out: Path, results: list[dict], assignment: str, points: dict[str, float]
) -> None:
    """grades.csv, one feedback page per student, and nbgrader's gradebook, from all results."""
    rows = []
    for result in results:
        row = {"student": result["student"], **result["scores"]}
        row.update(total=result["total"], max=result["max"], status=result["status"])
        rows.append(row)
    buffer = _csv_text(rows, ["student", *points, "total", "max", "status"])
    _write_text(out / "grades.csv", buffer)
    (out / "feedback").mkdir(exist_ok=True)
    for result in results:
        _write_text(out / "feedback" / f"{result['student']}.html", feedback_html(result, points))
    fill_gradebook(out / "gradebook.db", assignment, LAB_SOURCE.stem, points, results)


def _csv_text(rows: Iterable[dict], columns: list[str]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def feedback_html(result: dict, points: dict[str, float]) -> str:
    """A student's feedback page: per question, each test's result and message, nothing else."""
    sections = []
    for question, maximum in points.items():
        tests = [t for t in result["tests"] if t["question"] == question]
        rows = "".join(
            f"<tr><td>{html.escape(t['name'])}</td><td class='{'ok' if t['passed'] else 'ko'}'>"
            f"{t['score']:g} / {t['points']:g}</td><td>{html.escape(t['message'])}</td></tr>"
            for t in tests
        )
        sections.append(
            f"<h2>{html.escape(question)}: {result['scores'][question]:g} / {maximum:g}</h2>"
            f"<table><tr><th>test</th><th>points</th><th>feedback</th></tr>{rows}</table>"
        )
    status = (
        ""
        if result["status"] == "graded"
        else f"<p class='ko'>Not graded: {html.escape(result['status'])}</p>"
    )
    reason = f"<p>Notes: {html.escape(result['reason'])}</p>" if result.get("reason") else ""
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.ok{color:#070}.ko{color:#b00}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Feedback: {html.escape(result['student'])}"
        f"</title><style>{style}</style></head><body><h1>Feedback for {html.escape(result['student'])}</h1>"
        f"<p>Total: <b>{result['total']:g} / {result['max']:g}</b></p>{status}{reason}{''.join(sections)}</body></html>\n"
    )


def fill_gradebook(
    db_path: Path, assignment: str, notebook: str, points: dict[str, float], results: list[dict]
) -> None:
    """Record every score in nbgrader's gradebook, so formgrader lists them."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    bin_dir = str(Path(sys.executable).parent)  # nbgrader runs `alembic` when it creates a database
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    with (
        warnings.catch_warnings(),
        Gradebook(f"sqlite:///{db_path}", course_id="cnn-course") as gradebook,
    ):
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush noise
        gradebook.update_or_create_assignment(assignment)
        if notebook not in [nb.name for nb in gradebook.find_assignment(assignment).notebooks]:
            gradebook.add_notebook(notebook, assignment)
        for question, maximum in points.items():
            gradebook.update_or_create_grade_cell(
                question, notebook, assignment, max_score=maximum, cell_type="code"
            )
        for result in results:
            gradebook.update_or_create_student(result["student"])
            gradebook.update_or_create_submission(assignment, result["student"])
            for question in points:
                grade = gradebook.find_grade(question, notebook, assignment, result["student"])
                grade.auto_score = result["scores"][question]
            gradebook.db.commit()


def _write_json(path: Path, value: dict) -> None:
    _write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
