"""What a sandbox is made of: its limits, the host paths bound in it, what exists inside."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from cnn_course import settings
from cnn_course.errors import CourseError

__all__ = [
    "CACHE_VIEW",
    "COURSE_VIEW",
    "DATA_VIEW",
    "HOME",
    "INNER_UID",
    "KERNEL_RUN",
    "MB",
    "VIEW",
    "Limits",
    "Mount",
    "Sandbox",
    "SandboxError",
]

HOME = settings.SANDBOX_HOME  # the sandbox's home and working folder (a tmpfs of its own)
KERNEL_RUN = settings.KERNEL_RUN  # the kernel's sockets and the probe's record (a tmpfs)
VIEW = settings.GRADER_VIEW  # the grader's files inside, read-only: its plan, data, course
DATA_VIEW = settings.DATA_VIEW  # the data root
CACHE_VIEW = settings.CACHE_VIEW  # the data cache entries the code reads, each at <name>
COURSE_VIEW = settings.COURSE_VIEW  # the course's grading content (judges only)
INNER_UID = 1000  # the uid the code sees inside
MB = 1024 * 1024


class SandboxError(CourseError):
    """The sandbox cannot be made here, or not with these paths: what to fix, in words."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (defaults fit the lab with a wide margin)."""

    memory_mb: int = 8192  # address space of each process
    cpu_seconds: int = 1200
    processes: int = 256  # processes and threads, counted in this sandbox alone
    file_mb: int = 256  # largest file it may write
    home_mb: int = 1024  # its home folder, a tmpfs of its own
    tmp_mb: int = 256  # /tmp and /dev/shm, each
    run_mb: int = 64  # /run/kernel (sockets and the grading record)
    # all its processes' memory together: a cgroup's limit, or the grader's watch without one
    total_memory_mb: int = 6144
    oom_score_adj: int = 1000  # student code goes first; the grader's own judges use 0

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * MB,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_FSIZE": self.file_mb * MB,
            "RLIMIT_CORE": 0,
        }


@dataclass(frozen=True)
class Mount:
    """A host path bound read-only at ``dest`` inside."""

    source: str
    dest: str


@dataclass(frozen=True)
class Sandbox:
    """What exists inside a sandbox, beside the system and Python: its binds, env and limits."""

    binds: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    files: dict[str, str] = field(default_factory=dict)  # dest inside -> host file copied in
    # Modules a kernel in it imports before it answers (its first cell would import them anyway;
    # a grader that starts the next kernel early then finds them loaded). Each may be missing.
    preload: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        values = json.loads(text)
        return cls(
            tuple(Mount(**m) for m in values["binds"]),
            values["env"],
            Limits(**values["limits"]),
            values["files"],
            tuple(values.get("preload", ())),
        )
