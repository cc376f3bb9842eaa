"""A course repository as the instructor tools see it: its labs and their grading content.

A course holds ``source/<lab>.md`` (each lab's text, with its facts in the front matter) and
``autograder/<lab>/`` (its hidden tests, probe plan and reference solutions). The tools are
installed; the course is data they load from its folder, never by editing the import path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

from cnn_course.errors import CourseError
from cnn_course.labs import Lab

from .registry import Registry

__all__ = ["Course", "LabContent", "find_course"]


@dataclass(frozen=True)
class LabContent:
    """A lab's grading content: its hidden tests, what the probe records, the inputs it draws."""

    lab: Lab
    tests: Registry
    probe_plan: list[dict]
    module: ModuleType

    def grading_inputs(self, seed: int) -> dict:
        """Inputs for the function questions, drawn afresh for each grading run from ``seed``."""
        draw = getattr(self.module, "grading_inputs", None)
        return draw(seed) if draw is not None else {}


class Course:
    """The labs of the course repository ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self._content: dict[str, LabContent] = {}

    @cached_property
    def sources(self) -> dict[str, Path]:
        """Lab id -> its MyST source, for every ``source/*.md``."""
        from .build import read_lab

        folder = self.root / "source"
        paths = sorted(folder.glob("*.md")) if folder.is_dir() else []
        if not paths:
            raise CourseError(
                f"No lab sources found in {folder}. Run this from the course repository "
                "(the folder holding source/, notebooks/ and autograder/), or pass --repo."
            )
        found: dict[str, Path] = {}
        for path in paths:
            lab = read_lab(path)
            if lab.id in found:
                raise CourseError(f"{path} and {found[lab.id]} both declare the lab {lab.id!r}.")
            found[lab.id] = path
        return found

    @cached_property
    def labs(self) -> dict[str, Lab]:
        """Lab id -> its facts, in source order."""
        from .build import read_lab

        return {lab_id: read_lab(path) for lab_id, path in self.sources.items()}

    def lab(self, lab_id: str) -> Lab:
        if lab_id not in self.labs:
            raise CourseError(
                f"No lab {lab_id!r} in {self.root / 'source'}; the labs are: "
                f"{', '.join(self.labs)}."
            )
        return self.labs[lab_id]

    def content(self, lab_id: str) -> LabContent:
        """The lab's grading content, loaded from ``autograder/<lab>/`` and checked against it."""
        if lab_id not in self._content:
            lab = self.lab(lab_id)
            folder = self.root / "autograder" / lab_id
            module = _load_package(folder, self.root)
            tests = getattr(module, "tests", None)
            if not isinstance(tests, Registry):
                raise CourseError(
                    f"{folder}/__init__.py must define `tests = Registry()` holding the lab's "
                    "hidden tests."
                )
            tests.check(lab, f"{folder.relative_to(self.root)}")
            plan = list(getattr(module, "PROBE", []))
            self._content[lab_id] = LabContent(lab, tests, plan, module)
        return self._content[lab_id]


def find_course(repo: str | Path | None = None) -> Course:
    """The course at ``repo`` (default: the current folder)."""
    return Course(Path(repo) if repo is not None else Path.cwd())


def _load_package(folder: Path, root: Path) -> ModuleType:
    """Import ``folder`` (a package) under a name private to this course repository."""
    init = folder / "__init__.py"
    if not init.is_file():
        raise CourseError(
            f"The lab's grading content is missing: expected {init} (its hidden tests)."
        )
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    name = f"_cnn_course_content_{folder.name}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except CourseError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        raise CourseError(
            f"Could not load the grading content {folder.relative_to(root)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    importlib.invalidate_caches()
    return module
