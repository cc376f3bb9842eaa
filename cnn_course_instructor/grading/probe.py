"""The grader's last cell: record what the student's names hold, as plain data.

This module runs inside the student's kernel: the grader sends its text as the notebook's last
cell (``worker.probe_cell``), executed in a namespace of its own. It holds no test and no answer, and
imports only torch and the student runtime. The plan (which names to record, and how) and the
inputs come from the lab's grading content through a file; the record goes back through a file
that the grader reads with ``torch.load(weights_only=True)``, which runs no code.

Plan steps (plain dicts, keyed by ``kind``):
- ``model``: ``name``, ``input_shape`` -> ``judging.layer_records``
- ``optimizer``: ``criterion``, ``optimizer``, ``model`` -> ``judging.optimizer_record``
- ``calls``: ``name``, ``inputs`` (a key of the inputs) -> ``judging.call_record``
- ``history``: ``name`` -> ``judging.history_record``
- ``value``: ``name`` -> ``judging.plain`` (a number, a tensor, or just its type)
- ``model_calls``: ``name`` (a function ``f(model, *args)``), ``model`` (a key of the inputs
  holding the grader's layer records), ``inputs`` (a key of the inputs: a list of argument
  tuples, where ``{"layer": i}`` stands for the model's layer ``i``), ``repeat`` (optional) ->
  one ``judging.model_call_record`` per tuple. Each call gets a model rebuilt afresh from the
  records, in training mode (the function must choose the mode it needs), and copies of the
  tensors; ``hooks_left`` lists the hooks still registered on the model after the call.
- ``training``: ``question``, ``name`` (a model), ``input_shape`` -> what the answer cell of
  ``question`` did while it ran (see ``watch``): ``steps`` (optimiser steps), ``images`` (how
  many it trained on), ``fingerprints`` (one per image trained on, at most ``SEEN_LIMIT``),
  ``error`` (the exception it stopped with and the student's function that raised it) and
  ``model`` (``name``'s layer records right after the cell).

Watching (``watch``, run silently by the worker before the first cell; ``cell`` before each
cell): a forward pre-hook on every module and a step pre-hook on every optimiser, PyTorch's
global ones, so that whatever loop the student writes, each optimiser step is known with the
last batch of images (N, C, H, W) a network in training mode took with gradients on: the
images a step trained on. Nothing is kept but counts and fingerprints.
"""

import io
import sys

import torch

from cnn_course import judging
from cnn_course.settings import ProbeKind

try:  # in the student's kernel, worker.probe_cell runs the rebuild module's text first
    rebuild  # noqa: B018
except NameError:
    from cnn_course_instructor.grading.rebuild import rebuild


def _need(namespace, name):
    if name not in namespace:
        raise NameError(f"`{name}` is not defined (did its cell run without error?)")
    return namespace[name]


def _step(namespace, step, inputs):
    kind = step["kind"]
    if kind == ProbeKind.MODEL:
        return judging.layer_records(_need(namespace, step["name"]), tuple(step["input_shape"]))
    if kind == ProbeKind.OPTIMIZER:
        return judging.optimizer_record(
            _need(namespace, step["criterion"]),
            _need(namespace, step["optimizer"]),
            _need(namespace, step["model"]),
        )
    if kind == ProbeKind.CALLS:
        return judging.call_record(_need(namespace, step["name"]), inputs[step["inputs"]])
    if kind == ProbeKind.HISTORY:
        return judging.history_record(_need(namespace, step["name"]))
    if kind == ProbeKind.VALUE:
        return judging.plain(_need(namespace, step["name"]))
    if kind == ProbeKind.MODEL_CALLS:
        return _model_calls(_need(namespace, step["name"]), step, inputs)
    raise ValueError(f"unknown probe step {kind!r}")


def _model_calls(function, step, inputs):
    entries = []
    for args in inputs[step["inputs"]]:
        model = rebuild(inputs[step["model"]])
        model.train()
        real = [
            model[arg["layer"]]
            if isinstance(arg, dict) and "layer" in arg
            else arg.clone()
            if isinstance(arg, torch.Tensor)
            else arg
            for arg in args
        ]
        entry = judging.model_call_record(function, model, real, step.get("repeat", False))
        entry["hooks_left"] = _hooks_left(model)
        entries.append(entry)
    return entries


def _hooks_left(model) -> list[str]:
    """The hooks registered on ``model`` or its layers, in words (none on a fresh model)."""
    kinds = (
        ("_forward_hooks", "forward hook"),
        ("_forward_pre_hooks", "forward pre-hook"),
        ("_backward_hooks", "backward hook"),
        ("_backward_pre_hooks", "backward pre-hook"),
    )
    left = []
    for name, module in model.named_modules():
        for attribute, what in kinds:
            count = len(getattr(module, attribute, None) or ())
            if count:
                where = f"layer {name} ({type(module).__name__})" if name else "the network"
                left.append(f"{count} {what}{'s' if count > 1 else ''} on {where}")
    return left


# --- watching the answer cells while they run ------------------------------------------------

SEEN_LIMIT = 200_000  # fingerprints kept per watched cell (a shortened run trains on 4,000)
_WEIGHTS = {}


def fingerprints(images: torch.Tensor) -> torch.Tensor:
    """One int64 per image (N, C, H, W) in [0, 1]: equal for images equal to 1/255 (the
    datasets' own values), different otherwise but for a chance of about 2**-40."""
    flat = images.detach().reshape(len(images), -1).to("cpu", torch.float32)
    levels = (flat * 255).round().clamp(-(2**20), 2**20).to(torch.int64)
    size = flat.shape[1]
    if size not in _WEIGHTS:
        generator = torch.Generator().manual_seed(20260501)
        _WEIGHTS[size] = torch.randint(1, 2**31, (size,), generator=generator, dtype=torch.int64)
    return (levels * _WEIGHTS[size]).sum(dim=1)


class _Watch:
    """The state of the watch: the steps of the plan it serves, the cell it watches."""

    def __init__(self, plan):
        self.steps = {}  # question -> its training steps
        for step in plan:
            if step.get("kind") == ProbeKind.TRAINING:
                self.steps.setdefault(step["question"], []).append(step)
        self.found = {}  # step key -> what it recorded
        self.question = None  # the watched cell that runs
        self.shapes = ()
        self.pending = None  # fingerprints of the last batch taken, not yet stepped on
        self.seen = []
        self.counts = {"steps": 0, "images": 0}
        self.error_before = None
        self.handles = []

    def start(self):
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.handles.append(register_module_forward_pre_hook(self._forward))
        self.handles.append(register_optimizer_step_pre_hook(self._step))

    def stop(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _forward(self, module, args):
        if self.question is None or not module.training or not torch.is_grad_enabled():
            return
        images = args[0] if args else None
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            if tuple(images.shape[1:]) in self.shapes and images.is_floating_point():
                self.pending = fingerprints(images)

    def _step(self, optimizer, args, kwargs):
        if self.question is None:
            return
        self.counts["steps"] += 1
        if self.pending is not None:
            self.counts["images"] += len(self.pending)
            if sum(len(seen) for seen in self.seen) < SEEN_LIMIT:
                self.seen.append(self.pending)
            self.pending = None

    def enter(self, question):
        self.question = question
        self.shapes = {tuple(step["input_shape"]) for step in self.steps[question]}
        self.pending, self.seen = None, []
        self.counts = {"steps": 0, "images": 0}
        self.error_before = getattr(sys, "last_value", None)

    def leave(self, namespace):
        question, self.question = self.question, None
        error = getattr(sys, "last_value", None)
        raised = _raised(error) if error is not None and error is not self.error_before else None
        seen = torch.cat(self.seen)[:SEEN_LIMIT] if self.seen else torch.zeros(0, dtype=torch.int64)
        for step in self.steps[question]:
            entry = {**self.counts, "fingerprints": seen}
            if raised is not None:
                entry["error"] = raised
            try:
                entry["model"] = judging.layer_records(
                    _need(namespace, step["name"]), tuple(step["input_shape"])
                )
            except BaseException as exc:  # noqa: B036 - a student's object may raise anything
                entry["model"] = judging.failure(exc)
            self.found[step["key"]] = entry
        self.seen, self.pending = [], None

    def cell(self, namespace, question):
        """A cell is about to run (``question``: the one it answers, or None)."""
        if self.question is not None:
            self.leave(namespace)
        if question in self.steps:
            self.enter(question)


def _raised(error: BaseException) -> dict:
    """The exception a cell stopped with, and the innermost function of the notebook's own
    cells it went through (``<module>``: the cell itself), as plain strings."""
    function = "<module>"
    frame = getattr(error, "__traceback__", None)
    while frame is not None:
        code = frame.tb_frame.f_code
        if code.co_filename.startswith("<ipython-input") or "ipykernel_" in code.co_filename:
            function = code.co_name
        frame = frame.tb_next
    return {"function": str(function)[:100], "exception": f"{type(error).__name__}: {error}"[:300]}


_watching = []  # the watch of this kernel, once started


def watch(plan_path):
    """Start watching the cells the plan asks for (run before the first cell)."""
    spec = torch.load(plan_path, weights_only=True)
    state = _Watch(spec["plan"])
    if state.steps:
        state.start()
    _watching[:] = [state]


def cell(namespace, question):
    """The worker's call before each cell: ``question`` is the cell's nbgrader id, or None."""
    if _watching:
        _watching[0].cell(namespace, question if isinstance(question, str) else None)


def _watched(namespace) -> dict:
    """What the watch recorded (the last watched cell closed first), the watch stopped."""
    if not _watching:
        return {}
    state = _watching.pop()
    state.stop()
    if state.question is not None:
        state.leave(namespace)
    return state.found


def record(namespace, plan_path, output_path):
    """Record every step of the plan from ``namespace`` (the kernel's globals) into a file."""
    spec = torch.load(plan_path, weights_only=True)
    found = {}
    try:
        watched = _watched(namespace)
    except BaseException as exc:  # noqa: B036 - its records hold the student's objects
        watched = {"error": judging.failure(exc)}
    for step in spec["plan"]:
        if step["kind"] == ProbeKind.TRAINING:
            found[step["key"]] = watched.get(step["key"], watched.get("error"))
            continue
        try:
            found[step["key"]] = _step(namespace, step, spec["inputs"])
        except BaseException as exc:  # noqa: B036 - a student's object may raise anything
            found[step["key"]] = judging.failure(exc)
    # whole or not at all: a save that fails half way (a student broke a module it imports)
    # leaves no record, which the grader reports as such, rather than a truncated one
    buffer = io.BytesIO()
    torch.save(found, buffer)
    with open(output_path, "wb") as file:
        file.write(buffer.getvalue())
