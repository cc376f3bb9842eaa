"""Hidden tests of the sample lab: `double` on inputs the grader draws."""

from __future__ import annotations

import torch

from cnn_course.judging import Verdict
from cnn_course_instructor.contract import Context, LabContract, Registry, calls, need

DOUBLE = calls("double", inputs="numbers")

tests = Registry()


def grading_inputs(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"numbers": [(torch.randn(5, generator=generator),), (torch.arange(3),)]}


def _doubled(record: dict, context: Context, index: int) -> Verdict:
    output = need(record, DOUBLE)[index]
    (numbers,) = context.inputs["numbers"][index]
    if "tensor" not in output:
        return Verdict(
            False, output.get("error") or f"returned a {output.get('type')}, not a tensor"
        )
    if not torch.equal(output["tensor"], numbers * 2):
        return Verdict(False, f"expected {(numbers * 2).tolist()}, got {output['tensor'].tolist()}")
    return Verdict(True)


@tests.case("q1_double", points=1, name="random numbers")
def random_numbers(record: dict, context: Context) -> Verdict:
    return _doubled(record, context, 0)


@tests.case("q1_double", points=1, name="whole numbers")
def whole_numbers(record: dict, context: Context) -> Verdict:
    return _doubled(record, context, 1)


CONTRACT = LabContract(tests=tests, probe=(DOUBLE,), inputs=grading_inputs)
