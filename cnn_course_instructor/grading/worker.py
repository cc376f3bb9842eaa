"""Grade one submission in a process of its own: run it with the probe, then judge the record.

    python -m cnn_course_instructor.grading.worker JOB.json

The student's code runs in a Jupyter kernel in a sandbox (see ``sandbox``); the probe leaves a
plain record there, which this worker reads as a regular file of bounded size before the sandbox
ends. The hidden tests run on that record in a process of their own (``judge``), with its own
limits and sandbox, never in the student's kernel: a process forked for it by the run's judge
server for the lab, or a judge started for it alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

from cnn_course import settings
from cnn_course.settings import ProbeKind

from .. import TOOLS, sandbox
from ..course import LabContent
from .budgets import INTERRUPT_GRACE, KernelStartFailed
from .job import GradingRun, Job, course_of
from .judge import JUDGE_CPU_SECONDS
from .kernel import EXECUTED_LIMIT, OUTPUT_LIMIT, run_notebook, write_bounded
from .locked import answers_untouched, first_line, restore_locked_cells
from .results import Status, SubmissionResult, TestResult

__all__ = [
    "JUDGE_LIMITS",
    "JUDGE_TIMEOUT",
    "NOTEBOOK_BUDGET",
    "RECORD_LIMIT",
    "START_TRIES",
    "JudgeFailure",
    "cell_names",
    "grading_plan",
    "judge_started",
    "main",
    "probe_cell",
    "unix_address",
    "watch_cells",
]

# Seconds of their own time (wall time not spent waiting for a CPU: see execute.Progress) the
# cells of one submission may use together; the cells left then do not run.
NOTEBOOK_BUDGET = 900
JUDGE_TIMEOUT = 900  # the grader's safety net: a judge that has not answered is the grader's fault
RECORD_LIMIT = 64_000_000  # bytes of the grading record (the lab's is about 2 MB)
# The judges run the grader's code: the OOM killer takes student code before them.
JUDGE_LIMITS = sandbox.Limits(memory_mb=8192, cpu_seconds=1800, processes=256, oom_score_adj=0)
GRADER_RUN = sandbox.VIEW  # inside a sandbox: the grader's files, read-only
START_TRIES = 2  # a kernel the grader could not start is started once more before the row fails
PROBE_NAME = "the grader's reading of your answers, after your last cell"
SETUP_SOURCE_LIMIT = 20_000  # characters of a first cell read for its imports (the labs': 200)


def data_view(run: GradingRun) -> tuple[tuple[sandbox.Mount, ...], dict[str, str]]:
    """The data root at ``sandbox.DATA_VIEW`` and each cache entry in ``sandbox.CACHE_VIEW``,
    and the environment naming them."""
    binds = [sandbox.Mount(run.data_root, sandbox.DATA_VIEW)]
    binds += [
        sandbox.Mount(entry, f"{sandbox.CACHE_VIEW}/{Path(entry).name}")
        for entry in run.cache_entries
    ]
    env = {settings.DATA_ENV: sandbox.DATA_VIEW, settings.CACHE_ENV: sandbox.CACHE_VIEW}
    return tuple(binds), env


# glibc's malloc told to keep what is freed: by default a training step hands its activations'
# memory back to the system and faults it in again, thousands of pages a step; kept, part 2's
# shortened training takes about a tenth less time (benchmarks/bench_malloc.py).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def _compute_env() -> dict[str, str]:
    """What the kernel and the judge compute with: the grader's torch threads, kept memory."""
    threads = os.environ.get("OMP_NUM_THREADS")
    return {**MALLOC_ENV, **({"OMP_NUM_THREADS": threads} if threads else {})}


def grading_plan(content: LabContent, seed: int) -> bytes:
    """The file the probe reads: what to record, and the inputs the grader drew for ``seed``.

    The same for every submission of a run, so the scheduler writes it once per lab and seed;
    a worker given none writes its own.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"plan": content.probe_plan, "inputs": content.grading_inputs(seed)}, buffer)
    return buffer.getvalue()


PROBE_MODULE = "_cnn_course_probe"  # where the kernel keeps the probe between cells


def _probe_module_code() -> str:
    """Code that makes the probe module in the kernel, ``_cnn_course_probe``, once: the probe's
    text and the rebuild module's (which import only torch and the student runtime), run apart
    from the student's names and kept in ``sys.modules``."""
    here = Path(__file__).resolve().parent
    source = (here / "probe.py").read_text(encoding="utf-8")
    builder = (here / "rebuild.py").read_text(encoding="utf-8")
    # through the builtins module: a student's own `exec`, `compile` or `globals` is not called
    return (
        "import builtins as _cnn_course_builtins\n"
        f"_cnn_course_probe = _cnn_course_builtins.__import__('sys').modules.get({PROBE_MODULE!r})\n"
        "if _cnn_course_probe is None:\n"
        f"    _cnn_course_probe = _cnn_course_builtins.__import__('types').ModuleType({PROBE_MODULE!r})\n"
        f"    _cnn_course_builtins.exec(_cnn_course_builtins.compile({builder!r}, 'cnn_course_rebuild', 'exec'), _cnn_course_probe.__dict__)\n"
        f"    _cnn_course_builtins.exec(_cnn_course_builtins.compile({source!r}, 'cnn_course_probe', 'exec'), _cnn_course_probe.__dict__)\n"
        f"    _cnn_course_builtins.__import__('sys').modules[{PROBE_MODULE!r}] = _cnn_course_probe\n"
    )


def probe_cell(plan_path: str, output_path: str) -> str:
    """The code of the cell the grader appends: the probe module (the one made before the
    first cell, which watched the cells, or made now) records the plan's steps."""
    return (
        _probe_module_code()
        + f"_cnn_course_builtins.__import__('sys').modules.pop({PROBE_MODULE!r}, None)\n"
        f"_cnn_course_probe.record(_cnn_course_builtins.globals(), {str(plan_path)!r}, {str(output_path)!r})\n"
        "del _cnn_course_probe, _cnn_course_builtins\n"
    )


def watch_cells(
    notebook: nbformat.NotebookNode, plan_path: str, watched: Collection[str] | None = None
) -> dict[int, str]:
    """The grader's code run silently before code cells (``kernel.run_notebook``'s
    ``between_cells``): before the first, the probe module starts watching what the plan asks
    (``probe.watch``); before a cell, it is told which question the cell answers (its nbgrader
    id), so that a watched answer cell is followed from its start to the next cell's. With
    ``watched`` (the questions the plan watches), only the first cell, those cells and the
    cells right after them get the grader's code: each is one more message to the kernel."""
    codes = {}
    previous: str | None = None  # the id of the code cell before
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        grade_id = grade_id if isinstance(grade_id, str) else None
        needed = watched is None or not codes or grade_id in watched or previous in watched
        previous = grade_id
        if not needed:
            continue
        code = (
            "import builtins as _cnn_course_builtins\n"
            f"_cnn_course_probe = _cnn_course_builtins.__import__('sys').modules.get({PROBE_MODULE!r})\n"
            "if _cnn_course_probe is not None:\n"
            f"    _cnn_course_probe.cell(_cnn_course_builtins.globals(), {grade_id!r})\n"
        )
        if not codes:
            code = _probe_module_code() + f"_cnn_course_probe.watch({str(plan_path)!r})\n" + code
        codes[index] = (
            "try:\n"
            + "".join(f"    {line}\n" for line in code.splitlines())
            # nothing of the grader's may raise here: a student's later cell would seem to
            + "except BaseException:\n    pass\n"
            "finally:\n    _cnn_course_probe = _cnn_course_builtins = None\n"
            "    del _cnn_course_probe, _cnn_course_builtins\n"
        )
    return codes


class Cancelled(Exception):
    """A gated worker told to stop before its first cell (see ``Job.gated``)."""


def setup_imports(notebook: nbformat.NotebookNode) -> tuple[str, ...]:
    """The modules the first code cell imports (with ``torch._dynamo``, which torch's optimisers
    import at their first step: 1.2 s), for a sandboxed kernel to load before it answers. Read
    from the released notebook (``released_setup``), never a submission: no student chooses
    what runs while the kernel starts."""
    import ast

    first = next((cell for cell in notebook.cells if cell.cell_type == "code"), None)
    source = first.source if first is not None else ""
    if not isinstance(source, str) or len(source) > SETUP_SOURCE_LIMIT:
        return ()
    try:
        tree = ast.parse(source)
    except Exception:  # (nesting too deep, say): the cell reports it when it runs
        return ()
    modules: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    if "torch" in modules:
        modules.append("torch._dynamo")
    return tuple(dict.fromkeys(modules))


def _wait_for_go() -> None:
    if sys.stdin.readline().strip() != "go":
        raise Cancelled("the grader did not start this submission")


def _status(fd: int) -> Callable[[str], None]:
    """What writes a word to the scheduler's status pipe ``fd`` (nothing when -1), kept from
    the kernel and the judge; a scheduler that stopped listening is no error."""
    if fd < 0:
        return lambda word: None
    os.set_inheritable(fd, False)

    def say(word: str) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, f"{word}\n".encode())

    return say


def grade_notebook(job: Job) -> SubmissionResult:
    """Execute one submission with the probe appended, then judge the plain record it leaves.

    Once the kernel has started, the worker connects to the run's judge server
    (``Job.judge_socket``), whose judging process waits for the record; without one, it starts
    a judge of its own, in its own sandbox, which loads torch and the lab's tests while the
    notebook runs, then waits for the record on its standard input. A gated job
    (``Job.gated``) then waits for "go"; its time is counted from then. With a status pipe
    (``Job.status_fd``) it says when it waits for "go" and when its kernel has ended. A kernel
    the grader could not start is started once more; a second failure, or a judge that gives
    no answer, is a ``grader error`` row (the student's code had no part in it).
    """
    clock = [time.perf_counter()]  # when the submission started: at "go" for a gated job
    course = course_of(job.run.course)
    lab = course.lab(job.lab)
    points = {qid: question.points for qid, question in lab.graded.items()}
    say = _status(job.status_fd)

    judges = contextlib.ExitStack()
    judge: list[subprocess.Popen | socket.socket] = []

    def kernel_started() -> None:
        """The judge starts now, after the kernel: a started-ahead worker loads one process at
        a time, beside the submission that runs. A gated worker then waits for "go"."""
        judge.append(judges.enter_context(_judge_for(job)))
        if job.gated:
            say("ready")
            _wait_for_go()
            clock[0] = time.perf_counter()

    changed: list[str] = []
    untouched: list[bool] = []  # [True]: every answer cell as released (nothing attempted)

    def outcome(status: Status, reason: str, tests=()) -> SubmissionResult:
        result = SubmissionResult.from_tests(
            status,
            reason,
            list(tests),
            points,
            lab=job.lab,
            seconds=time.perf_counter() - clock[0],
            changed_locked_cells=changed,
        )
        result.attempted = not untouched[0] if untouched else None
        return result

    try:
        notebook = nbformat.read(job.notebook, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # any unreadable file is an invalid notebook, whatever the reason
        return outcome(
            Status.INVALID, f"not a valid notebook: {type(exc).__name__}: {str(exc)[:300]}"
        )
    if not any(cell.cell_type == "code" for cell in notebook.cells):
        return outcome(Status.INVALID, "the notebook has no code cells")
    released_path = Path(job.run.course) / "notebooks" / "student" / f"{job.lab}.ipynb"
    released = nbformat.read(released_path, as_version=4) if released_path.is_file() else None
    if released is not None:
        untouched.append(answers_untouched(notebook, released))
    if job.restore_locked and released is not None:  # grade the released setup, as nbgrader does
        restored = restore_locked_cells(notebook, released)
        notebook, changed[:] = restored.notebook, restored.changed
    work = Path(job.work)
    plan_path = Path(job.plan) if job.plan else work / "grader_plan.pt"
    if not job.plan:
        plan_path.write_bytes(grading_plan(course.content(job.lab), job.run.seed))
    env = {
        settings.FAST_ENV: "1",
        settings.GRADING_ENV: "1",  # the helpers skip what no hidden test reads
        "MPLBACKEND": "Agg",
        **_compute_env(),
    }
    if job.run.sandboxed:
        binds, data_env = data_view(job.run)
        box = sandbox.Sandbox(
            binds=binds,
            env={**env, **data_env},
            files={settings.PLAN_VIEW: str(plan_path)},
            preload=setup_imports(released) if released is not None else (),
        )
        plan, record, cwd = settings.PLAN_VIEW, settings.RECORD_PATH, work
    else:
        box = None
        scratch = work / "scratch"
        scratch.mkdir(exist_ok=True)
        plan, record, cwd = str(plan_path), str(scratch / "record.pt"), scratch
        env.update({settings.DATA_ENV: job.run.data_root, settings.CACHE_ENV: _cache_dir()})
    content = course.content(job.lab)
    watched = {
        step["question"] for step in content.probe_plan if step["kind"] == ProbeKind.TRAINING
    }
    between = watch_cells(notebook, plan, watched)
    notebook.cells.append(nbformat.v4.new_code_cell(probe_cell(plan, record)))
    with judges:
        for attempt in range(1, START_TRIES + 1):
            try:
                execution = run_notebook(
                    notebook,
                    cwd=cwd,
                    env=env,
                    cell_timeout=job.run.cell_timeout,
                    allow_errors=True,
                    sandboxed=box,
                    collect=(record,),
                    collect_limit=RECORD_LIMIT,
                    before_cells=kernel_started,
                    total_limit=NOTEBOOK_BUDGET,
                    between_cells=between,
                )
                break
            except KernelStartFailed as failure:
                if attempt == START_TRIES:
                    say("ran")
                    return outcome(
                        Status.GRADER_ERROR,
                        f"the grader could not start the notebook's kernel, {START_TRIES} times "
                        f"({failure}); rerun the same command to grade it",
                    )
        say("ran")  # the kernel has ended: the scheduler may run the next submission
        notebook.cells.pop()  # the probe is the grader's, not part of the student's record
        kept = write_bounded(notebook, Path(job.executed), EXECUTED_LIMIT)
        errors = [
            (p.index, p.text.splitlines()[-1] if p.text.strip() else p.text)
            for p in execution.problems
            if p.kind == "error"
        ]
        names = cell_names(notebook, lab)
        notes = "; ".join(
            dict.fromkeys(f"{names.get(index, PROBE_NAME)}: {text}" for index, text in errors[:8])
        )
        if execution.truncated:
            notes = f"output over {OUTPUT_LIMIT:,} bytes was dropped; {notes}"
        if not kept:
            notes = (
                f"the executed notebook was over {EXECUTED_LIMIT:,} bytes and was not kept; {notes}"
            )
        if execution.kernel_stopped:
            notes = (
                "an interrupted cell did not end within "
                f"{INTERRUPT_GRACE:g} s, so the grader stopped the kernel there; {notes}"
            )
        if execution.strays:
            notes = (
                f"the grader ended {execution.strays} processes an interrupted cell had left "
                f"running; {notes}"
            )
        if execution.memory_exceeded:
            notes = (
                f"the notebook's processes went over {box.limits.total_memory_mb:,} MB together "
                f"and the largest was stopped; {notes}"
            )
        if execution.timed_out:  # always a visible status, whatever the tests then give
            limits = "; ".join(
                cell.describe(names.get(cell.index, "")) for cell in execution.timed_out
            )
            notes = f"{limits}. {notes}".strip()
        named = _named_lab(notebook)
        if named is not None and named != job.lab:  # a notebook of another lab, under --lab
            notes = (
                f"this notebook is for the lab {named[:60]!r}, but was graded as {job.lab} "
                f"(a wrong file, or a wrong --lab?); {notes}"
            )
        notes = notes.strip().rstrip(";")
        found = execution.collected.get(record)
        if not isinstance(found, bytes):
            timed_out = execution.timed_out or execution.error_name == "CellTimeoutError"
            status = Status.TIMEOUT if timed_out else Status.CRASHED
            if execution.memory_exceeded or any(
                text.startswith("MemoryError") for _, text in errors
            ):
                status = Status.OUT_OF_MEMORY
            what = execution.error_name or "no grading record was written"
            if found and "No such file" not in found:
                what = f"the grading record was refused: {found}"
            elif any(index not in names for index, _ in errors):  # the probe cell failed
                return outcome(
                    status,
                    "the grader could not read your answers after your last cell: does a cell "
                    f"replace a module or a built-in? {notes}".strip(),
                )
            return outcome(status, f"the kernel stopped before grading ({what}). {notes}".strip())
        verdict = _judge(judge[0], found)  # (a record: the kernel started, and the judge)
        if verdict is None:  # the run's judge server gave no answer: a judge of this record's
            with judge_started(job, ["-"]) as process:
                verdict = _judge(process, found)
    if isinstance(verdict, JudgeFailure):
        status = Status.GRADER_ERROR if verdict.graders else Status.CRASHED
        return outcome(status, f"{verdict.reason}. {notes}".strip())
    return outcome(Status.TIMEOUT if execution.timed_out else Status.GRADED, notes, verdict)


def _cache_dir() -> str:
    from cnn_course import data  # torch: only for trusted, unsandboxed runs

    return str(data.cache_dir())


def _named_lab(notebook: nbformat.NotebookNode) -> str | None:
    """The lab the notebook's own metadata names (the build writes it), or None."""
    named = notebook.get("metadata", {}).get("cnn_course", {})
    named = named.get("assignment") if isinstance(named, dict) else None
    return named if isinstance(named, str) else None


def cell_names(notebook: nbformat.NotebookNode, lab) -> dict[int, str]:
    """How the feedback names each cell, as a student finds it: by the exercise it answers or
    follows (nbgrader ids) and its first line of code, ``your answer to Exercise 1: conv2d
    ("def conv2d(image, weight, bias, ...")``, ``the cell "history = train(..." after Exercise
    8: ...``; never by an index the student cannot see."""
    names, section = {}, ""
    for index, cell in enumerate(notebook.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        question = lab.graded.get(grade_id) if isinstance(grade_id, str) else None
        first = first_line(cell, 40, skip_comments=True)
        if question is not None:
            section = question.label
            names[index] = f'your answer to {section} ("{first}")'
        else:
            names[index] = f'the cell "{first}"' + (f" after {section}" if section else "")
    return names


@contextlib.contextmanager
def unix_address(path: str | Path) -> Iterator[str]:
    """``path`` as an address a Unix socket takes (at most 107 bytes): itself when short
    enough, else through a descriptor of its folder, ``/proc/self/fd/N/<name>``, open meanwhile
    (an output folder may lie deep)."""
    path = str(path)
    if len(os.fsencode(path)) < 100:
        yield path
        return
    folder = os.open(Path(path).parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{Path(path).name}"
    finally:
        os.close(folder)


def _judge_for(job: Job) -> contextlib.AbstractContextManager:
    """A connection to the run's judge server (``Job.judge_socket``), or a judge of its own."""
    if job.judge_socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(job.judge_socket) as address:
                connection.connect(address)
        except OSError:  # the server is gone
            connection.close()
        else:
            return contextlib.closing(connection)
    return judge_started(job, ["-"])


@contextlib.contextmanager
def judge_started(
    job: Job, args: list[str], pass_fds: tuple[int, ...] = (), env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """``python -m cnn_course_instructor.grading.judge REQUEST.json *args`` for ``job``'s lab, in a
    sandbox of its own (unless ``job`` runs unsandboxed), with the descriptors ``pass_fds`` and
    the variables ``env`` too; ended on exit if it still runs. ``["-"]``: it reads one record
    from its input."""
    work = Path(job.work)
    request = {
        "course": job.run.course,
        "lab": job.lab,
        "seed": job.run.seed,
        "data_root": job.run.data_root,
        "timeout": JUDGE_TIMEOUT,
    }
    module = ["-m", "cnn_course_instructor.grading.judge"]
    request_path = work / "judge.json"
    if not job.run.sandboxed:
        request_path.write_text(json.dumps(request), encoding="utf-8")
        argv = [sys.executable, *module, str(request_path), *args]
        variables = {**os.environ, **_compute_env(), **(env or {})}
        with sandbox.piped(
            argv, preexec_fn=_judge_limits, env=variables, pass_fds=pass_fds
        ) as process:
            yield process
        return
    binds, data_env = data_view(job.run)
    # The course in the grader's view (wherever it lies on the host); the instructor package at
    # its own path, where it imports from.
    request["data_root"], request["course"] = sandbox.DATA_VIEW, sandbox.COURSE_VIEW
    request_path.write_text(json.dumps(request), encoding="utf-8")
    tools = TOOLS
    view = [
        sandbox.Mount(str(Path(job.run.course).resolve()), sandbox.COURSE_VIEW),
        sandbox.Mount(str(tools), str(tools)),
    ]
    box = sandbox.Sandbox(
        binds=(*binds, *view),
        env={
            settings.FAST_ENV: "1",
            "MPLBACKEND": "Agg",
            **data_env,
            **_compute_env(),
            **(env or {}),
        },
        limits=JUDGE_LIMITS,
        files={f"{GRADER_RUN}/judge.json": str(request_path)},
    )
    argv = [sys.executable, *module, f"{GRADER_RUN}/judge.json", *args]
    with sandbox.started(box, argv, pass_fds) as process:
        yield process


@dataclass(frozen=True)
class JudgeFailure:
    """Why a record has no test results: refused for what it holds (the student's code made
    it), or ``graders``: the judge itself failed (no answer, killed, past its safety net)."""

    reason: str
    graders: bool


def _judge(
    judge: subprocess.Popen | socket.socket, record: bytes
) -> list[TestResult] | JudgeFailure | None:
    """Send the record to the judge: the test results, or why there are none; None when the
    run's judge server gave no answer (ask a judge of this record's own then)."""
    if isinstance(judge, socket.socket):
        return _served(judge, record)
    try:
        stdout, stderr = judge.communicate(record, timeout=JUDGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return JudgeFailure(
            f"the grader's tests gave no answer in {JUDGE_TIMEOUT} s; rerun the same command "
            "to grade it",
            graders=True,
        )
    try:
        answer = json.loads(stdout.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        if judge.returncode in (-signal.SIGKILL, -signal.SIGXCPU):  # its CPU limit's hard end
            return JudgeFailure(
                f"the grader's tests were stopped on this record past their "
                f"{JUDGE_CPU_SECONDS} s of CPU time, in one operation too long to interrupt: a "
                "model this large cannot be evaluated by the grader; make its layers smaller",
                graders=False,
            )
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            f"exit status {judge.returncode}"
        ]
        return JudgeFailure(
            f"the grader's tests failed on their side ({tail[0][:300]}); rerun the same "
            "command to grade it",
            graders=True,
        )
    return _verdict(answer)


def _served(connection: socket.socket, record: bytes) -> list[TestResult] | JudgeFailure | None:
    """The record judged by the process the run's judge server forked for this connection."""
    deadline = time.monotonic() + JUDGE_TIMEOUT
    received, size = [], 0
    try:
        connection.settimeout(JUDGE_TIMEOUT)
        connection.sendall(record)
        connection.shutdown(socket.SHUT_WR)  # the record is whole
        while chunk := connection.recv(1 << 16):
            received.append(chunk)
            size += len(chunk)
            if size > RECORD_LIMIT:
                return None
            connection.settimeout(max(0.001, deadline - time.monotonic()))
    except TimeoutError:
        return JudgeFailure(
            f"the grader's tests gave no answer in {JUDGE_TIMEOUT} s; rerun the same command "
            "to grade it",
            graders=True,
        )
    except OSError:
        return None
    try:
        answer = json.loads(b"".join(received).decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return _verdict(answer)


def _verdict(answer: dict) -> list[TestResult] | JudgeFailure:
    if "unusable" in answer:
        return JudgeFailure(str(answer["unusable"]), graders=False)
    return [TestResult(**test) for test in answer["tests"]]


def _judge_limits() -> None:
    import resource

    for name, value in JUDGE_LIMITS.rlimits().items():
        if name != "RLIMIT_NPROC":  # counted per user outside a sandbox: not set there
            resource.setrlimit(getattr(resource, name), (value, value))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cnn_course_instructor.grading.worker JOB.json", file=sys.stderr)
        return 2
    sandbox.die_with_parent()  # a killed grader takes its workers, and their sandboxes, along
    job = Job.read(Path(argv[0]))
    try:
        result = grade_notebook(job)
    except Cancelled:
        return 3
    path = Path(job.result)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(result.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
