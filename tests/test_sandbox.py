"""Grading untrusted notebooks: the hostile corpus, isolation, resuming after kill -9, parallel runs."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO
from corpus import STUDENT

from cnn_course_instructor.course import Course
from cnn_course_instructor.sandbox import sandbox_available
from cnn_course_instructor.scheduler import grade_class

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(sandbox_available() is not None, reason=f"{sandbox_available()}"),
]


def _sandbox_processes() -> list[str]:
    """Processes still running under the sandbox uids (61000 and up)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uid = int((entry / "status").read_text().split("\nUid:\t")[1].split()[0])
            except (OSError, IndexError):
                continue
            if uid >= 61000:
                found.append(entry.name)
    return found


def test_hostile_corpus_grades_to_its_expected_outcomes(graded_class):
    """Does every hostile or broken submission end with its expected row, no escape, no harm to others?"""
    out = graded_class.out / "cnn_lab"
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert graded_class.hostile and len(rows) == len(graded_class.results)
    assert float(rows["solution"]["total"]) == 18, "a hostile neighbour changed an honest grade"
    for sample in graded_class.hostile:
        row = rows[sample.name]
        if sample.status is not None:
            assert row["status"] == sample.status, (sample.name, row)
        assert float(row["total"]) == sample.total, (sample.name, row)

    assert graded_class.connections == 0
    assert not graded_class.canary.exists() and not (REPO / "owned").exists()
    assert _sandbox_processes() == []
    executed = nbformat.read(out / "executed" / "escape_attempts.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "ESCAPED" not in printed and printed.count("blocked:") == 11, printed
    assert "processes visible: [1]" in printed and "uid 6100" in printed
    noisy = graded_class.results["noisy_solution"]
    assert "output over" in noisy.reason and "MemoryError" in noisy.reason


def _stub_variants(folder: Path, count: int) -> None:
    for number in range(count):
        notebook = nbformat.read(STUDENT, as_version=4)
        notebook.cells.insert(1, nbformat.v4.new_code_cell(f"print('student {number}')"))
        nbformat.write(notebook, folder / f"s{number:02d}.ipynb")


def test_grading_resumes_after_kill_9_without_losing_or_repeating_rows(
    real_root, real_cache, tmp_path
):
    """Killed with SIGKILL mid-class, does a rerun finish with exactly one row per student?"""
    submissions, out = tmp_path / "submitted", tmp_path / "out"
    submissions.mkdir()
    _stub_variants(submissions, 6)
    env = {**os.environ, "CNN_COURSE_DATA": str(real_root), "CNN_COURSE_CACHE": str(real_cache)}
    command = [
        sys.executable,
        "-m",
        "cnn_course_instructor.cli",
        "grade",
        str(submissions),
        "--out",
        str(out),
        "--jobs",
        "2",
    ]
    process = subprocess.Popen(
        command, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    results = out / "cnn_lab" / "results"
    while len(list(results.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert 2 <= len(done_before) < 6, "the kill came too late to test a resume"
    assert not (out / "cnn_lab" / "grades.csv").exists()

    rerun = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done_before)} already graded" in rerun.stdout
    rows = list(csv.DictReader((out / "cnn_lab" / "grades.csv").open()))
    assert sorted(row["student"] for row in rows) == [f"s{n:02d}" for n in range(6)]
    assert all(row["status"] == "graded" and float(row["total"]) == 0 for row in rows)
    for name, mtime in done_before.items():  # graded once, never again
        assert (results / name).stat().st_mtime_ns == mtime
    orphans = list(Path("/var/lib/cnn-course/sandboxes").glob(f"{process.pid}-*"))
    assert orphans == [], "the rerun left the killed run's scratch folders behind"
    assert _sandbox_processes() == []


def test_parallel_grades_equal_serial_grades(real_root, real_cache, tmp_path, monkeypatch):
    """Do two workers at once give exactly the rows one worker gives?"""
    monkeypatch.setenv("CNN_COURSE_CACHE", str(real_cache))
    submissions = tmp_path / "submitted"
    submissions.mkdir()
    _stub_variants(submissions, 3)
    notebook = nbformat.read(STUDENT, as_version=4)
    for cell in notebook.cells:  # answer q3 and q4 only: partial credit, quickly
        cell.source = cell.source.replace(
            '    raise NotImplementedError("Replace this line with your code")\n    # --- END CODE HERE\n    return y',
            "    y = x.argmax(dim=1)\n    # --- END CODE HERE\n    return y",
        ).replace(
            '    raise NotImplementedError("Replace this line with your code")\n    # --- END CODE HERE\n    return accuracy',
            "    accuracy = (predict == labels).sum().item()\n    # --- END CODE HERE\n    return accuracy",
        )
    nbformat.write(notebook, submissions / "partial.ipynb")
    quiet = {"data_root": real_root, "progress": lambda _: None, "course": Course(REPO)}
    serial = grade_class(submissions, tmp_path / "serial", jobs=1, **quiet)
    (tmp_path / "parallel").mkdir()  # the same secret inputs, so even the messages must agree
    shutil.copy(tmp_path / "serial" / ".grading-seed", tmp_path / "parallel" / ".grading-seed")
    parallel = grade_class(submissions, tmp_path / "parallel", jobs=2, **quiet)
    for result in [*serial, *parallel]:
        result.seconds = 0.0
    assert serial == parallel
    partial = next(r for r in serial if r.student == "partial")
    assert partial.scores["q3_vector_to_class"] == 2 and partial.scores["q4_cnn_accuracy"] == 1
