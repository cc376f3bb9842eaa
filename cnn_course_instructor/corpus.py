"""A lab's sample corpus: submissions made from its built notebooks, with the scores they must get.

Each lab may keep one in ``autograder/<lab>/corpus.py``: a list ``SAMPLES`` of ``Sample``s, each
the solution (or the student notebook) with a few exact text edits, so that the corpus follows the
lab as it changes (an edit that no longer applies fails loudly), and the points it must lose.
``cnn-course corpus`` grades them through the real grader and compares every score, and that a
lost question's feedback names the fault.
"""

from __future__ import annotations

import copy
import importlib
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from cnn_course.errors import CourseError
from cnn_course.labs import Lab

from .course import Course

__all__ = ["ALL", "Sample", "compare", "grade_corpus", "samples", "write_corpus"]

ALL = None  # ``Sample(lost=ALL)``: every point lost (the untouched student notebook)


@dataclass(frozen=True)
class Sample:
    """A submission made from one of the lab's built notebooks (``base``: "solution" or
    "student") by exact text edits, the points it must lose per question (``ALL``: every
    point), words its feedback must hold (``fault``), and whether CI grades it (``fast``)."""

    name: str
    edits: tuple[tuple[str, str], ...] = ()
    lost: Mapping[str, float] | None = field(default_factory=dict)
    fault: str = ""
    fast: bool = False
    base: str = "solution"

    def notebook(self, course: Course, lab: str) -> nbformat.NotebookNode:
        """The submission: the built notebook with each edit applied to the one cell it fits."""
        path = course.root / "notebooks" / self.base / f"{lab}.ipynb"
        notebook = copy.deepcopy(nbformat.read(path, as_version=4))
        for old, new in self.edits:
            hits = [cell for cell in notebook.cells if old in cell.source]
            if len(hits) != 1:
                raise AssertionError(f"{self.name}: edit {old!r} matches {len(hits)} cells, not 1")
            hits[0].source = hits[0].source.replace(old, new, 1)
        return notebook

    def expected(self, lab: Lab) -> dict[str, float]:
        """The score each graded question must get: its points (the front matter's), less what
        the sample loses."""
        if self.lost is ALL:
            return dict.fromkeys(lab.graded, 0.0)
        unknown = set(self.lost) - set(lab.graded)
        if unknown:
            raise CourseError(
                f"sample {self.name}: loses points on {', '.join(sorted(unknown))}, which "
                f"{lab.id} does not grade automatically"
            )
        return {q: question.points - self.lost.get(q, 0.0) for q, question in lab.graded.items()}


def samples(course: Course, lab: str) -> list[Sample]:
    """The ``SAMPLES`` of ``autograder/<lab>/corpus.py`` (none where the lab keeps no corpus)."""
    package = course.content(lab).module
    if not (Path(package.__file__).parent / "corpus.py").is_file():
        return []
    found = list(getattr(importlib.import_module(f"{package.__name__}.corpus"), "SAMPLES", []))
    if not all(isinstance(sample, Sample) for sample in found):
        raise CourseError(f"autograder/{lab}/corpus.py: SAMPLES must be a list of corpus.Sample")
    return found


def write_corpus(course: Course, lab: str, chosen: list[Sample], folder: Path) -> None:
    """Each sample's notebook as ``<name>.ipynb`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in chosen:
        nbformat.write(sample.notebook(course, lab), folder / f"{sample.name}.ipynb")


def compare(sample: Sample, lab: Lab, result) -> list[str]:
    """Every way ``result`` (a SubmissionResult) differs from what the sample must get."""
    problems = [
        f"{question}: expected {expected:g}, got {result.scores.get(question, 0.0):g}"
        for question, expected in sample.expected(lab).items()
        if abs(result.scores.get(question, 0.0) - expected) > 1e-6
    ]
    if sample.fault:
        messages = " ".join(
            [*(t.message for t in result.tests), result.reason, *result.changed_locked_cells]
        )
        if sample.fault not in messages:
            problems.append(f"no feedback names the fault ({sample.fault!r})")
    return problems


def grade_corpus(
    course: Course,
    lab: str,
    *,
    jobs: int = 1,
    fast_only: bool = False,
    out: Path | None = None,
    print: Callable[[str], None] = print,
) -> int:
    """Grade the lab's corpus (``fast_only``: the subset CI grades) and print a table of
    expected and got per question; the number of mismatches."""
    import statistics
    import time

    from .grading.run import grade_class

    chosen = [sample for sample in samples(course, lab) if sample.fast or not fast_only]
    if not chosen:
        print(f"{lab}: no corpus (autograder/{lab}/corpus.py)")
        return 0
    facts = course.lab(lab)
    with tempfile.TemporaryDirectory(prefix="cnn-course-corpus-") as work:
        write_corpus(course, lab, chosen, Path(work) / "submissions")
        started = time.perf_counter()
        results = grade_class(
            Path(work) / "submissions",
            out or Path(work) / "out",
            course=course,
            lab=lab,
            jobs=jobs,
            force=True,
            progress=lambda line: None,
        )
        wall = time.perf_counter() - started
    by_name = {result.student: result for result in results}
    questions = list(facts.graded)
    print(f"{lab}:\n{'sample':32} " + " ".join(f"{q.split('_')[0]:>6}" for q in questions))
    failures = 0
    for sample in chosen:
        result, expected = by_name[sample.name], sample.expected(facts)
        cells = [
            f"{result.scores[q]:g}"
            + ("" if abs(result.scores[q] - expected[q]) < 1e-6 else f"≠{expected[q]:g}")
            for q in questions
        ]
        print(f"{sample.name:32} " + " ".join(f"{c:>6}" for c in cells))
        for problem in compare(sample, facts, result):
            failures += 1
            print(f"    MISMATCH {problem}")
    seconds = statistics.median(r.seconds for r in results)
    print(
        f"{len(results)} submissions in {wall:.0f} s with {jobs} job(s), median {seconds:.1f} s "
        f"each: {'all scores as expected' if not failures else f'{failures} mismatches'}"
    )
    return failures
