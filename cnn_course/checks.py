"""Visible checks: what every lab's checks are made of (a report, and the steps they share).

A lab's checks (``cnn_course.labs.<lab>.checks``) record the student's objects and judge them
with the rules of ``judging`` and the lab's own verdicts, the same rules and messages the
grader's hidden tests use, on small worked examples.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from . import judging
from .judging import LayerSpec, Verdict

__all__ = ["CheckReport", "architecture", "is_function", "loss_and_optimizer", "training_record"]


# --- reports --------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """The outcome of a check: one row per test, an HTML table in Jupyter and text elsewhere."""

    title: str
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, passed: bool, problem: str = "", note: str = "") -> bool:
        """Record one test; ``problem`` is shown when it failed, ``note`` when it passed."""
        self.rows.append((name, bool(passed), note if passed else problem))
        return bool(passed)

    def verdict(self, name: str, verdict: Verdict) -> bool:
        """Record one judgement of ``judging``, with its message."""
        return self.add(name, verdict.passed, verdict.message, verdict.message)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)

    def summary(self) -> str:
        if self.passed:
            return "All tests passed!"
        failed = sum(not ok for _, ok, _ in self.rows)
        return f"{failed} of {len(self.rows)} tests failed."

    def __str__(self) -> str:
        lines = [f"{self.title}"]
        for name, ok, message in self.rows:
            mark = "ok  " if ok else "FAIL"
            lines.append(f"  [{mark}] {name}" + (f": {message}" if message else ""))
        lines.append(self.summary())
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join(
            "<tr><td style='text-align:left'>{}</td><td style='color:{}'>{}</td>"
            "<td style='text-align:left'>{}</td></tr>".format(
                html.escape(name),
                "green" if ok else "#c00",
                "✔ passed" if ok else "✘ failed",
                html.escape(message),
            )
            for name, ok, message in self.rows
        )
        colour = "green" if self.passed else "#c00"
        return (
            f"<div class='cnn-course-check'><b>{html.escape(self.title)}</b>"
            f"<table><thead><tr><th style='text-align:left'>check</th><th>result</th>"
            f"<th style='text-align:left'>details</th></tr></thead><tbody>{body}</tbody></table>"
            f"<b style='color:{colour}'>{html.escape(self.summary())}</b></div>"
        )


# --- steps several checks share -----------------------------------------------------------


def architecture(report: CheckReport, model, spec: Sequence[LayerSpec], input_shape) -> None:
    """Check ``model`` layer by layer against a table ``spec`` on a dummy batch."""
    if not report.add(
        "is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    ):
        return
    layers, error = judging.describe_model(model, input_shape)
    if not report.add("forward pass on a dummy batch", error is None, error or ""):
        return
    report.verdict("convolutions", judging.convolutions_verdict(layers, spec))
    report.verdict("activations and pooling in order", judging.layer_order_verdict(layers, spec))
    report.verdict("classifier output", judging.classifier_verdict(layers, spec, error))
    mismatches = judging.compare_layers(layers, spec)
    total = sum(layer.parameters for layer in layers)
    report.add(
        f"{len(spec)} layers as in the table",
        not mismatches,
        "; ".join(mismatches),
        note=f"{total:,} trainable parameters",
    )


def loss_and_optimizer(
    report: CheckReport, criterion, optimizer, model, model_name: str, learning_rate
) -> None:
    """Check the loss function and the optimiser chosen for ``model``."""
    facts = judging.optimizer_record(criterion, optimizer, model)
    report.verdict("loss function", judging.loss_verdict(facts))
    report.verdict("optimiser", judging.optimizer_verdict(facts, model_name, learning_rate))


def training_record(title: str, model, history, n_epochs: int) -> CheckReport:
    """Check a training run's model and its per-epoch record."""
    report = CheckReport(title)
    report.add(
        "model is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    )
    try:
        record = judging.history_record(history)
    except TypeError as exc:
        report.add("history is a training.History", False, str(exc))
        return report
    report.verdict(
        "one mean loss and accuracy per epoch, loss going down",
        judging.history_verdict(record, n_epochs),
    )
    return report


def is_function(report: CheckReport, function, name: str = "") -> bool:
    """Record whether ``function`` is callable (``name``: how the message calls it)."""
    found = f"{name} is a {type(function).__name__}" if name else f"got {type(function).__name__}"
    return report.add("is a function", callable(function), found)
