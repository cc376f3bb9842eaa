"""The labs: each one's facts (questions, training subsets, schedules), declared once in its
front matter, and each one's own helpers, a package of its own here (``labs.<lab>``)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import CourseError
from ..settings import DATASETS

__all__ = [
    "DATASETS",
    "Lab",
    "Question",
    "Schedule",
    "Subset",
    "lab_packages",
    "read_front_matter",
]

ID_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Question:
    """One graded question: its id, the exercise number students see, a title and its points."""

    id: str
    exercise: int | None
    title: str
    points: float
    manual: bool = False  # graded by a person (a written answer), not by hidden tests

    @property
    def label(self) -> str:
        """``Exercise 3: vector_to_class`` (or the title alone for a question with no number)."""
        return f"Exercise {self.exercise}: {self.title}" if self.exercise else self.title


@dataclass(frozen=True)
class Subset:
    """A seeded random subset of a dataset's split that a lab trains on."""

    name: str
    dataset: str  # "mnist" or "cifar10"
    split: str
    size: int
    seed: int
    fast_size: int | None = None  # images trained on in shortened mode: the sample's first ones

    def load(self, root: str | os.PathLike | None = None, *, fast: bool | None = None):
        """The subset as a ``data.ImageSet`` (see ``data.load_mnist``): in shortened mode
        (``fast``, by default ``CNN_COURSE_FAST``), only its first ``fast_size`` images."""
        from .. import data
        from ..training import fast_mode

        chosen = data.load(self.dataset, self.split, root=root, n=self.size, seed=self.seed)
        if self.fast_size is None or not (fast_mode() if fast is None else fast):
            return chosen
        first = slice(0, self.fast_size)
        return replace(
            chosen,
            images=chosen.images[first],
            labels=chosen.labels[first],
            indices=chosen.indices[first],
            name=f"{chosen.name}, its first {self.fast_size} in shortened mode",
        )


@dataclass(frozen=True)
class Schedule:
    """How a lab trains one model: epochs (full and shortened), learning rate, batch size."""

    name: str
    epochs: int
    fast_epochs: int
    learning_rate: float
    batch_size: int

    @property
    def num_epochs(self) -> int:
        """``epochs``, or ``fast_epochs`` when ``CNN_COURSE_FAST=1`` (CI and grading)."""
        from ..training import fast_mode

        return self.fast_epochs if fast_mode() else self.epochs


@dataclass(frozen=True)
class Lab:
    """Everything a lab states once: read by its notebook, its checks and its grader."""

    id: str
    title: str
    questions: dict[str, Question]
    subsets: dict[str, Subset] = field(default_factory=dict)
    training: dict[str, Schedule] = field(default_factory=dict)
    # dataset -> accuracy a trained model must reach on the grader's unseen images
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def graded(self) -> dict[str, Question]:
        """The questions the hidden tests grade (all but those graded by hand)."""
        return {key: q for key, q in self.questions.items() if not q.manual}

    def to_dict(self) -> dict[str, Any]:
        """The front-matter form (``Lab.from_dict(lab.to_dict()) == lab``)."""

        def strip(record) -> dict:
            values = asdict(record)
            for key in ("id", "name"):
                values.pop(key, None)
            if values.get("manual") is False:
                del values["manual"]
            if "fast_size" in values and values["fast_size"] is None:
                del values["fast_size"]
            return values

        table = {
            "assignment": self.id,
            "title": self.title,
            "questions": {key: strip(value) for key, value in self.questions.items()},
            "subsets": {key: strip(value) for key, value in self.subsets.items()},
            "training": {key: strip(value) for key, value in self.training.items()},
        }
        if self.thresholds:
            table["grading"] = {"thresholds": dict(self.thresholds)}
        return table

    @classmethod
    def from_dict(cls, config: Any, where: str = "the lab's front matter") -> Lab:
        """Parse and check the ``cnn_course:`` table of a lab's front matter."""
        if not isinstance(config, dict):
            raise CourseError(f"{where}: expected a `cnn_course:` table, found {config!r}.")
        lab_id = config.get("assignment")
        if not isinstance(lab_id, str) or not ID_PATTERN.fullmatch(lab_id):
            raise CourseError(
                f"{where}: `assignment:` must be a lower_snake_case id (it names the lab's "
                f"notebook, grades and nbgrader assignment); found {lab_id!r}."
            )
        title = config.get("title")
        if not isinstance(title, str) or not title.strip():
            raise CourseError(f"{where}: `title:` must name the lab; found {title!r}.")
        questions = {
            key: Question(
                key,
                _integer(spec, "exercise", where, key, optional=True),
                _text(spec, "title", where, key),
                _number(spec, "points", where, key),
                _flag(spec, "manual", where, key),
            )
            for key, spec in _table(config, "questions", where).items()
        }
        if not questions:
            raise CourseError(f"{where}: `questions:` declares no question.")
        exercises = [q.exercise for q in questions.values() if q.exercise is not None]
        if len(set(exercises)) != len(exercises):
            raise CourseError(f"{where}: two questions share an exercise number: {exercises}.")
        if exercises != sorted(exercises):
            raise CourseError(
                f"{where}: list the questions in the order of their exercises (students, grades "
                f"and feedback see that order); found exercises {exercises}."
            )
        for question in questions.values():
            number = re.match(r"q(\d+)(?:_|$)", question.id)
            if number and question.exercise is not None and int(number[1]) != question.exercise:
                raise CourseError(
                    f"{where}: question {question.id} is exercise {question.exercise}: its id "
                    f"must say the same number (q{question.exercise}_...), or students, feedback "
                    f"and grade columns disagree."
                )
        subsets = {}
        for key, spec in _table(config, "subsets", where, required=False).items():
            dataset = spec.get("dataset") if isinstance(spec, dict) else None
            if dataset not in DATASETS:
                raise CourseError(
                    f"{where}: subset {key}: `dataset:` must be one of {', '.join(DATASETS)}; "
                    f"found {dataset!r}."
                )
            split = spec.get("split", "train")
            if split not in ("train", "test"):
                raise CourseError(f"{where}: subset {key}: `split:` must be train or test.")
            subsets[key] = Subset(
                key,
                dataset,
                split,
                _integer(spec, "size", where, key, minimum=1),
                _integer(spec, "seed", where, key),
                _integer(spec, "fast_size", where, key, optional=True, minimum=1),
            )
            if (subsets[key].fast_size or 0) > subsets[key].size:
                raise CourseError(f"{where}: subset {key}: fast_size exceeds size.")
        training = {}
        for key, spec in _table(config, "training", where, required=False).items():
            schedule = Schedule(
                key,
                _integer(spec, "epochs", where, key, minimum=1),
                _integer(spec, "fast_epochs", where, key, minimum=1),
                _number(spec, "learning_rate", where, key),
                _integer(spec, "batch_size", where, key, minimum=1),
            )
            if schedule.fast_epochs > schedule.epochs:
                raise CourseError(f"{where}: training {key}: fast_epochs exceeds epochs.")
            training[key] = schedule
        return cls(lab_id, title.strip(), questions, subsets, training, _thresholds(config, where))


def read_front_matter(path: str | os.PathLike) -> Lab:
    """The lab declared in the front matter of a MyST source (``source/<lab>.md``).

    A lab's source calls it in its settings cell; the built notebooks carry the settings
    themselves, so students never need the source.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CourseError(
            f"Could not read the lab source {path}: {exc.strerror}. Run the source from its "
            "folder (source/), or open the built notebook in notebooks/ instead."
        ) from None
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if match is None:
        raise CourseError(f"{path} has no front matter (a `---` block at the top).")
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise CourseError(f"{path}: the front matter is not valid YAML: {exc}") from None
    config = front.get("cnn_course") if isinstance(front, dict) else None
    return Lab.from_dict(config, str(path))


# --- field readers ------------------------------------------------------------------------


def _table(config: dict, key: str, where: str, required: bool = True) -> dict[str, dict]:
    table = config.get(key)
    if table is None and not required:
        return {}
    if not isinstance(table, dict):
        raise CourseError(f"{where}: `{key}:` must be a table of named entries; found {table!r}.")
    for name, spec in table.items():
        if not isinstance(name, str) or not ID_PATTERN.fullmatch(name):
            raise CourseError(f"{where}: {key} entry {name!r} must be a lower_snake_case id.")
        if not isinstance(spec, dict):
            raise CourseError(f"{where}: {key} entry {name} must be a table; found {spec!r}.")
    return table


def _number(spec: dict, key: str, where: str, name: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CourseError(f"{where}: {name} needs `{key}: <number>`; found {value!r}.")
    return float(value)


def _integer(
    spec: dict, key: str, where: str, name: str, optional: bool = False, minimum: int = 0
) -> int | None:
    value = spec.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CourseError(
            f"{where}: {name} needs `{key}:` as a whole number >= {minimum}; found {value!r}."
        )
    return value


def _flag(spec: dict, key: str, where: str, name: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise CourseError(f"{where}: {name}: `{key}:` must be true or false; found {value!r}.")
    return value


def _text(spec: dict, key: str, where: str, name: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CourseError(f"{where}: {name} needs `{key}: <text>`; found {value!r}.")
    return value.strip()


def _thresholds(config: dict, where: str) -> dict[str, float]:
    """``grading: thresholds: {dataset: accuracy}``: what a trained model must reach."""
    grading = config.get("grading", {})
    if not isinstance(grading, dict):
        raise CourseError(f"{where}: `grading:` must be a table (thresholds:); found {grading!r}.")
    thresholds = grading.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise CourseError(f"{where}: `grading: thresholds:` must map datasets to accuracies.")
    found = {}
    for dataset, accuracy in thresholds.items():
        if dataset not in DATASETS:
            raise CourseError(
                f"{where}: `grading: thresholds:` names {dataset!r}; datasets: {', '.join(DATASETS)}."
            )
        if (
            isinstance(accuracy, bool)
            or not isinstance(accuracy, int | float)
            or not 0 < accuracy < 1
        ):
            raise CourseError(
                f"{where}: `grading: thresholds: {dataset}:` must be an accuracy between 0 and 1; "
                f"found {accuracy!r}."
            )
        found[dataset] = float(accuracy)
    return found


def lab_packages() -> list[str]:
    """The labs that have a package of their own helpers here, by id (discovered, not listed)."""
    import pkgutil

    return sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg)
