"""Side-by-side timing of the lab's original data pipeline against cnn_course.data.

ORIGINAL: a torchvision-style dataset with ``transforms.ToTensor()`` applied image by image
(``torchvision.datasets.MNIST``; for CIFAR-10, a Dataset over the offline pack's HWC uint8
images that does what ``torchvision.datasets.CIFAR10.__getitem__`` does, because the canonical
pickle batches are not in the data root), a ``random_split`` subset and
``DataLoader(batch_size=B, shuffle=True)``.

OURS: ``cnn_course.data.load_mnist(n=N)`` / ``load_cifar10(n=N)`` and ``ImageSet.loader(batch_size=B)``.

N, B, the epochs and the learning rate are part 1's (``cnn_lab``), read from its front matter:
its subset and training schedule of each dataset.

Both pipelines are measured in one run, interleaved, on the real data (``--root``, else
``$CNN_COURSE_DATA``, else ``../shared/data``), and the script prints a table with the ratio
original/ours. Usage::

    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_data.py           # ~3 min
    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_data.py --quick   # ~30-60 s
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split

REPO = Path(__file__).resolve().parents[1]
PART1 = "cnn_lab"  # the lab whose data pipeline the original seed wrote, on both datasets
SLOW_LOAD_S = 5.0  # loads slower than this are repeated at most once


@dataclass(frozen=True)
class Lab:
    """One dataset as the lab uses it: how many training images, for how many epochs, how."""

    name: str
    n_train: int
    epochs: int
    batch_size: int
    learning_rate: float
    model_name: str  # a function of autograder/cnn_lab/reference.py


def lab_datasets() -> dict[str, Lab]:
    """Part 1's training schedules by name ("mnist", "cifar"), each with its subset
    ``<name>_train`` and its reference model ``<name>_model``, as its front matter declares."""
    from cnn_course.settings import DATASETS
    from cnn_course_instructor.course import Course

    lab = Course(REPO).lab(PART1)
    found = {}
    for name, schedule in lab.training.items():
        subset = lab.subsets[f"{name}_train"]
        found[name] = Lab(
            DATASETS[subset.dataset],
            subset.size,
            schedule.epochs,
            schedule.batch_size,
            schedule.learning_rate,
            f"{name}_model",
        )
    return found


LABS = lab_datasets()


# --- the original pipeline ------------------------------------------------------------------


class PackCIFAR10(Dataset):
    """CIFAR-10 from the offline pack, item by item like ``torchvision.datasets.CIFAR10``.

    ``data`` is ``(N, 32, 32, 3)`` uint8; each item is turned into a PIL image and passed to
    ``transform``, exactly as torchvision's class does with the canonical batches.
    """

    def __init__(self, pack: Path, train: bool = True, transform: Callable | None = None):
        split = "train" if train else "test"
        with np.load(pack, allow_pickle=False) as npz:
            self.data = npz[f"x_{split}"]
            self.targets = npz[f"y_{split}"].astype(np.int64).tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


@dataclass
class Prepared:
    """What a pipeline hands to the training loop."""

    train_loader: DataLoader
    test_images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    test_labels: torch.Tensor  # (N,) int64


def original_pipeline(lab: Lab, root: Path, seed: int) -> Prepared:
    """The lab's original code: torchvision dataset + ToTensor, random_split, DataLoader."""
    from torchvision import datasets, transforms

    to_tensor = transforms.ToTensor()
    if lab.name == "MNIST":
        train = datasets.MNIST(str(root), train=True, transform=to_tensor, download=False)
        test = datasets.MNIST(str(root), train=False, transform=to_tensor, download=False)
    else:
        packs = sorted((root / "CIFAR-10").glob("*.npz"))
        if len(packs) != 1:
            raise SystemExit(f"expected one CIFAR-10 pack in {root / 'CIFAR-10'}; found {packs}")
        train = PackCIFAR10(packs[0], train=True, transform=to_tensor)
        test = PackCIFAR10(packs[0], train=False, transform=to_tensor)
    generator = torch.Generator().manual_seed(seed)
    subset, _ = random_split(train, [lab.n_train, len(train) - lab.n_train], generator=generator)
    train_loader = DataLoader(subset, batch_size=lab.batch_size, shuffle=True)
    # Evaluation goes through a DataLoader over the test set, as the lab did.
    batches = list(DataLoader(test, batch_size=1000, shuffle=False))
    test_images = torch.cat([images for images, _ in batches])
    test_labels = torch.cat([labels for _, labels in batches])
    return Prepared(train_loader, test_images, test_labels)


def our_pipeline(lab: Lab, root: Path, seed: int) -> Prepared:
    """cnn_course.data: in-memory ImageSet sample and its one-index-per-batch loader."""
    from cnn_course import data

    load = data.load_mnist if lab.name == "MNIST" else data.load_cifar10
    train = load("train", root=root, n=lab.n_train, seed=seed)
    test = load("test", root=root)
    return Prepared(train.loader(batch_size=lab.batch_size, seed=seed), test.images, test.labels)


PIPELINES = {"original": original_pipeline, "ours": our_pipeline}
LABELS = {"original": "original (torchvision)", "ours": "ours (cnn_course.data)"}


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Result:
    first_load_s: float = 0.0
    reload_s: list[float] = field(default_factory=list)
    data_epoch_s: list[float] = field(default_factory=list)
    train_epoch_s: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")


def timed(function: Callable, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def data_only_epoch(loader: DataLoader) -> float:
    """Seconds to draw every batch of one epoch, touching nothing but the data."""
    start = time.perf_counter()
    count = 0
    for _images, labels in loader:
        count += len(labels)
    elapsed = time.perf_counter() - start
    if count != len(loader.dataset):
        raise RuntimeError(f"one epoch gave {count} images, expected {len(loader.dataset)}")
    return elapsed


def train_one_epoch(model: nn.Module, optimizer, loader: DataLoader) -> float:
    criterion = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for images, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def bench(lab: Lab, root: Path, args: argparse.Namespace, reference) -> dict[str, Result]:
    from cnn_course.training import evaluate, seed_everything

    results = {name: Result() for name in PIPELINES}
    prepared: dict[str, Prepared] = {}
    print(f"\n== {lab.name}: {lab.n_train} training images ==", flush=True)

    # (a) loading: the first load (ours fills its cache), then reloads.
    for name, pipeline in PIPELINES.items():
        prepared[name], results[name].first_load_s = timed(pipeline, lab, root, args.seed)
        print(f"  {name:8} first load {results[name].first_load_s:7.2f} s", flush=True)
    for _ in range(args.load_repeats - 1):
        for name, pipeline in PIPELINES.items():
            reloads = results[name].reload_s
            if reloads and reloads[0] > SLOW_LOAD_S:
                continue  # a slow reload is measured once
            reloads.append(timed(pipeline, lab, root, args.seed)[1])
    for name in PIPELINES:
        if results[name].reload_s:
            reload = statistics.median(results[name].reload_s)
            print(
                f"  {name:8} reload     {reload:7.2f} s (median of {len(results[name].reload_s)})"
            )

    same = torch.equal(prepared["original"].test_images, prepared["ours"].test_images)
    same = same and torch.equal(prepared["original"].test_labels, prepared["ours"].test_labels)
    print(f"  test sets identical in both pipelines: {'yes' if same else 'NO'}")

    # (b1) the lab's schedule on fresh loaders: same seed, same initial weights, epochs
    # interleaved so that load from other processes falls on both pipelines alike.
    epochs = max(1, round(lab.epochs * args.epochs_scale))
    models, optimizers = {}, {}
    for name in PIPELINES:
        seed_everything(args.seed)
        models[name] = getattr(reference, lab.model_name)()
        optimizers[name] = torch.optim.Adam(models[name].parameters(), lr=lab.learning_rate)
    for epoch in range(epochs):
        line = []
        for name in PIPELINES:
            seconds = train_one_epoch(models[name], optimizers[name], prepared[name].train_loader)
            results[name].train_epoch_s.append(seconds)
            line.append(f"{name} {seconds:5.2f} s")
        print(f"  epoch {epoch + 1:2}/{epochs}: " + ", ".join(line), flush=True)
    for name in PIPELINES:
        test = prepared[name]
        results[name].test_accuracy = evaluate(models[name], test.test_images, test.test_labels)

    # (b2) the data alone: one epoch over each train loader, interleaved, repeated.
    for _ in range(args.repeats):
        for name in PIPELINES:
            results[name].data_epoch_s.append(data_only_epoch(prepared[name].train_loader))
    return results


# --- report ---------------------------------------------------------------------------------


def ratio(original: float, ours: float) -> str:
    return f"{original / ours:.1f}x" if ours > 0 else "-"


def print_table(all_results: dict[str, dict[str, Result]], args: argparse.Namespace) -> None:
    header = (
        f"{'dataset':9} {'pipeline':24} {'load s':>8} {'reload s':>9} {'data s/epoch':>13} "
        f"{'train s total':>14} {'epochs':>6} {'test acc':>9}"
    )
    print("\n" + header)
    print("-" * len(header))
    for lab_key, results in all_results.items():
        lab = LABS[lab_key]
        summary = {}
        for name, result in results.items():
            reload = statistics.median(result.reload_s) if result.reload_s else float("nan")
            summary[name] = (
                result.first_load_s,
                reload,
                statistics.median(result.data_epoch_s),
                sum(result.train_epoch_s),
            )
            load, reload, data_epoch, train_total = summary[name]
            reload_text = f"{reload:9.2f}" if result.reload_s else f"{'-':>9}"
            print(
                f"{lab.name:9} {LABELS[name]:24} {load:8.2f} {reload_text} {data_epoch:13.4f} "
                f"{train_total:14.1f} {len(result.train_epoch_s):6} {result.test_accuracy:9.4f}"
            )
        original, ours = summary["original"], summary["ours"]
        reloads = all(results[name].reload_s for name in results)
        print(
            f"{lab.name:9} {'ratio original/ours':24} {ratio(original[0], ours[0]):>8} "
            f"{ratio(original[1], ours[1]) if reloads else '-':>9} "
            f"{ratio(original[2], ours[2]):>13} {ratio(original[3], ours[3]):>14}"
        )
    print(
        f"\nload = train subset + test set ready (ours: first load with an empty cache); reload ="
        f" median of later loads; data s/epoch = median of {args.repeats} data-only epochs;"
        " train = sum of per-epoch forward/backward/step times (Adam, each dataset's learning"
        f" rate and batch in {PART1}'s front matter: "
        + ", ".join(f"{lab.name} {lab.learning_rate:g}, {lab.batch_size}" for lab in LABS.values())
        + "); test acc = cnn_course.training.evaluate on the full test split."
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, seed {args.seed}."
    )


def has_real_data(root: Path) -> bool:
    return (root / "MNIST" / "raw").is_dir() and (root / "CIFAR-10").is_dir()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="data root (default: $CNN_COURSE_DATA, else ./data)")
    parser.add_argument(
        "--dataset", choices=[*LABS, "all"], default="all", help="which dataset (default: all)"
    )
    parser.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="fraction of the lab's epochs to train ("
        + ", ".join(f"{lab.name} {lab.epochs}" for lab in LABS.values())
        + "; at least 1)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="data-only epochs per pipeline")
    parser.add_argument(
        "--load-repeats",
        type=int,
        default=3,
        help=f"loads per pipeline, the first included (loads over {SLOW_LOAD_S:.0f} s: 2 at most)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about 30-60 s: 1 epoch each, one load per pipeline (same as "
        "--epochs-scale 0.01 --load-repeats 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a busy 2-core machine each parallel op waits "
        "~10 ms for a descheduled pool thread, which swamps what is measured)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs_scale, args.load_repeats = 0.01, 1
    if min(args.repeats, args.load_repeats, args.threads) < 1 or args.epochs_scale <= 0:
        parser.error("--repeats, --load-repeats and --threads must be >= 1; --epochs-scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cnn_course_instructor.course import Course

    reference = Course(REPO).content("cnn_lab").reference
    from cnn_course import data
    from cnn_course.errors import CourseError

    # Imported here, so that no pipeline's first load pays for importing them.
    importlib.import_module("PIL.Image")
    importlib.import_module("torchvision.datasets")
    importlib.import_module("torchvision.transforms")
    torch.set_num_threads(args.threads)
    root = data.resolve_root(args.root)
    shared = REPO.parent / "shared" / "data"  # where the tests also look (tests/conftest.py)
    if root.origin == "default" and not has_real_data(root.path) and has_real_data(shared):
        root = data.DataRoot(shared, "../shared/data beside the repository")
    print(f"data root: {root.describe()}")
    if not has_real_data(root.path):
        print(
            f"bench_data: error: the real MNIST/CIFAR-10 are not in {root.path} (expected "
            f"MNIST/raw/ and CIFAR-10/*.npz). Set {data.DATA_ENV} or pass --root.",
            file=sys.stderr,
        )
        return 2
    keys = list(LABS) if args.dataset == "all" else [args.dataset]
    all_results = {}
    # A fresh cache, so "ours" pays for decompressing the pack on its first load.
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ[data.CACHE_ENV] = cache
        try:
            for key in keys:
                all_results[key] = bench(LABS[key], root.path, args, reference)
        except CourseError as error:
            print(f"bench_data: error: {error}", file=sys.stderr)
            return 2
    print_table(all_results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
