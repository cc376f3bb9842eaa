"""A class graded on a machine 20 times oversubscribed, as on the night of a deadline (stress)."""

from __future__ import annotations

import csv
import os
import subprocess
import time

import pytest
from conftest import COURSE, corpus, grade_command, wait_for_classes
from test_execute import busy_machine

from cnn_course_instructor.corpus import write_corpus
from cnn_course_instructor.sandbox import sandbox_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.stress,
    pytest.mark.skipif(
        sandbox_available() is not None and not os.environ.get("CNN_COURSE_REQUIRE_SANDBOX"),
        reason=f"{sandbox_available()}",
    ),
]

OVERSUBSCRIBED = 20  # busy processes per core, each in a session of its own
LAB = "cnn_lab"
CLASS = ("solution", "no_optimizer_step")  # full marks, and a mistake that loses its points


def test_a_class_graded_twenty_times_oversubscribed_gets_its_idle_grades(
    real_root, real_cache, tmp_path, request
):
    """With 20 busy processes per core, each in its own session (load average about 40 on 2
    cores), does a class get exactly the grades its samples get alone (their expectations), no
    row crashed, timed out or owed by the grader, and the run end without a wall clock deciding
    anything?"""
    wait_for_classes(request.config)  # the session's own classes are not part of the load
    samples = {sample.name: sample for sample in corpus(LAB) if sample.name in CLASS}
    submissions = tmp_path / "submitted"
    write_corpus(COURSE, LAB, list(samples.values()), submissions)
    env = {**os.environ, "CNN_COURSE_DATA": str(real_root), "CNN_COURSE_CACHE": str(real_cache)}
    out = tmp_path / "out"
    command = grade_command(submissions, out, "--jobs", "2", "--cell-timeout", "20")
    with busy_machine(per_core=OVERSUBSCRIBED):
        started = time.monotonic()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - started
        load = os.getloadavg()[0]
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["student"]: row for row in csv.DictReader((out / LAB / "grades.csv").open())}
    for name, sample in samples.items():
        assert rows[name]["status"] == "graded", (name, rows[name], done.stdout)
        expected = sum(sample.expected(COURSE.lab(LAB)).values())
        assert float(rows[name]["total"]) == expected, (name, rows[name], expected)
    print(f"graded {len(rows)} submissions in {wall:.0f} s at load average {load:.1f}")
