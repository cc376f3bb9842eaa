"""Judge one grading record: the hidden tests, in a process (and sandbox) of their own.

    python -m cnn_course_instructor.judge REQUEST.json RECORD.pt   (or - : the record on stdin)

The worker starts it with the kernel: it loads torch, the lab's tests and the grading images
while the student's notebook runs, then reads the record. The record is the only input that
comes from student code. It is read with
``torch.load(weights_only=True)``, which runs no code; a model whose rebuilt compute or memory
would exceed the grader's budget is refused, with a message, before any test evaluates it. The
test results go to standard output as JSON. The worker runs this under the limits and, unless
grading runs unsandboxed, in a sandbox that holds the Python install, the course's grading
content and the data, read-only, and nothing else.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

__all__ = ["judge_record", "main"]


def judge_record(request: dict, record_bytes: bytes) -> list[dict]:
    """The test results (as dicts) of one record, or raises ValueError when it is unusable."""
    return _prepared(request)(record_bytes)


def _prepared(request: dict) -> Callable[[bytes], list[dict]]:
    """Load torch, the lab's tests and their images now; judge a record when called."""
    import torch

    from .course import Course
    from .rebuild import over_budget
    from .registry import Context

    content = Course(Path(request["course"])).content(request["lab"])
    context = Context(
        content.lab, content.grading_inputs(request["seed"]), Path(request["data_root"])
    )
    for dataset in sorted({subset.dataset for subset in content.lab.subsets.values()}):
        context.grading_set(dataset)

    def judge(record_bytes: bytes) -> list[dict]:
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
        return [asdict(test) for test in content.tests.run(record, context)]

    return judge


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(
            "usage: python -m cnn_course_instructor.judge REQUEST.json RECORD.pt\n"
            "       (RECORD.pt as -: the record on standard input, read once the tests are loaded)",
            file=sys.stderr,
        )
        return 2
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    judge = _prepared(request)
    record = sys.stdin.buffer.read() if argv[1] == "-" else Path(argv[1]).read_bytes()
    try:
        answer = {"tests": judge(record)}
    except ValueError as exc:
        answer = {"unusable": str(exc)}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the answer is out: skip tearing torch down (0.6 s), which no one awaits
