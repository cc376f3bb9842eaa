"""Tests of running notebooks: each cell's time budget is CPU time, which load does not change."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

import nbformat
import pytest

from cnn_course_instructor.grading.budgets import tree_cpu_seconds
from cnn_course_instructor.grading.kernel import run_notebook

BURN_TWO_SECONDS = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 2:\n    pass\nprint('computed')"


def notebook(*cells: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


@contextmanager
def busy_machine(per_core: int = 2):
    """``per_core`` busy processes per core (this test's own, stopped on exit), each in a
    session of its own as other users' jobs are: with the kernel's autogroup scheduling, busy
    processes sharing one session would share one CPU share, and barely load the machine."""
    count = per_core * (os.cpu_count() or 1)
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True:\n    pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_process_tree_cpu_time_counts_the_children():
    """Does the CPU time of a process include what its child computes (the parent idles)?"""
    code = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'while True: pass'])"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline, used = time.monotonic() + 60, 0.0
        while used < 1.0 and time.monotonic() < deadline:  # however busy the machine is
            time.sleep(0.5)
            used = tree_cpu_seconds(parent.pid)
        with open(f"/proc/{parent.pid}/stat") as stat:
            own = sum(int(v) for v in stat.read().rsplit(")", 1)[1].split()[11:13])
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
    assert used >= 1.0, used
    assert own / os.sysconf("SC_CLK_TCK") < 0.5 * used  # most of it is the child's


def test_a_spinning_cell_and_a_waiting_cell_are_interrupted_and_later_cells_run(
    tmp_path, classes_graded
):
    """Is a busy loop stopped by its CPU budget, a sleep by the idle rule, and the rest run,
    however busy the machine (no wall time decides)?"""
    execution = run_notebook(
        notebook("while True:\n    pass", "import time\ntime.sleep(1000)", "print('after')"),
        cwd=tmp_path,
        cell_timeout=2,
        allow_errors=True,
    )
    assert [(t.index, t.why) for t in execution.timed_out] == [(0, "cpu"), (1, "idle")]
    assert "cell 1 used more than 2 s of CPU time" in execution.timed_out[0].describe()
    assert execution.notebook.cells[2].outputs[0]["text"] == "after\n"


@pytest.mark.slow
@pytest.mark.stress
def test_a_cell_within_its_cpu_budget_is_never_cut_by_the_machines_load(tmp_path):
    """Does a cell computing 2 CPU-seconds under a 4 s budget finish, idle and oversubscribed?"""
    runs = []
    for loaded in (False, True):
        started = time.monotonic()
        with busy_machine() if loaded else contextmanager(lambda: (yield))():
            execution = run_notebook(
                notebook(BURN_TWO_SECONDS), cwd=tmp_path, cell_timeout=4, allow_errors=True
            )
        runs.append((execution, time.monotonic() - started))
    for execution, _ in runs:
        assert execution.timed_out == [], execution.timed_out
        assert execution.notebook.cells[0].outputs[0]["text"] == "computed\n"
    # The loaded run took longer in wall time than the budget: a wall-clock limit would have cut it.
    print(f"wall seconds idle {runs[0][1]:.1f}, loaded {runs[1][1]:.1f}")


def test_the_grader_s_code_between_cells_runs_silently_in_the_student_s_namespace(tmp_path):
    """Does code run between cells (the probe's watch) run in the kernel's namespace, see the
    error the cell before it stopped with, and leave no output, count or trace in the notebook?"""
    seen = "import sys\nseen.append(repr(getattr(sys, 'last_value', None)))\nprint('hidden')"
    execution = run_notebook(
        notebook("seen = []", "raise ValueError('mine')", "print(seen)"),
        cwd=tmp_path,
        allow_errors=True,
        between_cells={1: seen, 2: seen},
    )
    cells = execution.notebook.cells
    assert cells[2].outputs[0]["text"] == "['None', \"ValueError('mine')\"]\n"
    assert [cell.execution_count for cell in cells] == [1, 2, 3]
    assert "hidden" not in nbformat.writes(execution.notebook)
