"""Points given by hand (a lab's written answers): a plain file in OUT, or nbgrader's gradebook.

A TA grades the questions the front matter marks ``manual: true`` either in formgrader (or
nbgrader's API), on the nbgrader course's gradebook or ``OUT/gradebook.db``, or in
``OUT/<lab>/hand_grades.csv`` (one row per student, one column per hand-graded question; the
first run writes it with empty cells). Where several hold a value, the file's wins, then the
course's, and it is copied into every gradebook, so formgrader and ``nbgrader export`` agree
with grades.csv. A question no one graded yet is "to be graded by
hand": it adds nothing to the total, and the maximum counts its points.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from cnn_course.errors import CourseError
from cnn_course.labs import Lab, Question

from ..safefiles import UnsafeFile, read_regular
from .nbgrader_course import Book
from .submissions import STUDENT_ID

__all__ = [
    "HAND_FILE",
    "HandGrades",
    "gradebook_hand_grades",
    "hand_grades",
    "manual_questions",
    "read_hand_file",
]

HAND_FILE = "hand_grades.csv"
HAND_LIMIT = 5_000_000  # bytes: a class's file is a few KB

HandGrades = dict[str, dict[str, float]]  # student -> hand-graded question -> points given


def manual_questions(lab: Lab) -> dict[str, Question]:
    """The lab's questions graded by hand, in the front matter's order."""
    return {key: question for key, question in lab.questions.items() if question.manual}


def read_hand_file(path: Path, lab: Lab) -> HandGrades:
    """The points ``path`` gives (empty cells: not graded yet); a file that is not such a table,
    or a value that is not a number within the question's points, is refused with its line and
    what to write instead. No file: no points."""
    manual = manual_questions(lab)
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        text = read_regular(path, HAND_LIMIT, path.name).decode("utf-8-sig")
    except (UnsafeFile, UnicodeDecodeError) as error:
        raise CourseError(f"{path} cannot be read ({error}): expected a CSV file.") from None
    try:
        rows = iter(list(csv.reader(io.StringIO(text))))
    except csv.Error as error:
        raise CourseError(f"{path} is not a CSV table ({error}).") from None
    header = [name.strip() for name in next(rows, [])]
    expected = f"student,{','.join(manual)}"
    unknown = [name for name in header[1:] if name not in manual]
    if not header or header[0] != "student" or unknown:
        raise CourseError(
            f"{path}: its first line must name the columns student and the questions graded by "
            f"hand ({expected}); found {','.join(header)[:200]!r}. Fix the header line."
        )
    grades: HandGrades = {}
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        student = row[0].strip()
        if not STUDENT_ID.fullmatch(student):
            raise CourseError(f"{path}, line {number}: {student[:100]!r} is not a student id.")
        given = {}
        for question_id, cell in zip(header[1:], row[1:], strict=False):
            if cell.strip():
                given[question_id] = _points(cell, manual[question_id], f"{path}, line {number}")
        if given:
            grades[student] = given
    return grades


def _points(cell: str, question: Question, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not 0 <= value <= question.points:
        raise CourseError(
            f"{where}: {question.id} = {cell.strip()[:50]!r}; expected a number from 0 to "
            f"{question.points:g} (its points), or an empty cell while it is not graded."
        )
    return value


def gradebook_hand_grades(book: Book, lab: Lab) -> HandGrades:
    """The manual scores the nbgrader gradebook ``book`` holds for the lab's hand-graded
    questions (entered in formgrader or through nbgrader's API)."""
    manual = manual_questions(lab)
    if not manual or not book.exists():
        return {}
    from nbgrader.api import MissingEntry

    grades: HandGrades = {}
    with book.open() as gradebook:
        try:
            submissions = gradebook.find_assignment(lab.id).submissions
        except MissingEntry:
            return {}
        for submission in submissions:
            student = submission.student.id
            for question_id in manual:
                try:
                    grade = gradebook.find_grade(question_id, lab.id, lab.id, student)
                except MissingEntry:
                    continue
                if grade.manual_score is not None:
                    grades.setdefault(student, {})[question_id] = float(grade.manual_score)
    return grades


def hand_grades(folder: Path, lab: Lab, books: list[Book]) -> HandGrades:
    """The lab's points given by hand: each gradebook's (a later one's over an earlier one's),
    then ``folder/hand_grades.csv``'s over all."""
    if not manual_questions(lab):
        return {}
    merged: HandGrades = {}
    for book in books:
        for student, given in gradebook_hand_grades(book, lab).items():
            merged.setdefault(student, {}).update(given)
    for student, given in read_hand_file(folder / HAND_FILE, lab).items():
        merged.setdefault(student, {}).update(given)
    return merged
