"""Typed grading results: what crosses from a worker process to the reports, as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

__all__ = ["MAX_RESULT_BYTES", "Graded", "Status", "SubmissionResult", "TestResult", "read_results"]

# A results file larger than this was not written by the grader; it is skipped with a note.
MAX_RESULT_BYTES = 4 * 1024 * 1024


class Status(str, Enum):
    """How grading one submission ended."""

    GRADED = "graded"
    INVALID = "invalid"  # not a notebook, no code, unusable file, unknown lab
    TIMEOUT = "timeout"
    CRASHED = "crashed"  # the kernel or the worker died before a record was written
    OUT_OF_MEMORY = "out of memory"
    # The grader failed on its side (its sandbox or kernel never started, its judge gave no
    # answer, the machine stopped it): nothing the student's code did. A rerun grades it again.
    GRADER_ERROR = "grader error"

    def __str__(self) -> str:
        return self.value

    @property
    def needs_rerun(self) -> bool:
        """True for a row the grader owes a grade: the same command grades it again."""
        return self is Status.GRADER_ERROR


@dataclass(frozen=True)
class TestResult:
    """One hidden test case: its question, name, points available and earned, and feedback.

    ``measured`` holds the numbers the test measured (an accuracy, a loss), so that tools
    read them without parsing messages; ``error`` marks a test that raised instead of judging.
    """

    __test__ = False  # not a pytest test class, whatever its name

    question: str
    name: str
    points: float
    score: float
    message: str
    measured: dict[str, float] = field(default_factory=dict)
    error: bool = False
    ok: bool | None = None  # the verdict itself, which a test worth 0 points (feedback) needs

    @property
    def passed(self) -> bool:
        return self.ok if self.ok is not None else self.score >= self.points


@dataclass
class SubmissionResult:
    """Everything known about one graded submission."""

    student: str
    lab: str
    notebook: str
    status: Status
    reason: str
    scores: dict[str, float]
    max: float
    tests: list[TestResult] = field(default_factory=list)
    seconds: float = 0.0
    # locked code cells the student had changed or deleted (the released ones ran instead)
    changed_locked_cells: list[str] = field(default_factory=list)
    # the sha256 of the file graded ("" when it could not be read; None in a result written
    # before digests were kept): a resume regrades a submission whose file no longer has it
    digest: str | None = None
    # when the student submitted, in UTC, ISO 8601 (nbgrader's timestamp.txt; "" when unknown)
    submitted_at: str = ""
    # False: every answer cell as released, nothing attempted; None: not known
    attempted: bool | None = None

    @property
    def total(self) -> float:
        return round(sum(self.scores.values()), 3)

    @classmethod
    def from_tests(
        cls,
        status: Status,
        reason: str,
        tests: list[TestResult],
        points: dict[str, float],
        *,
        student: str = "",
        lab: str = "",
        notebook: str = "",
        seconds: float = 0.0,
        changed_locked_cells: list[str] = (),
    ) -> SubmissionResult:
        """A result whose per-question scores add up its tests (zero where none ran)."""
        scores = dict.fromkeys(points, 0.0)
        for test in tests:
            scores[test.question] = scores.get(test.question, 0.0) + test.score
        return cls(
            student,
            lab,
            notebook,
            Status(status),
            reason,
            {question: round(score, 3) for question, score in scores.items()},
            sum(points.values()),
            list(tests),
            round(seconds, 1),
            list(changed_locked_cells),
        )

    def to_json(self) -> str:
        values = asdict(self)
        values["status"] = self.status.value
        values["total"] = self.total
        return json.dumps(values, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        values = json.loads(text)
        values.pop("total", None)
        values["status"] = Status(values["status"])
        values["tests"] = [TestResult(**test) for test in values.get("tests", [])]
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> SubmissionResult:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Graded:
    """One submission's result, and its executed notebook (at most the kernel's
    ``EXECUTED_LIMIT`` bytes), as a worker hands them back to the run."""

    result: SubmissionResult
    executed: bytes | None


def read_results(folder: Path) -> tuple[list[SubmissionResult], list[str]]:
    """Every result in ``folder/results/*.json``, by file name, and a note for each file skipped
    (not a regular file, too large, not a result)."""
    results, skipped = [], []
    for path in sorted((folder / "results").glob("*.json")):
        try:
            if not path.is_file() or path.is_symlink():
                raise ValueError("not a regular file")
            if path.stat().st_size > MAX_RESULT_BYTES:
                raise ValueError(f"larger than {MAX_RESULT_BYTES:,} bytes")
            results.append(SubmissionResult.read(path))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            skipped.append(f"{path.name}: {exc}")
    return results, skipped
