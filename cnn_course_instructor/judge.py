"""Judge one grading record: the hidden tests, in a process (and sandbox) of their own.

    python -m cnn_course_instructor.judge REQUEST.json RECORD.pt

The record is the only input that comes from student code. It is read with
``torch.load(weights_only=True)``, which runs no code; a model whose rebuilt compute or memory
would exceed the grader's budget is refused, with a message, before any test evaluates it. The
test results go to standard output as JSON. The worker runs this under the limits and, unless
grading runs unsandboxed, in a sandbox that holds the Python install, the course's grading
content and the data, read-only, and nothing else.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import asdict
from pathlib import Path

__all__ = ["judge_record", "main"]


def judge_record(request: dict, record_bytes: bytes) -> list[dict]:
    """The test results (as dicts) of one record, or raises ValueError when it is unusable."""
    import torch

    from .course import Course
    from .rebuild import over_budget
    from .registry import Context

    content = Course(Path(request["course"])).content(request["lab"])
    try:
        record = torch.load(io.BytesIO(record_bytes), weights_only=True)
    except Exception as exc:  # a record the student's code tampered with is unusable
        raise ValueError(f"the grading record is unreadable: {str(exc)[:300]}") from None
    if not isinstance(record, dict):
        raise ValueError(f"the grading record is unreadable: a {type(record).__name__}")
    for step in content.probe_plan:
        entry = record.get(step["key"])
        if step["kind"] == "model" and isinstance(entry, dict) and "layers" in entry:
            refused = over_budget(entry, tuple(step["input_shape"]))
            if refused:
                record[step["key"]] = {"error": refused}
    inputs = content.grading_inputs(request["seed"])
    context = Context(content.lab, inputs, Path(request["data_root"]))
    return [asdict(test) for test in content.tests.run(record, context)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(
            "usage: python -m cnn_course_instructor.judge REQUEST.json RECORD.pt", file=sys.stderr
        )
        return 2
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        tests = judge_record(request, Path(argv[1]).read_bytes())
    except ValueError as exc:
        print(json.dumps({"unusable": str(exc)}))
        return 0
    print(json.dumps({"tests": tests}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
