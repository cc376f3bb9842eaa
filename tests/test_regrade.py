"""Regrades and late work: no run drops another student's row, a changed notebook is graded
again, late rows are marked (fast: real results, outputs and nbgrader gradebooks, no kernel)."""

from __future__ import annotations

import csv
import os
import re
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from conftest import COURSE, full_marks

from cnn_course.errors import CourseError
from cnn_course_instructor.grading import run
from cnn_course_instructor.grading.nbgrader_course import out_book
from cnn_course_instructor.grading.outputs import fill_gradebook
from cnn_course_instructor.grading.report import summarise
from cnn_course_instructor.grading.results import Status, SubmissionResult
from cnn_course_instructor.grading.submissions import (
    Submission,
    digest,
    find_submissions,
    other_assignments,
    submitted_at,
)

LAB = COURSE.lab("cnn_lab")
DEADLINE = datetime(2026, 12, 1, 23, 59)


def result(student: str, total_lost: float = 0.0, **fields) -> SubmissionResult:
    """A graded cnn_lab result: full marks less ``total_lost`` on the first question."""
    scores = full_marks(LAB.id)
    first = next(iter(scores))
    scores[first] -= total_lost
    values = dict(student=student, lab=LAB.id, notebook=f"{student}.ipynb", status=Status.GRADED)
    values.update(reason="", scores=scores, max=sum(full_marks(LAB.id).values()))
    return SubmissionResult(**{**values, **fields})


def keep(out: Path, *results: SubmissionResult) -> None:
    folder = out / LAB.id / "results"
    folder.mkdir(parents=True, exist_ok=True)
    for one in results:
        (folder / f"{one.student}.json").write_text(one.to_json())


def rows(out: Path) -> dict[str, dict]:
    with (out / LAB.id / "grades.csv").open() as file:
        return {row["student"]: row for row in csv.DictReader(file)}


def test_outputs_hold_every_student_a_run_did_not_grade(tmp_path):
    """With six students graded by earlier runs and one regraded now, do grades.csv, the
    feedback pages, the gradebook and the class report hold all six, the new grade included?"""
    keep(tmp_path, *(result(f"s{i}") for i in range(5)), result("s5", total_lost=1))
    keep(tmp_path, result("s5"))  # this run's regrade of s5 alone
    written = run.write_lab_outputs(tmp_path, LAB, None, progress=lambda _: None)
    assert sorted(r.student for r in written) == [f"s{i}" for i in range(6)]
    table = rows(tmp_path)
    assert sorted(table) == [f"s{i}" for i in range(6)]
    assert float(table["s5"]["total"]) == sum(full_marks(LAB.id).values())
    assert len(list((tmp_path / LAB.id / "feedback").glob("*.html"))) == 6
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", course_id="cnn-course") as book:
        assert len(book.find_assignment(LAB.id).submissions) == 6
    assert (tmp_path / LAB.id / "report" / "index.html").is_file()
    assert len(summarise(tmp_path / LAB.id, LAB).results) == 6


def test_an_unreadable_result_is_skipped_with_a_note_not_a_crash(tmp_path):
    keep(tmp_path, result("ann"))
    (tmp_path / LAB.id / "results" / "bob.json").write_text("{not json")
    notes = []
    written = run.write_lab_outputs(tmp_path, LAB, None, progress=notes.append)
    assert [r.student for r in written] == ["ann"] and list(rows(tmp_path)) == ["ann"]
    assert len(notes) == 1 and "bob.json" in notes[0]


def submission(tmp_path: Path, student: str, text: str, timestamp: str | None = None):
    """``student``'s notebook in nbgrader's submitted/ layout, with its timestamp.txt."""
    folder = tmp_path / "submitted" / student / LAB.id
    folder.mkdir(parents=True)
    (folder / f"{LAB.id}.ipynb").write_text(text)
    if timestamp is not None:
        (folder / "timestamp.txt").write_text(timestamp)
    (found,) = [s for s in find_submissions(tmp_path, [LAB.id]) if s.student == student]
    return found


def test_other_assignments_in_submitted_are_counted_once_a_flat_folder_s_subfolders_not(
    tmp_path,
):
    """Are the assignments of nbgrader's submitted/ that the course lacks counted by students,
    and the subfolders of a flat folder of notebooks not taken for assignments?"""
    submission(tmp_path, "ann", "{}")
    for student in ("ann", "bob"):
        (tmp_path / "submitted" / student / "homework_1").mkdir(parents=True)
    assert other_assignments(tmp_path, [LAB.id]) == {"homework_1": 2}
    flat = tmp_path / "flat"
    (flat / "scratch" / "old").mkdir(parents=True)
    (flat / "ann.ipynb").write_text("{}")
    assert other_assignments(flat, [LAB.id]) == {}


def test_a_changed_notebook_is_owed_again_an_unchanged_one_is_not(tmp_path):
    """Is a submission whose file changed since its result owed a regrade, and one whose file
    is the one graded, or whose result predates digests, not; a grader error always?"""
    ann = submission(tmp_path, "ann", '{"cells": []}')
    out = tmp_path / "out"
    keep(out, result("ann", digest=digest(ann)))
    assert not run._owed(out, LAB.id, ann, digest(ann))
    (ann.path).write_text('{"cells": [1]}')
    assert run._owed(out, LAB.id, ann, digest(ann))
    keep(out, result("ann"))  # written before digests: None
    assert not run._owed(out, LAB.id, ann, digest(ann))
    keep(out, result("ann", digest=digest(ann), status=Status.GRADER_ERROR))
    assert run._owed(out, LAB.id, ann, digest(ann))


def test_a_link_that_becomes_a_file_is_graded_again(tmp_path):
    """Is a submission that was a link (invalid, digest "") owed once it is a real file?"""
    target = tmp_path / "elsewhere.ipynb"
    target.write_text("{}")
    ann = submission(tmp_path, "ann", "{}")
    ann.path.unlink()
    ann.path.symlink_to(target)
    assert digest(ann) == ""
    out = tmp_path / "out"
    keep(out, result("ann", digest="", status=Status.INVALID))
    assert not run._owed(out, LAB.id, ann, digest(ann))
    ann.path.unlink()
    ann.path.write_text("{}")
    assert run._owed(out, LAB.id, ann, digest(ann))


def test_only_the_students_asked_for_are_chosen_and_an_unknown_id_is_refused(tmp_path):
    for student in ("ann", "bob", "eve"):
        submission(tmp_path, student, "{}")
    found = find_submissions(tmp_path, [LAB.id])
    chosen = run._chosen(found, ["bob", "eve"], tmp_path)
    assert [s.student for s in chosen] == ["bob", "eve"]
    assert run._chosen(found, None, tmp_path) == found
    with pytest.raises(CourseError, match=r"--student zed: no such submission .* 3 students"):
        run._chosen(found, ["bob", "zed"], tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02 01:30:00.123456 UTC", datetime(2026, 12, 2, 1, 30, 0, 123456)),
        ("2026-12-02T02:30:00+01:00", datetime(2026, 12, 2, 1, 30)),
        ("not a time", None),
        ("9" * 150, None),
        ("\xff\xfe", None),
    ],
)
def test_the_submission_time_is_nbgrader_s_timestamp_read_with_care(tmp_path, text, expected):
    """Is nbgrader's timestamp.txt read as UTC, and one that is no time, absurd, or not text
    no time at all (never a crash)?"""
    ann = submission(tmp_path, "ann", "{}", timestamp=None)
    (ann.path.parent / "timestamp.txt").write_bytes(text.encode("latin-1"))
    assert submitted_at(ann) == expected


def test_a_timestamp_that_is_a_link_or_huge_or_missing_gives_no_time(tmp_path):
    ann = submission(tmp_path, "ann", "{}")
    assert submitted_at(ann) is None  # none written
    secret = tmp_path / "secret.txt"
    secret.write_text("2026-12-01 10:00:00 UTC")
    os.symlink(secret, ann.path.parent / "timestamp.txt")
    assert submitted_at(ann) is None
    (ann.path.parent / "timestamp.txt").unlink()
    (ann.path.parent / "timestamp.txt").write_text("2026-12-01 10:00:00 UTC" + " " * 10_000)
    assert submitted_at(ann) is None
    flat = Submission("bob", tmp_path / "bob.ipynb", None, tmp_path)
    assert submitted_at(flat) is None  # a flat folder holds no submission time


def test_late_rows_are_marked_in_the_table_the_feedback_and_the_gradebook(tmp_path):
    """Against a deadline, is a row submitted 2 h 5 min after it marked 2.08 hours late (no
    points taken), its page saying so, one on time 0, one with no time blank, and do the
    gradebook's submissions carry their times and the lab its due date?"""
    keep(
        tmp_path,
        result("late", submitted_at="2026-12-02T02:04:00"),
        result("early", submitted_at="2026-12-01T12:00:00"),
        result("unknown"),
    )
    run.write_lab_outputs(tmp_path, LAB, DEADLINE, progress=lambda _: None)
    table = rows(tmp_path)
    assert table["late"]["hours_late"] == "2.08" and table["late"]["submitted"].startswith("2026")
    assert table["early"]["hours_late"] == "0.0" and table["unknown"]["hours_late"] == ""
    assert float(table["late"]["total"]) == sum(full_marks(LAB.id).values())
    page = (tmp_path / LAB.id / "feedback" / "late.html").read_text()
    assert "2 h 5 min after the deadline (2026-12-01 23:59 UTC)" in page
    assert "after the deadline" not in (tmp_path / LAB.id / "feedback" / "early.html").read_text()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", course_id="cnn-course") as book:
        assert book.find_assignment(LAB.id).duedate == DEADLINE
        late = book.find_submission(LAB.id, "late")
        assert late.timestamp == datetime(2026, 12, 2, 2, 4) and late.total_seconds_late > 7000
        assert book.find_submission(LAB.id, "early").total_seconds_late == 0


def test_progress_is_counted_by_status_with_a_time_left_and_a_live_bar_on_a_terminal(capsys):
    """Each finished row's line ends with the counts so far and the time left; on a terminal a
    progress bar counts too, with the lines written above it, never through it."""
    plain = run._Tally(3)
    assert plain.lines(print) is print  # in a log: plain lines only
    assert re.fullmatch(r"\[1/3: 1 graded; ~.* left\]", plain.add(Status.GRADED))
    live = run._Tally(3, live=True)
    say = live.lines(print)
    for status in (Status.GRADED, Status.TIMEOUT, Status.GRADED):
        say(f"a row: {status} {live.add(status)}")
    live.close()
    shown = capsys.readouterr()
    assert "a row: graded [1/3: 1 graded; ~" in shown.out
    assert "[3/3: 2 graded, 1 timeout]" in shown.out  # the last one: nothing left
    assert "3/3" in shown.err and "2 graded, 1 timeout" in shown.err  # the bar, on stderr


def test_the_due_date_is_nbgrader_s_else_the_one_an_earlier_run_was_given(tmp_path):
    """Is the lab's due date read from the nbgrader course's gradebook.db (beside submitted/,
    from the course folder or submitted/ itself), else from OUT's gradebook where an earlier
    run's --deadline left it; none without either; an unreadable gradebook refused with what to
    do?"""
    out, submitted = tmp_path / "out", tmp_path / "submitted"
    out.mkdir()
    assert run.due_date(submitted, out, LAB.id) is None
    fill_gradebook(out_book(out / "gradebook.db"), LAB, [], DEADLINE)  # an earlier run's --deadline
    assert run.due_date(submitted, out, LAB.id) == DEADLINE
    later = datetime(2026, 12, 8, 12, 0)
    fill_gradebook(out_book(tmp_path / "gradebook.db"), LAB, [], later)  # the nbgrader course's
    fill_gradebook(out_book(tmp_path / "gradebook.db"), COURSE.lab("cnn_part2"), [])
    assert run.due_date(submitted, out, LAB.id) == later
    assert run.due_date(tmp_path, out, LAB.id) == later
    assert run.due_date(submitted, out, "cnn_part2") is None  # no due date
    assert run.nbgrader_duedate(tmp_path / "gradebook.db", "demo_lab") is None  # no such lab
    (tmp_path / "gradebook.db").write_text("not a database" * 100)
    with pytest.raises(CourseError, match="cannot be read for the due date .* --deadline"):
        run.due_date(submitted, out, LAB.id)


# --- for real: the class graded in this session, regraded in part --------------------------


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.stress
@pytest.mark.parametrize("graded_lab", ["cnn_part2"], indirect=True)
def test_regrading_one_student_or_a_changed_notebook_keeps_every_other_row(
    graded_lab, real_root, real_cache, tmp_path
):
    """On a copy of a class graded in this session: does `--student X --force` regrade X
    alone and keep every other row of grades.csv as it was; and, once X's notebook changes, does
    a plain resume grade X again (it changed), and only X?"""
    import shutil
    import subprocess

    from conftest import grade_command

    out, submissions = tmp_path / "out", tmp_path / "submitted"
    shutil.copytree(graded_lab.out, out, ignore=shutil.ignore_patterns(".lock", ".work"))
    shutil.copytree(graded_lab.submissions, submissions)
    lab = graded_lab.lab
    before = rows_of(out, lab)
    untouched = [s.name for s in graded_lab.corpus if not s.edits and s.base == "student"][0]
    others = {name: (out / lab / "results" / f"{name}.json").read_text() for name in before}
    del others[untouched]
    env = {**os.environ, "CNN_COURSE_DATA": str(real_root), "CNN_COURSE_CACHE": str(real_cache)}
    options = ["--jobs", "1", "--cell-timeout", "20"]
    options += [] if graded_lab.sandboxed else ["--no-sandbox"]

    def grade(*more: str) -> str:
        command = grade_command(submissions, out, *options, *more)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    printed = grade("--student", untouched, "--force")
    assert "1 submissions, 0 already graded, 1 to grade" in printed, printed
    assert rows_of(out, lab) == before  # every row, the regraded one alike
    for name, text in others.items():
        assert (out / lab / "results" / f"{name}.json").read_text() == text, name

    path = submissions / f"{untouched}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell("I changed this notebook."))
    nbformat.write(notebook, path)
    printed = grade()
    assert (
        f"{len(before)} submissions, {len(before) - 1} already graded, 1 to grade (1 changed"
        in printed
    ), printed
    assert rows_of(out, lab) == before
    for name, text in others.items():
        assert (out / lab / "results" / f"{name}.json").read_text() == text, name


def rows_of(out: Path, lab: str) -> dict[str, tuple]:
    """grades.csv's rows: student -> (status, total)."""
    with (out / lab / "grades.csv").open() as file:
        return {row["student"]: (row["status"], row["total"]) for row in csv.DictReader(file)}
