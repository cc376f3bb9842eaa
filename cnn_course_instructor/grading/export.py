"""A graded lab's marks in the forms other tools import: nbgrader's CSV, a Canvas gradebook, a
Moodle grade import. Each is written from every result in OUT with the points given by hand,
after the lab's outputs are rewritten, so it agrees with grades.csv and the gradebook."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import nbformat

from cnn_course.labs import Lab

from .hand import hand_grades
from .nbgrader_course import Book, courses_of, gradebooks, open_course
from .outputs import totals, write_text
from .results import SubmissionResult
from .run import rewrite_lab_outputs

__all__ = ["CANVAS_COLUMNS", "MOODLE_ID", "export_lab"]

# Canvas's gradebook import: these identity columns, then one column per assignment
# ("<name> (<id>)"), and a "Points Possible" row under the header.
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_ID = "Username"  # Moodle's CSV grade import maps this column to the user's username


def export_lab(
    out: Path,
    lab: Lab,
    form: str,
    to: Path | None = None,
    progress: Callable = print,
    released: nbformat.NotebookNode | None = None,
) -> Path:
    """Write ``lab``'s marks in ``form`` ("nbgrader", "canvas" or "moodle") to ``to`` (default
    ``OUT/<lab>/export-<form>.csv``); the path written. ``released``: the lab's released
    notebook (see ``rewrite_lab_outputs``)."""
    results = rewrite_lab_outputs(out, lab, progress, released)
    to = to or out / lab.id / f"export-{form}.csv"
    if form == "nbgrader":
        _nbgrader_csv(out / "gradebook.db", lab, to)
        return to
    courses = [open_course(root) for root in courses_of(results, lab.id)]
    books = gradebooks(out / "gradebook.db", courses)
    hand = hand_grades(out / lab.id, lab, books)
    names = _names(books)
    rows = sorted(results, key=lambda result: result.student)
    writers = {"canvas": _canvas, "moodle": _moodle}
    write_text(to, writers[form](rows, lab, hand, names))
    return to


def _canvas(results: list[SubmissionResult], lab: Lab, hand, names: dict[str, str]) -> str:
    """Canvas's gradebook import: a student's name, the id in "SIS Login ID" (nbgrader's student
    id is the login there), the total under the assignment's column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    column = f"{lab.title} ({lab.id})"
    most = sum(question.points for question in lab.questions.values())
    writer.writerow([*CANVAS_COLUMNS, column])
    writer.writerow(["Points Possible", "", "", "", "", f"{most:g}"])
    for result in results:
        total = totals(result, lab, hand)[0]
        name = names.get(result.student, result.student)
        writer.writerow([name, "", "", result.student, "", f"{total:g}"])
    return buffer.getvalue()


def _moodle(results: list[SubmissionResult], lab: Lab, hand, names: dict[str, str]) -> str:
    """Moodle's CSV grade import: the username, then the total under a column named after the
    lab (mapped to a grade item at import)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([MOODLE_ID, lab.title])
    for result in results:
        writer.writerow([result.student, f"{totals(result, lab, hand)[0]:g}"])
    return buffer.getvalue()


def _names(books: list[Book]) -> dict[str, str]:
    """Student id -> "Last, First" where a gradebook has their names (the nbgrader course's,
    where the class was submitted to one)."""
    names = {}
    for book in (book for book in books if book.exists()):
        with book.open() as gradebook:
            for student in gradebook.students:
                parts = [part for part in (student.last_name, student.first_name) if part]
                if parts:
                    names[student.id] = ", ".join(parts)
    return names


def _nbgrader_csv(db_path: Path, lab: Lab, to: Path) -> None:
    """nbgrader's own CSV export (``nbgrader export``'s plugin) of the lab, from OUT's gradebook."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins.export import CsvExportPlugin

    tmp = to.with_name(f".{to.name}.tmp")
    with Gradebook(f"sqlite:///{db_path}", course_id="cnn-course") as gradebook:
        CsvExportPlugin(to=str(tmp), assignment=[lab.id]).export(gradebook)
    tmp.replace(to)
