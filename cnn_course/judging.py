"""How answers are recorded and judged: one set of rules for visible checks and hidden tests.

Recorders turn a student's objects into plain data (tensors, numbers, strings) that can be saved
and read back with ``torch.load(..., weights_only=True)``; judges compare such records with what
an exercise asks and return a ``Verdict`` whose message names the fault. The visible checks run
them on worked examples in the student's kernel; the grader runs the same judges on its own
inputs, in its own process.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUGMENT_PADDING",
    "BETTER_LAYERS",
    "CIFAR_LAYERS",
    "MNIST_LAYERS",
    "LayerInfo",
    "LayerSpec",
    "Verdict",
    "adversarial_bounds_verdict",
    "augmentation_outcome",
    "augmentation_variety_verdict",
    "augmentation_verdict",
    "call_record",
    "classes_verdict",
    "compare_layers",
    "convolutions_verdict",
    "classifier_verdict",
    "describe_model",
    "detached_verdict",
    "failure",
    "fraction_verdict",
    "history_record",
    "history_verdict",
    "layer_order_verdict",
    "layer_records",
    "layers_from_records",
    "loss_verdict",
    "map_verdict",
    "model_call_record",
    "number_verdict",
    "optimizer_record",
    "optimizer_verdict",
    "plain",
    "BUDGET_TOLERANCE",
    "budget_verdict",
    "conv2d_verdict",
    "mlp_verdict",
    "output_size_verdict",
    "parameter_count_verdict",
    "parametrised_layers",
    "positions_verdict",
    "repeat_verdict",
    "same_weights_verdict",
    "tensor_output",
    "unchanged_verdict",
]


@dataclass(frozen=True)
class Verdict:
    """One judgement: passed or not, a message naming the fault, and what was measured."""

    passed: bool
    message: str = ""
    measured: dict[str, float] = field(default_factory=dict)


def _ok(note: str = "", **measured: float) -> Verdict:
    return Verdict(True, note, dict(measured))


def _fault(message: str, **measured: float) -> Verdict:
    return Verdict(False, message, dict(measured))


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


@dataclass(frozen=True)
class _Step:
    """One layer of a forward pass: a module, or a functional operation standing for one."""

    kind: str
    config: dict
    module: nn.Module | None
    output_shape: tuple[int, ...] | None

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.module is None:
            return {}
        return {
            name: tensor.detach().cpu().clone()
            for name, tensor in [
                *self.module.named_parameters(recurse=False),
                *self.module.named_buffers(recurse=False),
            ]
            if isinstance(tensor, torch.Tensor)
        }

    def parameters(self) -> int:
        if self.module is None:
            return 0
        return sum(p.numel() for p in self.module.parameters(recurse=False))


def _module_step(module: nn.Module, shape) -> _Step:
    return _Step(type(module).__name__, _layer_config(module), module, shape)


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[_Step], str | None]:
    """The layers a forward pass on a dummy batch runs, in order, and a message if it failed.

    A model whose ``forward`` uses functional operations (``F.relu``, ``F.max_pool2d``,
    ``x.view(x.size(0), -1)``...) is traced with ``torch.fx``, and each such operation stands
    for its layer, so that it is judged (and rebuilt) like its ``nn.Sequential`` equivalent.
    One that ``torch.fx`` cannot follow, or that holds layers of the student's own classes, is
    followed through one real run (``_trace_run``) by the same rules.
    """
    if any(map(_own_layer, _leaves(model))):  # (a `View` module): judged by what it computes
        return _trace_run(model, input_shape)
    graph = _functional_graph(model)
    if graph is _UNTRACEABLE:  # control flow on values, an assert: follow one real run
        return _trace_run(model, input_shape)
    if graph is not None:
        return _trace_graph(model, graph, input_shape)
    return _trace_modules(model, input_shape)


def _image_shape(args) -> tuple[int, ...] | None:
    """The shape of one image of a layer's input, the first of its arguments ``args``."""
    first = args[0] if args else None
    return tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else None


def _forward_failure(input_shape, exc: BaseException, index: int, layer: str, shape) -> str:
    """What a failed forward pass says: at which layer (``index``, described ``layer``; none
    when it failed before the first), fed with one image of which ``shape``."""
    where = (
        f"at layer {index} ({layer}) whose input was {_shape_text(shape)}"
        if layer
        else "before the first layer"
    )
    batch = ", ".join(map(str, input_shape))
    return f"the forward pass on a batch of shape (N, {batch}) failed {where}: {exc}"


@contextlib.contextmanager
def _hooked(model: nn.Module, leaves: list[nn.Module], before, after) -> Iterator[None]:
    """``model`` in evaluation mode without gradients, with ``before`` and ``after`` as forward
    pre- and post-hooks of each of ``leaves``; all undone on exit."""
    handles = [m.register_forward_pre_hook(before) for m in leaves]
    handles += [m.register_forward_hook(after) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children())]


def _own_layer(module: nn.Module) -> bool:
    """Whether ``module`` is of a class of the student's own, not one of torch.nn's layers
    (a class is torch.nn's when it is the very class torch.nn names so, whatever its name or
    ``__module__`` says)."""
    return type(module) is not getattr(nn, type(module).__name__, None)


def _trace_modules(model: nn.Module, input_shape: tuple[int, ...]):
    leaves = _leaves(model) or [model]
    order: list[nn.Module] = []
    outputs: list[tuple[int, ...] | None] = []
    inputs: dict[int, tuple[int, ...]] = {}

    def before(module, args):
        order.append(module)
        outputs.append(None)
        if args and isinstance(args[0], torch.Tensor):
            inputs[id(module)] = tuple(args[0].shape[1:])

    def after(module, args, output):
        if isinstance(output, torch.Tensor):
            # the last call of this module still waiting for its output (calls may nest)
            for index in range(len(order) - 1, -1, -1):
                if order[index] is module and outputs[index] is None:
                    outputs[index] = tuple(output.shape[1:])
                    break

    error = None
    try:
        with _hooked(model, leaves, before, after):
            model(torch.zeros(2, *input_shape))
    except Exception as exc:  # the student's model may fail in any way; say where
        failing = order[-1] if order else None
        layer = _describe(type(failing).__name__, _layer_config(failing)) if order else ""
        shape = inputs.get(id(failing))
        error = _forward_failure(input_shape, exc, len(order) - 1, layer, shape)
    steps = [_module_step(m, shape) for m, shape in zip(order, outputs, strict=True)]
    steps += [_module_step(m, None) for m in leaves if not any(m is o for o in order)]
    return steps, error


# Functional operations that stand for a layer: fx call targets and tensor method names.
_FUNCTIONS = {
    F.relu: "ReLU",
    torch.relu: "ReLU",
    F.max_pool2d: "MaxPool2d",
    torch.max_pool2d: "MaxPool2d",
    F.avg_pool2d: "AvgPool2d",
    torch.flatten: "Flatten",
    torch.reshape: "Flatten",
    F.softmax: "Softmax",
    torch.softmax: "Softmax",
    F.log_softmax: "LogSoftmax",
    torch.log_softmax: "LogSoftmax",
    torch.sigmoid: "Sigmoid",
    F.sigmoid: "Sigmoid",
    torch.tanh: "Tanh",
    F.tanh: "Tanh",
    F.gelu: "GELU",
    F.elu: "ELU",
    F.leaky_relu: "LeakyReLU",
    F.dropout: "Dropout",
}
_METHODS = {
    "relu": "ReLU",
    "relu_": "ReLU",
    "flatten": "Flatten",
    "view": "Flatten",
    "reshape": "Flatten",
    "softmax": "Softmax",
    "log_softmax": "LogSoftmax",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
}


# Tensor methods that leave the values as they are (``x.contiguous().view(...)``): no layer.
_PASS_THROUGH = {"contiguous", "float", "to", "cpu", "clone", "detach"}


def _operation_step(node, name: str, source: torch.Tensor, output: torch.Tensor, batch: int):
    """The layer an operation on the previous layer's output stands for, None for one that
    leaves the values as they are; ``_NotAChain`` for any other."""
    if (
        node.op == "call_method"
        and node.target in _PASS_THROUGH
        and output.shape == source.shape
        and output.dtype == source.dtype
    ):
        return None
    kind = (_FUNCTIONS if node.op == "call_function" else _METHODS).get(node.target)
    if kind is None:
        raise _NotAChain(f"{name} in forward is not a layer it knows")
    step = _functional_step(node, kind, output, batch)
    if isinstance(step, str):
        raise _NotAChain(f"{step} in forward has no layer it can rebuild")
    return step


_UNTRACEABLE = object()  # what _functional_graph gives for a forward torch.fx cannot follow


def _functional_graph(model: nn.Module):
    """The fx graph of ``model`` when its forward calls operations outside modules, None when
    it calls modules only, ``_UNTRACEABLE`` when torch.fx cannot follow it."""
    if isinstance(model, nn.Sequential) or not list(model.children()):
        return None
    try:
        from torch import fx

        graph = fx.symbolic_trace(model).graph
    except Exception:  # control flow on values (`if x.dim() == 3:`), asserts, unusual Python
        return _UNTRACEABLE
    if any(node.op in ("call_function", "call_method") for node in graph.nodes):
        return graph
    return None


def _argument(node, position: int, name: str, default=None):
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(name, default)


_SYMBOLS = {
    operator.add: "+",
    operator.iadd: "+=",
    operator.sub: "-",
    operator.mul: "*",
    operator.truediv: "/",
    operator.matmul: "@",
}


def _operation_name(node) -> str:
    """How the student spelt an fx node's operation: ``.view()``, ``the operator +``, ``F.relu``."""
    if node.op == "call_method":
        return f".{node.target}()"
    if node.target in _SYMBOLS:
        return f"the operator {_SYMBOLS[node.target]}"
    name = getattr(node.target, "__name__", str(node.target))
    module = getattr(node.target, "__module__", None) or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module.startswith("torch") or module == "" and hasattr(torch, name):
        return f"torch.{name}"
    return name


def _functional_step(node, kind: str, output: torch.Tensor, batch: int):
    """The layer a functional call stands for, or a message saying why it stands for none."""
    if kind == "Flatten":
        if node.target in (torch.flatten, "flatten"):
            start = _argument(node, 1, "start_dim", 0)
            end = _argument(node, 2, "end_dim", -1)
            if start != 1 or end != -1:
                return f"{_operation_name(node)} with start_dim={start}, end_dim={end}"
        if output.dim() != 2 or output.shape[0] != batch:
            return f"{_operation_name(node)} to the shape {tuple(output.shape)}"
        return _Step("Flatten", {"start_dim": 1, "end_dim": -1}, None, tuple(output.shape[1:]))
    shape = tuple(output.shape[1:])
    if kind in ("MaxPool2d", "AvgPool2d"):
        kernel = _pair(_argument(node, 1, "kernel_size"))
        stride = _argument(node, 2, "stride")
        stride = kernel if stride in (None, [], ()) else _pair(stride)
        padding = _argument(node, 3, "padding", 0)
        if _pair(padding) != (0, 0):
            return f"{_operation_name(node)} with padding={padding}"
        return _Step(kind, {"kernel": kernel, "stride": stride}, None, shape)
    if kind in ("Softmax", "LogSoftmax"):
        return _Step(kind, {"dim": _argument(node, 1, "dim")}, None, shape)
    if kind == "LeakyReLU":
        return _Step(
            kind, {"negative_slope": _argument(node, 1, "negative_slope", 0.01)}, None, shape
        )
    if kind == "Dropout":
        return _Step(kind, {"p": _argument(node, 1, "p", 0.5)}, None, shape)
    return _Step(kind, {}, None, shape)


def _trace_graph(model: nn.Module, graph, input_shape: tuple[int, ...]):
    """Run ``graph`` node by node on a dummy batch; each node on the data path becomes a step."""
    modules = dict(model.named_modules())
    batch = 2
    values: dict = {}
    steps: list[_Step] = []
    current = None  # the node whose output flows through the chain of layers
    error = None
    was_training = model.training

    def load(argument):
        return torch.fx.node.map_arg(argument, lambda node: values[node])

    try:
        model.eval()
        with torch.no_grad():
            for node in graph.nodes:
                if node.op == "placeholder":
                    if current is not None:
                        raise _NotAChain(f"forward takes more than one input ({node.name})")
                    values[node] = torch.zeros(batch, *input_shape)
                    current = node
                    continue
                if node.op == "output":
                    break
                args, kwargs = load(node.args), load(node.kwargs)
                try:
                    if node.op == "call_module":
                        output = modules[node.target](*args, **kwargs)
                    elif node.op == "call_function":
                        output = node.target(*args, **kwargs)
                    elif node.op == "call_method":
                        output = getattr(args[0], node.target)(*args[1:], **kwargs)
                    else:  # get_attr: a tensor of the model used directly
                        output = operator.attrgetter(node.target)(model)
                except Exception as exc:
                    what = (
                        _describe(
                            type(modules[node.target]).__name__, _layer_config(modules[node.target])
                        )
                        if node.op == "call_module"
                        else _operation_name(node)
                    )
                    shape = _image_shape(args)
                    error = _forward_failure(input_shape, exc, len(steps), what, shape)
                    break
                values[node] = output
                if not isinstance(output, torch.Tensor) or node.op == "get_attr":
                    continue  # sizes and other helpers feeding a layer's arguments
                source = node.args[0] if node.args else None
                name = node.target if node.op == "call_module" else _operation_name(node)
                if source is not current:
                    raise _NotAChain(f"{name} in forward does not take the previous layer's output")
                if node.op == "call_module":
                    steps.append(_module_step(modules[node.target], tuple(output.shape[1:])))
                elif step := _operation_step(node, name, values[source], output, batch):
                    steps.append(step)
                current = node
    except _NotAChain as exc:
        error = _NOT_A_CHAIN.format(exc)
    finally:
        model.train(was_training)
    return steps, error


class _NotAChain(Exception):
    """The forward pass is not a chain of layers the grader can rebuild."""


_NOT_A_CHAIN = (
    "the grader judges and rebuilds a chain of standard layers: {}; build the model from nn "
    "layers (nn.Sequential), or use F.relu, F.max_pool2d and torch.flatten in forward"
)

# Tensor methods that Python's operators call (``x + y`` calls ``x.add(y)``), by their symbol.
_ARITHMETIC = {
    "add": "+",
    "add_": "+=",
    "sub": "-",
    "sub_": "-=",
    "mul": "*",
    "mul_": "*=",
    "div": "/",
    "div_": "/=",
    "matmul": "@",
}


@dataclass
class _Call:
    """A torch operation a real forward pass called, in the shape of the fx node it would be."""

    op: str  # "call_function" or "call_method"
    target: object  # the function, or the tensor method's name
    args: tuple
    kwargs: dict


def _as_call(func, args: tuple, kwargs: dict) -> _Call:
    name = getattr(func, "__name__", "")
    if name and getattr(torch.Tensor, name, None) is func:
        return _Call("call_method", name, args, kwargs)
    return _Call("call_function", func, args, kwargs)


def _call_name(call: _Call) -> str:
    """How a message names a call: ``F.relu``, ``.view()``, ``the operator + (.add())``."""
    if call.op == "call_method" and call.target in _ARITHMETIC:
        return f"the operator {_ARITHMETIC[call.target]} (.{call.target}())"
    return _operation_name(call)


def _trace_run(model: nn.Module, input_shape: tuple[int, ...]):
    """The layers one real forward pass on a dummy batch runs, modules and functional operations
    alike, for a forward torch.fx cannot follow (``if x.dim() == 3: ...``, ``assert ...``) or a
    model with layers of the student's own classes.

    The operations each torch.nn layer makes inside itself are not steps; those of the
    student's own layers are. An operation outside torch.nn layers is a step when it takes the
    output of the previous step, as in ``_trace_graph``.
    """
    from torch.overrides import TorchFunctionMode

    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in _leaves(model) if not _own_layer(m)]  # the student's own: followed
    batch = 2
    steps: list[_Step] = []
    state = {"current": torch.zeros(batch, *input_shape), "depth": 0, "wrong": None}
    last: list = []  # the step running (its name and arguments), for a forward pass that fails

    def refuse(message: str) -> None:
        state["wrong"] = state["wrong"] or message  # the first fault, even if forward catches it
        raise _NotAChain(message)

    def before(module, args):
        if state["depth"] == 0:
            last[:] = [_describe(type(module).__name__, _layer_config(module)), args]
            if not args or args[0] is not state["current"]:
                refuse(
                    f"{names.get(module, '?')} in forward does not take the previous layer's output"
                )
        state["depth"] += 1

    def after(module, args, output):
        state["depth"] -= 1
        if state["depth"] == 0 and isinstance(output, torch.Tensor):
            steps.append(_module_step(module, tuple(output.shape[1:])))
            state["current"] = output

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if state["depth"] == 0 and state["wrong"] is None:
                call = _as_call(func, args, kwargs)
                last[:] = [_call_name(call), args]
            output = func(*args, **kwargs)
            if state["depth"] or not isinstance(output, torch.Tensor) or state["wrong"]:
                return output  # inside a layer, sizes and other helpers, or already refused
            inputs = [*args, *kwargs.values()]
            if not any(value is state["current"] for value in inputs):
                return output  # not on the path of the data: a helper tensor
            name, source = _call_name(call), args[0] if args else kwargs.get("input")
            if source is not state["current"]:
                refuse(f"{name} in forward does not take the previous layer's output")
            try:
                step = _operation_step(call, name, source, output, batch)
            except _NotAChain as exc:
                refuse(str(exc))
            if step is not None:
                steps.append(step)
            state["current"] = output
            return output

    error = None
    try:
        with _hooked(model, leaves, before, after), Recorder():
            model(state["current"])
    except Exception as exc:  # the student's model may fail in any way; say where
        if state["wrong"] is None:
            what, args = last or ["", ()]
            error = _forward_failure(input_shape, exc, len(steps), what, _image_shape(args))
    if state["wrong"] is not None:
        error = _NOT_A_CHAIN.format(state["wrong"])
    return steps, error


def describe_model(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[list[LayerInfo], str | None]:
    """The layers of ``model`` in the order a forward pass on a dummy batch runs them.

    ``input_shape`` is one image's ``(C, H, W)``. Returns the layers and, when the forward
    pass failed, a message saying at which layer and with which input shape.
    """
    if not isinstance(model, nn.Module):
        return [], f"expected a torch.nn.Module (e.g. nn.Sequential), got {type(model).__name__}"
    steps, error = _trace(model, input_shape)
    layers = [LayerInfo(s.kind, s.config, s.output_shape, s.parameters()) for s in steps]
    return layers, error


def layer_records(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Plain data describing a model: each layer's type, settings, output shape and tensors.

    Only built-in types (str, int, float, tuples, lists, dicts, tensors), so that it can be
    saved and read back with ``torch.load(..., weights_only=True)`` without running any code.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    steps, error = _trace(model, input_shape)
    layers = [
        {
            "kind": step.kind,
            "config": step.config,
            "output_shape": step.output_shape,
            "tensors": step.tensors(),
        }
        for step in steps
    ]
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


# --- recorders: live objects -> plain data ----------------------------------------------------


def plain(value) -> dict:
    """A function's return value as plain data: a tensor, a real number, or just its type."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu().clone()}
    if isinstance(value, bool):
        return {"type": "bool"}
    if isinstance(value, numbers.Real):  # int, float and NumPy's scalars alike
        return {"type": type(value).__name__, "value": float(value), "number": True}
    return {"type": _type_name(value)}


def _type_name(value) -> str:
    """``CrossEntropyLoss`` for an object, ``class CrossEntropyLoss`` for the class itself.

    The (values, indices) pairs that ``torch.max(x, dim)`` and its kin return keep their module,
    ``torch.return_types.max``, so that a message can say what they are.
    """
    if isinstance(value, type):
        return f"class {value.__name__}"
    kind = type(value)
    if kind.__module__ == "torch.return_types":
        return f"torch.return_types.{kind.__name__}"
    return kind.__name__


def failure(exc: BaseException) -> dict:
    """An exception as plain data."""
    if isinstance(exc, NotImplementedError):
        return {"error": "not implemented yet (the stub still raises NotImplementedError)"}
    return {"error": f"{type(exc).__name__}: {exc}"[:400]}


def call_record(function: Callable, cases: Sequence[tuple]) -> list[dict]:
    """Call ``function`` on each tuple of arguments (copies of tensors), recording what it returns."""
    if not callable(function):
        raise TypeError(f"expected a function, got {type(function).__name__}")
    outputs = []
    for args in cases:
        try:
            copies = [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]
            outputs.append(plain(function(*copies)))
        except Exception as exc:  # the student's function may fail in any way; record it
            outputs.append(failure(exc))
    return outputs


def optimizer_record(criterion, optimizer, model) -> dict:
    """The loss's and optimiser's types, the learning rate, and whether it holds the model's parameters."""
    groups = list(getattr(optimizer, "param_groups", None) or [])
    held = {id(p) for group in groups if isinstance(group, dict) for p in group.get("params", [])}
    owned = (
        [p for p in model.parameters() if p.requires_grad] if isinstance(model, nn.Module) else []
    )
    learning_rate = groups[0].get("lr") if groups and isinstance(groups[0], dict) else None
    return {
        "criterion": _type_name(criterion),
        "optimizer": _type_name(optimizer),
        "lr": float(learning_rate) if isinstance(learning_rate, numbers.Real) else None,
        "covers_model": bool(owned) and all(id(p) in held for p in owned),
        "model_parameters": len(owned),
    }


def history_record(history) -> dict:
    """A training history's per-epoch values, as lists of floats."""
    metrics = getattr(history, "metrics", None)
    if not isinstance(metrics, dict):
        raise TypeError(f"expected a training.History, got {type(history).__name__}")
    return {str(key): [float(v) for v in values] for key, values in metrics.items()}


def layers_from_records(records: dict) -> list[LayerInfo]:
    """``LayerInfo`` of each recorded layer (what ``describe_model`` gives for a live model)."""
    return [
        LayerInfo(
            layer["kind"],
            layer["config"],
            tuple(layer["output_shape"]) if layer["output_shape"] is not None else None,
            sum(t.numel() for name, t in layer["tensors"].items() if name in ("weight", "bias")),
        )
        for layer in records["layers"]
    ]


def _conv(cin: int, cout: int, size: int) -> LayerSpec:
    config = {"in": cin, "out": cout, "kernel": (3, 3), "stride": (1, 1), "padding": (1, 1)}
    return LayerSpec("Conv2d", config, (cout, size, size))


def _pool(channels: int, size: int) -> LayerSpec:
    return LayerSpec("MaxPool2d", {"kernel": (2, 2), "stride": (2, 2)}, (channels, size, size))


def _relu(shape: tuple[int, ...]) -> LayerSpec:
    return LayerSpec("ReLU", {}, shape)


# The architectures part 1's tables describe, layer by layer.
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


# --- judges: plain data -> verdicts -----------------------------------------------------------

_SOFTMAX = ("Softmax", "LogSoftmax")
_SOFTMAX_HINT = (
    "nn.CrossEntropyLoss applies the softmax itself, so the network must output raw scores"
)


def convolutions_verdict(layers: Sequence[LayerInfo], spec: Sequence[LayerSpec]) -> Verdict:
    """Are the convolutions the ones the table asks for, in number and settings?"""
    convs = [layer for layer in layers if layer.kind == "Conv2d"]
    expected = [s for s in spec if s.kind == "Conv2d"]
    if len(convs) != len(expected):
        return _fault(f"expected {len(expected)} convolutions, found {len(convs)}")
    for number, (found, wanted) in enumerate(zip(convs, expected, strict=True), 1):
        wrong = [key for key, value in wanted.config.items() if found.config.get(key) != value]
        if wrong:
            return _fault(
                f"convolution {number}: expected {wanted.describe()}, got {found.describe()} "
                f"({', '.join(wrong)} differ)"
            )
    return _ok()


def layer_order_verdict(layers: Sequence[LayerInfo], spec: Sequence[LayerSpec]) -> Verdict:
    """Are the layer types (activations, pooling, flatten...) in the table's order?

    A softmax after the last layer is the classifier's fault (see ``classifier_verdict``).
    """
    body = list(layers)
    while body and body[-1].kind in _SOFTMAX:
        body.pop()
    kinds, expected = [layer.kind for layer in body], [s.kind for s in spec]
    if kinds == expected:
        return _ok()
    kind_spec = [LayerSpec(s.kind, {}, s.output_shape) for s in spec]
    kind_layers = [LayerInfo(layer.kind, {}, layer.output_shape, 0) for layer in body]
    mismatch = compare_layers(kind_layers, kind_spec)
    return _fault(mismatch[0] if mismatch else f"expected the layers {expected}, got {kinds}")


def classifier_verdict(
    layers: Sequence[LayerInfo], spec: Sequence[LayerSpec], forward_error: str | None = None
) -> Verdict:
    """Do the linear layers and the output match the table, with raw scores at the end?"""
    softmax = [layer for layer in layers if layer.kind in _SOFTMAX]
    if softmax:
        return _fault(f"the model ends with {softmax[0].kind}: {_SOFTMAX_HINT}")
    found = [layer for layer in layers if layer.kind == "Linear"]
    expected = [s for s in spec if s.kind == "Linear"]
    if [(x.config.get("in"), x.config.get("out")) for x in found] != [
        (s.config["in"], s.config["out"]) for s in expected
    ]:
        found_text = ", ".join(x.describe() for x in found) or "none"
        wanted = ", ".join(s.describe() for s in expected)
        why = f" ({forward_error})" if forward_error else ""
        return _fault(f"expected the linear layers {wanted}, got {found_text}{why}")
    if not layers or layers[-1].output_shape != spec[-1].output_shape:
        return _fault(
            forward_error or f"the output for one image must have shape {spec[-1].output_shape}"
        )
    return _ok()


_LOSS_HINTS = {
    "BCELoss": "BCELoss is for yes/no (binary) targets; 10 classes need CrossEntropyLoss",
    "BCEWithLogitsLoss": "BCEWithLogitsLoss is for yes/no (binary) targets; 10 classes need CrossEntropyLoss",
    "NLLLoss": "NLLLoss expects log-probabilities; raw scores need CrossEntropyLoss",
    "MSELoss": "MSELoss is for regression; classification needs CrossEntropyLoss",
    "class CrossEntropyLoss": (
        "criterion is the class nn.CrossEntropyLoss itself: call it, nn.CrossEntropyLoss(), "
        "to make the loss function"
    ),
}


def loss_verdict(facts: dict) -> Verdict:
    """Is the loss a cross-entropy loss object?"""
    criterion = facts["criterion"]
    if criterion == "CrossEntropyLoss":
        return _ok()
    return _fault(_LOSS_HINTS.get(criterion, f"expected nn.CrossEntropyLoss(), got {criterion}"))


def optimizer_verdict(facts: dict, model_name: str, learning_rate: float) -> Verdict:
    """Is the optimiser Adam, over the model's parameters, at the lab's learning rate?"""
    optimizer = facts["optimizer"]
    if optimizer.startswith("class "):
        return _fault(
            f"optimizer is the class {optimizer[6:]} itself: create one, "
            f"torch.optim.Adam({model_name}.parameters(), lr=learning_rate)"
        )
    if optimizer != "Adam":
        return _fault(f"expected torch.optim.Adam, got {optimizer}")
    if not facts["covers_model"]:
        return _fault(
            f"the optimiser does not hold {model_name}'s parameters: pass {model_name}.parameters()"
        )
    lr = facts["lr"]
    if lr is None or not math.isclose(lr, learning_rate, rel_tol=1e-6):
        return _fault(
            f"expected the learning rate learning_rate = {learning_rate:g}, got {lr if lr is None else f'{lr:g}'}"
        )
    return _ok()


def _output_value(output: dict, expected: str = "a tensor") -> tuple[object, str]:
    """The recorded value (a tensor or a number), or None and a message naming what came back.

    ``expected`` says what the exercise asks for ("a tensor of shape (N,)", "a number").
    """
    if "error" in output:
        error = output["error"]
        return None, error if error.startswith("not implemented") else f"raised {error}"
    if "tensor" in output:
        return output["tensor"], ""
    if output.get("number"):
        return output["value"], ""
    kind = output.get("type", "value")
    if kind == "NoneType":
        return None, f"returned None, expected {expected}: is the `return` statement missing?"
    if kind.startswith("torch.return_types."):
        return None, (
            f"returned a {kind} (a pair of values and indices), expected {expected}: "
            "take its .indices, or use torch.argmax"
        )
    return None, f"returned a {kind}, expected {expected}"


def classes_verdict(output: dict, scores: torch.Tensor) -> Verdict:
    """Is ``output`` (a recorded return value) the class of each row of ``scores`` (N, C)?

    Any index of a row's maximum is right (ties).
    """
    count = scores.shape[0]
    value, message = _output_value(output, f"a tensor of shape ({count},)")
    if value is None:
        return _fault(message)
    if not isinstance(value, torch.Tensor):
        return _fault(f"returned a {type(value).__name__}, expected a tensor of shape ({count},)")
    if value.dim() == 0:
        return _fault(
            f"returned a single value for {count} rows: argmax without dim= flattens the whole "
            "batch; take the argmax over dim=1 (the classes)"
        )
    if tuple(value.shape) != (count,):
        if tuple(value.shape) == (scores.shape[1],) and count != scores.shape[1]:
            hint = " (argmax over dim=0 gives one value per class, not per image: use dim=1)"
        elif tuple(value.shape) == (count, 1):
            hint = " (keepdim=True leaves a column: drop it, or squeeze(1))"
        else:
            hint = ""
        return _fault(f"expected shape ({count},), got {tuple(value.shape)}{hint}")
    if value.is_floating_point() or value.dtype == torch.bool:
        return _fault(
            f"expected integer classes, got dtype {value.dtype}; argmax returns integer indices"
        )
    best = scores.max(dim=1, keepdim=True).values
    acceptable = scores == best
    chosen = value.long().clamp(0, scores.shape[1] - 1)
    right = acceptable.gather(1, chosen.view(-1, 1)).view(-1) & (value.long() == chosen)
    if not bool(right.all()):
        row = int((~right).nonzero()[0])
        return _fault(
            f"{int((~right).sum())} of {count} rows wrong; e.g. row {row}: got class "
            f"{int(value[row])}, the largest score is at {int(scores[row].argmax())}"
        )
    return _ok()


def fraction_verdict(output: dict, predict: torch.Tensor, labels: torch.Tensor) -> Verdict:
    """Is ``output`` the fraction of ``predict`` equal to ``labels`` (both (N,))?"""
    value, message = _output_value(output, "a number between 0 and 1")
    if value is None:
        return _fault(message)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            hint = ""
            if value.dim() == 2 and value.shape[0] == value.shape[1] == len(labels):
                hint = (
                    f": comparing shapes {(len(labels), 1)} and {(len(labels),)} broadcasts to an "
                    "N x N table; make both tensors (N,)"
                )
            return _fault(
                f"returned a tensor of shape {tuple(value.shape)}, expected one number{hint}"
            )
        value = float(value)
    expected = float((predict == labels).float().mean())
    count = int((predict == labels).sum())
    if not math.isclose(value, expected, abs_tol=1e-6):
        if math.isclose(value, count):
            hint = f" (that is the count of right predictions, {count}: divide by N)"
        elif math.isclose(value, 100 * expected, abs_tol=1e-4):
            hint = " (a percentage: return a fraction between 0 and 1)"
        elif math.isclose(value, 1 - expected, abs_tol=1e-6):
            hint = " (the fraction of wrong predictions: count where they are equal)"
        elif math.isclose(value, _broadcast_mean(predict, labels), abs_tol=1e-6):
            hint = (
                f" (that is the mean of an N x N table: comparing shapes {(len(labels), 1)} and "
                f"{(len(labels),)} broadcasts; make both tensors (N,) before comparing)"
            )
        else:
            hint = ""
        return _fault(f"expected {expected:.4f}, got {value:.4f}{hint}", value=value)
    return _ok(value=value)


def _broadcast_mean(predict: torch.Tensor, labels: torch.Tensor) -> float:
    """What comparing an (N, 1) column with an (N,) row, then averaging, gives."""
    return float((predict.view(-1, 1) == labels.view(1, -1)).float().mean())


def number_verdict(output: dict) -> Verdict:
    """Is the recorded return value a plain number (Python's or NumPy's), not a tensor?"""
    if output.get("number"):
        return _ok()
    if "tensor" in output:
        return _fault("returned a tensor: use .item() to return a Python number")
    return _fault(_output_value(output, "a number")[1])


def history_verdict(history: dict, epochs: int) -> Verdict:
    """One mean loss and accuracy per epoch, fractions for accuracies, the loss going down."""
    losses, accuracies = history.get("loss", []), history.get("accuracy", [])
    if len(losses) != epochs or len(accuracies) != epochs:
        return _fault(
            f"expected {epochs} epochs recorded, got {len(losses)} losses and "
            f"{len(accuracies)} accuracies"
        )
    if not all(math.isfinite(v) for v in [*losses, *accuracies]):
        return _fault("the history holds NaN or infinite values: the training diverged")
    if not all(0.0 <= a <= 1.0 for a in accuracies):
        return _fault("recorded accuracies must be fractions between 0 and 1")
    if not losses[-1] < 0.99 * losses[0]:  # a model that never updates only wobbles
        return _fault(
            f"the mean loss did not go down (first epoch {losses[0]:.4f}, last {losses[-1]:.4f})"
        )
    return _ok(first_loss=losses[0], last_loss=losses[-1])


# --- convolution by hand, sizes, parameter counts, the MLP ------------------------------------
# Expected values come from torch itself (``F.conv2d``, the layers' own parameters), never from
# a formula written here.

_FLOAT_TYPES = ("float", "float16", "float32", "float64")


def _whole_number(output: dict, what: str) -> tuple[int | None, str]:
    """A recorded return value as an ``int``, or the fault that stops it being one."""
    if "error" in output:
        return None, _output_value(output, what)[1]
    if "tensor" in output:
        return None, f"returned a tensor, expected {what} as a Python int: use int(...) or .item()"
    if not output.get("number"):
        return None, f"returned a {output.get('type', 'value')}, expected {what} (a whole number)"
    if output["type"] in _FLOAT_TYPES:
        value = output["value"]
        shown = f"{value:.1f}" if value.is_integer() else f"{value:.6g}"
        return None, (
            f"returned {shown}, a {output['type']}: {what} is a whole number; use "
            "// (floor division) rather than /"
        )
    return int(output["value"]), ""


def conv2d_verdict(
    output: dict,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
    padding: int,
) -> Verdict:
    """Is ``output`` what ``F.conv2d`` gives for one image ``x (C_in, H, W)``, filters
    ``weight (C_out, C_in, kH, kW)``, ``bias (C_out,)``, ``stride`` and zero ``padding``?"""
    value, message = _output_value(output, "a tensor (C_out, H_out, W_out)")
    if value is None:
        return _fault(message)
    if not isinstance(value, torch.Tensor):
        return _fault(f"returned a {type(value).__name__}, expected a tensor")

    def reference(w=weight, b=bias, s=stride, p=padding) -> torch.Tensor:
        b = None if b is None else b.double()
        return torch.nn.functional.conv2d(x[None].double(), w.double(), b, stride=s, padding=p)[0]

    expected = reference()
    shape, found = tuple(expected.shape), tuple(value.shape)
    if found != shape:
        hints = (
            (padding > 0, tuple(reference(p=0).shape), "the padding is missing: surround x with "
             "`padding` rows and columns of zeros on every side first"),
            (stride > 1, tuple(reference(s=1).shape), "the stride is missing: move the window by "
             "`stride` pixels at a time"),
            (True, (1, *shape), "return one image's (C_out, H_out, W_out), without a batch "
             "dimension"),
            (True, (shape[0], x.shape[0], *shape[1:]), "sum over the input channels too: one "
             "output value adds the products over all C_in channels"),
        )  # fmt: skip
        hint = next((text for applies, s, text in hints if applies and found == s), "")
        return _fault(f"expected shape {shape}, got {found}" + (f": {hint}" if hint else ""))
    if not value.is_floating_point():
        return _fault(f"expected floating-point values, got dtype {value.dtype}")
    value = value.double()
    close = torch.isclose(value, expected, rtol=1e-4, atol=1e-4)
    if bool(close.all()):
        return _ok()
    for candidate, hint in (
        (
            reference(w=weight.flip(-2, -1)),
            "the filter is flipped: PyTorch's convolution (a cross-correlation) multiplies "
            "x[i + a, j + b] by weight[a, b] without flipping it",
        ),
        (reference(b=None), "the bias is missing: add bias[c] to every value of channel c"),
    ):
        if torch.allclose(value, candidate, rtol=1e-4, atol=1e-4):
            return _fault(hint)
    where = tuple(int(i) for i in (~close).nonzero()[0])
    return _fault(
        f"{int((~close).sum())} of {close.numel()} values wrong; e.g. at [c, i, j] = "
        f"{list(where)}: expected {float(expected[where]):.4f}, got {float(value[where]):.4f}"
    )


def _positions(size: int, kernel: int, stride: int, padding: int) -> int:
    """How many positions a window finds along one axis, as torch's convolution measures it."""
    line = torch.zeros(1, 1, 1, size)
    window = torch.zeros(1, 1, 1, kernel)
    return int(
        torch.nn.functional.conv2d(line, window, stride=(1, stride), padding=(0, padding)).shape[-1]
    )


def output_size_verdict(output: dict, size: int, kernel: int, stride: int, padding: int) -> Verdict:
    """Is ``output`` the height (or width) after a window of ``kernel`` slides over ``size``
    pixels padded with ``padding`` zeros on each side, ``stride`` pixels at a time?"""
    value, message = _whole_number(output, "the output size")
    if value is None:
        return _fault(message)
    expected = _positions(size, kernel, stride, padding)
    if value == expected:
        return _ok()
    hints = (
        (padding > 0 and value == _positions(size + padding, kernel, stride, 0),
         "padding adds `padding` pixels on each side, so 2 × padding in all"),
        (padding > 0 and value == _positions(size, kernel, stride, 0), "the padding is missing"),
        (stride > 1 and value == _positions(size, kernel, 1, padding),
         "the stride is missing: the window moves `stride` pixels at a time"),
        (value == expected - 1, "one short: count the window's first position too (the + 1)"),
    )  # fmt: skip
    hint = next((text for applies, text in hints if applies), "")
    where = f"size {size}, kernel {kernel}, stride {stride}, padding {padding}"
    return _fault(f"for {where}: expected {expected}, got {value}" + (f" ({hint})" if hint else ""))


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_count_verdict(output: dict, module: nn.Module) -> Verdict:
    """Is ``output`` the number of trainable parameters of ``module``, weights and biases?"""
    value, message = _whole_number(output, "a parameter count")
    if value is None:
        return _fault(message)
    expected = _trainable(module)
    if value == expected:
        return _ok(f"{expected:,} parameters")
    weights = sum(p.numel() for name, p in module.named_parameters() if name.endswith("weight"))
    hint = ""
    if value == weights:
        hint = " (the biases are missing: each filter or output unit has one bias too)"
    elif isinstance(module, nn.Conv2d) and value == _trainable(
        nn.Conv2d(1, module.out_channels, module.kernel_size)
    ):
        hint = " (each filter spans all in_channels input channels, with a kernel on each)"
    return _fault(f"expected {expected:,}, got {value:,}{hint}")


def parametrised_layers(spec: Sequence[LayerSpec]) -> nn.ModuleList:
    """The layers of ``spec`` that hold parameters (convolutions, linear layers), freshly made."""
    layers = nn.ModuleList()
    for layer in spec:
        if layer.kind == "Conv2d":
            config = layer.config
            layers.append(nn.Conv2d(config["in"], config["out"], config["kernel"]))
        elif layer.kind == "Linear":
            layers.append(nn.Linear(layer.config["in"], layer.config["out"]))
    return layers


def mlp_verdict(
    layers: Sequence[LayerInfo], output_shape: tuple[int, ...], forward_error: str | None = None
) -> Verdict:
    """Is the model a multi-layer perceptron: flatten, fully connected layers with an activation
    between them, raw scores of ``output_shape`` out?"""
    kinds = [layer.kind for layer in layers]
    spatial = [kind for kind in kinds if kind in ("Conv2d", "MaxPool2d", "AvgPool2d")]
    if spatial:
        return _fault(
            f"the model holds a {spatial[0]}: an MLP flattens the image and uses nn.Linear only"
        )
    if any(kind in _SOFTMAX for kind in kinds):
        return _fault(f"the model ends with a softmax: {_SOFTMAX_HINT}")
    linear = [index for index, kind in enumerate(kinds) if kind == "Linear"]
    if len(linear) < 2:
        return _fault(
            f"expected at least two nn.Linear layers (a hidden layer, then the classes), found "
            f"{len(linear)}"
        )
    if kinds[0] != "Flatten":
        return _fault("start with nn.Flatten(): each image (1, 28, 28) becomes 784 values")
    for first, second in zip(linear, linear[1:], strict=False):
        if second == first + 1:
            return _fault(
                f"layers {first} and {second} are linear with nothing between them: without an "
                "activation such as nn.ReLU() they compute one linear function"
            )
    if forward_error or layers[-1].output_shape != output_shape:
        return _fault(forward_error or f"the output for one image must have shape {output_shape}")
    return _ok()


BUDGET_TOLERANCE = 0.1  # how far a comparison model's parameter count may stray, as a fraction


def budget_verdict(
    layers: Sequence[LayerInfo], budget: int, tolerance: float = BUDGET_TOLERANCE
) -> Verdict:
    """Does the model hold about ``budget`` parameters (within ``tolerance``, a fraction)?"""
    total = sum(layer.parameters for layer in layers)
    low, high = math.ceil(budget * (1 - tolerance)), math.floor(budget * (1 + tolerance))
    if low <= total <= high:
        return _ok(f"{total:,} parameters, the CNN has {budget:,}", parameters=total)
    return _fault(
        f"{total:,} parameters; the comparison is fair only with about the CNN's {budget:,} "
        f"(between {low:,} and {high:,}): change the width of the hidden layer",
        parameters=total,
    )


# --- part 2: a better network, and functions that look inside one -----------------------------


def _block(cin: int, cout: int, size: int) -> tuple[LayerSpec, ...]:
    """A convolution followed by batch normalisation and a ReLU."""
    shape = (cout, size, size)
    return (
        _conv(cin, cout, size),
        LayerSpec("BatchNorm2d", {"num_features": cout}, shape),
        _relu(shape),
    )


# Part 2's table: part 1's CIFAR-10 network with batch normalisation after each convolution.
BETTER_LAYERS = (
    *_block(3, 32, 32),
    *_block(32, 32, 32),
    _pool(32, 16),
    *_block(32, 32, 16),
    _pool(32, 8),
    LayerSpec("Flatten", {}, (2048,)),
    LayerSpec("Linear", {"in": 2048, "out": 256}, (256,)),
    _relu((256,)),
    LayerSpec("Linear", {"in": 256, "out": 10}, (10,)),
)

AUGMENT_PADDING = 4  # the largest shift a crop of the padded image gives, in pixels


def model_call_record(function: Callable, model: nn.Module, args: Sequence, repeat: bool = False):
    """Call ``function(model, *args)`` as a student's code is called, and record plain data.

    The arguments are passed as they are, not copied, so that what the function does to them
    shows: ``changed`` lists the (0-based) arguments whose values it changed, ``requires_grad``
    says whether the result still holds a gradient graph and, with ``repeat``, ``repeat`` is
    the result of a second call on the same objects (gradients left in ``images.grad`` pile up).
    """
    if not callable(function):
        raise TypeError(f"expected a function, got {_type_name(function)}")
    kept = [arg.detach().clone() if isinstance(arg, torch.Tensor) else None for arg in args]
    try:
        output = function(model, *args)
    except Exception as exc:  # the student's function may fail in any way; record it
        return {"output": failure(exc)}
    entry = {
        "output": plain(output),
        "requires_grad": bool(isinstance(output, torch.Tensor) and output.requires_grad),
        "changed": [
            index
            for index, (arg, copy) in enumerate(zip(args, kept, strict=True))
            if copy is not None and not torch.equal(arg.detach(), copy)
        ],
    }
    if repeat:
        try:
            entry["repeat"] = plain(function(model, *args))
        except Exception as exc:  # noqa: BLE001 - recorded, like the first call's
            entry["repeat"] = failure(exc)
    return entry


def tensor_output(
    entry: dict, shape: tuple[int, ...], what: str
) -> tuple[torch.Tensor | None, Verdict]:
    """The recorded result as a float tensor of ``shape``, or a fault saying why it is not."""
    output = entry.get("output", entry)
    value, message = _output_value(output)
    if value is None:
        return None, _fault(message)
    if not isinstance(value, torch.Tensor):
        return None, _fault(f"returned a {type(value).__name__}, expected {what} of shape {shape}")
    if tuple(value.shape) != tuple(shape):
        return None, _fault(f"expected {what} of shape {tuple(shape)}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        return None, _fault(f"expected floating-point values, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        return None, _fault(f"{what} holds NaN or infinite values")
    return value.float(), _ok()


def _close(value: torch.Tensor, expected: torch.Tensor, tolerance: float, scale_free: bool) -> bool:
    if scale_free:  # compare each map divided by its largest value
        value, expected = _per_item_unit(value), _per_item_unit(expected)
    bound = tolerance * max(float(expected.abs().max()), 1e-12)
    return bool((value - expected).abs().max() <= bound)


def _per_item_unit(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.reshape(len(maps), -1)
    top = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    return (flat / top).reshape(maps.shape)


def map_verdict(
    entry: dict,
    expected: torch.Tensor,
    what: str,
    variants: Sequence[tuple[str, torch.Tensor | Callable[[], torch.Tensor]]] = (),
    *,
    scale_free: bool = False,
    tolerance: float = 1e-3,
) -> Verdict:
    """Is the recorded result ``expected`` (each map up to a positive factor with ``scale_free``)?

    ``variants`` pairs a message with what a known mistake gives (or a function computing it,
    called only when the result is wrong): the first one the result matches names the fault.
    """
    value, verdict = tensor_output(entry, tuple(expected.shape), what)
    if value is None:
        return verdict
    if _close(value, expected, tolerance, scale_free):
        return _ok()
    for message, variant in variants:
        variant = variant() if callable(variant) else variant
        if variant.shape == value.shape and _close(value, variant, tolerance, scale_free):
            return _fault(message)
    if scale_free and bool((value < 0).any()) and not bool((expected < 0).any()):
        return _fault(f"{what} has negative values: keep only the positive part (a ReLU)")
    gap = float((value - expected).abs().max())
    return _fault(
        f"{what} differs from the expected one (largest difference {gap:.3g}, while the "
        f"expected values reach {float(expected.abs().max()):.3g})",
        difference=gap,
    )


def repeat_verdict(entry: dict, what: str) -> Verdict:
    """Did a second call on the same tensors give the same result as the first?"""
    if "repeat" not in entry:
        return _fault(_output_value(entry.get("output", {}))[1] or "the function was not called")
    first, _ = _output_value(entry["output"])
    second, message = _output_value(entry["repeat"])
    if first is None or second is None:
        return _fault(message or _output_value(entry["output"])[1])
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        return _fault(f"expected {what} as a tensor")
    if first.shape == second.shape and torch.allclose(first, second, rtol=1e-4, atol=1e-7):
        return _ok()
    return _fault(
        f"a second call on the same images gave a different {what}: gradients pile up in "
        "images.grad from one call to the next; work on a copy "
        "(x = images.clone().requires_grad_()) or zero the gradient first"
    )


def unchanged_verdict(entry: dict, names: Sequence[str]) -> Verdict:
    """Did the function leave its tensor arguments as it found them?"""
    if "changed" not in entry:
        return _fault(_output_value(entry.get("output", {}))[1])
    changed = [names[index] for index in entry["changed"] if index < len(names)]
    if changed:
        return _fault(
            f"the function changed its argument {changed[0]} in place: work on a copy "
            f"({changed[0]}.clone()) so that the caller's tensor stays as it was"
        )
    return _ok()


def detached_verdict(entry: dict) -> Verdict:
    """Does the function return plain values, without the gradient graph that made them?"""
    if "requires_grad" not in entry:
        return _fault(_output_value(entry.get("output", {}))[1])
    if entry["requires_grad"]:
        return _fault(
            "the result still requires grad (it carries the graph that computed it): return "
            "result.detach(), or compute it under torch.no_grad()"
        )
    return _ok()


def adversarial_bounds_verdict(entry: dict, images: torch.Tensor, epsilon: float) -> Verdict:
    """Are the adversarial images valid images, each pixel at most ``epsilon`` from the original?"""
    value, verdict = tensor_output(entry, tuple(images.shape), "the adversarial images")
    if value is None:
        return verdict
    low, high = float(value.min()), float(value.max())
    if low < -1e-6 or high > 1 + 1e-6:
        return _fault(
            f"pixel values run from {low:.3f} to {high:.3f}: clamp the images to [0, 1] "
            "(torch.clamp(x, 0, 1)), the range of real images"
        )
    step = float((value - images).abs().max())
    if step > epsilon + 1e-5:
        return _fault(f"a pixel moved by {step:.4f}, more than epsilon = {epsilon:g}")
    if step < 1e-6 and epsilon > 0:
        return _fault("the images did not change: add epsilon times the sign of the gradient")
    return _ok(largest_step=step)


def _augment_candidates(image: torch.Tensor):
    """Every (flipped, dy, dx) a horizontal flip and a crop of the zero-padded image can give."""
    pad = AUGMENT_PADDING
    height, width = image.shape[-2:]
    for flipped in (False, True):
        source = image.flip(-1) if flipped else image
        padded = torch.nn.functional.pad(source, (pad, pad, pad, pad))
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                crop = padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width]
                yield (flipped, dy, dx), crop


def augmentation_outcome(output: dict, image: torch.Tensor) -> tuple[tuple | None, str]:
    """Which flip and shift turned ``image (C, H, W)`` into the recorded output, or why none did."""
    value, message = _output_value(output)
    if value is None:
        return None, message
    if not isinstance(value, torch.Tensor):
        return None, f"returned a {type(value).__name__}, expected an image tensor"
    if tuple(value.shape) != tuple(image.shape):
        return None, (
            f"an image of shape {tuple(image.shape)} came back with shape {tuple(value.shape)}: "
            "crop back to the original size (RandomCrop(32, padding=4))"
        )
    for outcome, candidate in _augment_candidates(image):
        if torch.allclose(value.float(), candidate, atol=1e-5):
            return outcome, ""
    return None, (
        "an image came back changed in a way that is neither a horizontal flip nor a shift of at "
        f"most {AUGMENT_PADDING} pixels with zero padding (colours, scale or rotation changed?)"
    )


def augmentation_verdict(outputs: Sequence[dict], images: Sequence[torch.Tensor]) -> Verdict:
    """Is each output a horizontally flipped and/or shifted (zero-padded) copy of its input?"""
    for number, (output, image) in enumerate(zip(outputs, images, strict=True), 1):
        outcome, message = augmentation_outcome(output, image)
        if outcome is None:
            return _fault(f"call {number}: {message}")
    return _ok()


def augmentation_variety_verdict(
    outputs: Sequence[dict], images: Sequence[torch.Tensor]
) -> Verdict:
    """Over many calls, are images flipped and not flipped, and shifted in several ways?"""
    outcomes = [augmentation_outcome(o, i)[0] for o, i in zip(outputs, images, strict=True)]
    if any(outcome is None for outcome in outcomes):
        return _fault("some images were not flipped or shifted copies (see the other test)")
    flips = {flipped for flipped, _, _ in outcomes}
    shifts = {(dy, dx) for _, dy, dx in outcomes}
    if flips != {False, True}:
        state = "flipped" if True in flips else "left unflipped"
        return _fault(
            f"all {len(outcomes)} images were {state}: flip at random, half of the time "
            "(RandomHorizontalFlip())"
        )
    if len(shifts) < 4:
        return _fault(
            f"only {len(shifts)} different shifts in {len(outcomes)} calls: crop at a random "
            f"place of the image padded by {AUGMENT_PADDING} pixels (RandomCrop(32, padding=4))"
        )
    return _ok(shifts=len(shifts))


def same_weights_verdict(loaded: dict, trained: dict) -> Verdict:
    """Do two recorded models hold the same layers and the same learnt weights and biases?

    Running statistics are left out: any later forward pass in training mode moves the trained
    model's, after it was saved. A model the grader refused to evaluate (``refused``) holds
    no values to compare: the refusal is the fault.
    """
    for records in (loaded, trained):
        if records.get("refused"):
            return _fault(str(records["refused"]))
    first, second = loaded["layers"], trained["layers"]
    if [layer["kind"] for layer in first] != [layer["kind"] for layer in second]:
        return _fault("the loaded model does not have the trained model's layers")
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        learnt = {name: t for name, t in b["tensors"].items() if name in ("weight", "bias")}
        for name, tensor in learnt.items():
            other = a["tensors"].get(name)
            if other is None or other.shape != tensor.shape or not torch.equal(other, tensor):
                return _fault(
                    f"layer {index} ({a['kind']}): {name} differs from the trained model's: "
                    "load the saved state dict into the new model (load_state_dict)"
                )
    return _ok()


def positions_verdict(entry: dict, expected: torch.Tensor) -> Verdict:
    """Are the recorded rows (image, row, column) the expected ones, in the same order?"""
    output = entry.get("output", entry)
    value, message = _output_value(output)
    if value is None:
        return _fault(message)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(expected.shape):
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        return _fault(f"expected a tensor of shape {tuple(expected.shape)}, got {found}")
    if value.is_floating_point():
        return _fault(f"expected integer indices, got dtype {value.dtype}")
    if torch.equal(value.long(), expected):
        return _ok()
    if set(value[:, 0].tolist()) == set(expected[:, 0].tolist()):
        if torch.equal(value[:, 0].long(), expected[:, 0]):
            return _fault("the right images, but not the right positions in them")
        return _fault("the right images, but not in decreasing order of activation")
    rows = [int(i) for i in value[:, 0]]
    return _fault(f"expected the images {expected[:, 0].tolist()}, got {rows}")
