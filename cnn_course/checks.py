"""Visible checks: run them after an exercise to see what was expected and what was found."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .training import History

__all__ = [
    "CIFAR_LAYERS",
    "MNIST_LAYERS",
    "CheckReport",
    "LayerInfo",
    "LayerSpec",
    "compare_layers",
    "describe_model",
    "layer_records",
    "q1_mnist_model",
    "q2_loss_optimizer",
    "q3_vector_to_class",
    "q4_cnn_accuracy",
    "q5_mnist_training",
    "q6_cifar_model",
    "q7_cifar_training",
]


# --- reports --------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """The outcome of a check: one row per test, an HTML table in Jupyter and text elsewhere."""

    title: str
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, passed: bool, problem: str = "", note: str = "") -> bool:
        """Record one test; ``problem`` is shown when it failed, ``note`` when it passed."""
        self.rows.append((name, bool(passed), note if passed else problem))
        return bool(passed)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)

    def summary(self) -> str:
        if self.passed:
            return "All tests passed!"
        failed = sum(not ok for _, ok, _ in self.rows)
        return f"{failed} of {len(self.rows)} tests failed."

    def __str__(self) -> str:
        lines = [f"{self.title}"]
        for name, ok, message in self.rows:
            mark = "ok  " if ok else "FAIL"
            lines.append(f"  [{mark}] {name}" + (f": {message}" if message else ""))
        lines.append(self.summary())
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join(
            "<tr><td style='text-align:left'>{}</td><td style='color:{}'>{}</td>"
            "<td style='text-align:left'>{}</td></tr>".format(
                html.escape(name),
                "green" if ok else "#c00",
                "✔ passed" if ok else "✘ failed",
                html.escape(message),
            )
            for name, ok, message in self.rows
        )
        colour = "green" if self.passed else "#c00"
        return (
            f"<div class='cnn-course-check'><b>{html.escape(self.title)}</b>"
            f"<table><thead><tr><th style='text-align:left'>check</th><th>result</th>"
            f"<th style='text-align:left'>details</th></tr></thead><tbody>{body}</tbody></table>"
            f"<b style='color:{colour}'>{html.escape(self.summary())}</b></div>"
        )


# --- layer summaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """One layer as a forward pass saw it: its type, settings, output shape and parameter count."""

    kind: str
    config: dict
    output_shape: tuple[int, ...] | None  # without the batch dimension; None if not reached
    parameters: int

    def describe(self) -> str:
        return _describe(self.kind, self.config)


@dataclass(frozen=True)
class LayerSpec:
    """What one layer of an exercise must be (settings not listed are not checked)."""

    kind: str
    config: dict
    output_shape: tuple[int, ...]

    def describe(self) -> str:
        return _describe(self.kind, self.config)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value), int(value))


def _layer_config(layer: nn.Module) -> dict:
    """Settings in one normal form, so that equivalent spellings compare equal."""
    if isinstance(layer, nn.Conv2d):
        kernel, stride = _pair(layer.kernel_size), _pair(layer.stride)
        padding = layer.padding
        if padding == "same":
            padding = tuple((k - 1) // 2 for k in kernel)  # 'same' is zero padding of (k-1)/2
        elif padding == "valid":
            padding = (0, 0)
        return {
            "in": layer.in_channels,
            "out": layer.out_channels,
            "kernel": kernel,
            "stride": stride,
            "padding": _pair(padding),
            "dilation": _pair(layer.dilation),
            "groups": layer.groups,
        }
    if isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):
        kernel = _pair(layer.kernel_size)
        stride = _pair(layer.stride) if layer.stride is not None else kernel
        return {"kernel": kernel, "stride": stride}
    if isinstance(layer, nn.Linear):
        return {"in": layer.in_features, "out": layer.out_features}
    if isinstance(layer, nn.Softmax | nn.LogSoftmax):
        return {"dim": layer.dim}
    if isinstance(layer, nn.Flatten):
        return {"start_dim": layer.start_dim, "end_dim": layer.end_dim}
    if isinstance(layer, nn.Dropout):
        return {"p": layer.p}
    if isinstance(layer, nn.LeakyReLU):
        return {"negative_slope": layer.negative_slope}
    if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
        return {"num_features": layer.num_features, "eps": layer.eps, "momentum": layer.momentum}
    return {}


def _describe(kind: str, config: dict) -> str:
    def short(value):
        return value[0] if isinstance(value, tuple) and len(set(value)) == 1 else value

    if kind == "Conv2d" and config:
        return (
            f"Conv2d({config['in']}, {config['out']}, kernel_size={short(config['kernel'])}, "
            f"stride={short(config['stride'])}, padding={short(config['padding'])})"
        )
    if kind in ("MaxPool2d", "AvgPool2d") and config:
        return f"{kind}({short(config['kernel'])}, {short(config['stride'])})"
    if kind == "Linear" and config:
        return f"Linear({config['in']}, {config['out']})"
    if kind in ("Softmax", "LogSoftmax"):
        return f"{kind}(dim={config.get('dim')})"
    return f"{kind}()"


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "(not reached)" if shape is None else "(N, " + ", ".join(map(str, shape)) + ")"


def _trace(model: nn.Module, input_shape: tuple[int, ...]):
    """Run a dummy batch through ``model``; return its leaf layers in execution order."""
    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    order: list[nn.Module] = []
    outputs: dict[int, tuple[int, ...]] = {}
    inputs: dict[int, tuple[int, ...]] = {}

    def before(module, args):
        order.append(module)
        if args and isinstance(args[0], torch.Tensor):
            inputs[id(module)] = tuple(args[0].shape[1:])

    def after(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs[id(module)] = tuple(output.shape[1:])

    handles = [m.register_forward_pre_hook(before) for m in leaves]
    handles += [m.register_forward_hook(after) for m in leaves]
    error = None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
    except Exception as exc:  # the student's model may fail in any way; say where
        failing = order[-1] if order else None
        where = (
            f"at layer {len(order) - 1} ({_describe(type(failing).__name__, _layer_config(failing))}) "
            f"whose input was {_shape_text(inputs.get(id(failing)))}"
            if failing is not None
            else "before the first layer"
        )
        shape = ", ".join(map(str, input_shape))
        error = f"the forward pass on a batch of shape (N, {shape}) failed {where}: {exc}"
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    ran = order + [m for m in leaves if m not in order]
    return ran, outputs, error


def describe_model(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[list[LayerInfo], str | None]:
    """The layers of ``model`` in the order a forward pass on a dummy batch runs them.

    ``input_shape`` is one image's ``(C, H, W)``. Returns the layers and, when the forward
    pass failed, a message saying at which layer and with which input shape.
    """
    if not isinstance(model, nn.Module):
        return [], f"expected a torch.nn.Module (e.g. nn.Sequential), got {type(model).__name__}"
    modules, outputs, error = _trace(model, input_shape)
    layers = [
        LayerInfo(
            type(m).__name__,
            _layer_config(m),
            outputs.get(id(m)),
            sum(p.numel() for p in m.parameters(recurse=False)),
        )
        for m in modules
    ]
    return layers, error


def layer_records(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Plain data describing a model: each layer's type, settings, output shape and tensors.

    Only built-in types (str, int, float, tuples, lists, dicts, tensors), so that it can be
    saved and read back with ``torch.load(..., weights_only=True)`` without running any code.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    modules, outputs, error = _trace(model, input_shape)
    layers = []
    for module in modules:
        tensors = {
            name: tensor.detach().cpu().clone()
            for name, tensor in [
                *module.named_parameters(recurse=False),
                *module.named_buffers(recurse=False),
            ]
            if isinstance(tensor, torch.Tensor)
        }
        layers.append(
            {
                "kind": type(module).__name__,
                "config": _layer_config(module),
                "output_shape": outputs.get(id(module)),
                "tensors": tensors,
            }
        )
    return {"layers": layers, "error": error}


def compare_layers(layers: Sequence[LayerInfo], spec: Sequence[LayerSpec]) -> list[str]:
    """Messages for the first mismatch between found layers and the specification (empty if none)."""
    for index, expected in enumerate(spec):
        if index >= len(layers):
            missing = ", ".join(s.describe() for s in spec[index:])
            return [
                f"layer {index}: expected {expected.describe()}, but the model stops here (missing: {missing})"
            ]
        found = layers[index]
        expected_text = f"{expected.describe()} -> {_shape_text(expected.output_shape)}"
        found_text = f"{found.describe()} -> {_shape_text(found.output_shape)}"
        if found.kind in ("Softmax", "LogSoftmax") and expected.kind != found.kind:
            return [
                f"layer {index}: {found.kind} found where {expected.describe()} was expected: "
                "nn.CrossEntropyLoss applies the softmax itself, so the model must output raw scores"
            ]
        if found.kind != expected.kind:
            return [f"layer {index}: expected {expected_text}, got {found_text}"]
        wrong = [key for key, value in expected.config.items() if found.config.get(key) != value]
        if wrong or found.output_shape != expected.output_shape:
            what = f" ({', '.join(wrong)} differ)" if wrong else ""
            return [f"layer {index}: expected {expected_text}, got {found_text}{what}"]
    if len(layers) > len(spec):
        extra = layers[len(spec)]
        hint = (
            ": nn.CrossEntropyLoss applies the softmax itself, so the model must output raw scores"
            if extra.kind in ("Softmax", "LogSoftmax")
            else ""
        )
        return [
            f"layer {len(spec)}: unexpected extra layer {extra.describe()} after the last one{hint}"
        ]
    return []


def _conv(cin: int, cout: int, size: int) -> LayerSpec:
    config = {"in": cin, "out": cout, "kernel": (3, 3), "stride": (1, 1), "padding": (1, 1)}
    return LayerSpec("Conv2d", config, (cout, size, size))


def _pool(channels: int, size: int) -> LayerSpec:
    return LayerSpec("MaxPool2d", {"kernel": (2, 2), "stride": (2, 2)}, (channels, size, size))


def _relu(shape: tuple[int, ...]) -> LayerSpec:
    return LayerSpec("ReLU", {}, shape)


# The architectures the lab's tables describe, layer by layer.
MNIST_LAYERS = (
    _conv(1, 32, 28),
    _relu((32, 28, 28)),
    _conv(32, 32, 28),
    _relu((32, 28, 28)),
    _pool(32, 14),
    LayerSpec("Flatten", {}, (6272,)),
    LayerSpec("Linear", {"in": 6272, "out": 10}, (10,)),
)
CIFAR_LAYERS = (
    _conv(3, 32, 32),
    _relu((32, 32, 32)),
    _conv(32, 32, 32),
    _relu((32, 32, 32)),
    _pool(32, 16),
    _conv(32, 32, 16),
    _relu((32, 16, 16)),
    _pool(32, 8),
    LayerSpec("Flatten", {}, (2048,)),
    LayerSpec("Linear", {"in": 2048, "out": 256}, (256,)),
    _relu((256,)),
    LayerSpec("Linear", {"in": 256, "out": 10}, (10,)),
)


def _check_architecture(title: str, model, spec: Sequence[LayerSpec], input_shape) -> CheckReport:
    report = CheckReport(title)
    if not report.add(
        "is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    ):
        return report
    layers, error = describe_model(model, input_shape)
    if not report.add("forward pass on a dummy batch", error is None, error or ""):
        return report
    mismatches = compare_layers(layers, spec)
    total = sum(layer.parameters for layer in layers)
    report.add(
        f"{len(spec)} layers as specified",
        not mismatches,
        "; ".join(mismatches),
        note=f"{total:,} trainable parameters",
    )
    return report


def q1_mnist_model(model) -> CheckReport:
    """Check ``mnist_model`` layer by layer against the MNIST table."""
    return _check_architecture("Exercise 1: mnist_model", model, MNIST_LAYERS, (1, 28, 28))


def q6_cifar_model(model, criterion=None, optimizer=None) -> CheckReport:
    """Check ``cifar_model`` against the CIFAR-10 table, and its loss and optimiser if given."""
    report = _check_architecture("Exercise 5: cifar_model", model, CIFAR_LAYERS, (3, 32, 32))
    if criterion is not None or optimizer is not None:
        _check_loss_optimizer(report, criterion, optimizer, model)
    return report


def _check_loss_optimizer(report: CheckReport, criterion, optimizer, model) -> None:
    report.add(
        "loss for 10-class scores",
        isinstance(criterion, nn.CrossEntropyLoss),
        f"got {type(criterion).__name__}"
        + (": BCELoss is for yes/no targets" if isinstance(criterion, nn.BCELoss) else ""),
    )
    is_adam = isinstance(optimizer, torch.optim.Adam)
    report.add("optimiser is Adam", is_adam, f"got {type(optimizer).__name__}")
    if is_adam and isinstance(model, nn.Module):
        optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
        owned = [p for p in model.parameters() if p.requires_grad]
        report.add(
            "optimiser updates this model's parameters",
            bool(owned) and all(id(p) in optimised for p in owned),
            "pass model.parameters() of this model to the optimiser",
        )


def q2_loss_optimizer(criterion, optimizer, model) -> CheckReport:
    """Check the loss and the optimiser chosen for ``mnist_model``."""
    report = CheckReport("Exercise 2: criterion and optimizer")
    _check_loss_optimizer(report, criterion, optimizer, model)
    return report


def _call(function: Callable, *args):
    try:
        return function(*args), None
    except NotImplementedError:
        return None, "not implemented yet (the stub still raises NotImplementedError)"
    except Exception as exc:  # the student's function may fail in any way; report it
        return None, f"raised {type(exc).__name__}: {exc}"


def q3_vector_to_class(vector_to_class) -> CheckReport:
    """Check ``vector_to_class`` on two small worked cases."""
    report = CheckReport("Exercise 3: vector_to_class")
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.0]])
    result, error = _call(vector_to_class, scores)
    if not report.add("runs on scores of shape (2, 3)", error is None, error or ""):
        return report
    if not report.add(
        "returns a tensor", isinstance(result, torch.Tensor), f"got {type(result).__name__}"
    ):
        return report
    shape = tuple(result.shape)
    hint = (
        " (one class per image: take the argmax over dim=1, the classes)" if shape == (3,) else ""
    )
    report.add("shape (N,)", shape == (2,), f"expected (2,), got {shape}{hint}")
    report.add(
        "integer classes",
        not result.is_floating_point(),
        f"got dtype {result.dtype}; argmax returns integer indices",
    )
    if tuple(result.shape) == (2,):
        report.add(
            "classes of [[1, 3, 2], [0.5, -1, 0]]",
            result.tolist() == [1, 0],
            f"expected [1, 0], got {result.tolist()}",
        )
    return report


def q4_cnn_accuracy(cnn_accuracy) -> CheckReport:
    """Check ``cnn_accuracy`` on a small worked case: 3 right out of 4."""
    report = CheckReport("Exercise 4: cnn_accuracy")
    predict, labels = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])
    result, error = _call(cnn_accuracy, predict, labels)
    if not report.add("runs on two tensors of shape (4,)", error is None, error or ""):
        return report
    number = isinstance(result, float | int) and not isinstance(result, bool)
    report.add("returns a Python number", number, f"got {type(result).__name__}; use .item()")
    value = (
        float(result)
        if number or (isinstance(result, torch.Tensor) and result.numel() == 1)
        else None
    )
    hint = " (a count, not a fraction?)" if value == 3 else ""
    report.add(
        "accuracy of 3 right out of 4", value == 0.75, f"expected 0.75, got {result!r}{hint}"
    )
    return report


def _check_training(title: str, model, history, n_epochs: int) -> CheckReport:
    report = CheckReport(title)
    if not report.add(
        "history is a training.History",
        isinstance(history, History),
        f"got {type(history).__name__}",
    ):
        return report
    losses = history.metrics.get("loss", [])
    accuracies = history.metrics.get("accuracy", [])
    report.add(
        f"one loss and one accuracy per epoch ({n_epochs})",
        len(losses) == len(accuracies) == n_epochs,
        f"got {len(losses)} losses and {len(accuracies)} accuracies",
    )
    if losses:
        report.add(
            "mean loss went down",
            losses[-1] < losses[0],
            f"first epoch {losses[0]:.4f}, last epoch {losses[-1]:.4f}",
        )
    if accuracies:
        report.add(
            "accuracies are fractions",
            all(0.0 <= a <= 1.0 for a in accuracies),
            f"got {accuracies[-1]:.4f} for the last epoch",
        )
    report.add(
        "model is a torch.nn.Module", isinstance(model, nn.Module), f"got {type(model).__name__}"
    )
    return report


def q5_mnist_training(model, history, n_epochs: int) -> CheckReport:
    """Check the MNIST training run's per-epoch record."""
    return _check_training("MNIST training", model, history, n_epochs)


def q7_cifar_training(model, history, n_epochs: int) -> CheckReport:
    """Check the CIFAR-10 training run's per-epoch record."""
    return _check_training("Exercise 6: CIFAR-10 training", model, history, n_epochs)
