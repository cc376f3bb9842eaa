"""Put the released locked code cells back into a submission before it runs, as nbgrader does.

A student is graded on the setup and hyper-parameter cells the course released, not on edited
copies: each locked code cell of the released student notebook replaces the submitted cell with
the same nbgrader ``grade_id``, and a deleted one comes back. Answer cells, and cells the student
added, stay where the student put them. What was changed is reported, for the feedback page.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import nbformat

__all__ = ["Restored", "answers_untouched", "first_line", "restore_locked_cells"]


@dataclass
class Restored:
    """The notebook to run, and a description of each locked code cell that had to be restored."""

    notebook: nbformat.NotebookNode
    changed: list[str] = field(default_factory=list)


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
    return grade_id if isinstance(grade_id, str) else None


def _locked_code(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader") or {}
    return cell.get("cell_type") == "code" and bool(meta.get("locked")) and not meta.get("solution")


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def first_line(cell, width: int = 60, skip_comments: bool = False) -> str:
    """The cell's first line (of code, with ``skip_comments``), cut to ``width`` characters."""
    lines = (line.strip() for line in _source(cell).splitlines())
    first = next((x for x in lines if x and not (skip_comments and x.startswith("#"))), "")
    return first if len(first) <= width else first[: width - 3] + "..."


def _label(index: int, cell) -> str:
    return f'cell {index + 1} ("{first_line(cell)}")'


def answers_untouched(submitted: nbformat.NotebookNode, released: nbformat.NotebookNode) -> bool:
    """True when every answer cell of the release (an nbgrader solution cell) is in the
    submission as released, whitespace aside: nothing was attempted. A missing answer cell
    counts as touched (the student did something)."""
    found = {}
    for cell in submitted.cells:
        found.setdefault(_grade_id(cell), cell)
    answers = [
        cell
        for cell in released.cells
        if (cell.get("metadata", {}).get("nbgrader") or {}).get("solution") and _grade_id(cell)
    ]

    def same(a, b) -> bool:
        return "".join(_source(a).split()) == "".join(_source(b).split())

    return bool(answers) and all(
        _grade_id(cell) in found and same(found[_grade_id(cell)], cell) for cell in answers
    )


def restore_locked_cells(
    submitted: nbformat.NotebookNode, released: nbformat.NotebookNode
) -> Restored:
    """The submission with the released locked code cells in place, and what had been changed.

    Cells are matched by nbgrader ``grade_id``. A submitted cell that claims the id of a locked
    cell is replaced by the released cell (whatever its type or metadata now say); a second
    cell claiming the same locked id (a pasted copy) is dropped; a locked cell that is missing
    is put back after the cell that preceded it in the release.
    """
    locked = {
        _grade_id(cell): (index, cell)
        for index, cell in enumerate(released.cells)
        if _locked_code(cell) and _grade_id(cell)
    }
    order = {_grade_id(cell): index for index, cell in enumerate(released.cells) if _grade_id(cell)}
    changed: list[str] = []
    seen: set[str] = set()
    cells = []
    for cell in submitted.cells:
        grade_id = _grade_id(cell)
        if grade_id in locked:
            if grade_id in seen:
                changed.append(f"{_label(*locked[grade_id])}: a copy was removed")
                continue
            seen.add(grade_id)
            index, original = locked[grade_id]
            if (
                cell.get("cell_type") != "code"
                or _source(cell).rstrip() != _source(original).rstrip()
            ):
                changed.append(_label(index, original))
            restored = copy.deepcopy(original)
            restored["outputs"] = []
            restored["execution_count"] = None
            cells.append(restored)
        else:
            cells.append(cell)
    for grade_id, (index, original) in sorted(locked.items(), key=lambda item: item[1][0]):
        if grade_id in seen:
            continue
        changed.append(f"{_label(index, original)}: deleted")
        restored = copy.deepcopy(original)
        restored["outputs"], restored["execution_count"] = [], None
        # after the last cell that came before it in the release
        position = 0
        for at, cell in enumerate(cells):
            other = _grade_id(cell)
            if other in order and order[other] < index:
                position = at + 1
        cells.insert(position, restored)
    return Restored(nbformat.from_dict({**submitted, "cells": cells}), changed)
