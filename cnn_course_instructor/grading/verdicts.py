"""Verdicts only the grader can give, shared by every lab: a trained model's accuracy on images
no student trained on, and, when it falls short, whether the model or its training is at fault."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cnn_course import training
from cnn_course.judging import Verdict

from .rebuild import RebuildError, rebuild
from .registry import Context, need

__all__ = ["Retraining", "accuracy_verdict"]


@dataclass(frozen=True)
class Retraining:
    """How the grader trains a student's architecture itself: on the lab's training ``subset``,
    with its ``schedule`` in shortened mode, by the reference training ``train(model, images,
    schedule, epochs=...)``."""

    subset: str
    schedule: str
    train: Callable


def _scores_text(shape) -> str:
    if shape is None:
        return "no output (its forward pass fails)"
    shape = tuple(shape)
    return f"{shape[0]} scores" if len(shape) == 1 else f"an output of shape {shape}"


def accuracy_verdict(
    record: dict,
    context: Context,
    key,
    dataset: str,
    *,
    classes: int,
    retraining: Retraining,
    loop_hint: str = "zero_grad, forward, loss, backward, step",
) -> Verdict:
    """Does the model recorded under ``key`` reach the lab's threshold for ``dataset`` on the
    grader's unseen images? When it does not: a model whose output is not one score per class
    is named; else the grader trains the same architecture itself (``retraining``), and the
    verdict says whether the training loop (``loop_hint``: its steps, in the lab's words) or the
    model is at fault."""
    records = need(record, key)
    threshold = context.lab.thresholds[dataset]
    try:
        accuracy = context.trained_accuracy(records, dataset)
    except (RebuildError, RuntimeError, ValueError) as exc:
        return Verdict(False, f"the trained model could not be evaluated: {exc}")
    if accuracy >= threshold:
        return Verdict(True, f"accuracy {accuracy:.4f} on unseen images", {"accuracy": accuracy})
    below = f"accuracy {accuracy:.4f} on unseen images, below {threshold:.2f}"
    scores = records["layers"][-1].get("output_shape") if records["layers"] else None
    if scores is None or tuple(scores) != (classes,):
        return Verdict(
            False,
            f"{below}; the model gives {_scores_text(scores)} per image where the {classes} "
            f"classes need {classes} scores",
            {"accuracy": accuracy},
        )
    plan = context.lab.training[retraining.schedule]
    try:
        fresh = rebuild(records, with_weights=False)
        retraining.train(
            fresh, context.training_set(retraining.subset), plan, epochs=plan.fast_epochs
        )
        retrained = training.evaluate(fresh, *context.grading_set(dataset))
    except Exception as exc:  # any architecture may fail to train; say so in the student's terms
        return Verdict(
            False,
            f"{below}; the grader could not train this architecture itself "
            f"({type(exc).__name__}: {exc})",
            {"accuracy": accuracy},
        )
    measured = {"accuracy": accuracy, "retrained_accuracy": retrained}
    if retrained >= threshold:
        return Verdict(
            False,
            f"{below}; the same architecture trained by the grader reaches {retrained:.4f}, so "
            f"look at the training loop ({loop_hint}), the optimiser it steps (its model's "
            "parameters, its learning rate) and the data it is fed",
            measured,
        )
    return Verdict(
        False,
        f"{below}; the grader's own training of this architecture reaches only "
        f"{retrained:.4f}, so the model itself is at fault",
        measured,
    )
