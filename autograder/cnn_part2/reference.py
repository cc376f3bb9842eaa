"""Reference solutions of part 2: the better network, the maps, FGSM, and known mistakes of each.

Each function takes the arguments the students' functions take, plus keywords that reproduce a
typical mistake (the gradient of the loss, a model left in training mode, a wrong sign...), so
that the hidden tests can name the fault a result matches.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from cnn_course.data import ImageSet
from cnn_course.judging import layer_records
from cnn_course.labs import Schedule
from cnn_course.labs.cnn_part2.specs import AUGMENT_PADDING, BETTER_LAYERS
from cnn_course.training import History, seed_everything
from cnn_course_instructor.grading.rebuild import rebuild

__all__ = [
    "augment",
    "better_model",
    "fgsm",
    "grad_cam",
    "grader_model_records",
    "occlusion_map",
    "saliency_map",
    "top_activations",
    "train_model",
]

GREY = 0.5  # the value an occluding patch gives to every pixel


def better_model() -> nn.Sequential:
    """The network of part 2's table, freshly initialised."""
    records = {
        "layers": [
            {"kind": layer.kind, "config": _config(layer), "tensors": {}} for layer in BETTER_LAYERS
        ]
    }
    return rebuild(records, with_weights=False)


def augment():
    """The lab's augmentation: a flip half of the time, then a shift of up to AUGMENT_PADDING
    pixels (a 32x32 crop of the padded image). torchvision is imported here only."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(32, padding=AUGMENT_PADDING)])


def train_model(
    model: nn.Module, train_set: ImageSet, schedule: Schedule, *, epochs: int, seed: int = 0
) -> History:
    """Train as the lab does: Adam and cross-entropy on shuffled mini-batches of the schedule,
    every image augmented, the model in training mode (batch normalisation learns)."""
    seed_everything(seed)
    transform = augment()
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule.learning_rate)
    criterion = nn.CrossEntropyLoss()
    loader = train_set.loader(batch_size=schedule.batch_size, shuffle=True, seed=seed)
    history = History()
    for _ in range(epochs):
        model.train()
        total_loss, correct = 0.0, 0
        for images, labels in loader:
            images = torch.stack([transform(image) for image in images])
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += int((outputs.argmax(dim=1) == labels).sum())
        history.add(loss=total_loss / len(train_set), accuracy=correct / len(train_set))
    return history


def _config(layer) -> dict:
    if layer.kind == "BatchNorm2d":
        return {"eps": 1e-5, "momentum": 0.1, **layer.config}
    return dict(layer.config)


# --- the grader's own small network -------------------------------------------------------------


def grader_model_records(seed: int) -> dict:
    """Layer records of a small network with batch normalisation and weights drawn from ``seed``.

    Its normalisation statistics are far from a batch's own, so that a function that forgets
    ``model.eval()`` gives different maps; its last layer is scaled up so that its
    probabilities are far from uniform.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
        )  # fmt: skip
        for layer in model:
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.normal_(0.0, 0.3)
                layer.running_var.uniform_(0.3, 3.0)
                layer.weight.data.uniform_(0.5, 1.5)
                layer.bias.data.normal_(0.0, 0.2)
        model[-1].weight.data.mul_(6.0)
    return layer_records(model, (3, 32, 32))


# --- the maps -------------------------------------------------------------------------------------


def _target(
    scores: torch.Tensor, classes: torch.Tensor, *, loss: bool, probability: bool, predicted: bool
) -> torch.Tensor:
    """What is differentiated: the sum of the class scores ``scores (N, classes)``, or a
    mistake's (the loss, the probabilities, the predicted classes' scores)."""
    if predicted:
        classes = scores.detach().argmax(dim=1)
    if loss:
        return F.cross_entropy(scores, classes)
    values = torch.softmax(scores, dim=1) if probability else scores
    return values.gather(1, classes.view(-1, 1)).sum()


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool):
    """``model`` in training or evaluation mode; running statistics a training-mode pass
    updates are put back afterwards (as new tensors: the graph may still need the old ones)."""
    was = model.training
    saved = [
        (
            module,
            {
                name: tensor.clone()
                for name, tensor in module._buffers.items()
                if tensor is not None
            },
        )
        for module in model.modules()
    ]
    model.train(training)
    try:
        yield model
    finally:
        model.train(was)
        if training:
            for module, buffers in saved:
                module._buffers.update(buffers)


def saliency_map(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    training: bool = False,
    loss: bool = False,
    probability: bool = False,
    predicted: bool = False,
    reduce: str = "max",
) -> torch.Tensor:
    """``(N, H, W)``: the largest absolute gradient over the channels of the class score.

    Mistakes: ``loss`` (of the cross-entropy), ``probability`` (of the softmax), ``predicted``
    (the class the network predicts, not the one asked), ``reduce`` "raw" (no absolute value)
    or "mean" (over the channels)."""
    x = images.clone().requires_grad_(True)
    with _mode(model, training):
        scores = model(x)
        target = _target(scores, classes, loss=loss, probability=probability, predicted=predicted)
        (gradient,) = torch.autograd.grad(target, x)
    if reduce == "raw":
        return gradient.amax(dim=1)
    if reduce == "mean":
        return gradient.abs().mean(dim=1)
    return gradient.abs().amax(dim=1)


def occlusion_map(
    model: nn.Module,
    image: torch.Tensor,
    label: int,
    patch_size: int = 8,
    stride: int = 4,
    *,
    training: bool = False,
    scores: bool = False,
    sign: float = 1.0,
    patch_value: float | str = GREY,
    predicted: bool = False,
    last: int = 1,
) -> torch.Tensor:
    """``(n, n)``: how much the probability of ``label`` drops when a grey patch hides each place.

    Mistakes: ``scores`` (drops of the raw score), ``sign`` -1 (covered minus original),
    ``patch_value`` another number, "mean" (the image's) or "channel_mean" (each channel's),
    ``predicted`` (the predicted class, not ``label``), ``last`` 0 (the last place where a
    patch fits left out: ``range(0, height - patch_size, stride)``)."""
    _, height, width = image.shape
    rows = range(0, height - patch_size + last, stride)
    cols = range(0, width - patch_size + last, stride)
    if patch_value == "mean":
        fill = image.mean()
    elif patch_value == "channel_mean":
        fill = image.mean(dim=(1, 2)).view(-1, 1, 1)
    else:
        fill = torch.tensor(float(patch_value))
    hidden = image.repeat(len(rows) * len(cols), 1, 1, 1)
    for index, (top, left) in enumerate((r, c) for r in rows for c in cols):
        hidden[index, :, top : top + patch_size, left : left + patch_size] = fill
    with _mode(model, training), torch.no_grad():
        batch = torch.cat([image.unsqueeze(0), hidden])
        outputs = model(batch)
        if predicted:
            label = int(outputs[0].argmax())
        values = outputs if scores else torch.softmax(outputs, dim=1)
        values = values[:, label]
    return sign * (values[0] - values[1:]).view(len(rows), len(cols))


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    training: bool = False,
    loss: bool = False,
    probability: bool = False,
    predicted: bool = False,
    dims: tuple[int, ...] = (2, 3),
    relu: bool = True,
    normalise_first: bool = False,
) -> torch.Tensor:
    """``(N, h, w)``: Grad-CAM at ``layer``: its channels weighted by their mean gradient, ReLU.

    Mistakes: ``loss``, ``probability``, ``predicted`` (as for the saliency), ``dims`` the
    gradient averaged over other dimensions than the map's places (() for none), ``relu``
    False, ``normalise_first`` (each map brought to [0, 1] with its minimum and maximum before
    the ReLU, which then removes nothing)."""
    found = {}
    handle = layer.register_forward_hook(lambda module, args, output: found.update(a=output))
    try:
        with _mode(model, training):
            scores = model(images)
    finally:
        handle.remove()
    activations = found["a"]
    target = _target(scores, classes, loss=loss, probability=probability, predicted=predicted)
    (gradients,) = torch.autograd.grad(target, activations)
    weights = gradients.mean(dim=dims, keepdim=True) if dims else gradients
    cam = (weights * activations).sum(dim=1)
    if normalise_first:
        low = cam.flatten(1).amin(dim=1).view(-1, 1, 1)
        high = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
        cam = (cam - low) / (high - low).clamp_min(1e-12)
    return (F.relu(cam) if relu else cam).detach()


def top_activations(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    channel: int,
    k: int,
    *,
    training: bool = False,
    swapped: bool = False,
) -> torch.Tensor:
    """``(k, 3)``: (image, row, column) of the ``k`` images whose largest activation of
    ``channel`` at ``layer`` is highest, in decreasing order, each at the place of its maximum.

    Mistakes: ``training`` (batch normalisation on the batch's statistics), ``swapped`` (row
    and column exchanged)."""
    found = {}
    handle = layer.register_forward_hook(lambda module, args, output: found.update(a=output))
    try:
        with _mode(model, training), torch.no_grad():
            model(images)
    finally:
        handle.remove()
    maps = found["a"][:, channel]
    best, where = maps.flatten(1).max(dim=1)
    chosen = best.argsort(descending=True)[:k]
    width = maps.shape[-1]
    rows, cols = where[chosen] // width, where[chosen] % width
    return torch.stack([chosen, *((cols, rows) if swapped else (rows, cols))], dim=1)


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    *,
    training: bool = False,
    sign: float = 1.0,
    clamp: bool = True,
    predicted: bool = False,
    raw: bool = False,
) -> torch.Tensor:
    """``(N, C, H, W)``: one step of size ``epsilon`` along the sign of the loss's gradient.

    Mistakes: ``sign`` -1, ``clamp`` False, ``training``, ``predicted`` (the loss of the
    network's own predictions, not of ``labels``), ``raw`` (the gradient, not its sign)."""
    x = images.clone().requires_grad_(True)
    with _mode(model, training):
        scores = model(x)
        if predicted:
            labels = scores.detach().argmax(dim=1)
        loss = F.cross_entropy(scores, labels)
    (gradient,) = torch.autograd.grad(loss, x)
    adversarial = images + sign * epsilon * (gradient if raw else gradient.sign())
    return (adversarial.clamp(0.0, 1.0) if clamp else adversarial).detach()
