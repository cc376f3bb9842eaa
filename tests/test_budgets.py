"""Budgets the machine's load cannot change, and failures of the grader kept apart from the
student's: a kernel's start, a cell's own time, grader errors retried and never a grade."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO

from cnn_course_instructor.course import Course
from cnn_course_instructor.grading import budgets, local, preflight
from cnn_course_instructor.grading import run as grading_run
from cnn_course_instructor.grading.budgets import KernelStartFailed, Progress, guard_start
from cnn_course_instructor.grading.job import GradingRun, Job
from cnn_course_instructor.grading.results import Graded, Status, SubmissionResult
from cnn_course_instructor.grading.submissions import Submission

COURSE = Course(REPO)
POINTS = {qid: q.points for qid, q in COURSE.lab("cnn_lab").graded.items()}


def _process(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def _guarded(process: subprocess.Popen, seconds: float, spec: str = "") -> str:
    """What ``_guard_start`` says of ``process`` within ``seconds``: "running" when it has
    raised nothing by then, else its message."""

    async def watch() -> str:
        try:
            await asyncio.wait_for(
                guard_start(process.pid, lambda: process.poll() is None, spec), seconds
            )
        except asyncio.TimeoutError:
            return "running"
        except KernelStartFailed as failure:
            return str(failure)
        return "returned"

    try:
        return asyncio.run(watch())
    finally:
        process.kill()
        process.wait()


def test_a_start_that_computes_is_never_cut_by_the_clock(monkeypatch):
    """Is a kernel start that keeps computing (4 CPU-seconds of imports, under any load) left to
    go on past the idle limit?"""
    monkeypatch.setattr(budgets, "START_IDLE", 1.0)
    busy = _process("while True:\n    pass")
    assert _guarded(busy, 4.0) == "running"


def test_a_start_that_neither_computes_nor_answers_fails_with_its_cause(monkeypatch):
    """Does a start that only waits fail once it has waited START_IDLE seconds of its own time,
    saying so?"""
    monkeypatch.setattr(budgets, "START_IDLE", 1.0)
    idle = _process("import time\ntime.sleep(60)")
    said = _guarded(idle, 20.0)
    assert said.startswith("the kernel neither computed nor answered for 1 s"), said


def test_a_sandbox_that_ends_before_answering_fails_with_bwrap_s_message(tmp_path):
    """Does a start whose sandbox ends at once fail with what the sandbox wrote (bwrap's
    message), rather than a bare timeout?"""
    spec = tmp_path / "sandbox.json"
    Path(f"{spec}.log").write_text(
        "bwrap: execvp /tmp/x/.venv/bin/python: No such file or directory\n"
    )
    ended = _process("pass")
    ended.wait()
    said = _guarded(ended, 10.0, str(spec))
    assert "the sandbox ended before its kernel answered" in said
    assert "execvp /tmp/x/.venv/bin/python" in said


def _measured(process: subprocess.Popen, seconds: float, others=()) -> tuple[Progress, float]:
    """``process``'s Progress over ``seconds`` of wall time, and that wall time; it and
    ``others`` are ended after."""
    try:
        time.sleep(0.5)
        progress = Progress(process.pid)
        started = time.monotonic()
        time.sleep(seconds)
        progress.sample()
        return progress, time.monotonic() - started
    finally:
        for one in [*others, process]:
            one.kill()
            one.wait()


def test_a_computing_process_s_own_time_does_not_grow_with_the_machine_s_load():
    """With three busy processes sharing its one CPU, does a computing process's own time (wall
    time not spent waiting for a CPU) stay close to its CPU time, well below the wall time?"""
    cpu = sorted(os.sched_getaffinity(0))[0]
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass"
    load = [_process(spin) for _ in range(3)]
    progress, wall = _measured(_process(spin), 4.0, load)
    assert progress.cpu < 0.6 * wall, (progress.cpu, wall)  # it did share its CPU
    assert progress.own < 0.6 * wall, (progress.own, progress.cpu, wall)
    assert abs(progress.own - progress.cpu) < 0.25 * wall, (progress.own, progress.cpu, wall)


def test_a_waiting_process_s_own_time_is_its_wall_time():
    """Does a process that only waits have all its wall time as its own (so an idle cell is
    still stopped, however busy the machine)?"""
    progress, wall = _measured(_process("import time\ntime.sleep(60)"), 1.5)
    assert progress.cpu < 0.1 and progress.own > 0.9 * wall


def test_the_kernel_preloads_the_released_setup_never_the_submission_s(monkeypatch, tmp_path):
    """Does a worker preload the imports of the released notebook's setup cell, whatever the
    submission's first cell imports (student code never runs while the kernel starts)?"""
    from cnn_course_instructor.grading import worker

    seen = {}

    def fake_run(notebook, **options):
        seen["preload"] = options["sandboxed"].preload
        raise KernelStartFailed("stop here")

    monkeypatch.setattr(worker, "run_notebook", fake_run)
    submission = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import unittest.__main__\nimport antigravity")]
    )
    nbformat.write(submission, tmp_path / "s.ipynb")
    (tmp_path / "plan.pt").write_bytes(b"")
    job = Job(
        run=GradingRun(str(REPO), 0, str(tmp_path)),
        lab="cnn_lab",
        notebook=str(tmp_path / "s.ipynb"),
        result="",
        executed=str(tmp_path / "e.ipynb"),
        work=str(tmp_path),
        plan=str(tmp_path / "plan.pt"),
    )
    result = worker.grade_notebook(job)
    released = nbformat.read(REPO / "notebooks" / "student" / "cnn_lab.ipynb", as_version=4)
    assert seen["preload"] == worker.setup_imports(released)
    assert "torch" in seen["preload"] and not any("unittest" in m for m in seen["preload"])
    assert result.status is Status.GRADER_ERROR
    assert f"{worker.START_TRIES} times" in result.reason and "stop here" in result.reason


# --- grader errors: tried again, never a grade, graded by the next run ------------------------


class _FakeStarted:
    """Stands for a worker process: answers each student with the next status of its list."""

    plans: dict[str, list[Status]] = {}
    started: list[str] = []

    def __init__(self, run, lab, student, content, work_parent, *, gated=False, **options):
        self.student, self.lab, self.content = student, lab, content
        _FakeStarted.started.append(student)

    def start(self):
        pass

    def ran(self):
        pass

    def cancel(self):
        pass

    def finish(self):
        status = self.plans[self.student].pop(0) if self.plans.get(self.student) else Status.GRADED
        total = dict.fromkeys(POINTS, 0.0) if status is not Status.GRADED else dict(POINTS)
        result = SubmissionResult(
            "",
            self.lab,
            "",
            status,
            "the judge gave no answer" if status.needs_rerun else "",
            total,
            sum(POINTS.values()),
        )
        return Graded(result, None)


@pytest.fixture
def fake_grading(monkeypatch, tmp_path):
    """grade_class with workers stood in for (no kernel), no preflight, no judge server and no
    reports."""
    monkeypatch.setattr(local, "Started", _FakeStarted)
    monkeypatch.setattr(local, "judge_servers", lambda *args: contextlib.nullcontext({}))
    monkeypatch.setattr(preflight, "kernel_checks", lambda *args: [])
    monkeypatch.setattr(preflight, "environment_checks", lambda *args: [])
    monkeypatch.setattr(preflight, "warm_data", lambda root: None)
    monkeypatch.setattr(grading_run, "write_outputs", lambda *args: None)
    monkeypatch.setattr(grading_run, "write_class_report", lambda *args: None)
    monkeypatch.setattr(grading_run, "_prepare_reports", lambda *args: None)
    submitted = tmp_path / "submitted"
    submitted.mkdir()
    notebook = nbformat.read(REPO / "notebooks" / "student" / "cnn_lab.ipynb", as_version=4)
    for student in ("ann", "bob", "cat"):
        nbformat.write(notebook, submitted / f"{student}.ipynb")
    _FakeStarted.plans, _FakeStarted.started = {}, []

    def grade(**options):
        return grading_run.grade_class(
            submitted,
            tmp_path / "out",
            course=COURSE,
            lab="cnn_lab",
            jobs=1,
            data_root=tmp_path,
            progress=lambda line: None,
            **options,
        )

    return grade


def _statuses(results) -> dict[str, str]:
    return {result.student: result.status.value for result in results}


def test_a_grader_error_is_tried_once_more_before_it_is_a_row(fake_grading):
    """Is a submission whose grading failed on the grader's side graded again at once, and
    recorded as graded when the second try works?"""
    _FakeStarted.plans = {"bob": [Status.GRADER_ERROR, Status.GRADED]}
    results = fake_grading()
    assert _statuses(results) == {"ann": "graded", "bob": "graded", "cat": "graded"}
    assert _FakeStarted.started.count("bob") == 2


def test_a_rerun_grades_the_grader_error_rows_and_only_them(fake_grading):
    """Does the next run, without --force, grade again the rows the grader owes (twice a
    grader error), leaving the graded ones as they are?"""
    _FakeStarted.plans = {"bob": [Status.GRADER_ERROR, Status.GRADER_ERROR]}
    first = fake_grading()
    assert _statuses(first)["bob"] == "grader error"
    _FakeStarted.started = []
    second = fake_grading()
    assert _FakeStarted.started == ["bob"]
    assert _statuses(second) == {"ann": "graded", "bob": "graded", "cat": "graded"}


def test_a_grader_error_never_replaces_an_earlier_result(fake_grading, tmp_path):
    """When a forced regrade fails on the grader's side, is the student's earlier result kept
    whole (no run drops or overwrites a grade it could not give again)?"""
    fake_grading()
    before = (tmp_path / "out" / "cnn_lab" / "results" / "ann.json").read_text()
    _FakeStarted.plans = {"ann": [Status.GRADER_ERROR, Status.GRADER_ERROR]}
    again = fake_grading(force=True)
    assert _statuses(again)["ann"] == "graded"
    assert (tmp_path / "out" / "cnn_lab" / "results" / "ann.json").read_text() == before


def test_the_command_says_how_many_rows_need_a_rerun(monkeypatch, capsys, tmp_path):
    """Does `cnn-course grade` end with the number of rows the grader owes and what to do, and
    a non-zero status?"""
    from cnn_course_instructor import cli

    owed = SubmissionResult("bob", "cnn_lab", "", Status.GRADER_ERROR, "no answer", {}, 27.0)
    done = SubmissionResult("ann", "cnn_lab", "", Status.GRADED, "", {}, 27.0)
    monkeypatch.setattr(grading_run, "grade_class", lambda *args, **options: [done, owed])
    code = cli.main(["grade", str(tmp_path), "--out", str(tmp_path / "out"), "--repo", str(REPO)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "1 row(s) need a rerun" in printed and "Run the same command again" in printed


def test_out_naming_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    """Does --out naming a file get one message saying what was expected, not a traceback?"""
    from cnn_course_instructor import cli

    (tmp_path / "grades.txt").write_text("not a folder")
    code = cli.main(
        ["grade", str(tmp_path), "--out", str(tmp_path / "grades.txt"), "--repo", str(REPO)]
    )
    assert code == 2
    assert "is a file; expected a folder" in capsys.readouterr().err


def test_a_result_that_cannot_be_read_is_graded_again(tmp_path):
    """Is a result file that is not a readable result (a run killed while... a hand edit) owed,
    as a missing one is?"""
    out = tmp_path / "out"
    (out / "cnn_lab" / "results").mkdir(parents=True)
    submission = Submission("ann", tmp_path / "ann.ipynb", None)
    assert grading_run._owed(out, "cnn_lab", submission, "")
    (out / "cnn_lab" / "results" / "ann.json").write_text("{not json")
    assert grading_run._owed(out, "cnn_lab", submission, "")
