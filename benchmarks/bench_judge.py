"""CPU seconds the judge spends on one record, for right records and for records it retrains,
measured side by side in one run, beside the judge's CPU budget per record.

What it decides: ``judge.JUDGE_CPU_SECONDS``, the CPU time one record's judging may use. The
records are made as the probe makes them: the solution notebook's functions called by the real
probe cell, and the lab's models trained by the reference (``train_model``, shortened mode),
or left untrained, which sends part 1's two models to the grader's own retraining. Each record
is judged by the loaded judge (``judge._prepared``, as a judging process of the server does),
on one torch thread as a local run judges, unless ``--threads`` says otherwise. Usage::

    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_judge.py   # ~3 min
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from cnn_course import settings  # noqa: E402 - light: no torch

os.environ.setdefault(settings.FAST_ENV, "1")  # the grader trains and judges in shortened mode

import nbformat  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnn_course import judging  # noqa: E402
from cnn_course_instructor.course import Course  # noqa: E402
from cnn_course_instructor.grading import judge  # noqa: E402
from cnn_course_instructor.grading.worker import probe_cell  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = 0
SETUP = (
    "import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
    "from torchvision.transforms import v2\nfrom cnn_course import checks, lab2_checks\n"
)
# Each lab's models: probe key -> (reference constructor, schedule, training subset).
MODELS = {
    "cnn_lab": {
        "mnist_model": ("mnist_model", "mnist", "mnist_train"),
        "cifar_model": ("cifar_model", "cifar", "cifar_train"),
    },
    "cnn_part2": {"better_model": ("better_model", "better", "cifar_train")},
}


def _functions(lab: str, plan: list[dict], inputs: dict, work: Path) -> dict:
    """What the real probe cell records of the solution notebook's function cells."""
    notebook = nbformat.read(REPO / "notebooks" / "solution" / f"{lab}.ipynb", as_version=4)
    namespace: dict = {}
    exec(SETUP, namespace)
    for cell in notebook.cells:
        source = cell.source
        wanted = "def " in source or "augment = " in source
        if cell.cell_type == "code" and wanted and "for epoch" not in source:
            exec(source, namespace)
    steps = [step for step in plan if step["kind"] in ("calls", "model_calls")]
    torch.save({"plan": steps, "inputs": inputs}, work / "plan.pt")
    exec(probe_cell(str(work / "plan.pt"), str(work / "out.pt")), namespace)
    return torch.load(work / "out.pt", weights_only=True)


def _record(lab: str, course: Course, root: Path, trained: bool, work: Path) -> bytes:
    """A whole record of ``lab``: functions, models (trained or fresh), optimisers, histories."""
    content = course.content(lab)
    reference = content.reference
    inputs = content.grading_inputs(SEED)
    record = _functions(lab, content.probe_plan, inputs, work)
    for key, (make, schedule, subset) in MODELS[lab].items():
        torch.manual_seed(SEED)
        model = getattr(reference, make)()
        plan = content.lab.training[schedule]
        history = None
        if trained:
            train_set = content.lab.subsets[subset].load(root, fast=True)
            train = course.content("cnn_lab").reference.train_model  # part 2 has none
            history = train(model, train_set, plan, epochs=plan.fast_epochs)
        record[key] = judging.layer_records(model, tuple(_input_shape(content, key)))
        prefix = key.removesuffix("_model")
        optimizer = torch.optim.Adam(model.parameters(), lr=plan.learning_rate)
        optim_key = f"{prefix}_optim"
        if any(step["key"] == optim_key for step in content.probe_plan):
            record[optim_key] = judging.optimizer_record(nn.CrossEntropyLoss(), optimizer, model)
        if history is not None:
            record[f"{prefix}_history"] = judging.history_record(history)
    if lab == "cnn_lab":  # the solution's MLP and parameter count
        mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 91), nn.ReLU(), nn.Linear(91, 10))
        record["mlp_model"] = judging.layer_records(mlp, (1, 28, 28))
        count = sum(p.numel() for p in reference.mnist_model().parameters())
        record["mnist_parameters"] = judging.plain(count)
    if lab == "cnn_part2":
        record["loaded_model"] = record["better_model"]
    buffer = tempfile.SpooledTemporaryFile()
    torch.save(record, buffer)
    buffer.seek(0)
    return buffer.read()


def _input_shape(content, key: str) -> tuple[int, ...]:
    return next(step["input_shape"] for step in content.probe_plan if step["key"] == key)


def _cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a local run: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(os.environ.get(settings.DATA_ENV, REPO.parent / "shared" / "data"))
    course = Course(REPO)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for lab, trained, what in (
            ("cnn_lab", True, "right record (trained models)"),
            ("cnn_lab", False, "untrained models: both retrained"),
            ("cnn_part2", True, "right record (trained model)"),
            ("cnn_part2", False, "untrained model"),
        ):
            record = _record(lab, course, root, trained, Path(folder))
            request = {"course": str(REPO), "lab": lab, "seed": SEED, "data_root": str(root)}
            judged = judge._prepared(request)
            cpu, wall = _cpu(), time.perf_counter()
            results = judged(record)
            cpu, wall = _cpu() - cpu, time.perf_counter() - wall
            retrained = sum("retrained_accuracy" in r["measured"] for r in results)
            failed = [f"{r['question']}: {r['message']}" for r in results if not r["ok"]]
            if trained and failed:  # a right record that is not judged right measures nothing
                print(f"{lab}: the right record failed tests:\n  " + "\n  ".join(failed))
                return 1
            rows.append((lab, what, cpu, wall, retrained))
    print(f"judging one record, {args.threads} torch thread(s), budget {judge.JUDGE_CPU_SECONDS} s")
    print(f"{'lab':<10} {'record':<36} {'CPU s':>7} {'wall s':>7} {'retrained':>10}")
    for lab, what, cpu, wall, retrained in rows:
        print(f"{lab:<10} {what:<36} {cpu:>7.1f} {wall:>7.1f} {retrained:>10}")
    costliest = max(row[2] for row in rows)
    print(f"budget / costliest judging: {judge.JUDGE_CPU_SECONDS / costliest:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
