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


def _cell_outputs(notebook, code: str) -> list:
    """The outputs of the one code cell whose source contains ``code``."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and code in c.source]
    assert len(cells) == 1, f"{len(cells)} cells contain {code!r}"
    return cells[0].outputs


def _pngs(outputs) -> list:
    return [output for output in outputs if "image/png" in output.get("data", {})]


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
    # The shortened schedule, as the training monitor's text bars (no widget frontend here).
    for title, epochs in (("MNIST", 2), ("CIFAR-10", 4)):
        final = re.findall(
            rf"{title} epoch {epochs}/{epochs}: 100%.*\[.*loss ([\d.]+), accuracy ([\d.]+)\]",
            printed,
        )
        assert len(final) == 1, f"no final {title} bar with loss and accuracy in {printed!r}"
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
    # 2 image grids + 2 predictions + 2 live training plots + 2 filter grids, and the widgets'
    # static figures: 2 image browsers + 2 confusion matrices + 1 feature-map viewer.
    assert len(images) == 13
    notebook = result.notebook
    for loop in ("monitor.end_epoch(loss=epoch_loss / len(mnist_train)", "len(cifar_train))"):
        live_plot = _pngs(_cell_outputs(notebook, loop))
        assert len(live_plot) == 1 and live_plot[0].output_type == "display_data"
        assert "LabFigure" in live_plot[0].data["text/plain"]  # the placeholder was replaced
    for call in (
        "widgets.image_browser(mnist_model",
        "widgets.confusion_matrix(mnist_model",
        "widgets.image_browser(cifar_model",
        "widgets.confusion_matrix(cifar_model",
        "widgets.feature_maps(cifar_model",
    ):
        outputs = _cell_outputs(notebook, call)
        assert len(_pngs(outputs)) == 1, f"{call}: no static figure in {outputs}"
        assert not any(
            "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs
        )


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
