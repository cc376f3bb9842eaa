"""Hidden tests as units: one function per test case, with its points, registered per question."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_course import data, training
from cnn_course.errors import CourseError
from cnn_course.judging import Verdict
from cnn_course.labs import Lab

from .rebuild import rebuild
from .results import TestResult

__all__ = ["GRADING_IMAGES", "Context", "NotRecorded", "Registry", "TestCase", "need"]

GRADING_IMAGES = 2000  # unseen images a trained model is evaluated on
GRADING_ORDER_SEED = 20261130


class NotRecorded(Exception):
    """What a test needs was not recorded (the name was undefined, or recording it failed)."""


def need(record: dict, key) -> object:
    """``record[key]`` (``key``: a probe step, or its key), or NotRecorded with the reason the
    probe gave."""
    key = getattr(key, "key", key)
    entry = record.get(key)
    if entry is None:
        raise NotRecorded(f"nothing was recorded for {key}")
    if isinstance(entry, dict) and set(entry) == {"error"}:
        raise NotRecorded(str(entry["error"]))
    return entry


@dataclass(frozen=True)
class TestCase:
    """One hidden test: the question it belongs to, its name, its points and its function."""

    question: str
    name: str
    points: float
    function: Callable[[dict, Context], Verdict]


class Registry:
    """The hidden tests of one lab, in the order they were registered.

    ``@tests.case("q4_mnist_model", points=1, name="convolutions")`` registers a function
    ``(record, context) -> Verdict``. A name may quote the lab's accuracy thresholds, as
    ``"reaches {thresholds[mnist]:.2f} accuracy"``.
    """

    def __init__(self) -> None:
        self.cases: list[TestCase] = []

    def case(self, question: str, *, points: float, name: str) -> Callable:
        def register(function: Callable[[dict, Context], Verdict]):
            self.cases.append(TestCase(question, name, float(points), function))
            return function

        return register

    def points(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for case in self.cases:
            totals[case.question] = totals.get(case.question, 0.0) + case.points
        return totals

    def check(self, lab: Lab, where: str) -> None:
        """Refuse, naming each one, tests of undeclared questions and points that do not add up."""
        problems = []
        totals = self.points()
        for question in totals:
            if question not in lab.graded:
                problems.append(
                    f"tests are registered for {question!r}, which the lab does not declare "
                    f"as automatically graded (graded: {', '.join(lab.graded)})"
                )
        for question, declared in lab.graded.items():
            found = totals.get(question, 0.0)
            if abs(found - declared.points) > 1e-9:
                problems.append(
                    f"{question}: the front matter gives {declared.points:g} points, its tests "
                    f"add up to {found:g}"
                )
        names = [(case.question, case.name) for case in self.cases]
        problems += [
            f"{q}: two tests are named {n!r}" for q, n in set(names) if names.count((q, n)) > 1
        ]
        if problems:
            raise CourseError(
                f"{where} disagrees with the lab {lab.id}:\n  " + "\n  ".join(problems)
            )

    def run(
        self, record: dict, context: Context, questions: Collection[str] | None = None
    ) -> list[TestResult]:
        """Every test on one record (or those of ``questions``); a test that raises fails alone,
        with the reason."""
        results = []
        for case in self.cases:
            if questions is not None and case.question not in questions:
                continue
            # a name may quote the lab's thresholds: "reaches {thresholds[mnist]:.2f} accuracy"
            name = case.name.format(thresholds=context.lab.thresholds)
            try:
                verdict = case.function(record, context)
                if not isinstance(verdict, Verdict):
                    raise TypeError(f"the test returned {type(verdict).__name__}, not a Verdict")
            except NotRecorded as missing:
                verdict = Verdict(False, str(missing))
            except Exception as exc:  # the grader's own failure: the student is told so
                results.append(
                    TestResult(
                        case.question,
                        name,
                        case.points,
                        0.0,
                        f"the grader could not judge this answer ({type(exc).__name__}: {exc})"[
                            :500
                        ],
                        error=True,
                        ok=False,
                    )
                )
                continue
            score = case.points if verdict.passed else 0.0
            results.append(
                TestResult(
                    case.question,
                    name,
                    case.points,
                    score,
                    verdict.message,
                    dict(verdict.measured),
                    ok=verdict.passed,
                )
            )
        return results


class Context:
    """What the tests need beyond the record: the lab's facts, the run's inputs, the data.

    The grading images of a dataset are training images that none of the lab's declared subsets
    of that dataset holds, so no student has trained on them. Data is loaded lazily, once.
    """

    def __init__(self, lab: Lab, inputs: dict, root: Path | None = None):
        self.lab = lab
        self.inputs = inputs
        self.root = root
        self._cache: dict[str, object] = {}

    def _once(self, key: str, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def unseen_indices(self, dataset: str, total: int) -> torch.Tensor:
        """Indices of the training split that no subset of ``dataset`` in this lab draws."""
        used = torch.zeros(total, dtype=torch.bool)
        for subset in self.lab.subsets.values():
            if subset.dataset == dataset and subset.split == "train":
                chosen, _ = data.split_indices(total, min(subset.size, total), seed=subset.seed)
                used[chosen] = True
        return (~used).nonzero().view(-1)

    def trained_accuracy(self, records: dict, dataset: str) -> float:
        """Accuracy on ``grading_set(dataset)`` of the model rebuilt from layer ``records``
        (NaN scores count as 0). Raises RebuildError, RuntimeError or ValueError when the
        model cannot be rebuilt or evaluated."""
        images, labels = self.grading_set(dataset)
        # Colour images channels-last: the CIFAR-10 networks predict them 1.6 times as fast on
        # one CPU thread (grey ones gain nothing; benchmarks/bench_predict.py). Safe here, where
        # the model is our own rebuilt nn.Sequential: a student's forward may call .view, which
        # needs the default layout.
        if images.shape[1] > 1:
            images = images.contiguous(memory_format=torch.channels_last)
        accuracy = training.evaluate(rebuild(records), images, labels)
        return 0.0 if accuracy != accuracy else accuracy

    def grading_set(self, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (N, C, H, W), labels (N,))``: up to 2,000 unseen training images."""

        def make():
            unseen = self.unseen_indices(dataset, data.split_size(dataset, "train", self.root))
            order = torch.randperm(
                len(unseen), generator=torch.Generator().manual_seed(GRADING_ORDER_SEED)
            )
            chosen = data.load(
                dataset, "train", root=self.root, indices=unseen[order[:GRADING_IMAGES]]
            )
            return chosen.images, chosen.labels

        return self._once(f"grading-{dataset}", make)

    def test_set(self, dataset: str) -> data.ImageSet:
        """The whole test split of ``dataset`` (no student trains on it)."""
        return self._once(f"test-{dataset}", lambda: data.load(dataset, "test", root=self.root))

    def training_set(self, subset: str) -> data.ImageSet:
        """The lab's declared training subset, as the students' shortened run loads it."""
        declared = self.lab.subsets[subset]
        return self._once(f"train-{subset}", lambda: declared.load(self.root, fast=True))
