"""Find a class's submissions and tell which lab each one is for."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
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
    "digest",
    "lab_of",
    "other_assignments",
    "read",
    "screen",
    "submitted_at",
]

STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")  # always used with fullmatch
SUBMISSION_LIMIT = 20_000_000  # bytes: a submission over it is invalid (the lab's is ~100 KB)
UNKNOWN_LAB = "unknown-lab"  # where submissions go whose lab cannot be told
TIMESTAMP = "timestamp.txt"  # nbgrader's submission time, beside the notebook
TIMESTAMP_LIMIT = 200  # bytes: nbgrader writes about 30


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


def digest(submission: Submission) -> str:
    """The sha256 of the submitted file, or "" when it cannot be read safely (its row is
    invalid): a result keeps the digest of what it graded."""
    if submission.problem is not None:
        return ""
    try:
        return hashlib.sha256(read(submission)).hexdigest()
    except UnsafeFile:
        return ""


def submitted_at(submission: Submission) -> datetime | None:
    """When the student submitted, in UTC (naive, as nbgrader keeps times): nbgrader's
    ``timestamp.txt`` beside the notebook, read safely. None outside nbgrader's layout, or when
    the file is missing or unreadable (the student's side writes it: it is read with limits)."""
    if submission.folder_lab is None or submission.problem is not None:
        return None
    from nbgrader.utils import parse_utc

    root = submission.root or submission.path.parent
    relative = submission.relative().parent / TIMESTAMP
    try:
        text = read_under(root, relative, TIMESTAMP_LIMIT, "the timestamp").decode("utf-8")
        return parse_utc(text.strip())
    except (UnsafeFile, UnicodeDecodeError, ValueError, OverflowError, TypeError):
        return None


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


def other_assignments(folder: Path, labs: list[str]) -> dict[str, int]:
    """In nbgrader's layout, the assignments under ``submitted/<student>/`` that are none of
    ``labs``, with how many students submitted each: what a run does not grade, said once."""
    folder = Path(folder)
    if (folder / "submitted").is_dir():
        folder = folder / "submitted"
    others: dict[str, int] = {}
    if not any(path.is_dir() for lab in labs for path in folder.glob(f"*/{lab}")):
        return others  # a flat folder of notebooks: its subfolders are no assignments
    for path in folder.glob("*/*"):
        if path.is_dir() and not path.is_symlink() and path.name not in labs:
            others[path.name] = others.get(path.name, 0) + 1
    return dict(sorted(others.items()))


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
    try:
        content = read(submission, SUBMISSION_LIMIT)
    except UnsafeFile as problem:
        return invalid(f"{problem} (at most {SUBMISSION_LIMIT:,} bytes)")
    if lab_id == UNKNOWN_LAB:
        try:
            json.loads(content)
        except ValueError as problem:  # not JSON (UnicodeDecodeError included)
            return invalid(
                f"not a valid notebook: the file is not JSON ({str(problem)[:200]}); ask the "
                "student for their .ipynb file"
            )
        return invalid(
            f"cannot tell which lab this notebook is for (its metadata names none of the "
            f"labs: {', '.join(labs)}); grade it with --lab, or put it in "
            "submitted/<student>/<lab>/"
        )
    return content
