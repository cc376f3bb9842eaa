"""A lab's outputs from its results: grades.csv, one feedback page per student, nbgrader's gradebook."""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import jinja2
import nbformat

from cnn_course.labs import Lab

from .hand import HAND_FILE, HandGrades, hand_grades, manual_questions
from .nbgrader_course import (
    Book,
    NbgraderCourse,
    autograded_notebook,
    courses_of,
    gradebooks,
    open_course,
    out_book,
    solution_cells,
    timestamp_text,
)
from .results import Status, SubmissionResult

__all__ = [
    "duration",
    "feedback_html",
    "fill_course",
    "fill_gradebook",
    "grades_csv",
    "totals",
    "late_by",
    "render",
    "write_hand_template",
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


def _submitted(result: SubmissionResult) -> datetime | None:
    """When the student submitted (UTC, naive), or None when unknown."""
    try:
        return datetime.fromisoformat(result.submitted_at) if result.submitted_at else None
    except (TypeError, ValueError):
        return None


def late_by(result: SubmissionResult, deadline: datetime | None) -> float | None:
    """Seconds after ``deadline`` (UTC) the student submitted, 0 when on time; None when the
    deadline or the submission time is unknown."""
    submitted = _submitted(result)
    if deadline is None or submitted is None:
        return None
    return max((submitted - deadline).total_seconds(), 0.0)


def duration(seconds: float) -> str:
    """``seconds`` as a person says it: "3 d 4 h", "2 h 5 min", "40 s"."""
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days} d {hours - 24 * days} h"
    if hours:
        return f"{hours} h {minutes - 60 * hours} min"
    return f"{minutes} min" if minutes else f"{seconds:.0f} s"


def totals(result: SubmissionResult, lab: Lab, hand: HandGrades) -> tuple[float, float, list]:
    """The student's total with the points given by hand, the lab's maximum (every question's
    points, whatever the row's status), and the hand-graded questions no one graded yet."""
    given = hand.get(result.student, {})
    manual = manual_questions(lab)
    pending = [question for key, question in manual.items() if key not in given]
    total = round(result.total + sum(given.get(key, 0.0) for key in manual), 3)
    return total, sum(question.points for question in lab.questions.values()), pending


def grades_csv(
    results: list[SubmissionResult],
    lab: Lab,
    deadline: datetime | None = None,
    hand: HandGrades | None = None,
) -> str:
    """One row per student, sorted by student: a column per question id (those graded by hand
    empty until they are), then total and max (hand-graded points included), status, what is
    still to be graded by hand (where the lab has such questions), when the student submitted
    (UTC, "" when unknown) and how many hours after the deadline (0 on time, "" when the
    deadline or the time is unknown). No penalty is applied."""
    hand = hand or {}
    manual = manual_questions(lab)
    buffer = io.StringIO()
    columns = ["student", *lab.graded, *manual, "total", "max", "status"]
    columns += ["by_hand"] * bool(manual) + ["submitted", "hours_late"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for result in sorted(results, key=lambda result: result.student):
        row = {"student": result.student, **{q: result.scores.get(q, 0.0) for q in lab.graded}}
        given = hand.get(result.student, {})
        row.update({key: given.get(key, "") for key in manual})
        total, most, pending = totals(result, lab, hand)
        late = late_by(result, deadline)
        row.update(
            total=total,
            max=most,
            status=result.status.value,
            submitted=result.submitted_at,
            hours_late="" if late is None else round(late / 3600, 2),
        )
        if manual:
            row["by_hand"] = "to be graded" if pending else "graded"
        writer.writerow(row)
    return buffer.getvalue()


def feedback_html(
    result: SubmissionResult,
    lab: Lab,
    deadline: datetime | None = None,
    hand: HandGrades | None = None,
) -> str:
    """A student's page: what to fix first, then each exercise's tests and messages (no test code)."""
    hand = hand or {}
    given = hand.get(result.student, {})
    ordered = sorted(lab.questions.values(), key=lambda q: (q.exercise is None, q.exercise or 0))
    sections, to_fix = [], []  # (question, its tests, its score; None: not graded by hand yet)
    for question in ordered:
        if question.manual:
            sections.append((question, None, given.get(question.id)))
            continue
        tests = [test for test in result.tests if test.question == question.id]
        sections.append((question, tests, result.scores.get(question.id, 0.0)))
        faults: dict[str, list[str]] = {}  # one entry per fault, naming the tests it failed
        for test in tests:
            if not test.passed:
                faults.setdefault(test.message, []).append(test.name)
        to_fix += [(question, ", ".join(names), message) for message, names in faults.items()]
    nothing = result.attempted is False  # every answer cell as released: one line says it all
    late = late_by(result, deadline)
    total, most, pending = totals(result, lab, hand)
    return render(
        "feedback.html.j2",
        result=result,
        lab=lab,
        total=total,
        most=most,
        pending=sum(q.points for q in pending),
        late=duration(late) if late else "",
        deadline=f"{deadline:%Y-%m-%d %H:%M} UTC" if deadline else "",
        sections=sections,
        to_fix=[] if nothing else to_fix,
        nothing_attempted=nothing,
        status_help=STATUS_HELP.get(result.status, ""),
    )


def write_hand_template(path: Path, lab: Lab, students: list[str]) -> bool:
    """Write ``path`` with a row per student and empty cells, when the lab has questions graded
    by hand and the file does not exist yet (an instructor's file is never touched). True when
    written."""
    manual = manual_questions(lab)
    if not manual or path.exists() or path.is_symlink():
        return False
    lines = [",".join(["student", *manual])]
    lines += [student + "," * len(manual) for student in sorted(students)]
    write_text(path, "\n".join(lines) + "\n")
    return True


def write_outputs(
    folder: Path,
    results: list[SubmissionResult],
    lab: Lab,
    gradebook: Path,
    deadline: datetime | None = None,
    released: nbformat.NotebookNode | None = None,
    progress: Callable[[str], None] = print,
) -> HandGrades:
    """``folder/grades.csv``, ``folder/feedback/<student>.html`` and the gradebook entries
    (``gradebook``, and those of the nbgrader courses the results were submitted to, with their
    autograded notebooks), late rows marked against ``deadline`` (UTC), with the points given by
    hand (``hand``: the gradebooks' and ``folder/hand_grades.csv``'s, which the first run writes
    empty), returned. ``released``: the lab's released notebook, which names its cells."""
    submitted = courses_of(results, lab.id)  # course folder -> its results
    courses = {root: open_course(root) for root in submitted}
    hand = hand_grades(folder, lab, gradebooks(gradebook, courses.values()))
    write_hand_template(folder / HAND_FILE, lab, [result.student for result in results])
    write_text(folder / "grades.csv", grades_csv(results, lab, deadline, hand))
    (folder / "feedback").mkdir(exist_ok=True)
    for result in results:
        page = feedback_html(result, lab, deadline, hand)
        write_text(folder / "feedback" / f"{result.student}.html", page)
    cells = solution_cells(released) if released is not None else []
    fill_gradebook(out_book(gradebook), lab, results, deadline, hand, cells)
    for root, course in courses.items():
        if released is None:
            progress(
                f"  {lab.id}: the nbgrader course {root} was not updated: the lab's released "
                "notebook is missing (run `cnn-course build`)"
            )
            continue
        mine = submitted[root]
        fill_course(course, folder / "executed", lab, mine, released, deadline, hand)
        progress(f"  {lab.id}: {len(mine)} submission(s) autograded in the nbgrader course {root}")
    return hand


def fill_course(
    course: NbgraderCourse,
    executed: Path,
    lab: Lab,
    results: list[SubmissionResult],
    released: nbformat.NotebookNode,
    deadline: datetime | None,
    hand: HandGrades,
) -> None:
    """Each result's executed notebook where ``nbgrader autograde`` puts it, with the
    submission's time, then the course's own gradebook: formgrader lists each as autograded
    (its folder there, its time the submitted one), its scores and the TA's cells; the lab
    listed among its assignments (the released notebook as its source, where it has none)."""
    listed = course.folder(course.source, ".", lab.id)
    if not listed.exists():
        listed.mkdir(parents=True)
        write_text(listed / f"{lab.id}.ipynb", nbformat.writes(released))
    kept = []
    for result in results:
        target = course.folder(course.autograded, result.student, lab.id)
        source = executed / f"{result.student}.ipynb"
        if not source.is_file():  # nothing ran (an invalid file): formgrader has nothing to show
            continue
        kept.append(result)
        notebook = autograded_notebook(source.read_text(encoding="utf-8"), released, lab)
        target.mkdir(parents=True, exist_ok=True)
        write_text(target / f"{lab.id}.ipynb", nbformat.writes(notebook))
        when = _submitted(result)
        stamp = target / "timestamp.txt"
        if when is not None:
            write_text(stamp, timestamp_text(when))
        else:
            stamp.unlink(missing_ok=True)
    fill_gradebook(course.book, lab, kept, deadline, hand, solution_cells(released), own=False)


def fill_gradebook(
    book: Book,
    lab: Lab,
    results: list[SubmissionResult],
    deadline: datetime | None = None,
    hand: HandGrades | None = None,
    cells: list[str] = (),
    own: bool = True,
) -> None:
    """Record every score in the nbgrader gradebook ``book``, so formgrader lists them, with
    each submission's time and the lab's due date where known (nbgrader then tells late ones):
    the hidden tests' scores as automatic ones (no manual grade needed), each hand-graded
    question as a cell a TA grades (its points from ``hand`` where given); ``cells``, the
    released notebook's answer cells, get a comment each (the failed tests' messages on an
    automatically graded one). A gradebook that is not ``own`` (a course's) keeps its students'
    names and its due date; ``deadline`` only fills one it lacks."""
    hand = hand or {}
    from sqlalchemy.exc import SAWarning

    _stamp_new_gradebook(book.url)
    with warnings.catch_warnings(), book.open() as gradebook:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush noise
        assignment = gradebook.update_or_create_assignment(lab.id)
        if deadline is not None and (own or assignment.duedate is None):
            assignment.duedate = deadline
        if lab.id not in [nb.name for nb in assignment.notebooks]:
            gradebook.add_notebook(lab.id, lab.id)
        for question in lab.graded.values():
            gradebook.update_or_create_grade_cell(
                question.id, lab.id, lab.id, max_score=question.points, cell_type="code"
            )
        for question in manual_questions(lab).values():
            gradebook.update_or_create_grade_cell(
                question.id, lab.id, lab.id, max_score=question.points, cell_type="markdown"
            )
        for name in cells:
            gradebook.update_or_create_solution_cell(name, lab.id, lab.id)
        gradebook.db.commit()
        for result in results:
            gradebook.update_or_create_student(result.student)
            submission = gradebook.update_or_create_submission(lab.id, result.student)
            submission.timestamp = _submitted(result)
            for question in lab.graded:
                grade = _entry(gradebook, "grade", question, lab.id, result.student)
                grade.auto_score = result.scores.get(question, 0.0)
                grade.needs_manual_grade = False
            given = hand.get(result.student, {})
            for question in manual_questions(lab):
                grade = _entry(gradebook, "grade", question, lab.id, result.student)
                if question in given:
                    grade.manual_score = given[question]
                grade.needs_manual_grade = grade.manual_score is None
            for name in cells:
                comment = _entry(gradebook, "comment", name, lab.id, result.student)
                failed = [t.message for t in result.tests if t.question == name and not t.passed]
                if name in lab.graded:
                    comment.auto_comment = "\n".join(dict.fromkeys(failed)) or None
            gradebook.db.commit()


def _entry(gradebook, kind: str, cell_name: str, lab: str, student: str):
    """The student's ``kind`` ("grade" or "comment") of a cell, made where the submission
    predates the cell (a gradebook written before the cell was recorded)."""
    from nbgrader.api import Comment, Grade, MissingEntry

    find, cells, made = (
        (gradebook.find_grade, gradebook.find_grade_cell, Grade)
        if kind == "grade"
        else (gradebook.find_comment, gradebook.find_solution_cell, Comment)
    )
    try:
        return find(cell_name, lab, lab, student)
    except MissingEntry:
        cell = cells(cell_name, lab, lab)
        notebook = gradebook.find_submission_notebook(lab, lab, student)
        entry = made(cell=cell, notebook=notebook)
        gradebook.db.add(entry)
        return entry


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
