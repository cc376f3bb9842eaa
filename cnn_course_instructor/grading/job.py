"""The typed values a grading run hands from stage to stage and process to process.

A ``GradingRun`` is what every submission of one run shares (the course, the secret seed, the
data, the limits, the judge servers); a ``Job`` is one submission's share of it, written as JSON
for the worker process that grades it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..course import Course

__all__ = ["CELL_TIMEOUT", "GradingRun", "Job", "course_of"]

CELL_TIMEOUT = 300  # CPU seconds a cell may use, and seconds of its own time it may wait


@dataclass(frozen=True)
class GradingRun:
    """What every submission of a run shares: the course repository, the run's secret seed,
    the data root and the cache entries its kernels read, the limits, and the socket of each
    lab's judge server (none: each worker starts a judge of its own)."""

    course: str
    seed: int
    data_root: str
    cell_timeout: int = CELL_TIMEOUT
    sandboxed: bool = True  # False: no sandbox (trusted code only)
    cache_entries: tuple[str, ...] = ()
    judge_sockets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def here(
        cls,
        course: Course,
        seed: int,
        data_root: Path,
        *,
        sandboxed: bool = True,
        cell_timeout: int = CELL_TIMEOUT,
    ) -> GradingRun:
        """A run on this machine: its data root (resolved) and the cache entries for it."""
        from cnn_course import data

        return cls(
            course=str(course.root),
            seed=seed,
            data_root=str(Path(data_root).resolve()),
            cell_timeout=cell_timeout,
            sandboxed=sandboxed,
            cache_entries=tuple(str(p) for p in data.cache_entries(data_root)),
        )

    def with_judges(self, sockets: dict[str, str]) -> GradingRun:
        return replace(self, judge_sockets=dict(sockets))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GradingRun:
        return cls(**{**values, "cache_entries": tuple(values.get("cache_entries", ()))})


@functools.cache
def course_of(root: str) -> Course:
    """The course at ``root``, loaded once per process (its hidden tests are imported once)."""
    return Course(Path(root))


@dataclass(frozen=True)
class Job:
    """One submission's grading, as its worker process reads it (JSON)."""

    run: GradingRun
    lab: str
    notebook: str  # the grader's own copy of the submission
    result: str
    executed: str
    work: str  # a folder of the grader's own for this submission
    plan: str = ""  # a file holding the probe's plan for the lab and seed; "": the worker's own
    restore_locked: bool = True  # False: locked cells run as written (calibrating seeded solutions)
    # True: start the kernel and the judge, then wait for a line "go" on standard input before
    # the first cell (a slot starts the next submission while the current one runs).
    gated: bool = False
    # A pipe (an inherited descriptor; -1: none) where the worker says "ready" when it waits at
    # the gate and "ran" once its kernel has ended, so the next submission may run while this
    # one is judged.
    status_fd: int = -1

    @property
    def judge_socket(self) -> str:
        """Where the run's judge server for this lab listens; "": a judge of the worker's own."""
        return self.run.judge_sockets.get(self.lab, "")

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Job:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{**fields, "run": GradingRun.from_dict(fields["run"])})
