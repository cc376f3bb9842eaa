"""How long the shortened training of each lab's network takes on one CPU thread, with glibc's
malloc as it comes and as the grader sets it for kernels and judges (``worker.MALLOC_ENV``),
measured side by side in one run: fresh processes, interleaved rounds, medians.

Each run trains the reference network for the lab's shortened schedule (2 epochs, the lab's batch
size) on real training images, as a grading kernel does, and reports its seconds and the page
faults it took. Usage::

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

from cnn_course_instructor.worker import MALLOC_ENV  # noqa: E402

# (network, dataset, training images, batch size): each lab's shortened training
RUNS = {
    "part 1 MNIST": ("cnn_lab.mnist_model", "mnist", 1000, 32),
    "part 1 CIFAR-10": ("cnn_lab.cifar_model", "cifar10", 2000, 64),
    "part 2 CIFAR-10": ("cnn_part2.better_model", "cifar10", 2000, 64),
}
EPOCHS = 2

CHILD = """
import importlib, json, resource, sys, time
import torch
from torch import nn
from cnn_course import data
torch.set_num_threads(1)
module, name = sys.argv[1].rsplit(".", 1)
make = getattr(importlib.import_module(f"autograder.{module}.reference"), name)
load = data.load_mnist if sys.argv[2] == "mnist" else data.load_cifar10
subset = load("train", n=int(sys.argv[3]))
torch.manual_seed(0)
model = make()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_function = nn.CrossEntropyLoss()
faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for epoch in range(int(sys.argv[5])):
    for images, labels in data.make_loader(subset.images, subset.labels, int(sys.argv[4])):
        optimizer.zero_grad()
        loss_function(model(images), labels).backward()
        optimizer.step()
print(json.dumps({"seconds": time.perf_counter() - start,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""


def _train(run: tuple, malloc: bool) -> dict:
    network, dataset, images, batch = run
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(MALLOC_ENV if malloc else {})}
    if not malloc:
        for name in MALLOC_ENV:
            env.pop(name, None)
    argv = [sys.executable, "-c", CHILD, network, dataset, str(images), str(batch), str(EPOCHS)]
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
