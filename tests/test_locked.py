"""Tests of restoring the released locked cells into a submission before it runs."""

from __future__ import annotations

import copy

import nbformat
import pytest
from conftest import REPO

from cnn_course_instructor.grading.locked import restore_locked_cells

RELEASED = nbformat.read(REPO / "notebooks" / "student" / "cnn_lab.ipynb", as_version=4)


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def index_of(notebook, wanted: str) -> int:
    """The index of the cell with nbgrader id ``wanted``."""
    return next(i for i, cell in enumerate(notebook.cells) if grade_id(cell) == wanted)


def locked_id(starting: str) -> str:
    """The nbgrader id of the released locked code cell whose source starts with ``starting``."""
    return next(
        grade_id(cell)
        for cell in RELEASED.cells
        if cell.cell_type == "code" and cell.source.startswith(starting)
    )


SETTINGS = locked_id('learning_rate = lab.training["mnist"]')  # the MNIST hyper-parameters
DATA = locked_id('mnist_train = lab.subsets["mnist_train"]')  # the MNIST data cell


@pytest.fixture
def submitted():
    """The released notebook with its first answer filled in, as a student hands it back."""
    notebook = copy.deepcopy(RELEASED)
    notebook.cells[index_of(notebook, "q4_mnist_model")].source = "mnist_model = make_it()"
    return notebook


def test_untouched_locked_cells_are_left_as_they_are(submitted):
    """Does a submission that changed only its answer cells run exactly as submitted?"""
    restored = restore_locked_cells(submitted, RELEASED)
    assert restored.changed == []
    assert [c.source for c in restored.notebook.cells] == [c.source for c in submitted.cells]


def test_an_edited_hyper_parameter_cell_is_restored_and_reported(submitted):
    """Does `n_epochs = 1` typed into the locked settings cell give way to the released cell?"""
    at = index_of(submitted, SETTINGS)
    submitted.cells[at].source = "learning_rate = 0.001\nn_epochs = 1"
    submitted.cells[at].metadata["nbgrader"]["locked"] = False  # metadata edits change nothing
    restored = restore_locked_cells(submitted, RELEASED)
    assert restored.notebook.cells[at].source == RELEASED.cells[at].source
    assert restored.changed == [
        f'cell {at + 1} ("learning_rate = lab.training["mnist"].learning_rate")'
    ]


def test_deleted_and_pasted_locked_cells_are_put_back_once(submitted):
    """Does a deleted locked cell come back in its place, and a pasted copy of one go away?"""
    deleted = index_of(submitted, DATA)
    pasted = copy.deepcopy(submitted.cells[index_of(submitted, SETTINGS)])
    pasted.source = "n_epochs = 1"
    del submitted.cells[deleted]
    submitted.cells.insert(20, pasted)
    restored = restore_locked_cells(submitted, RELEASED)
    sources = [c.source for c in restored.notebook.cells]
    assert sources.count(RELEASED.cells[deleted].source) == 1
    assert index_of(restored.notebook, DATA) == deleted
    assert "n_epochs = 1" not in sources
    assert any(text.endswith(": deleted") for text in restored.changed)
    assert any(text.endswith(": a copy was removed") for text in restored.changed)


def test_answer_cells_and_cells_the_student_added_stay_where_they_were(submitted):
    """Are the student's own cells (answers, scratch work) kept, in their order?"""
    scratch = nbformat.v4.new_code_cell("print('trying things')")
    submitted.cells.insert(index_of(submitted, "q4_mnist_model") + 1, scratch)
    restored = restore_locked_cells(submitted, RELEASED)
    assert [c.source for c in restored.notebook.cells] == [c.source for c in submitted.cells]
    assert restored.changed == []
