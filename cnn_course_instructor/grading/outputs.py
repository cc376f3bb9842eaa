"""A lab's outputs from its results: grades.csv, one feedback page per student, nbgrader's gradebook."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path

import jinja2

from cnn_course.labs import Lab

from .results import Status, SubmissionResult

__all__ = [
    "feedback_html",
    "fill_gradebook",
    "grades_csv",
    "render",
    "write_outputs",
    "write_text",
]

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("cnn_course_instructor", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)

STATUS_HELP = {
    Status.INVALID: "The file could not be read as a notebook of this lab, so nothing in it ran. "
    "Your instructor has been told; check that you submitted the right file.",
    Status.TIMEOUT: "A cell of your notebook ran past the grader's time limit and was "
    "interrupted (the note below names it); the cells after it still ran, and your answers "
    "were graded on what they recorded. Your work is safe; your instructor will look at it.",
    Status.CRASHED: "Your notebook's kernel stopped before the grader could record your answers. "
    "This may be the grader's failure rather than yours: your work is safe and your instructor "
    "will look at it.",
    Status.OUT_OF_MEMORY: "Your notebook ran out of memory. Your work is safe; your instructor "
    "will look at it.",
}


def render(template: str, **values) -> str:
    """One of the package's Jinja templates, filled (HTML escaped)."""
    return _TEMPLATES.get_template(template).render(**values)


def grades_csv(results: list[SubmissionResult], lab: Lab) -> str:
    """One row per student, sorted by student: a column per question id, then total, max and
    status."""
    buffer = io.StringIO()
    columns = ["student", *lab.graded, "total", "max", "status"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for result in sorted(results, key=lambda result: result.student):
        row = {"student": result.student, **{q: result.scores.get(q, 0.0) for q in lab.graded}}
        row.update(total=result.total, max=result.max, status=result.status.value)
        writer.writerow(row)
    return buffer.getvalue()


def feedback_html(result: SubmissionResult, lab: Lab) -> str:
    """A student's page: what to fix first, then each exercise's tests and messages (no test code)."""
    ordered = sorted(lab.graded.values(), key=lambda q: (q.exercise is None, q.exercise or 0))
    sections, to_fix = [], []
    for question in ordered:
        tests = [test for test in result.tests if test.question == question.id]
        sections.append((question, tests, result.scores.get(question.id, 0.0)))
        to_fix += [(question, test) for test in tests if not test.passed]
    return render(
        "feedback.html.j2",
        result=result,
        lab=lab,
        sections=sections,
        to_fix=to_fix,
        status_help=STATUS_HELP.get(result.status, ""),
    )


def write_outputs(folder: Path, results: list[SubmissionResult], lab: Lab, gradebook: Path) -> None:
    """``folder/grades.csv``, ``folder/feedback/<student>.html`` and the gradebook entries."""
    write_text(folder / "grades.csv", grades_csv(results, lab))
    (folder / "feedback").mkdir(exist_ok=True)
    for result in results:
        write_text(folder / "feedback" / f"{result.student}.html", feedback_html(result, lab))
    fill_gradebook(gradebook, lab, results)


def fill_gradebook(db_path: Path, lab: Lab, results: list[SubmissionResult]) -> None:
    """Record every score in nbgrader's gradebook, so formgrader lists them."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    url = f"sqlite:///{db_path}"
    _stamp_new_gradebook(url)
    with warnings.catch_warnings(), Gradebook(url, course_id="cnn-course") as gradebook:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush noise
        gradebook.update_or_create_assignment(lab.id)
        if lab.id not in [nb.name for nb in gradebook.find_assignment(lab.id).notebooks]:
            gradebook.add_notebook(lab.id, lab.id)
        for question in lab.graded.values():
            gradebook.update_or_create_grade_cell(
                question.id, lab.id, lab.id, max_score=question.points, cell_type="code"
            )
        for result in results:
            gradebook.update_or_create_student(result.student)
            gradebook.update_or_create_submission(lab.id, result.student)
            for question in lab.graded:
                grade = gradebook.find_grade(question, lab.id, lab.id, result.student)
                grade.auto_score = result.scores.get(question, 0.0)
            gradebook.db.commit()


def _stamp_new_gradebook(url: str) -> None:
    """Give a database with no table yet the revision of nbgrader's newest migration, as nbgrader
    does when it creates a gradebook; nbgrader then adds its tables and keeps the stamp.

    nbgrader reads that revision by running ``alembic heads`` in a new process, which costs
    3 CPU-seconds beside the first kernels of a class; here alembic reads it in this process.
    """
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        if inspect(engine).get_table_names():
            return
        config = Config()
        config.set_main_option("script_location", ALEMBIC_DIR)
        head = ScriptDirectory.from_config(config).get_current_head()
        with engine.begin() as connection:
            connection.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            )
            connection.execute(text("INSERT INTO alembic_version VALUES (:head)"), {"head": head})
    finally:
        engine.dispose()


def write_text(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all (a temporary file moved into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
