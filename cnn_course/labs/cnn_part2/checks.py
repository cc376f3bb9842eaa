"""Part 2's visible checks (the better network, the maps, FGSM), on small worked examples.

The same judges as the grader's hidden tests (``judging``), on networks and images chosen so
that the right answer is known by construction, plus properties every right answer has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnn_course import judging
from cnn_course.checks import CheckReport, architecture, is_function
from cnn_course.training import predict

from . import verdicts
from .specs import BETTER_LAYERS

__all__ = [
    "q1_better_model",
    "q2_augmentation",
    "q3_better_training",
    "q4_saliency",
    "q5_occlusion",
    "q6_grad_cam",
    "q7_top_activations",
    "q8_fgsm",
]


def _example_images(count: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth colour images ``(count, 3, 32, 32)`` in [0, 1], the same at every call."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


def _small_network(seed: int = 0) -> nn.Sequential:
    """A small network with batch normalisation whose statistics differ from any batch's."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4),
            nn.Flatten(), nn.Linear(4 * 8 * 8, 10),
        )  # fmt: skip
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    return model


def _linear_network(weight: torch.Tensor) -> nn.Sequential:
    """Scores that are a linear function of the pixels: ``weight (10, 3, 32, 32)``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(weight.reshape(10, -1))
    return model


def _mode_free(report: CheckReport, function, make_model, args, what: str) -> None:
    """The same result whether the caller left the model in training or evaluation mode."""
    results = []
    for training in (True, False):
        model = make_model()
        model.train(training)
        entry = judging.model_call_record(
            function, model, [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        )
        results.append(_output_value(entry))
    same = all(isinstance(r, torch.Tensor) for r in results) and torch.allclose(
        results[0], results[1], rtol=1e-4, atol=1e-6
    )
    report.add(
        "same result whether the model was in training or evaluation mode",
        same,
        f"{what} changes with the mode the model was left in: call model.eval() first "
        "(batch normalisation then uses its running statistics)",
    )


def _output_value(entry: dict):
    output = entry.get("output", {})
    return output.get("tensor")


# --- exercises 1 to 3: the better network --------------------------------------------------------


def q1_better_model(model) -> CheckReport:
    """Check ``better_model`` layer by layer against part 2's table."""
    report = CheckReport("q1_better_model")
    architecture(report, model, BETTER_LAYERS, (3, 32, 32))
    return report


def q2_augmentation(augment) -> CheckReport:
    """Call ``augment`` 24 times on two images: flipped and shifted copies, chosen at random?"""
    report = CheckReport("q2_augmentation")
    if not is_function(report, augment, "augment"):
        return report
    images = [image for image in _example_images(2) for _ in range(12)]
    outputs = judging.call_record(augment, [(image,) for image in images])
    report.verdict(
        "each image flipped and/or shifted, nothing else",
        verdicts.augmentation_verdict(outputs, images),
    )
    report.verdict(
        "random flips and shifts", verdicts.augmentation_variety_verdict(outputs, images)
    )
    return report


def q3_better_training(model, history, n_epochs: int, loaded_model) -> CheckReport:
    """Check the training run's per-epoch record and the model loaded from its saved weights."""
    report = CheckReport("q3_better_training")
    try:
        record = judging.history_record(history)
    except TypeError as exc:
        report.add("history is a training.History", False, str(exc))
    else:
        report.verdict(
            "one mean loss and accuracy per epoch, loss going down",
            judging.history_verdict(record, n_epochs),
        )
    try:
        trained = judging.layer_records(model, (3, 32, 32))
        loaded = judging.layer_records(loaded_model, (3, 32, 32))
    except TypeError as exc:
        report.add("the loaded model holds the trained weights", False, str(exc))
    else:
        report.verdict(
            "the loaded model holds the trained weights",
            verdicts.same_weights_verdict(loaded, trained),
        )
    return report


# --- exercises 4 to 7: maps ------------------------------------------------------------------------


def q4_saliency(saliency_map) -> CheckReport:
    """Check ``saliency_map`` on a linear network, whose saliency is known: its weights."""
    report = CheckReport("q4_saliency")
    if not is_function(report, saliency_map, "saliency_map"):
        return report
    weight = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    images, classes = _example_images(3), torch.tensor([2, 7, 2])
    entry = judging.model_call_record(
        saliency_map, _linear_network(weight), [images, classes], repeat=True
    )
    # The score of class c is sum(weight[c] * x): its gradient is weight[c] wherever x is.
    expected = weight[classes].abs().amax(dim=1)
    predicted = torch.einsum("nchw,kchw->nk", images, weight).argmax(dim=1)
    variants = [
        (verdicts.SALIENCY_NO_ABS, weight[classes].amax(dim=1)),
        (verdicts.SALIENCY_MEAN, weight[classes].abs().mean(dim=1)),
        (verdicts.PREDICTED_CLASS, weight[predicted].abs().amax(dim=1)),
    ]
    report.verdict(
        "linear network: the largest |weight| of the class over the channels",
        verdicts.map_verdict(entry, expected, "the saliency map", variants),
    )
    report.verdict(
        "a second call on the same images gives the same map",
        judging.repeat_verdict(entry, "saliency map"),
    )
    _mode_free(report, saliency_map, _small_network, [images, classes], "the saliency map")
    return report


def q5_occlusion(occlusion_map) -> CheckReport:
    """Check ``occlusion_map`` on a network that only looks at the top-left 8x8 corner."""
    report = CheckReport("q5_occlusion")
    if not is_function(report, occlusion_map, "occlusion_map"):
        return report
    weight = torch.zeros(10, 3, 32, 32)
    weight[3, :, :8, :8] = 0.05  # class 3's score grows with the corner's pixels
    image = _example_images(1)[0]
    image[:, :8, :8] = 0.0  # a black corner: a grey patch there raises the score
    entry = judging.model_call_record(occlusion_map, _linear_network(weight), [image, 3])
    value, verdict = judging.tensor_output(entry, (7, 7), "the occlusion map")
    if value is None:  # a map of patches one place short, or moved by patch_size, is named
        shape = getattr(_output_value(entry), "shape", None)
        hint = {(6, 6): verdicts.OCCLUSION_LAST_PLACE, (4, 4): verdicts.OCCLUSION_STRIDE}
        verdict = judging.Verdict(False, hint.get(tuple(shape or ()), verdict.message))
    if not report.verdict("a map of 7 x 7 places (patches of 8, stride 4)", verdict):
        return report
    corner = torch.zeros(7, 7, dtype=torch.bool)
    corner[:2, :2] = True  # the only patches that overlap the corner
    if bool((value.abs() < 1e-6).all()):
        message = (
            "the map is zero everywhere, even where the patch covers the black corner the "
            "network looks at: is the patch black (0)? set every pixel of the square to 0.5"
        )
    else:
        message = (
            "the map should be non-zero at the 4 top-left places only, whose patches overlap "
            f"the corner; got non-zero places {(value.abs() > 1e-6).nonzero().tolist()[:6]}"
        )
    report.add(
        "zero where the patch misses the only pixels the network looks at",
        bool((value[~corner].abs() < 1e-6).all()) and bool((value[corner].abs() > 1e-6).all()),
        message,
    )
    report.add(
        "negative over the black corner, where a grey patch raises the class's probability",
        bool((value[corner] <= 0).all()),
        verdicts.OCCLUSION_SIGN,
    )
    report.verdict(
        "the image passed in is left unchanged",
        judging.unchanged_verdict(entry, ("image", "label")),
    )
    _mode_free(report, occlusion_map, _small_network, [image, 3], "the occlusion map")
    return report


def _cam_network(weight: torch.Tensor) -> nn.Sequential:
    """A network whose layer 1 (a ReLU after a 1x1 convolution that copies the image) outputs
    the image itself, then linear scores ``weight (10, 3, 32, 32)``: Grad-CAM at layer 1 is
    known, ReLU(sum over the colours k of mean(weight[c, k]) * image[k])."""
    model = nn.Sequential(
        nn.Conv2d(3, 3, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 32 * 32, 10, bias=False)
    )  # fmt: skip
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        model[3].weight.copy_(weight.reshape(10, -1))
    return model


def q6_grad_cam(grad_cam) -> CheckReport:
    """Check ``grad_cam`` where the layer's output is the image and the scores are linear (its
    map is known), and for its graph and the model's mode on a small network."""
    report = CheckReport("q6_grad_cam")
    if not is_function(report, grad_cam, "grad_cam"):
        return report
    # Class 1 counts red for and green against (on average over the image), class 4 the
    # reverse: where green outweighs red, class 1's weighted sum is negative, and the reverse.
    weight = 0.02 * torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    weight[1, 0] += 0.05
    weight[1, 1] -= 0.05
    weight[4, 0] -= 0.04
    weight[4, 1] += 0.06
    weight[4, 2] += 0.01
    model = _cam_network(weight)
    images, classes = _example_images(3), torch.tensor([1, 4, 1])
    entry = judging.model_call_record(grad_cam, model, [model[1], images, classes])
    value, verdict = judging.tensor_output(entry, (3, 32, 32), "the Grad-CAM map")
    if not report.verdict("one map per image at the layer's size (N, 32, 32)", verdict):
        return report
    report.add("no negative values (a ReLU)", bool((value >= 0).all()), verdicts.CAM_NO_RELU)
    # The gradient of the score of class c with respect to the layer's output is weight[c].
    gradients = weight[classes]  # (N, 3, 32, 32)
    expected, variants = _cam_and_mistakes(gradients, images)
    report.verdict(
        "known map, up to scale: ReLU(sum over the channels of their mean gradient * output)",
        verdicts.map_verdict(entry, expected, "the Grad-CAM map", variants, scale_free=True),
    )
    report.verdict("returns a detached tensor", judging.detached_verdict(entry))

    def layer_call(model, images, classes):
        return grad_cam(model, model[2], images, classes)

    _mode_free(report, layer_call, _small_network, [images, classes], "the Grad-CAM map")
    return report


def _cam_and_mistakes(gradients: torch.Tensor, outputs: torch.Tensor):
    """Grad-CAM of a layer's ``outputs (N, K, h, w)`` given their ``gradients``, and what
    typical mistakes give instead (each with its message)."""

    def weighted(dims):
        weights = gradients.mean(dim=dims, keepdim=True) if dims else gradients
        return (weights * outputs).sum(dim=1)

    raw = weighted((2, 3))
    low = raw.flatten(1).amin(dim=1).view(-1, 1, 1)
    high = raw.flatten(1).amax(dim=1).view(-1, 1, 1)
    variants = [
        (verdicts.CAM_NO_RELU, raw),
        (verdicts.CAM_NORMALISED_FIRST, (raw - low) / (high - low)),
        *[(verdicts.cam_dims_message(dims), F.relu(weighted(dims))) for dims in ((1,), ())],
    ]
    return F.relu(raw), variants


def q7_top_activations(top_activations) -> CheckReport:
    """Check ``top_activations`` where the layer's output is the image itself: one bright red
    pixel per image, at a place and brightness chosen here."""
    report = CheckReport("q7_top_activations")
    if not is_function(report, top_activations, "top_activations"):
        return report
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    images = torch.zeros(5, 3, 32, 32)
    places = [(3, 4), (10, 20), (31, 0), (16, 16), (0, 31)]
    brightness = [0.2, 0.9, 0.5, 0.7, 0.1]
    for index, ((row, col), value) in enumerate(zip(places, brightness, strict=True)):
        images[index, 0, row, col] = value
    entry = judging.model_call_record(top_activations, model, [model[0], images, 0, 3])
    expected = torch.tensor([[1, 10, 20], [3, 16, 16], [2, 31, 0]])  # the 3 brightest, in order
    report.verdict(
        "the 3 brightest red pixels: images 1, 3, 2 with their places",
        verdicts.positions_verdict(entry, expected),
    )
    return report


# --- exercise 8: FGSM ----------------------------------------------------------------------------------


def q8_fgsm(fgsm) -> CheckReport:
    """Check ``fgsm`` on a small network: valid images, epsilon away, a higher loss."""
    report = CheckReport("q8_fgsm")
    if not is_function(report, fgsm, "fgsm"):
        return report
    model = _small_network()
    images, labels, epsilon = _example_images(4), torch.tensor([0, 3, 5, 8]), 0.05
    entry = judging.model_call_record(fgsm, model, [images, labels, epsilon])
    report.verdict(
        "valid images, each pixel at most epsilon away",
        verdicts.adversarial_bounds_verdict(entry, images, epsilon),
    )
    report.verdict("returns a detached tensor", judging.detached_verdict(entry))
    adversarial = _output_value(entry)
    if isinstance(adversarial, torch.Tensor) and adversarial.shape == images.shape:
        before = F.cross_entropy(predict(model, images), labels).item()
        after = F.cross_entropy(predict(model, adversarial), labels).item()
        report.add(
            "the loss goes up",
            after > before,
            f"the loss went from {before:.4f} to {after:.4f}: move along +sign of the gradient "
            "of the loss, which raises it",
            note=f"loss {before:.4f} -> {after:.4f}",
        )
    _mode_free(report, fgsm, _small_network, [images, labels, epsilon], "the adversarial image")
    return report
