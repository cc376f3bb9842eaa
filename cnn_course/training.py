"""Seeding, the shortened-run switch, batched evaluation and a per-epoch training history."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from .errors import CourseError
from .settings import DEVICE_ENV, FAST_ENV, GRADING_ENV

__all__ = [
    "DEVICE_ENV",
    "FAST_ENV",
    "History",
    "pick_device",
    "epochs",
    "evaluate",
    "fast_mode",
    "grading_mode",
    "iter_batches",
    "predict",
    "seed_everything",
]

DEVICES = ("cuda", "mps", "cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, NumPy's and PyTorch's random generators with one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fast_mode() -> bool:
    """True when ``$CNN_COURSE_FAST`` asks for shortened training (CI and grading)."""
    value = os.environ.get(FAST_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def grading_mode() -> bool:
    """True when the grader runs the notebook (``$CNN_COURSE_GRADING``, set by its worker).

    The helpers then skip what no hidden test reads: figures are built but not rendered,
    exploration widgets return at once without predicting, and a test split loads only its
    first ``data.GRADING_TEST_IMAGES`` images. What the student's code computes for grading
    (models, training, functions) is unchanged.
    """
    value = os.environ.get(GRADING_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def epochs(full: int, fast: int) -> int:
    """The number of epochs to train: ``full`` normally, ``fast`` in shortened mode."""
    return fast if fast_mode() else full


def iter_batches(tensor: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``tensor`` along its first axis."""
    for start in range(0, len(tensor), batch_size):
        yield tensor[start : start + batch_size]


# Images per forward pass when predicting: on one CPU thread the lab's networks predict 2,000
# images in 0.66-1.21 s in batches of 100, 0.67-2.03 s in batches of 250 and 1.5-2.7 s in
# batches of 1,000 (benchmarks/bench_predict.py): small batches stay in cache.
PREDICT_BATCH = 100


def predict(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = PREDICT_BATCH
) -> torch.Tensor:
    """The model's outputs ``(N, K)`` for ``images (N, C, H, W)``, in eval mode and without grad.

    The train/eval mode of the model and of each of its layers is restored afterwards.
    """
    if not isinstance(images, torch.Tensor):
        raise CourseError(
            f"predict expects a torch tensor of images (N, C, H, W); got a {type(images).__name__} "
            "(convert it with torch.from_numpy or torch.as_tensor)."
        )
    if images.ndim != 4 or len(images) == 0:
        raise CourseError(
            f"predict expects images shaped (N, C, H, W) with N > 0; got {tuple(images.shape)}."
        )
    if int(batch_size) < 1:
        raise CourseError(f"batch_size must be a positive integer; got {batch_size!r}.")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            outputs = [model(batch) for batch in iter_batches(images, int(batch_size))]
    finally:
        for module, mode in modes.items():  # each submodule gets its own mode back
            module.training = mode
    return torch.cat(outputs)


def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = PREDICT_BATCH,
) -> float:
    """Accuracy of ``model`` on ``images (N, C, H, W)`` with ``labels (N,)``, as a fraction."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        found = tuple(labels.shape) if hasattr(labels, "shape") else type(labels).__name__
        raise CourseError(f"evaluate expects labels as a tensor of shape (N,); got {found}.")
    if len(images) != len(labels):
        raise CourseError(f"{len(images)} images but {len(labels)} labels: they must match.")
    predicted = predict(model, images, batch_size).argmax(dim=1)
    return float((predicted == labels.to(predicted.device)).float().mean())


class History:
    """Per-epoch metrics of a training run, e.g. ``history.add(loss=0.3, accuracy=0.91)``."""

    def __init__(self, metrics: Mapping[str, list[float]] | None = None):
        self.metrics: dict[str, list[float]] = {k: list(v) for k, v in (metrics or {}).items()}

    def add(self, **values: float) -> None:
        """Record one epoch's values; every metric keeps one entry per epoch."""
        for name, value in values.items():
            self.metrics.setdefault(name, []).append(float(value))

    def __getitem__(self, name: str) -> list[float]:
        return self.metrics[name]

    def __len__(self) -> int:
        return max((len(values) for values in self.metrics.values()), default=0)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4f}" for k, v in self.metrics.items() if v)
        return f"History({len(self)} epochs{': ' + last if last else ''})"


def pick_device() -> torch.device:
    """The fastest device here: an NVIDIA GPU (CUDA), else Apple's GPU (MPS), else the CPU.

    ``$CNN_COURSE_DEVICE`` (``cuda``, ``mps`` or ``cpu``) forces one.
    """
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
        "cpu": True,
    }
    wanted = os.environ.get(DEVICE_ENV, "").strip().lower()
    if wanted:
        if wanted not in DEVICES:
            raise CourseError(
                f"${DEVICE_ENV} must be one of {', '.join(DEVICES)}; found {wanted!r}. "
                "Unset it to let the lab choose."
            )
        if not available[wanted]:
            raise CourseError(
                f"${DEVICE_ENV} asks for {wanted}, which this machine does not have "
                f"(available: {', '.join(d for d in DEVICES if available[d])}). Unset it."
            )
        return torch.device(wanted)
    return torch.device(next(d for d in DEVICES if available[d]))
