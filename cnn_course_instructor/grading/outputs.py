"""A lab's outputs from its results: grades.csv, one feedback page per student, nbgrader's gradebook."""

from __future__ import annotations

import csv
import io
import os
import warnings
from datetime import datetime
from pathlib import Path

import jinja2

from cnn_course.labs import Lab

from .hand import HAND_FILE, HandGrades, hand_grades, manual_questions
from .results import Status, SubmissionResult

__all__ = [
    "duration",
    "feedback_html",
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
) -> HandGrades:
    """``folder/grades.csv``, ``folder/feedback/<student>.html`` and the gradebook entries, late
    rows marked against ``deadline`` (UTC), with the points given by hand (``hand``: the
    gradebook's and ``folder/hand_grades.csv``'s, which the first run writes empty), returned."""
    hand = hand_grades(folder, lab, gradebook)
    write_hand_template(folder / HAND_FILE, lab, [result.student for result in results])
    write_text(folder / "grades.csv", grades_csv(results, lab, deadline, hand))
    (folder / "feedback").mkdir(exist_ok=True)
    for result in results:
        page = feedback_html(result, lab, deadline, hand)
        write_text(folder / "feedback" / f"{result.student}.html", page)
    fill_gradebook(gradebook, lab, results, deadline, hand)
    return hand


def fill_gradebook(
    db_path: Path,
    lab: Lab,
    results: list[SubmissionResult],
    deadline: datetime | None = None,
    hand: HandGrades | None = None,
) -> None:
    """Record every score in nbgrader's gradebook, so formgrader lists them, with each
    submission's time and the lab's due date where known (nbgrader then tells late ones): the
    hidden tests' scores as automatic ones (no manual grade needed), each hand-graded question
    as a cell a TA grades (its points from ``hand`` where given)."""
    hand = hand or {}
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    url = f"sqlite:///{db_path}"
    _stamp_new_gradebook(url)
    with warnings.catch_warnings(), Gradebook(url, course_id="cnn-course") as gradebook:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush noise
        if deadline is not None:
            gradebook.update_or_create_assignment(lab.id, duedate=deadline)
        else:
            gradebook.update_or_create_assignment(lab.id)
        if lab.id not in [nb.name for nb in gradebook.find_assignment(lab.id).notebooks]:
            gradebook.add_notebook(lab.id, lab.id)
        for question in lab.graded.values():
            gradebook.update_or_create_grade_cell(
                question.id, lab.id, lab.id, max_score=question.points, cell_type="code"
            )
        for question in manual_questions(lab).values():
            gradebook.update_or_create_grade_cell(
                question.id, lab.id, lab.id, max_score=question.points, cell_type="markdown"
            )
        for result in results:
            gradebook.update_or_create_student(result.student)
            submission = gradebook.update_or_create_submission(lab.id, result.student)
            submission.timestamp = _submitted(result)
            for question in lab.graded:
                grade = gradebook.find_grade(question, lab.id, lab.id, result.student)
                grade.auto_score = result.scores.get(question, 0.0)
                grade.needs_manual_grade = False
            given = hand.get(result.student, {})
            for question in manual_questions(lab):
                grade = _grade(gradebook, question, lab.id, result.student)
                if question in given:
                    grade.manual_score = given[question]
                grade.needs_manual_grade = grade.manual_score is None
            gradebook.db.commit()


def _grade(gradebook, question: str, lab: str, student: str):
    """The student's grade of ``question``, made where the submission predates its cell (a
    gradebook written before the lab's hand-graded questions were recorded)."""
    from nbgrader.api import Grade, MissingEntry

    try:
        return gradebook.find_grade(question, lab, lab, student)
    except MissingEntry:
        cell = gradebook.find_grade_cell(question, lab, lab)
        notebook = gradebook.find_submission_notebook(lab, lab, student)
        grade = Grade(cell=cell, notebook=notebook)
        gradebook.db.add(grade)
        return grade


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
