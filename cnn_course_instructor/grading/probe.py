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
  tensors.
"""

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
        entries.append(judging.model_call_record(function, model, real, step.get("repeat", False)))
    return entries


def record(namespace, plan_path, output_path):
    """Record every step of the plan from ``namespace`` (the kernel's globals) into a file."""
    spec = torch.load(plan_path, weights_only=True)
    found = {}
    for step in spec["plan"]:
        try:
            found[step["key"]] = _step(namespace, step, spec["inputs"])
        except BaseException as exc:  # noqa: B036 - a student's object may raise anything
            found[step["key"]] = judging.failure(exc)
    torch.save(found, output_path)
