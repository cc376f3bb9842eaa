"""Judge one grading record: the hidden tests, in a process (and sandbox) of their own.

    python -m cnn_course_instructor.grading.judge REQUEST.json RECORD.pt   (or - : the record on stdin)

The worker starts it with the kernel: it loads torch, the lab's tests and the grading images
while the student's notebook runs, then reads the record. The record is the only input that
comes from student code. It is read with
``torch.load(weights_only=True)``, which runs no code; a model whose layers' shapes cannot be
computed at the batch sizes the judge runs it at, or whose rebuilt compute or memory would
exceed the grader's budget, is refused, with a message, before any test evaluates it. Judging
one record may use ``JUDGE_CPU_SECONDS`` of CPU time: past them the answer says the record was
unusable, and why. The test results go to standard output as JSON. The worker runs this under
the limits and, unless grading runs unsandboxed, in a sandbox that holds the Python install,
the course's grading content and the data, read-only, and nothing else.

    python -m cnn_course_instructor.grading.judge REQUEST.json --serve FD

serves a whole run instead (the local scheduler starts one per lab): it loads torch, the tests
and the images once, then accepts connections on the listening Unix socket ``FD`` it inherits,
and for each forks a process of its own that reads one record from the connection until its
writer shuts down, and answers there. Records are judged exactly as above, each in its own
process, so one record's judging cannot change another's; what a judge's first 2 s loaded is
shared, copy-on-write. The server and its processes cannot be traced or have their memory read
by one another (not dumpable). Whoever connects falls back on a judge of its own when the server
is gone or a judging process ends without an answer.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import io
import json
import math
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the lab's facts: loaded by _prepared only
    from cnn_course.labs import Lab

__all__ = ["JUDGE_CPU_SECONDS", "judge_record", "judged_batch_sizes", "main"]

# CPU seconds the hidden tests may spend on one record, well under the worker's 900 s for a
# whole judge. On one torch thread (as a local run judges), a right record of part 1 takes
# 1.3 s, of part 2 0.9 s, and a record whose two models part 1 retrains (untrained models)
# 8.9-9.6 s; on two threads, 1.5, 1.0 and 11.7 CPU-seconds (benchmarks/bench_judge.py on a
# 2-core machine): the budget leaves a margin of 20 to 25 over the costliest judging.
JUDGE_CPU_SECONDS = 240
# Seconds of CPU past the budget before the kernel kills a judge stuck in one long operation
# (SIGXCPU is answered between Python bytecodes; the longest operation the layer budget allows
# takes a few seconds).
JUDGE_CPU_GRACE = 20


def judge_record(request: dict, record_bytes: bytes) -> list[dict]:
    """The test results (as dicts) of one record, or raises ValueError when it is unusable."""
    return _prepared(request)(record_bytes)


def judged_batch_sizes(lab: Lab) -> tuple[int, ...]:
    """The batch sizes the judge runs a student's model at: one image, its predictions'
    (``training.PREDICT_BATCH``) and each of the lab's training schedules' (a model below its
    accuracy threshold is retrained with the lab's schedule)."""
    from cnn_course.training import PREDICT_BATCH

    schedules = {schedule.batch_size for schedule in lab.training.values()}
    return tuple(sorted({1, PREDICT_BATCH, *schedules}))


def _within_budget(record: dict, steps, batch_sizes: tuple[int, ...]) -> None:
    """Put, in ``record``, the refusal of each model (a step of the lab's contract)
    ``over_budget`` refuses in place of its layers' values (``refused_records``): its layer
    table is judged, the model never runs."""
    from cnn_course.settings import ProbeKind

    from .rebuild import over_budget, refused_records

    for step in steps:
        entry = record.get(step.key)
        if step.kind is ProbeKind.MODEL and isinstance(entry, dict) and "layers" in entry:
            refused = over_budget(entry, step.input_shape, batch_sizes)
            if refused:
                record[step.key] = refused_records(entry, refused)


def _prepared(request: dict) -> Callable[[bytes], list[dict]]:
    """Load torch, the lab's tests and their images now; judge a record when called."""
    import torch

    from ..course import Course
    from .registry import Context

    content = Course(Path(request["course"])).content(request["lab"])
    batch_sizes = judged_batch_sizes(content.lab)
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
        _within_budget(record, content.contract.probe, batch_sizes)
        return [asdict(test) for test in content.tests.run(record, context)]

    return judge


class _CpuSpent(BaseException):
    """The judging of a record used its CPU budget (SIGXCPU). A BaseException: no test's
    ``except Exception`` catches it and judges on."""


def _cpu_spent(seconds: int, signum: int, frame: object) -> None:
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # once: the answer is written next
    raise _CpuSpent(
        f"the grader's tests used more than {seconds} s of CPU time on this record and were "
        "stopped: a model this large or slow cannot be evaluated (or retrained) by the grader; "
        "make its layers smaller (fewer channels, smaller images after pooling, smaller linear "
        "layers) so that it trains in the lab's time"
    )


def _limit_cpu(seconds: int) -> None:
    """Let this process use ``seconds`` more of CPU time from now (what it already used, such as
    loading torch, is not counted): past them SIGXCPU stops the judging (``_CpuSpent``), and
    ``JUDGE_CPU_GRACE`` seconds later the kernel kills a process that did not stop."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + seconds
    hard = soft + JUDGE_CPU_GRACE
    _, ceiling = resource.getrlimit(resource.RLIMIT_CPU)
    if ceiling != resource.RLIM_INFINITY and ceiling < hard:  # a limit can only be lowered
        hard, soft = ceiling, min(soft, max(ceiling - JUDGE_CPU_GRACE, 1))
    signal.signal(signal.SIGXCPU, functools.partial(_cpu_spent, seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _answer(judge: Callable[[bytes], list[dict]], record: bytes) -> bytes:
    """The JSON line that answers one record: its test results, or why it is unusable."""
    try:
        answer = {"tests": judge(record)}
    except ValueError as exc:
        answer = {"unusable": str(exc)}
    except _CpuSpent as spent:
        answer = {"unusable": str(spent)}
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # judged: the answer is sent whole
    return json.dumps(answer).encode() + b"\n"


def serve(request: dict, listener: socket.socket) -> None:
    """Judge each record sent on a connection to ``listener`` in a process forked for it, once
    torch, the tests and the images are loaded; runs until it is killed (see the module)."""
    judge = _prepared(request)
    _not_dumpable()
    gc.freeze()  # what is loaded stays shared: no collection in a judging process copies it
    with open(os.devnull, "wb") as devnull:  # no one reads what a judging process prints
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
    timeout = int(request["timeout"])  # seconds a judging process has once it has the record
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps each judging process
    while True:
        connection, _ = listener.accept()
        if os.fork() == 0:
            try:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                with connection, connection.makefile("rb") as stream:
                    record = stream.read()  # until the worker's kernel has ended
                    _limit_cpu(JUDGE_CPU_SECONDS)
                    signal.alarm(timeout)  # last resort, wall clock: SIGALRM ends the process
                    connection.sendall(_answer(judge, record))
            finally:
                os._exit(0)
        connection.close()


def _not_dumpable() -> None:
    """PR_SET_DUMPABLE 0, kept by forked processes: no process of the same user can trace this
    one or read its memory or descriptors in /proc."""
    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[1] == "--serve":
        request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        serve(request, socket.socket(fileno=int(argv[2])))
        return 0
    if len(argv) != 2:
        print(
            "usage: python -m cnn_course_instructor.grading.judge REQUEST.json RECORD.pt\n"
            "       (RECORD.pt as -: the record on standard input, read once the tests are loaded)\n"
            "       python -m cnn_course_instructor.grading.judge REQUEST.json --serve FD\n"
            "       (FD: a listening Unix socket; each connection sends a record and gets the answer)",
            file=sys.stderr,
        )
        return 2
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    judge = _prepared(request)
    record = sys.stdin.buffer.read() if argv[1] == "-" else Path(argv[1]).read_bytes()
    _limit_cpu(JUDGE_CPU_SECONDS)  # loading torch and the tests is not counted
    sys.stdout.buffer.write(_answer(judge, record))
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the answer is out: skip tearing torch down (0.6 s), which no one awaits
