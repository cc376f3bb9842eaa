"""Run a notebook top to bottom in a fresh Jupyter kernel and collect what each cell printed."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import signal
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .. import sandbox
from ..safefiles import UnsafeFile, read_regular, read_under
from .budgets import (
    IDLE_SHARE,
    INTERRUPT_GRACE,
    POLL,
    WALL_FACTOR,
    KernelStartFailed,
    Progress,
    guard_start,
)

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
    # "cpu": it used its CPU time; "idle": it waited without computing; "wall": it ran past
    # its own-time limit; "total": the notebook's cells together used their budget
    why: str
    seconds: float

    def describe(self, name: str = "") -> str:
        """What happened, naming the cell ``name`` (``cell N`` by default)."""
        name = name or f"cell {self.index + 1}"
        return {
            "cpu": f"{name} used more than {self.seconds:g} s of CPU time",
            "idle": f"{name} waited {self.seconds:g} s without computing",
            "wall": f"{name} ran past {self.seconds:g} s",
            "total": f"the notebook's cells ran past {self.seconds:g} s in all; {name}",
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
    memory_exceeded: bool = False  # the sandbox's processes went over their memory limit
    strays: int = 0  # processes interrupted cells left running, ended by the grader
    kernel_stopped: bool = False  # an interrupted cell did not end: the grader stopped the kernel

    @property
    def ok(self) -> bool:
        return self.stopped_at is None and not self.problems


def _message_size(msg: dict) -> int:
    size = len(json.dumps(msg.get("content", {}), default=str))
    return size + sum(len(memoryview(b).cast("B")) for b in msg.get("buffers") or [])


class _BoundedClient(NotebookClient):
    """A NotebookClient that keeps at most OUTPUT_LIMIT bytes of what the kernel sends.

    Every message counts (streams, displays and their updates, results, errors, widget and
    other comm messages, with their binary buffers); past the limit, each is dropped but the
    ones that tell a cell has finished. Widget state is not kept in the notebook.
    """

    kept_bytes = 0
    truncated = False
    cell_limit: float | None = None  # CPU seconds a cell may use (None: nbclient's timeout only)
    total_limit: float | None = None  # own seconds all cells together may use
    before_cells: Callable[[], None] | None = None  # called once the kernel has started
    between_cells: Mapping[int, str] = {}  # the grader's code run silently before cell i
    timed_out: list[TimedOut]
    strays: int = 0  # processes a cell left running when it was interrupted, ended by the grader
    memory_limit: int | None = None  # bytes the sandbox's processes may use together
    memory_exceeded = False
    kernel_stopped = False  # an interrupted cell did not end: the grader stopped its kernel
    _memory_guard: asyncio.Future | None = None
    _index = -1
    _total: Progress | None = None
    _out_of_time = False

    async def async_start_new_kernel_client(self):
        """Start the client, waiting for the kernel's first answer on the kernel's budget (see
        START_IDLE): the load of the machine never fails a start."""
        self.kc = self.km.client()
        await ensure_async(self.kc.start_channels())
        ready = asyncio.ensure_future(ensure_async(self.kc.wait_for_ready(timeout=None)))
        guard = asyncio.ensure_future(self._start_guard())
        try:
            done, _ = await asyncio.wait({ready, guard}, return_when=asyncio.FIRST_COMPLETED)
            if ready in done:
                ready.result()
            else:
                guard.result()
        except Exception as error:
            ready.cancel()
            guard.cancel()
            await self._async_cleanup_kernel()
            if isinstance(error, KernelStartFailed):
                raise
            raise KernelStartFailed(f"the kernel did not answer ({error})") from None
        finally:
            guard.cancel()
        self.kc.allow_stdin = False
        if self.memory_limit is not None:
            self._memory_guard = asyncio.ensure_future(self._guard_memory(self.memory_limit))
        return self.kc

    async def async_execute(self, reset_kc: bool = False, **kwargs):
        try:
            return await super().async_execute(reset_kc=reset_kc, **kwargs)
        finally:
            if self._memory_guard is not None:
                self._memory_guard.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._memory_guard

    execute = run_sync(async_execute)  # (NotebookClient binds its own async_execute)

    async def _guard_memory(self, limit: int) -> None:
        """Where the sandbox has no cgroup: every half second, the memory its processes use
        together, shared pages counted once; over ``limit``, its largest process is killed
        (the kernel itself, if it is the one), so a student's memory hog, however split, costs
        only their own notebook."""
        init = getattr(self.km, "sandbox_pid", None)
        if init is None or sandbox.read_group(self.km.spec_path) is not None:
            return  # the cgroup's limit does it, in the kernel
        while True:
            await asyncio.sleep(POLL)
            used, largest = await asyncio.to_thread(sandbox.memory_in, init)
            if used > limit and largest is not None:
                self.memory_exceeded = True
                with contextlib.suppress(OSError):
                    os.kill(largest, signal.SIGKILL)

    async def _start_guard(self) -> None:
        launcher = self._kernel_pid()
        if launcher is None:
            return await asyncio.Event().wait()  # nothing to watch: the client decides
        await guard_start(
            launcher,
            lambda: self.km.provisioner.process.poll() is None,
            getattr(self.km, "spec_path", ""),
        )

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if self.before_cells is not None:
            ready, self.before_cells = self.before_cells, None
            await asyncio.to_thread(ready)
        self._index = cell_index
        if self._out_of_time and cell.cell_type == "code":
            return cell  # the notebook used its whole budget: the cells left do not run
        watch = None
        if self.cell_limit is not None and cell.cell_type == "code":
            watch = asyncio.ensure_future(self._watch(cell_index, self.cell_limit))
        try:
            if cell.cell_type == "code" and cell_index in self.between_cells:
                await self._run_silently(self.between_cells[cell_index])
            return await super().async_execute_cell(
                cell, cell_index, execution_count, store_history
            )
        finally:
            if watch is not None:
                watch.cancel()

    async def _run_silently(self, code: str) -> None:
        """Run the grader's ``code`` in the kernel, in the student's namespace, leaving no
        trace in the notebook (no output, no history, no execution count), on the budget of
        the cell that follows."""
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        await self.async_wait_for_reply(msg_id)

    def _kernel_pid(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    async def _watch(self, index: int, limit: float) -> None:
        """Interrupt cell ``index`` once it has used ``limit`` CPU seconds, or ``limit`` seconds
        of its own time while computing almost nothing, or ``WALL_FACTOR`` times that in any
        case, or once the notebook's cells together have used ``total_limit`` seconds of their
        own time: budgets the load cannot change. What the cell left running then ends."""
        pid = self._kernel_pid()
        if pid is None:
            return
        cell = await asyncio.to_thread(Progress, pid)
        if self._total is None:
            self._total = await asyncio.to_thread(Progress, pid)
        while True:
            await asyncio.sleep(POLL)
            await asyncio.to_thread(cell.sample)
            await asyncio.to_thread(self._total.sample)
            if cell.cpu > limit:
                why, seconds = "cpu", limit
            elif cell.own > limit and cell.cpu < IDLE_SHARE * cell.own:
                why, seconds = "idle", limit
            elif cell.own > WALL_FACTOR * limit:
                why, seconds = "wall", WALL_FACTOR * limit
            elif self.total_limit is not None and self._total.own > self.total_limit:
                why, seconds = "total", self.total_limit
                self._out_of_time = True
            else:
                continue
            self.timed_out.append(TimedOut(index, why, seconds))
            await ensure_async(self.km.interrupt_kernel())
            await self._end_strays()
            break
        # A cell that does not end once interrupted (it ignores the interrupt, or its kernel no
        # longer answers) has INTERRUPT_GRACE seconds (at most its limit), of CPU or its own
        # time; then its kernel is stopped and the notebook ends there.
        cpu, own, grace = cell.cpu, cell.own, min(INTERRUPT_GRACE, limit)
        while cell.cpu - cpu < grace and cell.own - own < grace:
            await asyncio.sleep(POLL)
            await asyncio.to_thread(cell.sample)
        self.kernel_stopped = True
        await ensure_async(self.km.shutdown_kernel(now=True))

    async def _end_strays(self) -> None:
        init = getattr(self.km, "sandbox_pid", None)
        if init is not None:
            self.strays += await asyncio.to_thread(sandbox.end_strays, init)

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out.append(TimedOut(self._index, "wall", float(timeout)))
        result = await super()._async_handle_timeout(timeout, cell)
        await self._end_strays()
        return result

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


_CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


class _PinnedClient(AsyncKernelClient):
    """A kernel client that connects to the sockets its kernel manager pinned."""

    def _make_url(self, channel: str) -> str:
        return self.parent._make_url(channel)


class _SandboxKernelManager(AsyncKernelManager):
    """A kernel manager for a kernel in a sandbox (see ``sandbox.launch_kernel``).

    The kernel makes its sockets in the sandbox's own ``/run/kernel``, a folder its code owns.
    Once it has made them, this manager opens each from the sandbox's pinned root, one folder
    at a time without following links, checks that it is a socket the sandbox owns, and keeps
    the descriptor: every connection, and every reconnection, goes through
    ``/proc/self/fd/N``, the socket it checked, whatever the code inside later puts at that
    path. Starting has the kernel's budget (``_guard_start``), not a clock.
    """

    spec_path = ""
    sandbox_pid: int | None = None
    inside: sandbox.Inside | None = None
    pinned: dict[str, int] | None = None

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        await super()._async_launch_kernel(kernel_cmd, **kw)
        process = self.provisioner.process
        guard = asyncio.ensure_future(
            guard_start(process.pid, lambda: process.poll() is None, self.spec_path)
        )
        try:
            pid = await self._until(lambda: sandbox.read_pid(self.spec_path), guard)
            self.sandbox_pid = pid
            self.pinned = await self._until(lambda: self._pin(pid, process.pid), guard)
        except OSError as error:
            raise KernelStartFailed(
                f"the kernel's sandbox could not be reached ({error})"
            ) from None
        finally:
            guard.cancel()

    async def _until(self, found: Callable[[], object], guard: asyncio.Future):
        """What ``found`` returns once it is not None, checked every 50 ms while ``guard``
        (the start's budget) has not failed."""
        while True:
            value = await asyncio.to_thread(found)
            if value is not None:
                return value
            if guard.done():
                guard.result()  # raises why the start failed
            await asyncio.sleep(0.05)

    def _pin(self, init: int, launcher: int) -> dict[str, int] | None:
        """A descriptor of each of the kernel's sockets, once all exist (None before). The
        sandbox's root is opened again at each try: bwrap names its init before the init has
        moved into the new root, so the root is the sandbox's only once the sockets are there."""
        if self.inside is not None:
            self.inside.close()
        self.inside = sandbox.Inside(init, launcher)
        pinned: dict[str, int] = {}
        try:
            for channel in _CHANNELS:
                path = f"{sandbox.KERNEL_RUN}/k-{getattr(self, f'{channel}_port')}"
                pinned[channel] = self.inside.open_path(path, stat.S_IFSOCK)
        except FileNotFoundError:  # not all made yet
            pinned, missing = {}, pinned
            for fd in missing.values():
                os.close(fd)
            return None
        except BaseException:
            for fd in pinned.values():
                os.close(fd)
            raise
        return pinned

    def _make_url(self, channel: str) -> str:
        if not self.pinned or channel not in self.pinned:
            raise RuntimeError(f"the kernel's {channel} socket is not pinned yet")
        return f"ipc:///proc/self/fd/{self.pinned[channel]}"

    async def _async_interrupt_kernel(self) -> None:
        if self.pinned:  # else no kernel answers yet: there is nothing to interrupt
            await super()._async_interrupt_kernel()

    def cleanup_ipc_files(self) -> None:
        """Nothing to remove on this side: the sockets lived in the sandbox's own tmpfs."""

    def release(self) -> None:
        """Close the pinned descriptors (once no socket uses them any more), and remove the
        sandbox's cgroup (its launcher, killed, could not)."""
        group = sandbox.read_group(self.spec_path)
        if group is not None:
            group.remove()
        for fd in (self.pinned or {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pinned = None
        if self.inside is not None:
            self.inside.close()


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
    total_limit: float | None = None,
    between_cells: Mapping[int, str] | None = None,
) -> Execution:
    """Execute every code cell in order in a new kernel.

    By default the run stops at the first error, and ``cell_timeout`` is each cell's limit in
    seconds. With ``allow_errors`` (grading) every cell runs, and a cell is interrupted, so that
    later cells still produce their results, once it has used ``cell_timeout`` seconds of CPU
    time, or has waited that long (in its own time: see ``Progress``) while computing almost
    nothing, or after ``WALL_FACTOR`` times that long in any case: a budget that the machine's
    load does not change. With ``total_limit``, the cells together get that many seconds of
    their own time; the cells after it do not run. Each interruption is listed in
    ``Execution.timed_out``, and what the interrupted cell left running in the sandbox ends.
    ``env`` is added to this process's environment for the kernel, or, with ``sandboxed``, is
    all of the sandboxed kernel's environment beside the sandbox's own. ``cwd`` is the kernel's
    folder, or, sandboxed, where the connection file goes (the kernel works in its home).
    ``collect`` names files the kernel leaves (paths inside the sandbox when sandboxed): each is
    read, as a regular file of ``collect_limit`` bytes at most, before the kernel ends.
    ``before_cells`` is called, in a thread, once the kernel has started (and imported the
    sandbox's ``preload``), before the first cell runs: what it raises ends the run.
    ``between_cells`` maps a cell's index to code of the grader's, run silently in the kernel
    just before that cell (no output, nothing in the notebook), on that cell's budgets.
    A kernel the grader could not start raises KernelStartFailed (its cause in words).
    """
    if not isinstance(notebook, NotebookNode):
        notebook = nbformat.read(notebook, as_version=4)
    kernel_manager = None
    if sandboxed is not None:
        spec_path = Path(cwd) / "sandbox.json"
        for suffix in (".pid", ".log", ".group"):  # an earlier run's: not this sandbox
            Path(f"{spec_path}{suffix}").unlink(missing_ok=True)
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
            client_factory=_PinnedClient,
        )
        kernel_manager.spec_path = str(spec_path)
    client = _BoundedClient(
        notebook,
        km=kernel_manager,
        # grading: no wall time decides; the cell's budgets (CPU, its own time) do, however busy
        # the machine, and a cell that does not end once interrupted has its kernel stopped
        timeout=None if allow_errors else cell_timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        interrupt_on_timeout=allow_errors,
        store_widget_state=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.timed_out = []
    client.before_cells = before_cells
    client.between_cells = dict(between_cells or {})
    client.total_limit = total_limit
    if sandboxed is not None:
        client.memory_limit = sandboxed.limits.total_memory_mb * 1024 * 1024
    if allow_errors:  # grading: each cell gets cell_timeout seconds of CPU time
        client.cell_limit = float(cell_timeout)
    result = Execution(notebook)
    try:
        client.execute(env={**os.environ, **(env or {})})
    except KernelStartFailed:
        raise
    except CellExecutionError as error:
        result.error_name = error.ename
    except CellTimeoutError:
        result.error_name = "CellTimeoutError"
    except DeadKernelError:
        result.error_name = "DeadKernelError"
    except RuntimeError as error:  # e.g. the kernel died before it could answer
        result.error_name = f"RuntimeError: {error}"
    finally:
        if kernel_manager is not None:
            root = kernel_manager.inside.path if kernel_manager.inside else None
            if kernel_manager.sandbox_pid is not None:
                result.memory_exceeded = client.memory_exceeded or _memory_limit_hit(kernel_manager)
        else:
            root = Path(cwd)
        for name in collect:
            try:
                if root is None:
                    raise UnsafeFile("the sandbox never started")
                if kernel_manager is not None:  # from the pinned root, no link followed
                    found = read_under(root, Path(name.lstrip("/")), collect_limit, name)
                else:
                    found = read_regular(root / name, collect_limit, name)
                result.collected[name] = found
            except UnsafeFile as problem:
                result.collected[name] = str(problem)
        if kernel_manager is not None:  # nbclient leaves a kernel it did not create running
            if client.kc is not None:
                client.kc.stop_channels()
            if kernel_manager.has_kernel:
                try:
                    run_sync(kernel_manager.shutdown_kernel)(now=True)
                except Exception:  # noqa: BLE001 - whatever it was, the launcher must end
                    launcher = getattr(kernel_manager.provisioner, "process", None)
                    if launcher is not None and launcher.poll() is None:
                        launcher.kill()
                        launcher.wait()
            kernel_manager.release()
    result.truncated = client.truncated
    result.timed_out = list(client.timed_out)
    result.strays = client.strays
    result.kernel_stopped = client.kernel_stopped
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


def _memory_limit_hit(manager: _SandboxKernelManager) -> bool:
    group = sandbox.read_group(manager.spec_path)
    return group is not None and group.memory_limit_hit()


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
