"""Find a class's submissions and tell which lab each one is for."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from cnn_course.errors import CourseError

__all__ = ["STUDENT_ID", "Submission", "find_submissions", "lab_of"]

STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")
METADATA_READ_LIMIT = 50_000_000  # bytes read to find a notebook's lab


@dataclass(frozen=True)
class Submission:
    """One student's notebook, and the lab its folder says it is for (nbgrader's layout)."""

    student: str
    path: Path
    folder_lab: str | None = None


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
    submissions = []
    for lab in labs:
        for lab_folder in sorted(path for path in folder.glob(f"*/{lab}") if path.is_dir()):
            notebooks = sorted(lab_folder.glob("*.ipynb"))
            preferred = lab_folder / f"{lab}.ipynb"
            path = preferred if preferred.exists() else (notebooks[0] if notebooks else preferred)
            submissions.append(Submission(lab_folder.parent.name, path, lab))
    if not submissions:
        submissions = [Submission(path.stem, path) for path in sorted(folder.glob("*.ipynb"))]
    if not submissions:
        raise CourseError(
            f"No submissions found in {folder}: expected nbgrader's submitted/<student>/<lab>/"
            f"<lab>.ipynb layout (labs: {', '.join(labs)}) or a flat folder of <student>.ipynb "
            "files."
        )
    bad = [s.student for s in submissions if not STUDENT_ID.fullmatch(s.student)]
    if bad:
        raise CourseError(
            f"Unusable student ids (letters, digits and _.@+- only, 100 at most): "
            f"{', '.join(repr(b) for b in bad[:5])}. Rename those files or folders."
        )
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
    try:
        with open(submission.path, "rb") as stream:
            metadata = json.loads(stream.read(METADATA_READ_LIMIT)).get("metadata", {})
        lab = metadata.get("cnn_course", {}).get("assignment")
    except (OSError, ValueError, AttributeError):
        return None
    return lab if lab in labs else None
