"""Calibrate a lab's training thresholds: grade its solution with several seeds, shortened.

    cnn-course calibrate cnn_lab --seeds 0 1 2 3 4

Prints, per seed, every accuracy the hidden tests measured on the grading images, and the
lowest of each; the thresholds in ``autograder/<lab>/`` are set from them.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import nbformat

from cnn_course import data

from .course import Course
from .grading.job import GradingRun, Job
from .grading.worker import grade_notebook

__all__ = ["calibrate", "with_seed"]


def with_seed(notebook: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """A copy of a lab notebook whose ``training.seed_everything(...)`` calls use ``seed``."""
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        cell.source = re.sub(
            r"training\.seed_everything\(\d+\)", f"training.seed_everything({seed})", cell.source
        )
    return notebook


def calibrate(course: Course, lab: str, seeds: list[int], data_root=None, print=print) -> dict:
    """The lowest accuracy each test measured over ``seeds``; prints one line per seed."""
    course.content(lab)
    solution = nbformat.read(course.root / "notebooks" / "solution" / f"{lab}.ipynb", as_version=4)
    root = data.resolve_root(data_root).path
    lowest: dict[str, float] = {}
    for seed in seeds:
        solution = with_seed(solution, seed)
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "solution.ipynb"
            nbformat.write(solution, path)
            # the course's own solution: trusted code, run unsandboxed
            run = GradingRun.here(course, seed, root, sandboxed=False)
            job = Job(
                run=run,
                lab=lab,
                notebook=str(path),
                result=str(Path(work) / "result.json"),
                executed=str(Path(work) / "executed.ipynb"),
                work=work,
                restore_locked=False,  # its seeded setup cell is what each seed changes
            )
            result = grade_notebook(job)
        line = [f"seed {seed}: total {result.total:g}, {result.seconds:.0f} s"]
        for test in result.tests:
            if "accuracy" in test.measured:
                accuracy = test.measured["accuracy"]
                lowest[test.question] = min(lowest.get(test.question, 1.0), accuracy)
                line.append(f"{test.question} {accuracy:.4f}")
        print(", ".join(line), flush=True)
    print("lowest:", ", ".join(f"{q} {a:.4f}" for q, a in lowest.items()))
    return lowest
