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
from typing import TYPE_CHECKING

import yaml

from cnn_course.errors import CourseError
from cnn_course.labs import Lab

if TYPE_CHECKING:  # the contract imports torch: loaded with the grading content only
    from .contract import LabContract
    from .grading.registry import Registry


__all__ = ["Course", "LabContent", "find_course", "lab_from_metadata", "read_lab"]


def read_lab(path: Path) -> Lab:
    """The facts of the lab at ``path``, from its front matter alone: the YAML block between the
    first two ``---`` lines, which jupytext reads as the notebook's metadata. No notebook is
    parsed, so the judge and the scheduler (which read them for every submission) need neither
    jupytext nor nbformat."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CourseError(f"Could not read {path}: {exc}") from None
    lines = text.splitlines()
    metadata: object = {}
    if lines and lines[0].strip() == "---":
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
        if end is None:
            raise CourseError(f"{path}: the front matter opened by `---` on line 1 never closes.")
        try:
            metadata = yaml.safe_load("\n".join(lines[1:end])) or {}
        except yaml.YAMLError as exc:
            raise CourseError(f"{path}: the front matter is not valid YAML: {exc}") from None
    return lab_from_metadata(metadata if isinstance(metadata, dict) else {}, path)


def lab_from_metadata(metadata: dict, path: Path) -> Lab:
    """The lab declared by a source's ``cnn_course:`` table, checked against its file name."""
    if not isinstance(metadata.get("cnn_course"), dict):
        raise CourseError(
            f"{path} has no `cnn_course:` table in its front matter.\n"
            "Declare the lab there, e.g.\n"
            "cnn_course:\n  assignment: cnn_lab\n  title: ...\n  questions:\n"
            "    q1_conv2d: {exercise: 1, title: a convolution by hand, points: 3}"
        )
    lab = Lab.from_dict(metadata["cnn_course"], str(path))
    if lab.id != Path(path).stem:
        raise CourseError(
            f"{path}: the lab's `assignment: {lab.id}` must match its file name "
            f"({Path(path).stem}); rename one of them."
        )
    return lab


@dataclass(frozen=True)
class LabContent:
    """A lab's facts and its grading content, loaded and checked: its contract (hidden tests,
    probe steps, inputs, public facts, reference) and the module that declares it."""

    lab: Lab
    contract: LabContract
    module: ModuleType

    @property
    def tests(self) -> Registry:
        return self.contract.tests

    @property
    def reference(self) -> ModuleType | None:
        """The lab's reference solutions."""
        return self.contract.reference

    @property
    def probe_plan(self) -> list[dict]:
        """The probe's plan as the kernel receives it (plain data)."""
        return self.contract.plan()

    def grading_inputs(self, seed: int) -> dict:
        """Inputs for the function questions, drawn afresh for each grading run from ``seed``."""
        return self.contract.inputs(seed)


class Course:
    """The labs of the course repository ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self._content: dict[str, LabContent] = {}

    @cached_property
    def sources(self) -> dict[str, Path]:
        """Lab id -> its MyST source, for every ``source/*.md``."""
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
        return {lab_id: read_lab(path) for lab_id, path in self.sources.items()}

    def lab(self, lab_id: str) -> Lab:
        if lab_id not in self.labs:
            raise CourseError(
                f"No lab {lab_id!r} in {self.root / 'source'}; the labs are: "
                f"{', '.join(self.labs)}."
            )
        return self.labs[lab_id]

    def content(self, lab_id: str) -> LabContent:
        """The lab's grading content, loaded from ``autograder/<lab>/`` (its ``CONTRACT``) and
        checked against the lab's front matter."""
        if lab_id not in self._content:
            from .contract import LabContract

            lab = self.lab(lab_id)
            folder = self.root / "autograder" / lab_id
            module = _load_package(folder, self.root)
            contract = getattr(module, "CONTRACT", None)
            if not isinstance(contract, LabContract):
                raise CourseError(
                    f"{folder}/__init__.py must end with `CONTRACT = LabContract(tests=..., "
                    "probe=..., inputs=...)` (see cnn_course_instructor.contract); found "
                    f"{type(contract).__name__}."
                )
            contract.check(lab, f"{folder.relative_to(self.root)}")
            self._content[lab_id] = LabContent(lab, contract, module)
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
