"""The probe's watch: what a training cell trained on, where it stopped, each model right after
its own cell, and the hooks a function leaves; judged in seconds, without a kernel."""

from __future__ import annotations

import sys

import nbformat
import pytest
import torch
from conftest import COURSE
from torch import nn

from cnn_course import data
from cnn_course_instructor.contract import Context, training
from cnn_course_instructor.grading import verdicts
from cnn_course_instructor.grading.probe import SEEN_LIMIT, fingerprints
from cnn_course_instructor.grading.registry import NotRecorded
from cnn_course_instructor.grading.worker import PROBE_MODULE, probe_cell, watch_cells

STEP = training("q12_cifar_training", model="net", input_shape=(3, 8, 8))

SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
train_x, train_y = torch.randint(0, 256, (40, 3, 8, 8)) / 255, torch.randint(0, 3, (40,))
test_x, test_y = torch.randint(0, 256, (12, 3, 8, 8)) / 255, torch.randint(0, 3, (12,))
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
def accuracy(predict, labels):
    return (predict == labels).float().mean().item()
"""
LOOP = """
for start in range(0, len(X), 8):
    imgs, labels = X[start : start + 8], Y[start : start + 8]
    opt.zero_grad()
    out = net(imgs)
    nn.functional.cross_entropy(out, labels).backward()
    opt.step()
    right = accuracy(out.argmax(1), labels)
"""


def run_cells(cells: list[tuple[str, str | None]], tmp_path, step=STEP) -> dict:
    """Run ``(source, grade id)`` cells as the kernel would (each compiled as an IPython cell,
    an error recorded in ``sys.last_value`` and the next cell run), with the worker's silent
    code before each, then the probe cell; the record."""
    notebook = nbformat.v4.new_notebook()
    for source, grade_id in cells:
        cell = nbformat.v4.new_code_cell(source)
        if grade_id:
            cell.metadata["nbgrader"] = {"grade_id": grade_id}
        notebook.cells.append(cell)
    plan = tmp_path / "plan.pt"
    torch.save({"plan": [step.plain()], "inputs": {}}, plan)
    between = watch_cells(notebook, str(plan))
    namespace: dict = {}
    had = getattr(sys, "last_value", None)
    try:
        for index, cell in enumerate(notebook.cells):
            exec(between[index], namespace)
            try:
                exec(compile(cell.source, f"/tmp/ipykernel_1/{index}.py", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - as IPython does
                sys.last_value = exc
        exec(probe_cell(str(plan), str(tmp_path / "out.pt")), namespace)
    finally:
        sys.last_value = had
        assert PROBE_MODULE not in sys.modules
    assert not torch.nn.modules.module._global_forward_pre_hooks  # the watch ended
    return torch.load(tmp_path / "out.pt", weights_only=True)


def test_the_watch_counts_steps_and_the_images_they_trained_on(tmp_path):
    """Does the watch see, from a loop of the student's own, each optimiser step with the
    images it trained on (not the layers' inputs, not an evaluation), and nothing of the
    cells it does not watch?"""
    record = run_cells(
        [
            (SETUP, None),
            ("X, Y = test_x, test_y\n" + LOOP, None),  # not watched
            (
                "X, Y = train_x, train_y\n" + LOOP + "with torch.no_grad():\n    net(test_x)",
                "q12_cifar_training",
            ),
        ],
        tmp_path,
    )
    entry = record[STEP.key]
    assert entry["steps"] == 5 and entry["images"] == 40 and "error" not in entry
    namespace: dict = {}
    exec(SETUP, namespace)
    assert torch.equal(
        entry["fingerprints"].sort().values, fingerprints(namespace["train_x"]).sort().values
    )


def test_each_model_is_recorded_as_its_own_cell_left_it(tmp_path):
    """Is the model recorded right after its training cell, whatever a later cell does to it?"""
    record = run_cells(
        [
            (SETUP, None),
            ("X, Y = train_x, train_y\n" + LOOP, "q12_cifar_training"),
            ("with torch.no_grad():\n    net[0].weight.fill_(7.0)", None),
        ],
        tmp_path,
    )
    weight = record[STEP.key]["model"]["layers"][0]["tensors"]["weight"]
    assert not torch.all(weight == 7.0)


def test_a_crash_names_the_student_s_function_that_raised(tmp_path):
    """When a function of the student's raises inside the training loop, does the record name
    it and the exception, and the steps taken before?"""
    setup = SETUP.replace("(predict == labels)", "(predict == labels[:3])")
    record = run_cells(
        [(setup, None), ("X, Y = train_x, train_y\n" + LOOP, "q12_cifar_training")], tmp_path
    )
    entry = record[STEP.key]
    assert entry["steps"] == 1
    assert entry["error"]["function"] == "accuracy"
    assert entry["error"]["exception"].startswith("RuntimeError")
    seen = verdicts.watched(record, STEP)
    assert "your accuracy raised RuntimeError" in verdicts._stopped(seen)
    assert "after 1 optimiser step;" in verdicts._stopped(seen)


def test_an_error_before_the_watched_cell_is_not_its_own(tmp_path):
    """Is an error of an earlier cell left out of the watched cell's record?"""
    record = run_cells(
        [
            (SETUP, None),
            ("raise ValueError('earlier')", None),
            ("X, Y = train_x, train_y\n" + LOOP, "q12_cifar_training"),
        ],
        tmp_path,
    )
    assert "error" not in record[STEP.key]


def test_training_data_with_test_images_is_found(tmp_path, monkeypatch):
    """Do the accuracy tests refuse a loop that trained on test images, and name it, while
    the same loop on the training images only is judged on its accuracy?"""
    images = torch.randint(0, 256, (60, 3, 8, 8)) / 255
    train, test = images[:40], images[40:]

    class FakeContext(Context):
        def test_set(self, dataset):
            return data.ImageSet(
                test, torch.zeros(20, dtype=torch.int64), ("a",), "t", torch.arange(20)
            )

        def training_set(self, subset):
            return data.ImageSet(
                train, torch.zeros(40, dtype=torch.int64), ("a",), "t", torch.arange(40)
            )

    lab = COURSE.lab("cnn_lab")
    context = FakeContext(lab, {})
    record = {
        STEP.key: {"steps": 8, "images": 60, "fingerprints": fingerprints(images), "model": None}
    }
    verdict = verdicts.accuracy_verdict(
        record, context, "net", "cifar10", classes=3,
        retraining=verdicts.Retraining("cifar_train", "cifar", None), training_cell=STEP,
    )  # fmt: skip
    assert not verdict.passed and "20 images of the cifar10 test split" in verdict.message
    assert verdicts._test_images_seen(verdicts.watched(record, STEP), context, "cifar10", "s") == 20
    record[STEP.key]["fingerprints"] = fingerprints(train)
    assert verdicts._test_images_seen(verdicts.watched(record, STEP), context, "cifar10", "s") == 0
    # augmented: flipped and shifted images are not the stored ones
    verdict = verdicts.augmented_verdict(record, context, STEP, "s", "augment them")
    assert not verdict.passed and "100% of the images" in verdict.message
    record[STEP.key]["fingerprints"] = fingerprints(torch.roll(train.flip(3), 2, dims=2))
    assert verdicts.augmented_verdict(record, context, STEP, "s", "augment them").passed


@pytest.mark.parametrize(
    "entry",
    [
        {"steps": 1, "images": 1, "fingerprints": torch.zeros(3)},  # not int64
        {"steps": 1, "images": 1, "fingerprints": torch.zeros(SEEN_LIMIT + 1, dtype=torch.int64)},
        {"steps": "many", "images": 1, "fingerprints": torch.zeros(1, dtype=torch.int64)},
        {"steps": float("nan"), "images": 1, "fingerprints": torch.zeros(1, dtype=torch.int64)},
        ["not", "a", "dict"],
    ],
)
def test_a_hostile_training_record_is_refused_as_not_recorded(entry):
    """The kernel writes the record: is one the probe would not write refused, never used?"""
    with pytest.raises(NotRecorded):
        verdicts.watched({STEP.key: entry}, STEP)


def test_hooks_left_on_the_network_are_named():
    """Are hooks a function leaves on the grader's network named, with how to remove them?"""
    left = {
        "output": {"tensor": torch.zeros(1)},
        "hooks_left": ["1 forward hook on layer 6 (ReLU)"],
    }
    verdict = verdicts.hooks_verdict([left], "grad_cam")
    assert not verdict.passed and "grad_cam left 1 forward hook on layer 6" in verdict.message
    assert verdicts.hooks_verdict([{**left, "hooks_left": []}], "grad_cam").passed
    with pytest.raises(NotRecorded):
        verdicts.hooks_verdict([{"output": {}, "hooks_left": [3]}], "grad_cam")


def test_the_probe_lists_hooks_left_on_a_model():
    """Does the probe's list name each kind of hook, where it is?"""
    from cnn_course_instructor.grading.probe import _hooks_left

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert _hooks_left(model) == []
    model[1].register_forward_hook(lambda *args: None)
    model.register_full_backward_hook(lambda *args: None)
    assert _hooks_left(model) == [
        "1 backward hook on the network",
        "1 forward hook on layer 1 (ReLU)",
    ]


def test_the_grader_s_code_runs_only_around_the_watched_answer_cells():
    """With the questions the plan watches, does the grader's code go before the first code
    cell, each watched answer cell and the cell after it, and nowhere else?"""

    def cell(grade_id: str | None):
        made = nbformat.v4.new_code_cell("x = 1")
        if grade_id:
            made.metadata["nbgrader"] = {"grade_id": grade_id}
        return made

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("intro"),
        cell("setup"),
        cell("q1_model"),
        cell(None),
        cell("q2_training"),
        nbformat.v4.new_markdown_cell("after"),
        cell("q3_training"),
        cell("plot"),
        cell("last"),
    ]
    codes = watch_cells(notebook, "plan.pt", {"q2_training", "q3_training"})
    assert sorted(codes) == [1, 4, 6, 7]  # first, q2, q3 (also after q2), after q3
    assert "watch(" in codes[1] and all("watch(" not in codes[i] for i in (4, 6, 7))
    assert sorted(watch_cells(notebook, "plan.pt")) == [1, 2, 3, 4, 6, 7, 8]  # unknown: every one
