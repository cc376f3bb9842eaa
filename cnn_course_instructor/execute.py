"""Run a notebook top to bottom in a fresh Jupyter kernel and collect what each cell printed."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from . import sandbox
from .safefiles import UnsafeFile, read_regular

__all__ = [
    "EXECUTED_LIMIT",
    "OUTPUT_LIMIT",
    "CellProblem",
    "Execution",
    "TimedOut",
    "run_notebook",
    "write_bounded",
]

OUTPUT_LIMIT = 2_000_000  # bytes of output kept per notebook, all message types together
EXECUTED_LIMIT = 20_000_000  # bytes of the executed notebook kept; past it, outputs are dropped
_ALWAYS = {"status", "execute_input", "execute_reply"}  # needed to follow execution: never dropped


@dataclass(frozen=True)
class CellProblem:
    """Something a cell wrote that a clean run should not: an error or text on stderr."""

    index: int
    kind: str  # "error" or "stderr"
    text: str


@dataclass(frozen=True)
class TimedOut:
    """A cell the grader interrupted: its index, why, and after how many seconds."""

    index: int
    why: str  # "cpu": it used its CPU time; "idle": it waited without computing; "wall"
    seconds: float

    def describe(self, name: str = "") -> str:
        """What happened, naming the cell ``name`` (``cell N`` by default)."""
        name = name or f"cell {self.index + 1}"
        return {
            "cpu": f"{name} used more than {self.seconds:g} s of CPU time",
            "idle": f"{name} waited {self.seconds:g} s without computing",
            "wall": f"{name} ran past {self.seconds:g} s",
        }[self.why] + " and was interrupted"


@dataclass
class Execution:
    """The executed notebook, the first error that stopped it (if any) and all problems seen.

    ``collected`` holds the files asked for with ``collect``, read from the sandbox before it
    ended: their bytes, or the reason they could not be read.
    """

    notebook: NotebookNode
    stopped_at: int | None = None
    error_name: str | None = None
    problems: list[CellProblem] = field(default_factory=list)
    truncated: bool = False
    collected: dict[str, bytes | str] = field(default_factory=dict)
    timed_out: list[TimedOut] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.stopped_at is None and not self.problems


def _message_size(msg: dict) -> int:
    size = len(json.dumps(msg.get("content", {}), default=str))
    return size + sum(len(memoryview(b).cast("B")) for b in msg.get("buffers") or [])


# How a cell's time is limited (see _BoundedClient._watch): CPU time, which the machine's load
# does not change; wall time only for a cell that mostly waits, and as a last resort.
IDLE_SHARE = 0.1  # a cell using less CPU than this share of its wall time is waiting
WALL_FACTOR = 4  # any cell is interrupted after this many times its limit, in wall time
_POLL = 0.5


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used by process ``root`` and its descendants (with their reaped children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read().decode("ascii", "replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(pid)
        used[pid] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += used.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / ticks


class _BoundedClient(NotebookClient):
    """A NotebookClient that keeps at most OUTPUT_LIMIT bytes of what the kernel sends.

    Every message counts (streams, displays and their updates, results, errors, widget and
    other comm messages, with their binary buffers); past the limit, each is dropped but the
    ones that tell a cell has finished. Widget state is not kept in the notebook.
    """

    kept_bytes = 0
    truncated = False
    cell_limit: float | None = None  # CPU seconds a cell may use (None: nbclient's timeout only)
    before_cells: Callable[[], None] | None = None  # called once the kernel has started
    timed_out: list[TimedOut]
    _index = -1

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if self.before_cells is not None:
            ready, self.before_cells = self.before_cells, None
            await asyncio.to_thread(ready)
        self._index = cell_index
        watch = None
        if self.cell_limit is not None and cell.cell_type == "code":
            watch = asyncio.ensure_future(self._watch(cell_index, self.cell_limit))
        try:
            return await super().async_execute_cell(
                cell, cell_index, execution_count, store_history
            )
        finally:
            if watch is not None:
                watch.cancel()

    def _kernel_pid(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    async def _watch(self, index: int, limit: float) -> None:
        """Interrupt cell ``index`` once it has used ``limit`` CPU seconds, or has waited
        ``limit`` seconds while computing almost nothing: budgets the load cannot change."""
        pid = self._kernel_pid()
        if pid is None:
            return
        loop = asyncio.get_running_loop()
        started, first = loop.time(), await asyncio.to_thread(tree_cpu_seconds, pid)
        while True:
            await asyncio.sleep(_POLL)
            wall = loop.time() - started
            cpu = await asyncio.to_thread(tree_cpu_seconds, pid) - first
            if cpu > limit:
                why, seconds = "cpu", limit
            elif wall > limit and cpu < IDLE_SHARE * wall:
                why, seconds = "idle", limit
            else:
                continue
            self.timed_out.append(TimedOut(index, why, seconds))
            await ensure_async(self.km.interrupt_kernel())
            return

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out.append(TimedOut(self._index, "wall", float(timeout)))
        return await super()._async_handle_timeout(timeout, cell)

    def process_message(self, msg, cell, cell_index):
        if msg.get("msg_type") not in _ALWAYS:
            size = _message_size(msg)
            if self.kept_bytes + size > OUTPUT_LIMIT:
                if not self.truncated:
                    self.truncated = True
                    note = nbformat.v4.new_output(
                        "stream", name="stdout", text="[output truncated by the grader]\n"
                    )
                    cell.setdefault("outputs", []).append(note)
                return None
            self.kept_bytes += size
        return super().process_message(msg, cell, cell_index)


class _FixedSpecs(KernelSpecManager):
    """A kernel spec manager that always answers with one given command line."""

    def __init__(self, argv: list[str], **kwargs):
        super().__init__(**kwargs)
        self._argv = argv

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        # Interrupts go as messages: the kernel interrupts itself, whatever stands between us.
        return KernelSpec(
            argv=self._argv,
            display_name="Python 3 (sandbox)",
            language="python",
            interrupt_mode="message",
        )


class _SandboxKernelManager(AsyncKernelManager):
    """A kernel manager for a kernel in a sandbox (see ``sandbox.launch_kernel``).

    The kernel makes its sockets in the sandbox's own ``/run/kernel``; once it is started, this
    manager talks to them through ``/proc/PID/root``, the sandbox's root seen from here.
    """

    spec_path = ""
    sandbox_root: Path | None = None

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        await super()._async_launch_kernel(kernel_cmd, **kw)
        process = getattr(self.provisioner, "process", None)

        def alive() -> bool:
            return process is not None and process.poll() is None

        pid = await asyncio.to_thread(sandbox.wait_for_pid, self.spec_path, alive)
        if pid is None:
            raise RuntimeError("the sandbox did not start (see the grader's log)")
        self.sandbox_root = Path(f"/proc/{pid}/root")
        self.ip = f"{self.sandbox_root}{sandbox.KERNEL_RUN}/k"


def run_notebook(
    notebook: NotebookNode | Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    cell_timeout: int = 600,
    allow_errors: bool = False,
    sandboxed: sandbox.Sandbox | None = None,
    collect: tuple[str, ...] = (),
    collect_limit: int = 64_000_000,
    before_cells: Callable[[], None] | None = None,
) -> Execution:
    """Execute every code cell in order in a new kernel.

    By default the run stops at the first error, and ``cell_timeout`` is each cell's limit in
    seconds. With ``allow_errors`` (grading) every cell runs, and a cell is interrupted, so that
    later cells still produce their results, once it has used ``cell_timeout`` seconds of CPU
    time, or has waited that long while computing almost nothing, or after ``WALL_FACTOR``
    times that long in any case: a budget that the machine's load does not change. Each
    interruption is listed in ``Execution.timed_out``.
    ``env`` is added to this process's environment for the kernel, or, with ``sandboxed``, is
    all of the sandboxed kernel's environment beside the sandbox's own. ``cwd`` is the kernel's
    folder, or, sandboxed, where the connection file goes (the kernel works in its home).
    ``collect`` names files the kernel leaves (paths inside the sandbox when sandboxed): each is
    read, as a regular file of ``collect_limit`` bytes at most, before the kernel ends.
    ``before_cells`` is called, in a thread, once the kernel has started (and imported the
    sandbox's ``preload``), before the first cell runs: what it raises ends the run.
    """
    if not isinstance(notebook, NotebookNode):
        notebook = nbformat.read(notebook, as_version=4)
    kernel_manager = None
    if sandboxed is not None:
        spec_path = Path(cwd) / "sandbox.json"
        Path(f"{spec_path}.pid").unlink(missing_ok=True)  # an earlier run's: not this sandbox
        spec_path.write_text(
            dataclasses.replace(sandboxed, env={**sandboxed.env, **(env or {})}).to_json()
        )
        argv = [
            sys.executable,
            "-m",
            "cnn_course_instructor.sandbox",
            "kernel",
            str(spec_path),
            "{connection_file}",
        ]
        kernel_manager = _SandboxKernelManager(
            kernel_name="sandbox",
            kernel_spec_manager=_FixedSpecs(argv),
            transport="ipc",
            ip=f"{sandbox.KERNEL_RUN}/k",
            connection_file=str(Path(cwd) / "kernel.json"),
        )
        kernel_manager.spec_path = str(spec_path)
    client = _BoundedClient(
        notebook,
        km=kernel_manager,
        timeout=cell_timeout * WALL_FACTOR if allow_errors else cell_timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        interrupt_on_timeout=allow_errors,
        store_widget_state=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.timed_out = []
    client.before_cells = before_cells
    if allow_errors:  # grading: each cell gets cell_timeout seconds of CPU time
        client.cell_limit = float(cell_timeout)
    result = Execution(notebook)
    try:
        client.execute(env={**os.environ, **(env or {})})
    except CellExecutionError as error:
        result.error_name = error.ename
    except CellTimeoutError:
        result.error_name = "CellTimeoutError"
    except DeadKernelError:
        result.error_name = "DeadKernelError"
    except RuntimeError as error:  # e.g. the kernel died before it could answer
        result.error_name = f"RuntimeError: {error}"
    finally:
        root = Path(cwd)
        if kernel_manager is not None:
            root = kernel_manager.sandbox_root or Path("/nonexistent")
        for name in collect:
            path = root / name.lstrip("/") if kernel_manager is not None else root / name
            try:
                result.collected[name] = read_regular(path, collect_limit, name)
            except UnsafeFile as problem:
                result.collected[name] = str(problem)
        if kernel_manager is not None:  # nbclient leaves a kernel it did not create running
            if client.kc is not None:
                client.kc.stop_channels()
            if kernel_manager.has_kernel:
                run_sync(kernel_manager.shutdown_kernel)(now=True)
    result.truncated = client.truncated
    result.timed_out = list(client.timed_out)
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "error":
                result.problems.append(
                    CellProblem(index, "error", f"{output.ename}: {output.evalue}")
                )
                if result.stopped_at is None:
                    result.stopped_at = index
            elif output.output_type == "stream" and output.name == "stderr":
                result.problems.append(CellProblem(index, "stderr", output.text))
    if result.error_name and result.stopped_at is None:
        result.stopped_at = next(
            (
                i
                for i, c in enumerate(notebook.cells)
                if c.cell_type == "code" and c.get("execution_count") is None
            ),
            len(notebook.cells),
        )
    return result


def write_bounded(notebook: NotebookNode, path: Path, limit: int = EXECUTED_LIMIT) -> bool:
    """Write ``notebook`` to ``path`` within ``limit`` bytes: whole, or with its outputs dropped
    (a note says so); False when even that would not fit (nothing is written)."""
    text = nbformat.writes(notebook)
    if len(text.encode()) > limit:
        notebook = copy.deepcopy(notebook)
        notebook.metadata.pop("widgets", None)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = []
        note = f"[the executed notebook was over {limit:,} bytes: the grader dropped its outputs]"
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(note))
        text = nbformat.writes(notebook)
        if len(text.encode()) > limit:
            return False
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True
