"""Part 2's own judges: maps, adversarial images, augmentation, saved weights, patches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cnn_course.judging.records import tensor_output
from cnn_course.judging.verdict import Verdict, fault, ok
from cnn_course.judging.verdicts import close, output_value, per_item_unit

from .specs import AUGMENT_PADDING

__all__ = [
    "CAM_NORMALISED_FIRST",
    "CAM_NO_RELU",
    "EVAL_MODE",
    "FGSM_NO_SIGN",
    "FGSM_PREDICTED",
    "OCCLUSION_LAST_PLACE",
    "OCCLUSION_SCORES",
    "OCCLUSION_SIGN",
    "OCCLUSION_STRIDE",
    "PREDICTED_CLASS",
    "PROBABILITY",
    "SALIENCY_MEAN",
    "SALIENCY_NO_ABS",
    "SCORE_NOT_LOSS",
    "SWAPPED_PLACES",
    "adversarial_bounds_verdict",
    "augmentation_outcome",
    "augmentation_variety_verdict",
    "augmentation_verdict",
    "cam_dims_message",
    "map_verdict",
    "occlusion_patch_message",
    "positions_verdict",
    "same_weights_verdict",
]


# What each typical mistake is called, in the words of the lab: the visible checks and the
# hidden tests name a fault with the same message.
EVAL_MODE = (
    "the result differs from the one in evaluation mode: call model.eval() first (batch "
    "normalisation then uses its running statistics)"
)
SCORE_NOT_LOSS = (
    "the map follows the gradient of the loss: take the gradient of the class score itself "
    "(scores[i, classes[i]]), not of a loss"
)
PROBABILITY = (
    "the map follows the gradient of the softmax probability: take the gradient of the raw "
    "class score (the network's output before any softmax)"
)
PREDICTED_CLASS = (
    "the map is that of the class the network predicts (scores.argmax(dim=1)): take the score "
    "of the class asked for, classes[i]"
)
SALIENCY_NO_ABS = "take the absolute value of the gradient before the largest over the channels"
SALIENCY_MEAN = (
    "take the largest absolute gradient over the channels (amax over dim=1), not their mean"
)
OCCLUSION_SIGN = (
    "the map has the opposite sign: record the probability for the original image minus the "
    "probability for the covered copy (a drop is positive)"
)
OCCLUSION_SCORES = (
    "the map holds drops of the class score: turn the scores into probabilities "
    "(torch.softmax(..., dim=1)) first"
)
OCCLUSION_LAST_PLACE = (
    "the last place where a patch fits is missing: let the top-left corners run up to "
    "height - patch_size included (range(0, height - patch_size + 1, stride))"
)
OCCLUSION_STRIDE = (
    "the patches move by patch_size, not by stride: the top-left corners are 0, stride, "
    "2 * stride, ..."
)
CAM_NO_RELU = (
    "the map has negative values: keep only the positive part of the weighted sum (F.relu)"
)
CAM_NORMALISED_FIRST = (
    "the map was brought to [0, 1] (minus its minimum) before the ReLU, which then removes "
    "nothing: apply the ReLU to the weighted sum first"
)
SWAPPED_PLACES = (
    "the row and the column are swapped: for a place i of the flattened (h * w) map, the row "
    "is i // w and the column i % w"
)
FGSM_PREDICTED = (
    "the attack follows the network's own predictions (argmax of its scores): compute the loss "
    "of the true labels given"
)
FGSM_NO_SIGN = (
    "the images moved by epsilon times the gradient itself: move by epsilon times its sign "
    "(gradient.sign()), so that every pixel moves by exactly epsilon"
)


def occlusion_patch_message(patch: str) -> str:
    """The fault of a patch that is not grey: ``patch`` says what it holds ("0 (black)")."""
    return f"the covering patch holds {patch}, not grey: set every pixel of the square to 0.5"


def cam_dims_message(dims: tuple[int, ...]) -> str:
    """The fault of channel weights that average the gradient over ``dims``, not (2, 3)."""
    if not dims:
        averaged = "the gradient itself, place by place, is used as the weight"
    else:
        named = dims[0] if len(dims) == 1 else dims
        averaged = f"the weights average the gradient over dim={named}"
    return (
        f"{averaged}: each channel's weight is the mean of its gradient over the map's height "
        "and width only (gradients.mean(dim=(2, 3), keepdim=True)), one per image and channel"
    )


def _tensor(entry: dict) -> torch.Tensor | None:
    value, _ = output_value(entry.get("output", entry))
    return value if isinstance(value, torch.Tensor) else None


def _matching(value, variants, tolerance: float, scale_free: bool) -> str | None:
    """The message of the first variant whose result ``value`` matches, if any."""
    for message, variant in variants:
        variant = variant() if callable(variant) else variant
        if variant.shape == value.shape and close(value, variant, tolerance, scale_free):
            return message
    return None


def _difference(value, expected, what: str, scale_free: bool) -> Verdict:
    """What differs between ``value`` and ``expected``, true for the test's own comparison."""
    if not scale_free:
        gap = float((value - expected).abs().max())
        return fault(
            f"{what} differs from the expected one (largest difference {gap:.3g}, while the "
            f"expected values reach {float(expected.abs().max()):.3g})",
            difference=gap,
        )
    # Up to scale: each map divided by its largest absolute value, and the correlation.
    a, b = per_item_unit(value).flatten(1), per_item_unit(expected).flatten(1)
    gap = float((a - b).abs().max())
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    norms = (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    correlation = float(((a * b).sum(dim=1) / norms).min())
    return fault(
        f"{what} differs from the expected one even up to scale: with each map divided by its "
        f"largest value, the largest difference is {gap:.3g} (of 1), and the least correlated "
        f"map has a correlation of {correlation:.2f} with the expected one",
        difference=gap,
        correlation=correlation,
    )


def map_verdict(
    entry: dict,
    expected: torch.Tensor,
    what: str,
    variants: Sequence[tuple[str, torch.Tensor | Callable[[], torch.Tensor]]] = (),
    *,
    scale_free: bool = False,
    tolerance: float = 1e-3,
) -> Verdict:
    """Is the recorded result ``expected`` (each map up to a positive factor with ``scale_free``)?

    ``variants`` pairs a message with what a known mistake gives (or a function computing it,
    called only when the result is wrong): the first one the result matches names the fault,
    also when its shape is not the expected one (a mistake may change the shape). Without a
    match the message says what differs, in the terms of the comparison (up to scale or not).
    """
    value, verdict = tensor_output(entry, tuple(expected.shape), what)
    if value is None:
        raw = _tensor(entry)
        if raw is not None and raw.is_floating_point() and bool(torch.isfinite(raw).all()):
            message = _matching(raw.float(), variants, tolerance, scale_free)
            if message is not None:
                return fault(message)
        return verdict
    if close(value, expected, tolerance, scale_free):
        return ok()
    message = _matching(value, variants, tolerance, scale_free)
    if message is not None:
        return fault(message)
    if scale_free and bool((value < 0).any()) and not bool((expected < 0).any()):
        return fault(f"{what} has negative values: keep only the positive part (a ReLU)")
    return _difference(value, expected, what, scale_free)


def adversarial_bounds_verdict(entry: dict, images: torch.Tensor, epsilon: float) -> Verdict:
    """Are the adversarial images valid images, each pixel at most ``epsilon`` from the original?"""
    value, verdict = tensor_output(entry, tuple(images.shape), "the adversarial images")
    if value is None:
        return verdict
    low, high = float(value.min()), float(value.max())
    if low < -1e-6 or high > 1 + 1e-6:
        return fault(
            f"pixel values run from {low:.3f} to {high:.3f}: clamp the images to [0, 1] "
            "(torch.clamp(x, 0, 1)), the range of real images"
        )
    step = float((value - images).abs().max())
    if step > epsilon + 1e-5:
        return fault(f"a pixel moved by {step:.4f}, more than epsilon = {epsilon:g}")
    if step < 1e-6 and epsilon > 0:
        return fault("the images did not change: add epsilon times the sign of the gradient")
    return ok(largest_step=step)


def _augment_candidates(image: torch.Tensor):
    """Every (flipped, dy, dx) a horizontal flip and a crop of the zero-padded image can give."""
    pad = AUGMENT_PADDING
    height, width = image.shape[-2:]
    for flipped in (False, True):
        source = image.flip(-1) if flipped else image
        padded = torch.nn.functional.pad(source, (pad, pad, pad, pad))
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                crop = padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width]
                yield (flipped, dy, dx), crop


def augmentation_outcome(output: dict, image: torch.Tensor) -> tuple[tuple | None, str]:
    """Which flip and shift turned ``image (C, H, W)`` into the recorded output, or why none did."""
    value, message = output_value(output)
    if value is None:
        return None, message
    if not isinstance(value, torch.Tensor):
        return None, f"returned a {type(value).__name__}, expected an image tensor"
    if tuple(value.shape) != tuple(image.shape):
        return None, (
            f"an image of shape {tuple(image.shape)} came back with shape {tuple(value.shape)}: "
            "crop back to the original size (RandomCrop(32, padding=4))"
        )
    for outcome, candidate in _augment_candidates(image):
        if torch.allclose(value.float(), candidate, atol=1e-5):
            return outcome, ""
    return None, (
        "an image came back changed in a way that is neither a horizontal flip nor a shift of at "
        f"most {AUGMENT_PADDING} pixels with zero padding (colours, scale or rotation changed?)"
    )


def augmentation_verdict(outputs: Sequence[dict], images: Sequence[torch.Tensor]) -> Verdict:
    """Is each output a horizontally flipped and/or shifted (zero-padded) copy of its input?"""
    for number, (output, image) in enumerate(zip(outputs, images, strict=True), 1):
        outcome, message = augmentation_outcome(output, image)
        if outcome is None:
            return fault(f"call {number}: {message}")
    return ok()


def augmentation_variety_verdict(
    outputs: Sequence[dict], images: Sequence[torch.Tensor]
) -> Verdict:
    """Over many calls, are images flipped and not flipped, and shifted in several ways?"""
    outcomes = [augmentation_outcome(o, i)[0] for o, i in zip(outputs, images, strict=True)]
    if any(outcome is None for outcome in outcomes):
        return fault("some images were not flipped or shifted copies (see the other test)")
    flips = {flipped for flipped, _, _ in outcomes}
    shifts = {(dy, dx) for _, dy, dx in outcomes}
    if flips != {False, True}:
        state = "flipped" if True in flips else "left unflipped"
        return fault(
            f"all {len(outcomes)} images were {state}: flip at random, half of the time "
            "(RandomHorizontalFlip())"
        )
    if len(shifts) < 4:
        return fault(
            f"only {len(shifts)} different shifts in {len(outcomes)} calls: crop at a random "
            f"place of the image padded by {AUGMENT_PADDING} pixels (RandomCrop(32, padding=4))"
        )
    return ok(shifts=len(shifts))


def same_weights_verdict(loaded: dict, trained: dict) -> Verdict:
    """Do two recorded models hold the same layers and the same learnt weights and biases?

    Running statistics are left out: any later forward pass in training mode moves the trained
    model's, after it was saved. A model the grader refused to evaluate (``refused``) holds
    no values to compare: the refusal is the fault.
    """
    for records in (loaded, trained):
        if records.get("refused"):
            return fault(str(records["refused"]))
    first, second = loaded["layers"], trained["layers"]
    if [layer["kind"] for layer in first] != [layer["kind"] for layer in second]:
        return fault("the loaded model does not have the trained model's layers")
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        learnt = {name: t for name, t in b["tensors"].items() if name in ("weight", "bias")}
        for name, tensor in learnt.items():
            other = a["tensors"].get(name)
            if other is None or other.shape != tensor.shape or not torch.equal(other, tensor):
                return fault(
                    f"layer {index} ({a['kind']}): {name} differs from the trained model's: "
                    "load the saved state dict into the new model (load_state_dict)"
                )
    return ok()


def positions_verdict(
    entry: dict,
    expected: torch.Tensor,
    variants: Sequence[tuple[str, torch.Tensor | Callable[[], torch.Tensor]]] = (),
) -> Verdict:
    """Are the recorded rows (image, row, column) the expected ones, in the same order?

    ``variants`` pairs a message with the rows a known mistake gives (or a function computing
    them, called only when the rows are wrong): the first one they equal names the fault."""
    output = entry.get("output", entry)
    value, message = output_value(output)
    if value is None:
        return fault(message)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(expected.shape):
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        return fault(f"expected a tensor of shape {tuple(expected.shape)}, got {found}")
    if value.is_floating_point():
        return fault(f"expected integer indices, got dtype {value.dtype}")
    if torch.equal(value.long(), expected):
        return ok()
    for message, variant in variants:
        variant = variant() if callable(variant) else variant
        if variant.shape == value.shape and torch.equal(value.long(), variant.long()):
            return fault(message)
    if set(value[:, 0].tolist()) == set(expected[:, 0].tolist()):
        if torch.equal(value[:, 0].long(), expected[:, 0]):
            return fault("the right images, but not the right positions in them")
        return fault("the right images, but not in decreasing order of activation")
    rows = [int(i) for i in value[:, 0]]
    return fault(f"expected the images {expected[:, 0].tolist()}, got {rows}")
