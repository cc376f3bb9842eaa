"""A real nbgrader course graded by `cnn-course grade`, then looked at in nbgrader's own
formgrader, in a real browser: every submission autograded with its score and time, the
notebook in Manual Grading with each exercise's score, a TA's grade typed into formgrader
reaching grades.csv, the feedback page and nbgrader's own feedback. Screenshots go to
``artifacts/browser/formgrader_*.png``."""

from __future__ import annotations

import csv
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import COURSE, REPO, corpus, full_marks, grade_command
from test_browser import (  # noqa: F401 (browser: the fixture)
    ARTIFACTS,
    _free_port,
    _stop,
    browser,
    server_command,
)

from cnn_course_instructor.grading.hand import manual_questions
from cnn_course_instructor.grading.results import SubmissionResult

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.browser]

LAB = COURSE.lab("cnn_part2")
(MANUAL,) = manual_questions(LAB)
AUTO = sum(full_marks(LAB.id).values())
ALL = sum(question.points for question in LAB.questions.values())
COURSE_ID = "cnn-spring-2027"
STUDENTS = {"ann": "solution", "bob": "untouched_stub"}  # student -> fast corpus sample
TIMES = {"ann": "2026-12-01 21:00:00.000000 UTC", "bob": "2026-12-02 08:30:00.000000 UTC"}


@dataclass
class GradedCourse:
    course: Path
    out: Path
    results: dict[str, SubmissionResult]
    env: dict[str, str]


def _course_folder(work: Path) -> Path:
    """An nbgrader course as quickstart and collect leave it: config, exchange, submissions."""
    course = work / "course"
    course.mkdir()
    (work / "exchange").mkdir()
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        f"c.Exchange.root = {str(work / 'exchange')!r}\n"
    )
    samples = {sample.name: sample for sample in corpus(LAB.id, fast=True)}
    for student, sample in STUDENTS.items():
        folder = course / "submitted" / student / LAB.id
        folder.mkdir(parents=True)
        nbformat.write(samples[sample].notebook(COURSE, LAB.id), folder / f"{LAB.id}.ipynb")
        (folder / "timestamp.txt").write_text(TIMES[student])
    return course


@pytest.fixture(scope="module")
def graded_course(real_root, real_cache, tmp_path_factory) -> GradedCourse:
    from cnn_course_instructor.sandbox import sandbox_available

    work = tmp_path_factory.mktemp("nbgrader-course")
    work.chmod(0o755)
    course, out = _course_folder(work), work / "out"
    env = {
        **os.environ,
        "CNN_COURSE_CACHE": str(real_cache),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),  # not the user's own
        "JUPYTER_RUNTIME_DIR": str(work / "jupyter-runtime"),
    }
    for student, (first, last) in {"ann": ("Ann", "Lee"), "bob": ("Bob", "Okafor")}.items():
        named = subprocess.run(  # as an instructor names a class: nbgrader's own command
            [sys.executable, "-m", "nbgrader", "db", "student", "add", student]
            + [f"--first-name={first}", f"--last-name={last}"],
            cwd=course,
            env=env,
            capture_output=True,
            text=True,
        )
        assert named.returncode == 0, named.stdout + named.stderr
    options = ["--data-root", str(real_root), "--cell-timeout", "20", "--jobs", "2"]
    if sandbox_available() is not None:
        options.append("--no-sandbox")
    graded = subprocess.run(
        grade_command(course, out, *options), env=env, capture_output=True, text=True
    )
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    assert "autograded in the nbgrader course" in graded.stdout
    results = {p.stem: SubmissionResult.read(p) for p in (out / LAB.id / "results").glob("*.json")}
    return GradedCourse(course, out, results, env)


@pytest.fixture(scope="module")
def formgrader(graded_course):
    """Jupyter Server with nbgrader's formgrader, in the course folder, on a random port."""
    port, token = _free_port(), secrets.token_hex(16)
    command = server_command("jupyter_server", port, token, graded_course.course)
    log_path = graded_course.course.parent / "formgrader.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            cwd=graded_course.course,
            env=graded_course.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"formgrader did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        _stop(server)


def _gradebook(graded: GradedCourse):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{graded.course / 'gradebook.db'}", course_id=COURSE_ID)


def test_formgrader_shows_the_class_autograded_and_a_ta_grades_the_written_answer_there(
    browser,  # noqa: F811 (the fixture imported above)
    graded_course,
    formgrader,
    monkeypatch,
):
    """Manage Submissions lists both students autograded (none "needs autograding") with our
    scores; Manual Grading shows Ann's notebook with each exercise's score; the TA types the
    discussion's points into formgrader, and `cnn-course report` brings them into grades.csv
    and Ann's page; nbgrader's generate_feedback then works on the course."""
    url, token = formgrader
    results = graded_course.results
    assert results["ann"].total == AUTO and results["bob"].total == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(
        viewport={"width": 1300, "height": 900},
        extra_http_headers={"Authorization": f"token {token}"},  # the page's API calls too
    )
    page = context.new_page()
    try:
        page.goto(f"{url}/formgrader/manage_submissions/{LAB.id}?token={token}")
        page.wait_for_selector("#main-table tr td.score:not(:empty)", timeout=60_000)
        page.wait_for_timeout(500)
        rows = page.locator("#main-table tr")
        assert rows.count() == 2
        table = page.locator("#main-table").inner_text()
        assert "needs autograding" not in table
        assert table.count("needs manual grading") == 2  # the discussion, for a TA
        assert f"{AUTO:g} / {ALL:g}" in table and f"0 / {ALL:g}" in table
        assert "Lee, Ann" in table and "Okafor, Bob" in table  # the course's names, kept
        page.screenshot(path=str(ARTIFACTS / "formgrader_submissions.png"), full_page=True)

        with _gradebook(graded_course) as book:
            notebook_id = book.find_submission_notebook(LAB.id, LAB.id, "ann").id
        page.goto(f"{url}/formgrader/submissions/{notebook_id}/?token={token}")
        answer = page.locator(f"input.score#{MANUAL}")
        answer.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        first = next(iter(LAB.graded))
        assert page.locator(f"input.score#{first}").get_attribute("placeholder") == (
            f"{full_marks(LAB.id)[first]:g}"
        )
        page.screenshot(path=str(ARTIFACTS / "formgrader_manual_grading.png"))
        exercise = page.locator(f"input.score#{first}")
        exercise.scroll_into_view_if_needed()
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "formgrader_exercise_score.png"))
        answer.scroll_into_view_if_needed()
        answer.fill("2")
        answer.press("Tab")  # formgrader saves on change
        answer.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "formgrader_hand_grade.png"))
        saved = None
        deadline = time.monotonic() + 20
        while saved is None and time.monotonic() < deadline:
            with _gradebook(graded_course) as book:
                saved = book.find_grade(MANUAL, LAB.id, LAB.id, "ann").manual_score
            time.sleep(0.5)
        assert saved == 2
    finally:
        context.close()

    report = subprocess.run(
        [sys.executable, "-m", "cnn_course_instructor.cli", "report", str(graded_course.out)]
        + ["--repo", str(REPO)],
        env=graded_course.env,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    with (graded_course.out / LAB.id / "grades.csv").open() as file:
        ann = {row["student"]: row for row in csv.DictReader(file)}["ann"]
    assert float(ann[MANUAL]) == 2 and float(ann["total"]) == AUTO + 2
    assert (
        "to be graded by hand" not in (graded_course.out / LAB.id / "feedback/ann.html").read_text()
    )

    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    monkeypatch.setenv("PATH", graded_course.env["PATH"])  # nbgrader runs alembic
    api = NbGraderAPI(
        coursedir=CourseDirectory(root=str(graded_course.course), course_id=COURSE_ID)
    )
    assert api.get_autograded_students(LAB.id) == {"ann", "bob"}
    assert api.generate_feedback(LAB.id, "ann")["success"]
    feedback = graded_course.course / "feedback" / "ann" / LAB.id / f"{LAB.id}.html"
    assert f"{AUTO + 2:g}" in feedback.read_text()
