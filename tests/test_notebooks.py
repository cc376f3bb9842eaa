"""Shortened runs of the built notebooks on the real data, in a real Jupyter kernel."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from autograder.execute import run_notebook

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def _printed(notebook) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def test_solution_notebook_runs_clean_in_shortened_mode(real_root, real_cache, tmp_path):
    """Does the solution run top to bottom, with no error and nothing on stderr, and learn?"""
    env = {
        "CNN_COURSE_FAST": "1",
        "CNN_COURSE_DATA": str(real_root),
        "CNN_COURSE_CACHE": str(real_cache),
    }
    result = run_notebook(REPO / "notebooks/solution/cnn_lab.ipynb", cwd=tmp_path, env=env)
    assert result.problems == []
    assert result.ok
    printed = _printed(result.notebook)
    assert "epoch  2/2" in printed and "epoch  4/4" in printed  # the shortened schedule
    mnist = float(re.search(r"MNIST test accuracy:\s+([\d.]+)", printed).group(1))
    cifar = float(re.search(r"CIFAR-10 test accuracy:\s+([\d.]+)", printed).group(1))
    assert mnist > 0.7 and cifar > 0.25, (mnist, cifar)
    images = [
        output
        for cell in result.notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 8  # 2 image grids + 2 predictions + 2 histories + 2 filter grids


def test_untouched_student_notebook_stops_at_its_first_stub(real_root, real_cache, tmp_path):
    """Does the student notebook run up to exercise 1 and stop there with NotImplementedError?"""
    env = {
        "CNN_COURSE_FAST": "1",
        "CNN_COURSE_DATA": str(real_root),
        "CNN_COURSE_CACHE": str(real_cache),
    }
    path = REPO / "notebooks/student/cnn_lab.ipynb"
    result = run_notebook(path, cwd=tmp_path, env=env)
    assert result.error_name == "NotImplementedError"
    stopped = result.notebook.cells[result.stopped_at]
    assert stopped.metadata["nbgrader"]["grade_id"] == "q1_mnist_model"
    code_before = [
        cell for cell in result.notebook.cells[: result.stopped_at] if cell.cell_type == "code"
    ]
    assert code_before and all(cell.execution_count for cell in code_before)
    assert [p.kind for p in result.problems] == ["error"]
