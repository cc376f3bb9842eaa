"""How answers are recorded and judged: one set of rules for visible checks and hidden tests.

Recorders turn a student's objects into plain data (tensors, numbers, strings) that can be saved
and read back with ``torch.load(..., weights_only=True)``; judges compare such records with what
an exercise asks and return a ``Verdict`` whose message names the fault. The visible checks run
them on worked examples in the student's kernel; the grader runs the same judges on its own
inputs, in its own process.
"""

from __future__ import annotations

from .layers import (
    LayerInfo,
    LayerSpec,
    block_spec,
    compare_layers,
    conv_spec,
    describe_layer,
    layer_config,
    layers_from_records,
    pool_spec,
    relu_spec,
    shape_text,
)
from .records import (
    call_record,
    failure,
    history_record,
    model_call_record,
    optimizer_record,
    plain,
    tensor_output,
)
from .tracing import (
    describe_model,
    layer_records,
)
from .verdict import (
    Verdict,
    fault,
    ok,
)
from .verdicts import (
    FLOAT_TYPES,
    SOFTMAX,
    SOFTMAX_HINT,
    classes_verdict,
    classifier_verdict,
    close,
    convolutions_verdict,
    detached_verdict,
    fraction_verdict,
    history_verdict,
    layer_order_verdict,
    loss_verdict,
    number_verdict,
    optimizer_verdict,
    output_value,
    per_item_unit,
    repeat_verdict,
    unchanged_verdict,
    whole_number,
)

__all__ = [
    "FLOAT_TYPES",
    "LayerInfo",
    "LayerSpec",
    "SOFTMAX",
    "SOFTMAX_HINT",
    "Verdict",
    "block_spec",
    "call_record",
    "classes_verdict",
    "classifier_verdict",
    "close",
    "compare_layers",
    "conv_spec",
    "convolutions_verdict",
    "describe_layer",
    "describe_model",
    "detached_verdict",
    "failure",
    "fault",
    "fraction_verdict",
    "history_record",
    "history_verdict",
    "layer_config",
    "layer_order_verdict",
    "layer_records",
    "layers_from_records",
    "loss_verdict",
    "model_call_record",
    "number_verdict",
    "ok",
    "optimizer_record",
    "optimizer_verdict",
    "output_value",
    "per_item_unit",
    "plain",
    "pool_spec",
    "relu_spec",
    "repeat_verdict",
    "shape_text",
    "tensor_output",
    "unchanged_verdict",
    "whole_number",
]
