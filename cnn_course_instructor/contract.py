"""What a lab's grading content gives the grader: one ``LabContract``, checked when it loads.

A lab's ``autograder/<lab>/__init__.py`` ends with ``CONTRACT = LabContract(...)``: its hidden
tests (a ``Registry``), what the probe records in the student's kernel (typed ``ProbeStep``s, made
with ``model``, ``calls``, ``value``, ``history``, ``optimizer`` and ``model_calls``), the inputs it
draws for each run, the facts of its grading its text may quote, and how the grader trains a
student's architecture itself (``Retraining``) to tell a wrong model from a wrong training loop.
The accuracy thresholds are the lab's own facts (``grading: thresholds:`` in its front matter).

    from cnn_course_instructor.contract import LabContract, Registry, calls, model, need

    DOUBLE = calls("double", inputs="numbers")
    tests = Registry()

    @tests.case("q1_double", points=1, name="doubles")
    def _doubles(record, context):
        output = need(record, DOUBLE)[0]
        ...

    CONTRACT = LabContract(tests=tests, probe=(DOUBLE,), inputs=grading_inputs)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

from cnn_course.errors import CourseError
from cnn_course.labs import Lab
from cnn_course.settings import ProbeKind

from .grading.registry import GRADING_IMAGES, Context, NotRecorded, Registry, need
from .grading.verdicts import Retraining, accuracy_verdict

__all__ = [
    "GRADING_IMAGES",
    "Context",
    "LabContract",
    "NotRecorded",
    "ProbeKind",
    "ProbeStep",
    "Registry",
    "Retraining",
    "accuracy_verdict",
    "calls",
    "history",
    "model",
    "model_calls",
    "need",
    "optimizer",
    "training",
    "value",
]


@dataclass(frozen=True)
class ProbeStep:
    """One thing the probe records from the student's kernel, under ``key``: see the makers
    below for what each kind reads. ``plain()`` is what the kernel's probe receives."""

    key: str
    kind: ProbeKind
    name: str = ""  # the student's name it reads
    inputs: str = ""  # calls, model_calls: the key of the run's inputs with the argument tuples
    input_shape: tuple[int, ...] = ()  # model: one image (C, H, W)
    criterion: str = ""  # optimizer: the student's names of the loss, optimiser and model
    optimizer: str = ""
    model: str = ""  # optimizer: the student's model; model_calls: the inputs' layer records
    repeat: bool = False  # model_calls: call twice on the same tensors (gradients that pile up)
    question: str = ""  # training: the question whose answer cell the probe watches

    def plain(self) -> dict:
        """The step as plain data (the kernel's probe reads it with ``weights_only``)."""
        fields = {
            "name": self.name,
            "inputs": self.inputs,
            "input_shape": self.input_shape,
            "criterion": self.criterion,
            "optimizer": self.optimizer,
            "model": self.model,
            "repeat": self.repeat,
            "question": self.question,
        }
        return {
            "key": self.key,
            "kind": self.kind.value,
            **{name: value for name, value in fields.items() if value},
        }


def model(name: str, *, input_shape: tuple[int, ...], key: str = "") -> ProbeStep:
    """The layers and trained tensors of the student's network ``name``, traced on a batch of
    images ``input_shape`` (C, H, W)."""
    return ProbeStep(key or name, ProbeKind.MODEL, name, input_shape=tuple(input_shape))


def calls(name: str, *, inputs: str, key: str = "") -> ProbeStep:
    """What the student's function ``name`` returns (or raises) on each argument tuple of the
    run's inputs ``inputs``."""
    return ProbeStep(key or name, ProbeKind.CALLS, name, inputs=inputs)


def value(name: str, *, key: str = "") -> ProbeStep:
    """The value of the student's name (a number, a tensor, or just its type)."""
    return ProbeStep(key or name, ProbeKind.VALUE, name)


def history(name: str, *, key: str = "") -> ProbeStep:
    """The per-epoch loss and accuracy a ``training.History`` holds."""
    return ProbeStep(key or name, ProbeKind.HISTORY, name)


def optimizer(key: str, *, criterion: str, optimizer: str, model: str) -> ProbeStep:
    """The loss function, the optimiser's kind and settings, and whether it steps ``model``'s
    parameters."""
    return ProbeStep(
        key, ProbeKind.OPTIMIZER, criterion=criterion, optimizer=optimizer, model=model
    )


def model_calls(name: str, *, model: str, inputs: str, repeat: bool = False) -> ProbeStep:
    """What the student's ``name(model, *args)`` returns for each argument tuple of ``inputs``,
    called on the grader's network rebuilt from the inputs' layer records ``model``."""
    return ProbeStep(name, ProbeKind.MODEL_CALLS, name, inputs=inputs, model=model, repeat=repeat)


def training(
    question: str, *, model: str, input_shape: tuple[int, ...], key: str = ""
) -> ProbeStep:
    """What the answer cell of ``question`` did while it ran, watched from the first cell on:
    the images (C, H, W) = ``input_shape`` each optimiser step trained on (as fingerprints,
    whatever loop fed them), the error it stopped with and the student's function that raised
    it, and the layers of the student's network ``model`` right after it (judged there, so a
    later cell cannot change them)."""
    return ProbeStep(
        key or f"{question}.training",
        ProbeKind.TRAINING,
        model,
        input_shape=tuple(input_shape),
        question=question,
    )


@dataclass(frozen=True)
class LabContract:
    """A lab's grading content, as the grader uses it (see the module)."""

    tests: Registry
    probe: tuple[ProbeStep, ...]
    inputs: Callable[[int], dict] = field(default=lambda seed: {})
    public_facts: Mapping[str, object] = field(default_factory=dict)
    reference: ModuleType | None = None  # the reference solutions

    def plan(self) -> list[dict]:
        """The probe's plan as the kernel receives it."""
        return [step.plain() for step in self.probe]

    def watched(self) -> tuple[str, ...]:
        """The questions whose answer cells the probe watches while they run."""
        return tuple(dict.fromkeys(s.question for s in self.probe if s.kind is ProbeKind.TRAINING))

    def check(self, lab: Lab, where: str) -> None:
        """Refuse, naming each problem, a contract that disagrees with the lab's front matter:
        tests of undeclared questions, points that do not add up, two steps under one key, a
        step without the fields its kind reads, a dataset trained on without a threshold."""
        self.tests.check(lab, where)
        problems = []
        keys = [step.key for step in self.probe]
        problems += [
            f"two probe steps record {key!r}" for key in sorted(set(keys)) if keys.count(key) > 1
        ]
        needs = {
            ProbeKind.MODEL: ("name", "input_shape"),
            ProbeKind.CALLS: ("name", "inputs"),
            ProbeKind.VALUE: ("name",),
            ProbeKind.HISTORY: ("name",),
            ProbeKind.OPTIMIZER: ("criterion", "optimizer", "model"),
            ProbeKind.MODEL_CALLS: ("name", "model", "inputs"),
            ProbeKind.TRAINING: ("name", "input_shape", "question"),
        }
        for step in self.probe:
            missing = [name for name in needs[step.kind] if not getattr(step, name)]
            if missing:
                problems.append(
                    f"probe step {step.key!r} ({step.kind.value}) needs {', '.join(missing)}"
                )
            if step.question and step.question not in lab.questions:
                problems.append(
                    f"probe step {step.key!r} watches {step.question!r}, which the lab does "
                    "not declare"
                )
        trained = {subset.dataset for subset in lab.subsets.values() if subset.split == "train"}
        missing = sorted(trained - set(lab.thresholds))
        if missing and any(step.kind is ProbeKind.MODEL for step in self.probe):
            problems.append(
                f"the lab trains on {', '.join(missing)} but its front matter gives no accuracy "
                "threshold for it (`grading: thresholds:`)"
            )
        if not isinstance(self.public_facts, Mapping):
            problems.append("public_facts must be a table of facts the lab's text may quote")
        if problems:
            raise CourseError(
                f"{where} disagrees with the lab {lab.id}:\n  " + "\n  ".join(problems)
            )
