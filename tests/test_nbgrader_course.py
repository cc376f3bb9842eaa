"""A class submitted to a real nbgrader course: our grades land where nbgrader's own tools read
them (formgrader's lists, Manual Grading, generate_feedback, export), checked with nbgrader's
API on real results and a real course folder, no kernel (seconds; the first test in make test,
the others in the stress tier). The same after a real
`cnn-course grade`, and formgrader's pages in a browser: test_browser.py."""

from __future__ import annotations

import csv
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from conftest import COURSE, REPO, full_marks
from nbgrader.api import Gradebook
from nbgrader.apps.api import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import parse_utc

from cnn_course.errors import CourseError
from cnn_course_instructor.grading import run
from cnn_course_instructor.grading.export import export_lab
from cnn_course_instructor.grading.hand import manual_questions
from cnn_course_instructor.grading.nbgrader_course import open_course, released_notebook
from cnn_course_instructor.grading.results import Status, SubmissionResult, TestResult

LAB = COURSE.lab("cnn_lab")
(MANUAL,) = manual_questions(LAB)
AUTO = sum(full_marks(LAB.id).values())
ALL = sum(question.points for question in LAB.questions.values())
RELEASED = released_notebook(REPO, LAB.id)
COURSE_ID = "cnn-fall-2026"
TIMES = {"ann": "2026-12-01 22:10:05.123456 UTC", "bob": "2026-12-02 09:00:00 -0500"}
HOSTILE_HTML = "<script>document.title='owned'</script><img src=x onerror=alert(1)>"

pytestmark = pytest.mark.skipif(RELEASED is None, reason="the notebooks are not built")


@pytest.fixture(autouse=True)
def _venv_on_path(monkeypatch):
    """nbgrader makes a gradebook by running `alembic`: found on PATH, as in an activated venv."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def nbgrader_course(tmp_path, *students: str):
    """An nbgrader course as `nbgrader quickstart` and `collect` leave it: its config with a
    course id, a gradebook naming Ann, each student's submission with its timestamp.txt."""
    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        f"c.Exchange.root = {str(tmp_path / 'exchange')!r}\n"
    )
    (tmp_path / "exchange").mkdir()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=COURSE_ID) as book:
        book.add_student("ann", first_name="Ann", last_name="Lee")
    for student in students:
        folder = course / "submitted" / student / LAB.id
        folder.mkdir(parents=True)
        nbformat.write(RELEASED, folder / f"{LAB.id}.ipynb")
        (folder / "timestamp.txt").write_text(TIMES[student])
    return course


def graded(course, out, scores: dict[str, dict[str, float]]) -> None:
    """Results and executed notebooks as a grading run leaves them in OUT: the executed
    notebook holds a hostile answer (script in Markdown, a made-up cell id)."""
    folder = out / LAB.id
    (folder / "results").mkdir(parents=True)
    (folder / "executed").mkdir()
    for student, marks in scores.items():
        notebook = course / "submitted" / student / LAB.id / f"{LAB.id}.ipynb"
        tests = [
            TestResult(q, "a test", full_marks(LAB.id)[q], s, "" if s else f"{q} is wrong")
            for q, s in marks.items()
        ]
        result = SubmissionResult(
            student, LAB.id, str(notebook), Status.GRADED, "", marks, AUTO, tests
        )
        result.submitted_at = parse_utc(TIMES[student]).isoformat()
        (folder / "results" / f"{student}.json").write_text(result.to_json())
        executed = nbformat.read(notebook, as_version=4)
        for cell in executed.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == MANUAL:
                cell.source = f"My answer. {HOSTILE_HTML}"
        forged = nbformat.v4.new_code_cell("print(1)")
        forged.metadata["nbgrader"] = {"grade_id": "made_up", "grade": True, "points": 100}
        executed.cells.append(forged)
        nbformat.write(executed, folder / "executed" / f"{student}.ipynb")


def api(course) -> NbGraderAPI:
    coursedir = CourseDirectory(root=str(course), course_id=COURSE_ID)
    return NbGraderAPI(coursedir=coursedir)


def rows(out) -> dict[str, dict]:
    with (out / LAB.id / "grades.csv").open() as file:
        return {row["student"]: row for row in csv.DictReader(file)}


def wrong(question: str) -> dict[str, float]:
    marks = dict(full_marks(LAB.id))
    marks[question] = 0.0
    return marks


def test_formgrader_lists_every_submission_autograded_with_its_score_time_and_name(tmp_path):
    """After our outputs, does nbgrader's own API (what formgrader shows) list each submission
    as autograded (no Autograde button), with our score, the submitted time, the student's
    name kept, under the course's id, and only the written answer waiting for a TA; is the
    notebook formgrader shows safe, with each graded answer marked?"""
    course = nbgrader_course(tmp_path, "ann", "bob")
    out = tmp_path / "out"
    lost = next(iter(full_marks(LAB.id)))
    graded(course, out, {"ann": full_marks(LAB.id), "bob": wrong(lost)})
    run.write_lab_outputs(out, LAB, None, progress=lambda _: None, released=RELEASED)

    nbgrader = api(course)
    assert nbgrader.get_autograded_students(LAB.id) == {"ann", "bob"}
    submissions = {s["student"]: s for s in nbgrader.get_submissions(LAB.id)}
    assert submissions["ann"]["autograded"] and submissions["bob"]["autograded"]
    assert submissions["ann"]["score"] == AUTO
    assert submissions["bob"]["score"] == AUTO - full_marks(LAB.id)[lost]
    assert submissions["ann"]["max_score"] == ALL
    assert submissions["ann"]["needs_manual_grade"]  # the written answer, for a TA
    assert submissions["ann"]["first_name"] == "Ann" and submissions["ann"]["last_name"] == "Lee"
    assignment = nbgrader.get_assignment(LAB.id)
    assert assignment["num_submissions"] == 2
    with Gradebook(open_course(course).db_url, course_id=COURSE_ID) as book:
        assert book.find_assignment(LAB.id).course_id == COURSE_ID
        grade = book.find_grade(lost, LAB.id, LAB.id, "bob")
        assert grade.score == 0 and not grade.needs_manual_grade
        assert book.find_comment(lost, LAB.id, LAB.id, "bob").auto_comment == f"{lost} is wrong"
        assert book.find_grade(MANUAL, LAB.id, LAB.id, "ann").needs_manual_grade
    stamp = (course / "autograded" / "bob" / LAB.id / "timestamp.txt").read_text()
    assert stamp.endswith(" UTC") and parse_utc(stamp) == parse_utc(TIMES["bob"])  # as nbgrader

    # The executed notebook formgrader renders: the student's script defused, a made-up cell id
    # dropped, each automatically graded answer a graded cell of its points.
    text = (course / "autograded" / "ann" / LAB.id / f"{LAB.id}.ipynb").read_text()
    assert "<script" not in text and "<img" not in text and "made_up" not in text
    assert "&lt;script&gt;" in text  # shown as text
    cells = {
        cell["metadata"]["nbgrader"]["grade_id"]: cell["metadata"]["nbgrader"]
        for cell in json.loads(text)["cells"]
        if "nbgrader" in cell["metadata"]
    }
    for question in LAB.graded.values():
        assert cells[question.id]["grade"] and cells[question.id]["points"] == question.points
    assert cells[MANUAL]["points"] == LAB.questions[MANUAL].points


@pytest.mark.stress  # seconds each; make test keeps the first
def test_a_ta_s_grade_in_the_course_reaches_every_output_and_nbgrader_s_own_feedback(tmp_path):
    """A TA grades Ann's written answer in the course's gradebook (as formgrader does): is it in
    grades.csv, her page, the Canvas export (with her name from the course) and the feedback
    nbgrader's generate_feedback makes, which shows no script of hers?"""
    course = nbgrader_course(tmp_path, "ann", "bob")
    out = tmp_path / "out"
    graded(course, out, {"ann": full_marks(LAB.id), "bob": full_marks(LAB.id)})
    run.write_lab_outputs(out, LAB, None, progress=lambda _: None, released=RELEASED)
    with Gradebook(open_course(course).db_url, course_id=COURSE_ID) as book:
        book.find_grade(MANUAL, LAB.id, LAB.id, "ann").manual_score = 1.5
        book.db.commit()
    canvas = export_lab(out, LAB, "canvas", progress=lambda _: None, released=RELEASED)
    ann = rows(out)["ann"]
    assert float(ann[MANUAL]) == 1.5 and float(ann["total"]) == AUTO + 1.5
    assert "1.5" in (out / LAB.id / "feedback" / "ann.html").read_text()
    assert f'"Lee, Ann",,,ann,,{AUTO + 1.5:g}' in canvas.read_text()
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", course_id="cnn-course") as book:
        assert book.find_grade(MANUAL, LAB.id, LAB.id, "ann").manual_score == 1.5  # copied

    nbgrader = api(course)
    assert nbgrader.generate_feedback(LAB.id, "ann")["success"]
    page = (course / "feedback" / "ann" / LAB.id / f"{LAB.id}.html").read_text()
    assert f"{AUTO + 1.5:g}" in page and "<script>document" not in page
    assert nbgrader.get_autograded_students(LAB.id) == {"ann", "bob"}


@pytest.mark.stress  # seconds each; make test keeps the first
def test_a_regrade_of_a_resubmission_is_autograded_again_with_the_new_time(tmp_path):
    """Bob resubmits (a new timestamp.txt): before the regrade formgrader must see him as not
    autograded (nbgrader's rule), after it autograded with the new time."""
    course = nbgrader_course(tmp_path, "ann", "bob")
    out = tmp_path / "out"
    graded(course, out, {"ann": full_marks(LAB.id), "bob": full_marks(LAB.id)})
    run.write_lab_outputs(out, LAB, None, progress=lambda _: None, released=RELEASED)
    later = "2026-12-03 10:00:00 UTC"
    (course / "submitted" / "bob" / LAB.id / "timestamp.txt").write_text(later)
    assert api(course).get_autograded_students(LAB.id) == {"ann"}
    result = SubmissionResult.read(out / LAB.id / "results" / "bob.json")
    result.submitted_at = parse_utc(later).isoformat()
    (out / LAB.id / "results" / "bob.json").write_text(result.to_json())
    run.write_lab_outputs(out, LAB, None, progress=lambda _: None, released=RELEASED)
    assert api(course).get_autograded_students(LAB.id) == {"ann", "bob"}
    submission = next(s for s in api(course).get_submissions(LAB.id) if s["student"] == "bob")
    assert datetime.fromisoformat(submission["timestamp"]) == parse_utc(later)


@pytest.mark.stress  # seconds each; make test keeps the first
def test_the_course_s_due_date_is_kept_and_a_broken_config_is_one_message(tmp_path):
    """The instructor's due date in the course's gradebook stays whatever --deadline says (it
    only fills a missing one); a config that does not run stops with what to fix."""
    course = nbgrader_course(tmp_path, "ann")
    due = datetime(2026, 12, 1, 23, 59)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=COURSE_ID) as book:
        book.add_assignment(LAB.id, duedate=due)
    out = tmp_path / "out"
    graded(course, out, {"ann": full_marks(LAB.id)})
    run.write_lab_outputs(out, LAB, datetime(2026, 12, 5), lambda _: None, RELEASED)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=COURSE_ID) as book:
        assert book.find_assignment(LAB.id).duedate == due
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.root = (\n")
    with pytest.raises(CourseError, match="nbgrader_config.py .* could not be read"):
        run.write_lab_outputs(out, LAB, None, progress=lambda _: None, released=RELEASED)
