"""Whether every row a benchmark measured was graded as expected, before it prints a ratio.

A speed-up measured on grading that did nothing (every row ``crashed``, say) is no result: a
benchmark script that grades submissions builds an ``Arm`` per measured run, one ``Row`` per
submission it handed that run (not per result that came back, so a lost one is seen), and
prints its figures only when ``refusal`` returns no lines; otherwise it prints those lines
instead and exits non-zero. Imported by the scripts beside it, which are run from the
repository root as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from cnn_course_instructor.grading.results import Status, SubmissionResult

__all__ = ["Arm", "Row", "describe", "is_expected", "refusal"]

REASON_WIDTH = 120  # characters of a row's reason shown in a refusal


@dataclass(frozen=True)
class Row:
    """One submission as one arm graded it, the total it must score, and what else was off."""

    student: str
    result: SubmissionResult | None  # None: the arm returned no result for this submission
    expected_total: float
    problems: tuple[str, ...] = ()  # further differences the benchmark's own comparison found


@dataclass(frozen=True)
class Arm:
    """One measured run of a benchmark: its name, its jobs, its wall seconds and its rows."""

    name: str
    jobs: int
    wall: float
    rows: tuple[Row, ...]


def is_expected(row: Row) -> bool:
    """Was the row graded (status ``graded``), with its expected total and nothing else off?"""
    return (
        row.result is not None
        and row.result.status is Status.GRADED
        and abs(row.result.total - row.expected_total) <= 1e-6
        and not row.problems
    )


def describe(arm: Arm, row: Row) -> str:
    """One line for a row: student, arm, status, total vs expected, its reason (shortened)."""
    where = f"{row.student} [{arm.name}, jobs {arm.jobs}]"
    if row.result is None:
        return f"{where}: no result, expected total {row.expected_total:g}"
    result = row.result
    line = f"{where}: {result.status}, total {result.total:g} vs expected {row.expected_total:g}"
    notes = [result.reason, *row.problems] if result.reason else list(row.problems)
    if notes:
        line += ": " + textwrap.shorten("; ".join(notes), REASON_WIDTH, placeholder=" ...")
    return line


def refusal(arms: Sequence[Arm]) -> list[str]:
    """The lines to print instead of any ratio, one per row not graded as expected and a last
    one counting them; no lines when every row of every arm is right."""
    empty = [arm.name for arm in arms if not arm.rows]
    if not arms or empty:
        return [f"no ratio printed: {', '.join(empty) or 'the benchmark'} measured no rows"]
    rows = [(arm, row) for arm in arms for row in arm.rows]
    lines = [describe(arm, row) for arm, row in rows if not is_expected(row)]
    if lines:
        lines.append(
            f"no ratio printed: {len(lines)} of {len(rows)} rows were not graded as expected"
        )
    return lines
