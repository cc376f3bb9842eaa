"""Points given by hand (formgrader / nbgrader's API, or OUT/<lab>/hand_grades.csv) flow into
grades.csv, the feedback, the gradebook and the exports (fast: real results, real nbgrader
gradebooks and exporters, no kernel)."""

from __future__ import annotations

import csv
import os

import pytest
from conftest import COURSE, full_marks
from nbgrader.api import Gradebook

from cnn_course.errors import CourseError
from cnn_course_instructor.cli import main
from cnn_course_instructor.grading import run
from cnn_course_instructor.grading.export import CANVAS_COLUMNS, MOODLE_ID, export_lab
from cnn_course_instructor.grading.hand import HAND_FILE, manual_questions, read_hand_file
from cnn_course_instructor.grading.results import Status, SubmissionResult

LAB = COURSE.lab("cnn_lab")
(MANUAL,) = manual_questions(LAB)  # part 1's one written answer
AUTO = sum(full_marks(LAB.id).values())  # what the hidden tests grade
ALL = sum(question.points for question in LAB.questions.values())


def graded(out, *students: str) -> None:
    """Full automatic marks for each student, as a grading run leaves them in OUT."""
    folder = out / LAB.id / "results"
    folder.mkdir(parents=True, exist_ok=True)
    for student in students:
        result = SubmissionResult(
            student, LAB.id, f"{student}.ipynb", Status.GRADED, "", full_marks(LAB.id), AUTO
        )
        (folder / f"{student}.json").write_text(result.to_json())


def rows(out) -> dict[str, dict]:
    with (out / LAB.id / "grades.csv").open() as file:
        return {row["student"]: row for row in csv.DictReader(file)}


def gradebook(out) -> Gradebook:
    return Gradebook(f"sqlite:///{out / 'gradebook.db'}", course_id="cnn-course")


def test_hand_graded_questions_are_to_be_graded_until_someone_grades_them(tmp_path):
    """Before any hand grade: is the written answer an empty column, the total the automatic
    one out of every point, the row "to be graded", the page saying so, the gradebook cell
    waiting for a TA (the automatic ones not), and the template file written once?"""
    graded(tmp_path, "ann", "bob")
    run.write_lab_outputs(tmp_path, LAB, None, progress=lambda _: None)
    ann = rows(tmp_path)["ann"]
    assert ann[MANUAL] == "" and ann["by_hand"] == "to be graded"
    assert float(ann["total"]) == AUTO and float(ann["max"]) == ALL
    page = (tmp_path / LAB.id / "feedback" / "ann.html").read_text()
    points = LAB.questions[MANUAL].points
    assert f"({points:g} points still to be graded by hand)" in page
    assert "to be graded by hand" in page
    with gradebook(tmp_path) as book:
        assert book.find_grade(MANUAL, LAB.id, LAB.id, "ann").needs_manual_grade
        automatic = next(iter(full_marks(LAB.id)))
        assert not book.find_grade(automatic, LAB.id, LAB.id, "ann").needs_manual_grade
        assert book.find_assignment(LAB.id).max_score == ALL
    template = tmp_path / LAB.id / HAND_FILE
    assert template.read_text() == f"student,{MANUAL}\nann,\nbob,\n"
    template.write_text(f"student,{MANUAL}\nbob,1\n")  # the instructor's edit
    run.write_lab_outputs(tmp_path, LAB, None, progress=lambda _: None)
    assert template.read_text() == f"student,{MANUAL}\nbob,1\n"  # never rewritten


def test_a_hand_grade_entered_through_nbgrader_lands_in_every_output_and_export(tmp_path):
    """A TA grades Ann's written answer through nbgrader's API (as formgrader does): is it in
    grades.csv, the total, her page, nbgrader's own export and the Canvas and Moodle files?"""
    graded(tmp_path, "ann", "bob")
    run.write_lab_outputs(tmp_path, LAB, None, progress=lambda _: None)
    with gradebook(tmp_path) as book:
        book.find_grade(MANUAL, LAB.id, LAB.id, "ann").manual_score = 1.5
        student = book.find_student("ann")
        student.first_name, student.last_name = "Ann", "Lee"
        book.db.commit()
    assert main(["report", str(tmp_path), "--repo", str(COURSE.root)]) == 0
    ann = rows(tmp_path)["ann"]
    assert float(ann[MANUAL]) == 1.5 and ann["by_hand"] == "graded"
    assert float(ann["total"]) == AUTO + 1.5
    page = (tmp_path / LAB.id / "feedback" / "ann.html").read_text()
    assert f"{AUTO + 1.5:g} / {ALL:g}" in page and "graded by hand" in page

    nbgrader_csv = export_lab(tmp_path, LAB, "nbgrader", progress=lambda _: None)
    exported = {row["student_id"]: row for row in csv.DictReader(nbgrader_csv.open())}
    assert float(exported["ann"]["score"]) == AUTO + 1.5
    assert float(exported["ann"]["max_score"]) == ALL and exported["ann"]["last_name"] == "Lee"
    assert float(exported["bob"]["score"]) == AUTO

    canvas = export_lab(tmp_path, LAB, "canvas", progress=lambda _: None).read_text()
    lines = list(csv.reader(canvas.splitlines()))
    # Canvas's gradebook import: its identity columns, one per assignment, "Points Possible"
    assert lines[0] == [*CANVAS_COLUMNS, f"{LAB.title} ({LAB.id})"]
    assert lines[1] == ["Points Possible", "", "", "", "", f"{ALL:g}"]
    assert lines[2] == ["Lee, Ann", "", "", "ann", "", f"{AUTO + 1.5:g}"]
    moodle = export_lab(tmp_path, LAB, "moodle", progress=lambda _: None).read_text()
    # Moodle's CSV grade import: an identity column it maps (username), a grade item column
    assert moodle.splitlines() == [
        f"{MOODLE_ID},{LAB.title}",
        f"ann,{AUTO + 1.5:g}",
        f"bob,{AUTO:g}",
    ]


def test_the_hand_grades_file_wins_and_is_copied_into_the_gradebook(tmp_path):
    """Where hand_grades.csv and the gradebook both grade Bob, does the file's value win, in
    grades.csv and in the gradebook (so formgrader shows what grades.csv says)?"""
    graded(tmp_path, "ann", "bob")
    run.write_lab_outputs(tmp_path, LAB, None, progress=lambda _: None)
    with gradebook(tmp_path) as book:
        book.find_grade(MANUAL, LAB.id, LAB.id, "bob").manual_score = 0.5
        book.db.commit()
    (tmp_path / LAB.id / HAND_FILE).write_text(f"\ufeffstudent,{MANUAL}\nbob, 2\n\n")
    run.write_lab_outputs(tmp_path, LAB, None, progress=lambda _: None)
    assert float(rows(tmp_path)["bob"][MANUAL]) == 2.0
    with gradebook(tmp_path) as book:
        grade = book.find_grade(MANUAL, LAB.id, LAB.id, "bob")
        assert grade.manual_score == 2.0 and not grade.needs_manual_grade


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name,q10\nann,1\n", "its first line must name the columns student and the questions"),
        ("student,q1_conv2d\nann,1\n", "its first line must name"),  # graded automatically
        ("student,{q}\nann,7\n", "line 2: {q} = '7'; expected a number from 0 to 2"),
        ("student,{q}\nann,-1\n", "expected a number from 0 to 2"),
        ("student,{q}\nann,nan\n", "expected a number from 0 to 2"),
        ("student,{q}\nann,two\n", "line 2: {q} = 'two'"),
        ("student,{q}\nbad id,1\n", "line 2: 'bad id' is not a student id"),
        ("student,{q}\nann," + "1" * 200_000 + "\n", "is not a CSV table"),
    ],
)
def test_a_hand_grades_file_that_is_wrong_is_refused_with_its_line(tmp_path, text, words):
    path = tmp_path / HAND_FILE
    path.write_text(text.format(q=MANUAL))
    with pytest.raises(CourseError, match=words.format(q=MANUAL).replace("(", r"\(")):
        read_hand_file(path, LAB)


def test_a_hand_grades_file_that_is_a_link_is_refused_and_a_missing_one_gives_nothing(tmp_path):
    path = tmp_path / HAND_FILE
    assert read_hand_file(path, LAB) == {}
    other = tmp_path / "elsewhere.csv"
    other.write_text(f"student,{MANUAL}\nann,1\n")
    os.symlink(other, path)
    with pytest.raises(CourseError, match="cannot be read .* a link is refused"):
        read_hand_file(path, LAB)


def test_export_refuses_one_file_for_several_labs_and_an_empty_out(tmp_path, capsys):
    graded(tmp_path, "ann")
    (tmp_path / "cnn_part2" / "results").mkdir(parents=True)
    repo = ["--repo", str(COURSE.root)]
    assert main(["export", str(tmp_path), "--format", "canvas", "--to", "x.csv", *repo]) == 2
    assert "add --lab" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--format", "moodle", *repo]) == 2
    assert "no graded lab in" in capsys.readouterr().err
