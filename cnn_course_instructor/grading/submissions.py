"""Find a class's submissions and tell which lab each one is for."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cnn_course.errors import CourseError

from ..safefiles import UnsafeFile, read_under
from .results import Graded, Status, SubmissionResult

__all__ = [
    "STUDENT_ID",
    "SUBMISSION_LIMIT",
    "UNKNOWN_LAB",
    "Submission",
    "find_submissions",
    "lab_id_of",
    "lab_of",
    "read",
    "screen",
]

STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")  # always used with fullmatch
SUBMISSION_LIMIT = 20_000_000  # bytes: a submission over it is invalid (the lab's is ~100 KB)
UNKNOWN_LAB = "unknown-lab"  # where submissions go whose lab cannot be told


@dataclass(frozen=True)
class Submission:
    """One student's notebook, and the lab its folder says it is for (nbgrader's layout)."""

    student: str
    path: Path
    folder_lab: str | None = None
    root: Path | None = None  # the submissions folder; nothing below it may be a link
    problem: str | None = None  # why it cannot be graded (an unusable name): an invalid row

    def relative(self) -> Path:
        return self.path.relative_to(self.root) if self.root else Path(self.path.name)


def read(submission: Submission, limit: int = SUBMISSION_LIMIT) -> bytes:
    """The submission's bytes, read without following any link below the submissions folder;
    UnsafeFile when it is a link, not a regular file, or over ``limit`` bytes."""
    root = submission.root or submission.path.parent
    return read_under(root, submission.relative(), limit, "the submitted file")


def _unusable(name: str, path: Path, root: Path, lab: str | None) -> Submission:
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    problem = (
        f"the name {name!r} is not a usable student id (letters, digits and _.@+- only, "
        "starting with a letter or digit, 100 at most): rename the file or folder"
    )
    return Submission(f"unusable-name-{digest}", path, lab, root, problem)


def find_submissions(folder: Path, labs: list[str]) -> list[Submission]:
    """Submissions in nbgrader's ``submitted/<student>/<lab>/*.ipynb`` layout, or ``<student>.ipynb``.

    ``folder`` may be the course folder holding ``submitted/``, ``submitted/`` itself, or a
    flat folder of notebooks.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CourseError(
            f"{folder} is not a folder of submissions: expected nbgrader's submitted/ folder "
            "(or the course folder holding it), or a folder of <student>.ipynb files."
        )
    if (folder / "submitted").is_dir():
        folder = folder / "submitted"
    found: list[tuple[str, Path, str | None]] = []
    for lab in labs:
        for lab_folder in sorted(path for path in folder.glob(f"*/{lab}") if path.is_dir()):
            notebooks = sorted(lab_folder.glob("*.ipynb"))
            preferred = lab_folder / f"{lab}.ipynb"
            path = preferred if preferred.exists() else (notebooks[0] if notebooks else preferred)
            found.append((lab_folder.parent.name, path, lab))
    if not found:
        found = [
            (path.name[: -len(".ipynb")], path, None) for path in sorted(folder.glob("*.ipynb"))
        ]
    if not found:
        raise CourseError(
            f"No submissions found in {folder}: expected nbgrader's submitted/<student>/<lab>/"
            f"<lab>.ipynb layout (labs: {', '.join(labs)}) or a flat folder of <student>.ipynb "
            "files."
        )
    submissions = []
    for student, path, lab in found:
        if STUDENT_ID.fullmatch(student):
            submissions.append(Submission(student, path, lab, folder))
        else:
            submissions.append(_unusable(student, path, folder, lab))
    return submissions


def lab_of(submission: Submission, labs: list[str], forced: str | None = None) -> str | None:
    """The lab a submission is for: ``forced``, else its folder, else its notebook's metadata.

    A course with a single lab needs no guess. None when it cannot be told.
    """
    if forced is not None:
        return forced
    if submission.folder_lab is not None:
        return submission.folder_lab
    if len(labs) == 1:
        return labs[0]
    if submission.problem is not None:
        return None
    try:
        metadata = json.loads(read(submission)).get("metadata", {})
        lab = metadata.get("cnn_course", {}).get("assignment")
    except (UnsafeFile, ValueError, AttributeError):
        return None
    return lab if lab in labs else None


def lab_id_of(submission: Submission, labs: list[str], forced: str | None) -> str:
    """The lab a submission is graded as, or ``UNKNOWN_LAB`` when it cannot be told."""
    return lab_of(submission, labs, forced) or UNKNOWN_LAB


def screen(submission: Submission, lab_id: str, labs: list[str]) -> bytes | Graded:
    """The submission's bytes, read safely once, or the ``invalid`` result of a file that cannot
    be graded (an unusable name, an unknown lab, a link, not a regular file, too large)."""

    def invalid(reason: str) -> Graded:
        return Graded(SubmissionResult.from_tests(Status.INVALID, reason, [], {}), None)

    if submission.problem is not None:
        return invalid(submission.problem)
    if lab_id == UNKNOWN_LAB:
        return invalid(
            f"cannot tell which lab this notebook is for (labs: {', '.join(labs)}); "
            "grade it with --lab, or put it in submitted/<student>/<lab>/"
        )
    try:
        return read(submission, SUBMISSION_LIMIT)
    except UnsafeFile as problem:
        return invalid(f"{problem} (at most {SUBMISSION_LIMIT:,} bytes)")
