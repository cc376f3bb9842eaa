"""Grade a class: find submissions, run each in its own process, keep every result, report."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import torch

from cnn_course import data
from cnn_course.errors import CourseError

from .execute import run_notebook
from .hidden_tests import GradingContext, grading_inputs, run_hidden_tests
from .probe import probe_source

__all__ = ["Submission", "find_submissions", "grade_class", "grade_notebook", "load_questions"]

REPO = Path(__file__).resolve().parents[1]
LAB_SOURCE = REPO / "source" / "cnn_lab.md"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
CELL_TIMEOUT = 300
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


def grade_notebook(path: Path, scratch: Path, seed: int, data_root: Path) -> dict:
    """Execute one submission with the probe appended, then judge the plain record it leaves.

    Runs in a worker process of its own; the student's code runs in a Jupyter kernel that
    is a child of it. Returns the result as plain JSON-ready data.
    """
    started = time.perf_counter()
    _, points = load_questions()
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # any unreadable file is an invalid notebook, whatever the reason
        return _outcome(
            "invalid notebook", f"{type(exc).__name__}: {str(exc)[:300]}", [], points, started
        )
    if not any(cell.cell_type == "code" for cell in notebook.cells):
        return _outcome("invalid notebook", "the notebook has no code cells", [], points, started)
    scratch.mkdir(parents=True, exist_ok=True)
    inputs = grading_inputs(seed)
    inputs_path, probe_path = scratch / "grader_inputs.pt", scratch / "probe.pt"
    torch.save(inputs, inputs_path)
    notebook.cells.append(
        nbformat.v4.new_code_cell(probe_source(str(inputs_path), str(probe_path)))
    )
    env = {"CNN_COURSE_FAST": "1", "CNN_COURSE_DATA": str(data_root), "MPLBACKEND": "Agg"}
    execution = run_notebook(
        notebook, cwd=scratch, env=env, cell_timeout=CELL_TIMEOUT, allow_errors=True
    )
    if not probe_path.is_file():
        status = "timeout" if execution.error_name == "CellTimeoutError" else "crashed"
        reason = f"the notebook stopped before grading could start ({execution.error_name or 'no record written'})"
        return _outcome(status, reason, [], points, started)
    try:
        probe = torch.load(probe_path, weights_only=True)
    except Exception as exc:  # a record the student's code tampered with is unusable
        return _outcome("crashed", f"the grading record is unreadable: {exc}", [], points, started)
    results = run_hidden_tests(probe, inputs, points, GradingContext(data_root))
    errors = [p.text.splitlines()[-1] for p in execution.problems if p.kind == "error"][:5]
    reason = "; ".join(errors)
    return _outcome("graded", reason, [r.to_dict() for r in results], points, started)


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
    progress=print,
) -> list[dict]:
    """Grade every submission into ``out``; resume where a previous run stopped unless ``force``.

    Each result is written to ``out/results/<student>.json`` as soon as it is known, so an
    interrupted run loses at most the submissions in progress. Then ``grades.csv``, the
    feedback pages and nbgrader's gradebook are rewritten from all results.
    """
    assignment, points = load_questions()
    submissions = find_submissions(Path(submissions_folder), assignment, LAB_SOURCE.stem)
    root = data.resolve_root(data_root)
    for loader in (data.load_mnist, data.load_cifar10):
        loader(
            "test", root=root.path
        )  # fail early, with the data layer's message, if data is missing
    out = Path(out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    seed = _grading_seed(out)
    todo = [
        s for s in submissions if force or not (out / "results" / f"{s.student}.json").is_file()
    ]
    progress(
        f"{len(submissions)} submissions, {len(submissions) - len(todo)} already graded, {len(todo)} to grade"
    )

    def work(submission: Submission) -> None:
        result = _run_worker(submission, seed, root.path, 1 if jobs > 1 else None)
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


def _grading_seed(out: Path) -> int:
    """One secret seed per output folder: the same inputs on resume, new ones for a new class."""
    path = out / ".grading-seed"
    if not path.is_file():
        _write_text(path, str(secrets.randbits(31)))
    return int(path.read_text())


def _run_worker(submission: Submission, seed: int, data_root: Path, threads: int | None) -> dict:
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f"grade-{submission.student}-"))
    result_path = scratch / "result.json"
    command = [
        sys.executable, "-m", "autograder.runner",
        str(submission.path.absolute()), str(result_path), "--scratch", str(scratch / "work"),
        "--seed", str(seed), "--data-root", str(data_root),
    ]  # fmt: skip
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # the kernel inherits it: one torch thread each
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    try:
        completed = subprocess.run(
            command,
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBMISSION_TIMEOUT,
        )
        if result_path.is_file():
            return json.loads(result_path.read_text())
        tail = (completed.stderr or "").strip().splitlines()[-1:] or [
            f"exit status {completed.returncode}"
        ]
        return _outcome(
            "crashed",
            f"the grading process failed: {tail[0][:300]}",
            [],
            load_questions()[1],
            started,
        )
    except subprocess.TimeoutExpired:
        return _outcome(
            "timeout",
            f"still running after {SUBMISSION_TIMEOUT} s",
            [],
            load_questions()[1],
            started,
        )
    finally:
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
