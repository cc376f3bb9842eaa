"""How long the shortened training of each lab's network takes on one CPU thread, with glibc's
malloc as it comes and as the grader sets it for kernels and judges (``worker.MALLOC_ENV``),
measured side by side in one run: fresh processes, interleaved rounds, medians.

Each run trains the reference network on the lab's shortened schedule and subset (as its front
matter declares them) with real training images, as a grading kernel does, and reports its
seconds and the page faults it took. Usage::

    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_malloc.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cnn_course_instructor.grading.worker import MALLOC_ENV  # noqa: E402

# (reference network, lab, subset, schedule): each lab's shortened training, as its front
# matter declares it (images, epochs, batch size, learning rate)
RUNS = {
    "part 1 MNIST": ("cnn_lab.mnist_model", "cnn_lab", "mnist_train", "mnist"),
    "part 1 CIFAR-10": ("cnn_lab.cifar_model", "cnn_lab", "cifar_train", "cifar"),
    "part 2 CIFAR-10": ("cnn_part2.better_model", "cnn_part2", "cifar_train", "better"),
}

CHILD = """
import importlib, json, resource, sys, time
import torch
from torch import nn
from cnn_course import data
from cnn_course_instructor.course import Course
torch.set_num_threads(1)
network, lab_id, subset, schedule = sys.argv[1:5]
module, name = network.rsplit(".", 1)
make = getattr(importlib.import_module(f"autograder.{module}.reference"), name)
lab = Course(sys.argv[5]).lab(lab_id)
images = lab.subsets[subset].load(fast=True)
schedule = lab.training[schedule]
torch.manual_seed(0)
model = make()
optimizer = torch.optim.Adam(model.parameters(), lr=schedule.learning_rate)
loss_function = nn.CrossEntropyLoss()
faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for epoch in range(schedule.fast_epochs):
    for batch, labels in data.make_loader(images.images, images.labels, schedule.batch_size):
        optimizer.zero_grad()
        loss_function(model(batch), labels).backward()
        optimizer.step()
print(json.dumps({"seconds": time.perf_counter() - start,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""


def _train(run: tuple, malloc: bool) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in MALLOC_ENV}
    env.update({"OMP_NUM_THREADS": "1", **(MALLOC_ENV if malloc else {})})
    argv = [sys.executable, "-c", CHILD, *run, str(REPO)]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args(argv)
    found = {(label, malloc): [] for label in RUNS for malloc in (False, True)}
    for _ in range(args.rounds):
        for label, run in RUNS.items():
            for malloc in (False, True):
                found[label, malloc].append(_train(run, malloc))
    print(f"shortened training, 1 thread, median of {args.rounds} interleaved rounds")
    print(
        f"{'network':18} {'default s':>10} {'faults':>9} {'kept s':>8} {'faults':>7} {'ratio':>6}"
    )
    for label in RUNS:
        plain, kept = found[label, False], found[label, True]
        seconds = [statistics.median(r["seconds"] for r in runs) for runs in (plain, kept)]
        faults = [statistics.median(r["faults"] for r in runs) for runs in (plain, kept)]
        print(
            f"{label:18} {seconds[0]:10.2f} {faults[0]:9.0f} {seconds[1]:8.2f} {faults[1]:7.0f} "
            f"{seconds[0] / seconds[1]:5.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
