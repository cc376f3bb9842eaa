"""The nbgrader course a class was submitted to: our grades in its own places, so that its own
tools show them.

A submission at ``<course>/submitted/<student>/<lab>/<lab>.ipynb``, where ``<course>`` holds
``nbgrader_config.py``, belongs to that nbgrader course. After each run, for each such course,
the executed notebook goes where ``nbgrader autograde`` puts it (``autograded/<student>/<lab>/``,
with the submission's ``timestamp.txt``) and the course's own gradebook (its ``db_url``, under
its ``course_id``) receives the scores, the submission times and the lab's cells: formgrader
then lists every submission as autograded (no Autograde button), a TA grades the written
answers in Manual Grading, and ``nbgrader generate_feedback``, ``release_feedback`` and
``export`` work on them. The students' names the course's gradebook holds are kept. A course
with no ``source/<lab>/`` gets the released notebook there, so Manage Assignments lists the lab
(its real source is the course repository's ``source/<lab>.md``; nbgrader's source folder never
receives a solution).

The executed notebook is the student's: its cells' nbgrader metadata is taken from the released
notebook (a cell with an id the release does not have loses it), and its HTML is sanitised, as
formgrader shows it in the instructor's browser.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat

from cnn_course.errors import CourseError
from cnn_course.labs import Lab

from .results import SubmissionResult

__all__ = [
    "CONFIG",
    "Book",
    "NbgraderCourse",
    "autograded_notebook",
    "courses_of",
    "gradebooks",
    "open_course",
    "out_book",
    "released_notebook",
    "solution_cells",
    "timestamp_text",
]

CONFIG = "nbgrader_config.py"  # what makes a folder holding submitted/ an nbgrader course
OUT_COURSE_ID = "cnn-course"  # the course id of OUT's own gradebook


@dataclass(frozen=True)
class Book:
    """An nbgrader gradebook: its database URL and the course id it is opened with."""

    url: str
    course_id: str

    def exists(self) -> bool:
        """False for an SQLite file not yet made (other databases: assumed there)."""
        prefix = "sqlite:///"
        return not self.url.startswith(prefix) or Path(self.url[len(prefix) :]).is_file()

    def open(self):
        from nbgrader.api import Gradebook

        return Gradebook(self.url, course_id=self.course_id)


def out_book(path: Path) -> Book:
    """OUT's own gradebook (``OUT/gradebook.db``)."""
    return Book(f"sqlite:///{path}", OUT_COURSE_ID)


@dataclass(frozen=True)
class NbgraderCourse:
    """An nbgrader course folder, as its configuration describes it."""

    root: Path
    db_url: str
    course_id: str
    structure: str  # nbgrader's directory_structure: "{nbgrader_step}/{student_id}/{assignment_id}"
    source: str
    submitted: str
    autograded: str

    @property
    def book(self) -> Book:
        return Book(self.db_url, self.course_id)

    def folder(self, step: str, student: str, lab: str) -> Path:
        relative = self.structure.format(nbgrader_step=step, student_id=student, assignment_id=lab)
        return self.root / relative


def gradebooks(out_db: Path, courses: Iterable[NbgraderCourse]) -> list[Book]:
    """Where points given by hand are read: OUT's gradebook, then each course's (whose values
    win: that is where TAs grade in formgrader)."""
    return [out_book(out_db), *(course.book for course in courses)]


def open_course(root: Path) -> NbgraderCourse:
    """The course at ``root``, read from its ``nbgrader_config.py`` with nbgrader's own classes
    (the instructor's file, run as nbgrader runs it). Its folders are taken under ``root``,
    whatever root the file names; its database is the one the file names, else its own
    ``gradebook.db``."""
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    try:
        config = PyFileConfigLoader(CONFIG, path=str(root)).load_config()
        coursedir = CourseDirectory(config=config)
        coursedir.root = str(root)
        return NbgraderCourse(
            root=root,
            db_url=coursedir.db_url,
            course_id=coursedir.course_id,
            structure=coursedir.directory_structure,
            source=coursedir.source_directory,
            submitted=coursedir.submitted_directory,
            autograded=coursedir.autograded_directory,
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the instructor's file is told
        raise CourseError(
            f"{root / CONFIG} (the nbgrader course's configuration) could not be read: "
            f"{type(exc).__name__}: {exc}. Fix it as `nbgrader` itself would need it, or move "
            "the submissions out of the course to grade them without it."
        ) from exc


def courses_of(results: list[SubmissionResult], lab: str) -> dict[Path, list[SubmissionResult]]:
    """The results whose notebook lies in an nbgrader course, by course folder: a notebook at
    ``<course>/submitted/<student>/<lab>/<file>.ipynb`` with ``<course>/nbgrader_config.py``."""
    found: dict[Path, list[SubmissionResult]] = {}
    for result in results:
        if not result.notebook:
            continue
        path = Path(result.notebook)
        folder = path.parent
        if len(path.parents) < 4 or folder.name != lab or folder.parent.name != result.student:
            continue
        root = folder.parent.parent.parent
        if folder.parent.parent.name == "submitted" and (root / CONFIG).is_file():
            found.setdefault(root, []).append(result)
    return found


def _nbgrader_cells(released: nbformat.NotebookNode) -> dict[str, dict]:
    """The released notebook's nbgrader metadata, by cell id."""
    cells = {}
    for cell in released.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str):
            cells.setdefault(meta["grade_id"], meta)
    return cells


def solution_cells(released: nbformat.NotebookNode) -> list[str]:
    """The ids of the released notebook's answer cells, in order."""
    return [name for name, meta in _nbgrader_cells(released).items() if meta.get("solution")]


def autograded_notebook(
    executed: str, released: nbformat.NotebookNode, lab: Lab
) -> nbformat.NotebookNode:
    """The executed notebook as formgrader is to show it: each cell with the released cell's
    nbgrader metadata (the first cell claiming an id; any other loses it), each automatically
    graded answer marked as a graded cell worth its question's points (formgrader shows its
    score beside it), an answer that is no question of the lab not graded, and its Markdown and
    HTML outputs sanitised."""
    notebook = nbformat.reads(executed, as_version=4)
    known, seen = _nbgrader_cells(released), set()
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).pop("nbgrader", None)
        name = meta.get("grade_id") if isinstance(meta, dict) else None
        if not isinstance(name, str) or name not in known or name in seen:
            continue
        seen.add(name)
        kept = copy.deepcopy(known[name])
        if name in lab.graded:
            kept.update(grade=True, points=float(lab.graded[name].points))
        elif name not in lab.questions:  # an answer worth no points: nothing to grade
            kept["grade"] = False
            kept.pop("points", None)
        cell.metadata["nbgrader"] = kept
    notebook, _ = _sanitizer().preprocess(notebook, {})
    return notebook


# Markup a page may show (the checks' tables, headings, emphasis): no script, no event handler,
# no style sheet, no link but http(s) and mail; anything else is shown as text.
SAFE_TAGS = {
    *("a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del"),
    *("details", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "kbd"),
    *("li", "ol", "p", "pre", "s", "samp", "small", "span", "strong", "sub", "summary", "sup"),
    *("table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"),
}
SAFE_ATTRIBUTES = {
    "*": ["class", "style", "title", "align"],
    "a": ["href", "title"],
    "td": ["colspan", "rowspan"],
    "th": ["colspan", "rowspan", "scope"],
}


def _sanitizer():
    from nbconvert.preprocessors.sanitize import SanitizeHTML

    return SanitizeHTML(tags=sorted(SAFE_TAGS), attributes=SAFE_ATTRIBUTES)


def released_notebook(course_root: Path, lab: str) -> nbformat.NotebookNode | None:
    """The lab's released student notebook, as the course's build wrote it; None before a
    build."""
    path = Path(course_root) / "notebooks" / "student" / f"{lab}.ipynb"
    return nbformat.read(path, as_version=4) if path.is_file() else None


def timestamp_text(when: datetime) -> str:
    """A submission time (naive UTC) as nbgrader writes ``timestamp.txt``."""
    return when.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
