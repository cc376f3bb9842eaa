"""Hidden tests of the lab `cnn_part2`: each judges the plain record the probe made, in the grader.

The better network is judged like part 1's (its layers, its accuracy on unseen images). The
functions that look inside a network are called, in the student's kernel, on a small network
whose weights the grader draws for the run and on images it draws; their results are compared
here with the reference's, and with what each typical mistake gives, to name it.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from cnn_course import judging
from cnn_course.judging import Verdict
from cnn_course.labs.cnn_part2 import verdicts
from cnn_course.labs.cnn_part2.specs import BETTER_LAYERS
from cnn_course_instructor.contract import (
    GRADING_IMAGES,
    Context,
    LabContract,
    Registry,
    Retraining,
    accuracy_verdict,
    calls,
    history,
    model,
    model_calls,
    need,
    training,
)
from cnn_course_instructor.grading.rebuild import rebuild
from cnn_course_instructor.grading.verdicts import augmented_verdict, hooks_verdict

from . import reference

__all__ = ["CONTRACT"]

GRADCAM_LAYERS = (6, 2)  # layers of the grader's network: the last ReLU (16x16), the first (32x32)
TOP_LAYER, TOP_K = 6, 5
EPSILONS = (0.03, 0.1)
# Dimensions a Grad-CAM may wrongly average the gradient over (right: (2, 3), the places).
CAM_WRONG_DIMS = ((1,), (0, 2, 3), (1, 2, 3), (2,), (3,), ())

# What the probe records from the student's kernel: the steps the tests below read. Each
# function that looks inside a network is called on the grader's own network ("grader_model").
BETTER_MODEL = model("better_model", input_shape=(3, 32, 32))
LOADED_MODEL = model("loaded_model", input_shape=(3, 32, 32))
BETTER_HISTORY = history("better_history")
# The training cell, watched while it runs: the images it trained on, where it stopped, and the
# network right after it.
BETTER_TRAINING = training("q3_better_training", model="better_model", input_shape=(3, 32, 32))
AUGMENT = calls("augment", inputs="augment")
SALIENCY, OCCLUSION, GRAD_CAM, TOP_ACTIVATIONS, FGSM = (
    model_calls(name, model="grader_model", inputs=name, repeat=name == "saliency_map")
    for name in ("saliency_map", "occlusion_map", "grad_cam", "top_activations", "fgsm")
)

tests = Registry()


def _smooth_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] with blobs of colour, closer to photos than pixel noise."""
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


def grading_inputs(seed: int) -> dict:
    """The grader's network and images for this run, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    images = _smooth_images(48, generator)
    classes = torch.randint(0, 10, (48,), generator=generator)
    one = images[:1]
    grader_model = reference.grader_model_records(seed)
    network = rebuild(grader_model).eval()
    classes[8:13] = _lively_cam_classes(network, images[8:13])
    for group in (slice(0, 6), slice(6, 8), slice(8, 14), slice(14, 22)):
        _not_all_predicted(network, images[group], classes[group])
    return {
        "grader_model": grader_model,
        "augment": [(images[index % 8],) for index in range(24)],
        "saliency_map": [(images[:6], classes[:6]), (one, classes[:1])],
        "occlusion_map": [(images[6], int(classes[6])), (images[7], int(classes[7]))],
        "grad_cam": [({"layer": layer}, images[8:14], classes[8:14]) for layer in GRADCAM_LAYERS],
        "top_activations": [
            ({"layer": TOP_LAYER}, images, _lively_channel(network, images), TOP_K)
        ],
        "fgsm": [(_saturated(images[14:22]), classes[14:22], epsilon) for epsilon in EPSILONS],
    }


def _lively_channel(model, images: torch.Tensor) -> int:
    """The channel at ``TOP_LAYER`` whose ``TOP_K`` most excited images stand furthest apart
    (from each other and from the next): a channel a draw left dead (all zeros after its ReLU)
    would let any order, and any images, pass or fail by the tie-breaking of a sort. A channel
    whose top places all lie on the diagonal (row = column) is passed over: swapped rows and
    columns would go unseen."""
    with torch.no_grad():
        maps = model[: TOP_LAYER + 1](images)
    best, where = maps.flatten(2).max(dim=2)  # (images, channels)
    top, chosen = best.topk(TOP_K + 1, dim=0)  # in decreasing order, per channel
    width = maps.shape[-1]
    places = where.gather(0, chosen[:TOP_K])
    diagonal = (places // width == places % width).all(dim=0)
    gaps = (top[:-1] - top[1:]).min(dim=0).values
    return int(gaps.masked_fill(diagonal, -1.0).argmax())


def _saturated(images: torch.Tensor) -> torch.Tensor:
    """The images with more contrast, about a quarter of their pixels at exactly 0 or 1 (as in
    photos): an attack that forgets to clamp leaves [0, 1] on many of them, whatever the draw."""
    return ((images - 0.5) * 1.6 + 0.5).clamp(0, 1)


def _lively_cam_classes(model, images: torch.Tensor) -> torch.Tensor:
    """For each image, the class whose weighted sums at both ``GRADCAM_LAYERS`` are closest to
    half positive, half negative: a draw whose maps are all zero after the ReLU (seen once in
    30) would let mistakes pass, or be taken for one another; all positive, a missing ReLU."""
    positive = torch.zeros(10, len(images))
    for label in range(10):
        wanted = torch.full((len(images),), label)
        fractions = [
            (reference.grad_cam(model, model[layer], images, wanted) > 0).flatten(1).float().mean(1)
            for layer in GRADCAM_LAYERS
        ]
        positive[label] = torch.minimum(*[torch.minimum(f, 1 - f) for f in fractions])
    return positive.argmax(dim=0)


def _not_all_predicted(model, images: torch.Tensor, classes: torch.Tensor) -> None:
    """Change, in place, the last of ``classes`` when every one is the class the network
    predicts for its image: a function that uses the predictions must give another result."""
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    if torch.equal(predicted, classes):
        classes[-1] = (predicted[-1] + 1) % 10


def _grader_model(context: Context):
    model = rebuild(context.inputs["grader_model"])
    model.eval()
    return model


def _calls(record: dict, step) -> list[dict]:
    entries = need(record, step)
    if not isinstance(entries, list):
        raise TypeError(f"the record of {step.key} is not a list")
    return entries


# --- exercise 1: the better network ---------------------------------------------------------------


@tests.case("q1_better_model", points=1, name="convolutions")
def _convolutions(record: dict, context: Context) -> Verdict:
    layers = judging.layers_from_records(need(record, BETTER_MODEL))
    return judging.convolutions_verdict(layers, BETTER_LAYERS)


@tests.case(
    "q1_better_model", points=1, name="batch normalisation, activations and pooling in order"
)
def _order(record: dict, context: Context) -> Verdict:
    layers = judging.layers_from_records(need(record, BETTER_MODEL))
    return judging.layer_order_verdict(layers, BETTER_LAYERS)


@tests.case("q1_better_model", points=1, name="classifier output")
def _classifier(record: dict, context: Context) -> Verdict:
    records = need(record, BETTER_MODEL)
    layers = judging.layers_from_records(records)
    return judging.classifier_verdict(layers, BETTER_LAYERS, records.get("error"))


# --- exercise 2: data augmentation ------------------------------------------------------------------


def _augment_images(context: Context) -> list[torch.Tensor]:
    return [image for (image,) in context.inputs["augment"]]


@tests.case("q2_augmentation", points=1, name="each image flipped and/or shifted, nothing else")
def _augmented(record: dict, context: Context) -> Verdict:
    return verdicts.augmentation_verdict(_calls(record, AUGMENT), _augment_images(context))


@tests.case("q2_augmentation", points=1, name="random flips and shifts")
def _variety(record: dict, context: Context) -> Verdict:
    return verdicts.augmentation_variety_verdict(_calls(record, AUGMENT), _augment_images(context))


# --- exercise 3: training, saving and loading -------------------------------------------------------


@tests.case(
    "q3_better_training",
    points=3,
    name="trained model reaches {thresholds[cifar10]:.2f} accuracy on unseen images",
)
def _accuracy(record: dict, context: Context) -> Verdict:
    return accuracy_verdict(
        record,
        context,
        BETTER_MODEL,
        "cifar10",
        classes=BETTER_LAYERS[-1].output_shape[0],
        retraining=Retraining("cifar_train", "better", reference.train_model),
        loop_hint="model.train(), zero_grad, forward, loss, backward, step, the augmented images",
        training_cell=BETTER_TRAINING,
    )


@tests.case("q3_better_training", points=0.5, name="trains on augmented images")
def _trained_augmented(record: dict, context: Context) -> Verdict:
    return augmented_verdict(
        record,
        context,
        BETTER_TRAINING,
        "cifar_train",
        "augment each batch before the forward pass "
        "(imgs = torch.stack([augment(image) for image in imgs]))",
    )


@tests.case(
    "q3_better_training",
    points=0,
    name="one mean loss and accuracy per epoch, loss going down (feedback only: no points)",
)
def _history(record: dict, context: Context) -> Verdict:
    epochs = context.lab.training["better"].fast_epochs
    return judging.history_verdict(need(record, BETTER_HISTORY), epochs, shortened=True)


@tests.case("q3_better_training", points=0.5, name="the loaded model holds the trained weights")
def _loaded(record: dict, context: Context) -> Verdict:
    return verdicts.same_weights_verdict(need(record, LOADED_MODEL), need(record, BETTER_MODEL))


# --- exercises 4 to 6: maps ------------------------------------------------------------------


def _resolved(model, args: tuple) -> list:
    """The recorded arguments with ``{"layer": i}`` standing for the network's layer ``i``."""
    return [model[arg["layer"]] if isinstance(arg, dict) else arg for arg in args]


def _maps_verdict(record, context, step, what, mistakes, scale_free=False) -> Verdict:
    """Every call of ``step`` against the reference's result; a wrong one is matched with the
    results of ``mistakes`` (message, keywords of the reference reproducing it) to name it:
    the first mistake that explains every wrong call (two mistakes may give the same result on
    one call's inputs, rarely on all), else what the first wrong call's verdict says."""
    model = _grader_model(context)
    function = getattr(reference, step.name)
    wrong = []  # (entry, expected, variants, verdict) of each wrong call
    for entry, args in zip(_calls(record, step), context.inputs[step.inputs], strict=True):
        real = _resolved(model, args)
        variants = [(message, partial(function, model, *real, **how)) for message, how in mistakes]
        expected = function(model, *real)
        verdict = verdicts.map_verdict(entry, expected, what, variants, scale_free=scale_free)
        if not verdict.passed:
            wrong.append((entry, expected, variants, verdict))
    if not wrong:
        return Verdict(True)
    first = wrong[0][3]
    if len(wrong) == 1 or first.message not in {message for message, _ in mistakes}:
        return first
    for index, (message, _) in enumerate(mistakes):
        if all(
            verdicts.map_verdict(
                entry, expected, what, [variants[index]], scale_free=scale_free
            ).message
            == message
            for entry, expected, variants, _ in wrong
        ):
            return Verdict(False, message)
    return first


@tests.case("q4_saliency", points=2, name="same maps as the grader's on its network and images")
def _saliency(record: dict, context: Context) -> Verdict:
    mistakes = [
        (verdicts.SCORE_NOT_LOSS, {"loss": True}),
        (verdicts.PROBABILITY, {"probability": True}),
        (verdicts.PREDICTED_CLASS, {"predicted": True}),
        (verdicts.EVAL_MODE, {"training": True}),
        (verdicts.SALIENCY_NO_ABS, {"reduce": "raw"}),
        (verdicts.SALIENCY_MEAN, {"reduce": "mean"}),
    ]
    return _maps_verdict(record, context, SALIENCY, "the saliency map", mistakes)


@tests.case("q4_saliency", points=1, name="a second call on the same images gives the same map")
def _saliency_repeat(record: dict, context: Context) -> Verdict:
    return judging.repeat_verdict(_calls(record, SALIENCY)[0], "saliency map")


@tests.case("q5_occlusion", points=2, name="same maps as the grader's on its network and images")
def _occlusion(record: dict, context: Context) -> Verdict:
    mistakes = [
        (verdicts.OCCLUSION_SIGN, {"sign": -1.0}),
        (verdicts.OCCLUSION_SCORES, {"scores": True}),
        (verdicts.PREDICTED_CLASS.replace("classes[i]", "label"), {"predicted": True}),
        (verdicts.EVAL_MODE, {"training": True}),
        *[(verdicts.occlusion_patch_message(patch), {"patch_value": value}) for patch, value in (
            ("0 (black)", 0.0), ("1 (white)", 1.0), ("the image's mean", "mean"),
            ("each channel's mean", "channel_mean"))],
        (verdicts.OCCLUSION_LAST_PLACE, {"last": 0}),
        (verdicts.OCCLUSION_STRIDE, {"stride": 8}),
    ]  # fmt: skip
    return _maps_verdict(record, context, OCCLUSION, "the occlusion map", mistakes)


@tests.case("q5_occlusion", points=1, name="the image passed in is left unchanged")
def _occlusion_unchanged(record: dict, context: Context) -> Verdict:
    for entry in _calls(record, OCCLUSION):
        verdict = judging.unchanged_verdict(entry, ("image", "label"))
        if not verdict.passed:
            return verdict
    return Verdict(True)


@tests.case("q6_grad_cam", points=2, name="same maps as the grader's (up to scale) at two layers")
def _grad_cam(record: dict, context: Context) -> Verdict:
    mistakes = [
        (verdicts.SCORE_NOT_LOSS, {"loss": True}),
        (verdicts.PROBABILITY, {"probability": True}),
        (verdicts.PREDICTED_CLASS, {"predicted": True}),
        (verdicts.EVAL_MODE, {"training": True}),
        (verdicts.CAM_NO_RELU, {"relu": False}),
        (verdicts.CAM_NORMALISED_FIRST, {"normalise_first": True}),
        *[(verdicts.cam_dims_message(dims), {"dims": dims}) for dims in CAM_WRONG_DIMS],
    ]
    return _maps_verdict(record, context, GRAD_CAM, "the Grad-CAM map", mistakes, scale_free=True)


@tests.case("q6_grad_cam", points=0.5, name="returns a detached tensor")
def _grad_cam_detached(record: dict, context: Context) -> Verdict:
    return judging.detached_verdict(_calls(record, GRAD_CAM)[0])


@tests.case("q6_grad_cam", points=0.5, name="removes the hooks it registers")
def _grad_cam_hooks(record: dict, context: Context) -> Verdict:
    return hooks_verdict(_calls(record, GRAD_CAM), "grad_cam")


# --- exercise 7: what excites a filter --------------------------------------------------------------


@tests.case("q7_top_activations", points=1.5, name="the same images and places as the grader's")
def _top(record: dict, context: Context) -> Verdict:
    model = _grader_model(context)
    (args,) = context.inputs["top_activations"]
    real = _resolved(model, args)
    expected = reference.top_activations(model, *real)
    variants = [
        (verdicts.EVAL_MODE, partial(reference.top_activations, model, *real, training=True)),
        (verdicts.SWAPPED_PLACES, partial(reference.top_activations, model, *real, swapped=True)),
    ]
    return verdicts.positions_verdict(_calls(record, TOP_ACTIVATIONS)[0], expected, variants)


@tests.case("q7_top_activations", points=0.5, name="removes the hook it registers")
def _top_hooks(record: dict, context: Context) -> Verdict:
    return hooks_verdict(_calls(record, TOP_ACTIVATIONS), "top_activations")


# --- exercise 8: FGSM ------------------------------------------------------------------------------


def _fgsm_close(entry: dict, expected: torch.Tensor) -> bool:
    value, _ = judging.tensor_output(entry, tuple(expected.shape), "")
    return value is not None and float(((value - expected).abs() > 1e-4).float().mean()) <= 0.01


@tests.case("q8_fgsm", points=2, name="same images as the grader's for two epsilons")
def _fgsm(record: dict, context: Context) -> Verdict:
    model = _grader_model(context)
    for entry, (images, labels, epsilon) in zip(
        _calls(record, FGSM), context.inputs["fgsm"], strict=True
    ):
        value, verdict = judging.tensor_output(entry, tuple(images.shape), "the adversarial images")
        if value is None:
            return verdict
        if _fgsm_close(entry, reference.fgsm(model, images, labels, epsilon)):
            continue
        variants = [
            ("the images moved against the gradient, which lowers the loss: add "
             "epsilon * gradient.sign() to make the network's mistakes more likely",
             dict(sign=-1.0)),
            ("pixels leave [0, 1]: clamp the adversarial images (torch.clamp(x, 0, 1))",
             dict(clamp=False)),
            (verdicts.EVAL_MODE, dict(training=True)),
            (verdicts.FGSM_PREDICTED, dict(predicted=True)),
            (verdicts.FGSM_NO_SIGN, dict(raw=True)),
        ]  # fmt: skip
        for message, mistake in variants:
            if _fgsm_close(entry, reference.fgsm(model, images, labels, epsilon, **mistake)):
                return Verdict(False, message)
        return Verdict(
            False,
            f"the adversarial images for epsilon = {epsilon:g} differ from the expected ones: "
            "images + epsilon * sign of the gradient of the loss with respect to the images",
        )
    return Verdict(True)


@tests.case("q8_fgsm", points=0.5, name="valid images, each pixel at most epsilon away")
def _fgsm_bounds(record: dict, context: Context) -> Verdict:
    for entry, (images, _, epsilon) in zip(
        _calls(record, FGSM), context.inputs["fgsm"], strict=True
    ):
        verdict = verdicts.adversarial_bounds_verdict(entry, images, epsilon)
        if not verdict.passed:
            return verdict
    return Verdict(True)


@tests.case("q8_fgsm", points=0.5, name="returns a detached tensor")
def _fgsm_detached(record: dict, context: Context) -> Verdict:
    return judging.detached_verdict(_calls(record, FGSM)[0])


CONTRACT = LabContract(
    tests=tests,
    probe=(
        BETTER_MODEL,
        LOADED_MODEL,
        BETTER_HISTORY,
        BETTER_TRAINING,
        AUGMENT,
        SALIENCY,
        OCCLUSION,
        GRAD_CAM,
        TOP_ACTIVATIONS,
        FGSM,
    ),
    inputs=grading_inputs,
    # Facts of the grading that the lab's text quotes; its threshold is the front matter's.
    public_facts={"images": GRADING_IMAGES},
    reference=reference,
)
