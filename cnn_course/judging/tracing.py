"""Follow a student's model through one input and describe its layers as plain records: by
torch.fx, by module hooks, or by one real run (a forward torch.fx cannot follow, layers of the
student's own classes)."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerInfo, describe_layer, layer_config, pair, shape_text

__all__ = [
    "describe_model",
    "layer_records",
]


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
    return _Step(type(module).__name__, layer_config(module), module, shape)


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
        f"at layer {index} ({layer}) whose input was {shape_text(shape)}"
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
        layer = describe_layer(type(failing).__name__, layer_config(failing)) if order else ""
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
        kernel = pair(_argument(node, 1, "kernel_size"))
        stride = _argument(node, 2, "stride")
        stride = kernel if stride in (None, [], ()) else pair(stride)
        padding = _argument(node, 3, "padding", 0)
        if pair(padding) != (0, 0):
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
                        describe_layer(
                            type(modules[node.target]).__name__, layer_config(modules[node.target])
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
            last[:] = [describe_layer(type(module).__name__, layer_config(module)), args]
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
        if hasattr(model, "missing_keys") and hasattr(model, "unexpected_keys"):
            raise TypeError(
                "expected a torch.nn.Module, got what load_state_dict returns (the missing and "
                "unexpected keys it found), not a network: load_state_dict fills the model it "
                "is called on; keep that model (model.load_state_dict(state), then use model)"
            )
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
