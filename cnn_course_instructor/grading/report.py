"""The instructor's report on a graded lab: score histograms, frequent faults, who needs a look."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cnn_course.errors import CourseError
from cnn_course.labs import Lab, Question

from .hand import HandGrades, manual_questions
from .outputs import render, write_text
from .results import Status, SubmissionResult, TestResult, read_results

__all__ = ["ClassSummary", "Fault", "summarise", "write_class_report"]

# How many students a fault lists by name, and how many faults a question shows.
EXAMPLES = 3
TOP_FAULTS = 6
MAX_TICKS = 10  # a histogram labels each score reached up to this many, else evenly spaced ones

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class Fault:
    """One failure message, numbers blanked out, with how many students got it and a few names."""

    pattern: str
    example: str
    test: str
    count: int = 0
    students: list[str] = field(default_factory=list)


@dataclass
class QuestionSummary:
    question: Question
    scores: list[float]
    faults: list[Fault]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores) if self.scores else 0.0

    @property
    def full_marks(self) -> int:
        return sum(score >= self.question.points - 1e-9 for score in self.scores)


@dataclass
class Attention:
    """A submission a person should look at, and why."""

    student: str
    status: str
    why: str


@dataclass
class ClassSummary:
    lab: Lab
    results: list[SubmissionResult]
    questions: list[QuestionSummary]
    attention: list[Attention]
    skipped: list[str]

    @property
    def totals(self) -> list[float]:
        return [result.total for result in self.results]


def _pattern(message: str) -> str:
    """A message with its numbers blanked, so that faults differing only in values group."""
    return _NUMBER.sub("#", message.strip())[:300]


def _faults(results: list[SubmissionResult], question: str) -> list[Fault]:
    found: dict[tuple[str, str], Fault] = {}
    for result in results:
        if result.status is not Status.GRADED:
            continue  # its tests did not run; it is listed among those needing a look
        seen: set[tuple[str, str]] = set()
        for test in result.tests:
            if test.question != question or test.passed:
                continue
            key = (test.name, _pattern(test.message))
            fault = found.setdefault(key, Fault(key[1], test.message, test.name))
            if key not in seen:  # one student counts once per fault
                seen.add(key)
                fault.count += 1
                if len(fault.students) < EXAMPLES:
                    fault.students.append(result.student)
    return sorted(found.values(), key=lambda f: (-f.count, f.test, f.pattern))[:TOP_FAULTS]


def _attention(result: SubmissionResult) -> Attention | None:
    reasons = []
    if result.status is not Status.GRADED:
        reasons.append(result.reason or str(result.status))
    broken: list[TestResult] = [test for test in result.tests if test.error]
    if broken:
        names = ", ".join(f"{test.question}: {test.name}" for test in broken[:3])
        count = "1 hidden test" if len(broken) == 1 else f"{len(broken)} hidden tests"
        reasons.append(f"{count} raised inside the grader ({names})")
    if result.changed_locked_cells:
        reasons.append(_locked_summary(result.changed_locked_cells))
    if result.attempted is False:
        reasons.append("nothing attempted: every answer cell is as released (a wrong file?)")
    if not reasons:
        return None
    return Attention(result.student, str(result.status), "; ".join(reasons))


SHOWN_LOCKED = 3  # changed locked cells the report names; the feedback page lists them all


def _locked_summary(changed: list[str]) -> str:
    """What the report says of changed locked cells: a notebook written from scratch changes
    every one of them, which the report counts rather than lists."""
    if len(changed) <= SHOWN_LOCKED:
        return f"locked cells changed (the released ones ran instead): {'; '.join(changed)}"
    kinds: dict[str, int] = {}
    for entry in changed:
        kind = entry.rsplit(": ", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    counted = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return (
        f"{len(changed)} locked cells changed ({counted}; the released ones ran instead): "
        f"{'; '.join(changed[:SHOWN_LOCKED])}; and {len(changed) - SHOWN_LOCKED} more, listed "
        "on the feedback page"
    )


def summarise(folder: Path, lab: Lab) -> ClassSummary:
    """What ``folder/results/*.json`` (one graded lab) says, question by question."""
    results, skipped = read_results(folder)
    results = [result for result in results if result.lab in ("", lab.id)]
    questions = [
        QuestionSummary(
            question,
            [result.scores.get(question.id, 0.0) for result in results],
            _faults(results, question.id),
        )
        for question in sorted(
            lab.graded.values(), key=lambda q: (q.exercise is None, q.exercise or 0)
        )
    ]
    attention = [a for a in map(_attention, results) if a is not None]
    return ClassSummary(lab, results, questions, attention, skipped)


def _histogram(path: Path, scores: list[float], points: float, title: str) -> None:
    """A bar per score value reached, from 0 to ``points``, saved as a small PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    counts = Counter(round(score, 3) for score in scores)
    values = sorted(set(counts) | {0.0, round(points, 3)})
    figure = Figure(figsize=(4.2, 2.2), dpi=100, layout="constrained")
    axes = figure.subplots()
    width = min(0.8 * min((b - a for a, b in zip(values, values[1:], strict=False)), default=1), 1)
    axes.bar(values, [counts.get(v, 0) for v in values], width=width, color="#4c72b0")
    if len(values) <= MAX_TICKS:  # a label per score reached
        axes.set_xticks(values, [f"{v:g}" for v in values], fontsize=8)
    else:  # so many that the labels would overlap: evenly spaced ones
        axes.xaxis.set_major_locator(MaxNLocator(nbins=MAX_TICKS, steps=[1, 2, 2.5, 5, 10]))
        axes.tick_params(axis="x", labelsize=8)
    axes.set_xlabel("score", fontsize=8)
    axes.set_ylabel("students", fontsize=8)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_title(title, fontsize=9)
    axes.tick_params(axis="y", labelsize=8)
    figure.savefig(path)


def write_class_report(folder: Path, lab: Lab, hand: HandGrades | None = None) -> Path:
    """Write ``folder/report/index.html`` and its histograms, with how many students each
    hand-graded question has been graded for (``hand``); return the page's path."""

    if not (folder / "results").is_dir():
        raise CourseError(
            f"no graded results in {folder}: expected {folder / 'results'}/*.json, written by "
            "`cnn-course grade`. Grade the class first, or give the OUT folder grade wrote."
        )
    summary = summarise(folder, lab)
    report = folder / "report"
    report.mkdir(exist_ok=True)
    images = {}
    for item in summary.questions:
        name = f"{item.question.id}.png"
        _histogram(report / name, item.scores, item.question.points, item.question.label)
        images[item.question.id] = name
    _histogram(
        report / "total.png", summary.totals, sum(q.points for q in lab.graded.values()), "total"
    )
    page = report / "index.html"
    write_text(
        page,
        render(
            "class_report.html.j2",
            summary=summary,
            images=images,
            statistics=statistics,
            maximum=sum(q.points for q in lab.graded.values()),
            by_hand=[
                (
                    question,
                    sum(question.id in (hand or {}).get(r.student, {}) for r in summary.results),
                )
                for question in manual_questions(lab).values()
            ],
        ),
    )
    return page
