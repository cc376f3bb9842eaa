"""Locate the instructor-only `autograder` package next to this one (it is not installed)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from .errors import CourseError

__all__ = ["autograder_module"]


def autograder_module(name: str) -> ModuleType:
    """Import ``autograder.<name>`` from the course repository this package was installed from."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "autograder" / "__init__.py").is_file():
        raise CourseError(
            "Grading needs the instructor's course repository (its autograder/ folder), which this "
            f"installation does not have ({repo}). Clone the course repository, run `make demo` or "
            "`pip install -e .` there, and run the command from that clone."
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return importlib.import_module(f"autograder.{name}")
