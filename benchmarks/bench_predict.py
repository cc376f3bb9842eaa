"""How fast the lab's three networks predict 2,000 images on one CPU thread, by batch size and
memory layout, measured side by side in one run (interleaved rounds, medians).

What it decides: ``training.PREDICT_BATCH`` (the batch size of ``predict`` and ``evaluate``, for
students and grader alike) and the channels-last images the grader evaluates its rebuilt
models on (``registry.Context.trained_accuracy``). Usage::

    .venv/bin/python benchmarks/bench_predict.py            # ~1 min
    .venv/bin/python benchmarks/bench_predict.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder.cnn_lab.reference import cifar_model, mnist_model  # noqa: E402
from autograder.cnn_part2.reference import better_model  # noqa: E402
from cnn_course import training  # noqa: E402
from cnn_course_instructor.grading.registry import GRADING_IMAGES  # noqa: E402

IMAGES = GRADING_IMAGES  # what the grader predicts on for an accuracy
BATCHES = (50, 100, 250, 1000)


def _seconds(model: torch.nn.Module, images: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    training.predict(model, images, batch_size=batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    networks = {
        "part 1 MNIST": (mnist_model(), (1, 28, 28)),
        "part 1 CIFAR-10": (cifar_model(), (3, 32, 32)),
        "part 2 CIFAR-10": (better_model(), (3, 32, 32)),
    }
    layouts = {"default": torch.contiguous_format, "channels-last": torch.channels_last}
    times: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, (model, shape) in networks.items():
            images = torch.rand(IMAGES, *shape)
            for layout, memory_format in layouts.items():
                laid = images.contiguous(memory_format=memory_format)
                for batch in BATCHES:
                    times.setdefault((name, layout, batch), []).append(_seconds(model, laid, batch))
    print(f"predict, {IMAGES:,} images, 1 thread, median of {args.rounds} interleaved rounds")
    print(f"{'network':<17} {'layout':<14}" + "".join(f"{f'batch {b}':>12}" for b in BATCHES))
    for name in networks:
        base = statistics.median(times[(name, "default", training.PREDICT_BATCH)])
        for layout in layouts:
            row = [statistics.median(times[(name, layout, batch)]) for batch in BATCHES]
            print(f"{name:<17} {layout:<14}" + "".join(f"{t:>11.3f}s" for t in row))
        best = statistics.median(times[(name, "channels-last", training.PREDICT_BATCH)])
        print(
            f"{'':<17} channels-last / default at batch {training.PREDICT_BATCH}: "
            f"{base / best:.2f}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
