"""Verdicts only the grader can give, shared by every lab: a trained model's accuracy on images
no student trained on, and, when it falls short, whether the model or its training is at fault;
what a training cell was seen to do (the images it trained on, where it stopped); the hooks a
function left on a network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnn_course import training
from cnn_course.judging import Verdict

from .probe import SEEN_LIMIT, fingerprints
from .rebuild import RebuildError, rebuild
from .registry import Context, NotRecorded, need

__all__ = [
    "Retraining",
    "Watched",
    "accuracy_verdict",
    "augmented_verdict",
    "hooks_verdict",
    "watched",
]

TEST_IMAGES_SEEN = 5  # distinct test images trained on past which a loop is told so
UNCHANGED_SHARE = 0.9  # images trained on as stored past which they were not augmented


@dataclass(frozen=True)
class Watched:
    """What the probe saw a training cell do (``probe``'s ``training`` step), checked: the
    record is written by the student's kernel, so every field is read as untrusted."""

    steps: int  # optimiser steps taken
    images: int  # images trained on, with repeats
    seen: torch.Tensor  # (M,) int64 fingerprints of images trained on, M <= SEEN_LIMIT
    error: str  # the exception the cell stopped with ("" when it did not raise)
    raised_in: str  # the student's function it was raised in ("<module>": the cell itself)
    model: dict | None  # the network's layer records right after the cell


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise NotRecorded("the record of the training cell is not valid")
    return max(0, min(int(value), 10**12))


def watched(record: dict, step) -> Watched | None:
    """The training cell ``step`` watched, or None when it was not watched (its answer cell
    was not found, say); NotRecorded when its record is not what the probe writes."""
    entry = record.get(getattr(step, "key", step))
    if entry is None:
        return None
    if not isinstance(entry, dict) or set(entry) == {"error"}:
        raise NotRecorded(
            str(entry["error"])
            if isinstance(entry, dict)
            else "the training cell's record is not valid"
        )
    seen = entry.get("fingerprints")
    if (
        not isinstance(seen, torch.Tensor)
        or seen.dtype != torch.int64
        or seen.dim() != 1
        or len(seen) > SEEN_LIMIT
    ):
        raise NotRecorded("the record of the training cell is not valid")
    error = entry.get("error")
    exception, function = "", ""
    if isinstance(error, dict):
        exception, function = error.get("exception"), error.get("function")
        if not isinstance(exception, str) or not isinstance(function, str):
            exception, function = "", ""
    model = entry.get("model")
    model = model if isinstance(model, dict) and isinstance(model.get("layers"), list) else None
    return Watched(
        _count(entry.get("steps")),
        _count(entry.get("images")),
        seen,
        exception[:300],
        function[:60],
        model,
    )


def _stopped(seen: Watched) -> str:
    """How a cell that raised stopped, in the student's terms ("" when it did not): the
    student's function that raised is named, where the fault is to be fixed."""
    if not seen.error:
        return ""
    steps = f"{seen.steps} optimiser step{'s' if seen.steps != 1 else ''}"
    if seen.raised_in in ("", "<module>"):
        return f"the training cell raised {seen.error} after {steps}, and stopped there"
    return (
        f"your {seen.raised_in} raised {seen.error} while training: the training cell stopped "
        f"there, after {steps}; fix {seen.raised_in} first"
    )


def _test_images_seen(seen: Watched, context: Context, dataset: str, subset: str) -> int:
    """How many distinct test images of ``dataset`` the cell trained on (images also in the
    training subset do not count)."""
    if not len(seen.seen):
        return 0
    test = fingerprints(context.test_set(dataset).images)
    train = fingerprints(context.training_set(subset).images)
    test = test[~torch.isin(test, train)]
    return int(torch.unique(seen.seen[torch.isin(seen.seen, test)]).numel())


def augmented_verdict(record: dict, context: Context, step, subset: str, how: str) -> Verdict:
    """Were the images the training cell ``step`` trained on augmented (``how``: the lab's
    words for it)? Most of them exactly as the training ``subset`` stores them: not."""
    seen = watched(record, step)
    if seen is None:
        raise NotRecorded("the training cell was not found in the notebook")
    if not len(seen.seen):
        stopped = _stopped(seen)
        return Verdict(
            False,
            stopped
            or "no optimiser step was seen training on images in the training cell: take one "
            "step per batch",
        )
    train = fingerprints(context.training_set(subset).images)
    unchanged = float(torch.isin(seen.seen, train).float().mean())
    measured = {"unchanged": unchanged, "images": seen.images}
    if unchanged >= UNCHANGED_SHARE:
        return Verdict(
            False,
            f"{unchanged:.0%} of the images the network trained on are training images exactly "
            f"as stored: the augmentation was not applied; {how}",
            measured,
        )
    return Verdict(True, f"{unchanged:.0%} of the images trained on were left as stored", measured)


def hooks_verdict(entries: list, function: str) -> Verdict:
    """Did ``function`` remove the hooks it registered? Each of its calls got a fresh network;
    ``hooks_left`` lists what was still registered on it when the call returned."""
    for entry in entries:
        if not isinstance(entry, dict):
            raise NotRecorded(f"the record of {function} is not valid")
        output = entry.get("output")
        if isinstance(output, dict) and isinstance(output.get("error"), str):
            return Verdict(False, f"{function} raised {output['error']}")
        left = entry.get("hooks_left")
        if not isinstance(left, list) or not all(isinstance(item, str) for item in left):
            raise NotRecorded(f"the record of {function} is not valid")
        if left:
            return Verdict(
                False,
                f"{function} left {'; '.join(item[:100] for item in left[:4])} after it returned: "
                "a hook stays until removed and runs at every later forward pass; keep the handle "
                "register_forward_hook returns and call handle.remove() (in a finally: block, so "
                "that an error cannot leave it)",
            )
    return Verdict(True)


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
    training_cell=None,
) -> Verdict:
    """Does the model recorded under ``key`` reach the lab's threshold for ``dataset`` on the
    grader's unseen images? When it does not: a model whose output is not one score per class
    is named; else the grader trains the same architecture itself (``retraining``), and the
    verdict says whether the training loop (``loop_hint``: its steps, in the lab's words) or the
    model is at fault.

    With ``training_cell`` (the probe's ``training`` step of the question), the model is judged as
    it was right after its own training cell (a later cell cannot change it), a cell that
    trained on test images fails, saying so, and one that stopped with an error names it
    (the function that raised) rather than the loop."""
    seen = watched(record, training_cell) if training_cell is not None else None
    if seen is not None:
        leaked = _test_images_seen(seen, context, dataset, retraining.subset)
        if leaked >= TEST_IMAGES_SEEN:
            return Verdict(
                False,
                f"the training cell trained the network on {leaked} images of the {dataset} "
                "test split: train on the training images only; the test images are kept to "
                "measure the network on images it has never seen, which a network trained on "
                "them no longer shows",
                {"test_images_trained_on": leaked},
            )
    records = seen.model if seen is not None and seen.model is not None else need(record, key)
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
    stopped = _stopped(seen) if seen is not None else ""
    if stopped:
        return Verdict(False, f"{below}; {stopped}", {"accuracy": accuracy})
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
