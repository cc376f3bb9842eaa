"""Run a notebook top to bottom in a fresh Jupyter kernel and collect what each cell printed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

__all__ = ["CellProblem", "Execution", "run_notebook"]

OUTPUT_LIMIT = 2_000_000  # bytes of output kept per notebook; the rest is dropped with a note


@dataclass(frozen=True)
class CellProblem:
    """Something a cell wrote that a clean run should not: an error or text on stderr."""

    index: int
    kind: str  # "error" or "stderr"
    text: str


@dataclass
class Execution:
    """The executed notebook, the first error that stopped it (if any) and all problems seen."""

    notebook: NotebookNode
    stopped_at: int | None = None
    error_name: str | None = None
    problems: list[CellProblem] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.stopped_at is None and not self.problems


class _BoundedClient(NotebookClient):
    """A NotebookClient that keeps at most OUTPUT_LIMIT bytes of outputs in memory."""

    kept_bytes = 0
    truncated = False

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        if self.kept_bytes + size > OUTPUT_LIMIT:
            if not self.truncated:
                self.truncated = True
                note = nbformat.v4.new_output(
                    "stream", name="stdout", text="[output truncated by the grader]\n"
                )
                outs.append(note)
            return None
        self.kept_bytes += size
        return super().output(outs, msg, display_id, cell_index)


class _FixedSpecs(KernelSpecManager):
    """A kernel spec manager that always answers with one given command line."""

    def __init__(self, argv: list[str], **kwargs):
        super().__init__(**kwargs)
        self._argv = argv

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=self._argv, display_name="Python 3 (sandbox)", language="python")


def run_notebook(
    notebook: NotebookNode | Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    cell_timeout: int = 600,
    allow_errors: bool = False,
    kernel_argv: list[str] | None = None,
) -> Execution:
    """Execute every code cell in order in a new kernel.

    By default the run stops at the first error; with ``allow_errors`` every cell runs (a cell
    that exceeds ``cell_timeout`` is interrupted) so later cells still produce their results.
    ``env`` is added to this process's environment for the kernel. With ``kernel_argv`` (see
    cnn_course_instructor.sandbox) the kernel is started by that command and talks over Unix sockets in
    ``cwd``, so it needs no network.
    """
    if not isinstance(notebook, NotebookNode):
        notebook = nbformat.read(notebook, as_version=4)
    kernel_manager = None
    if kernel_argv is not None:
        kernel_manager = AsyncKernelManager(
            kernel_name="sandbox",
            kernel_spec_manager=_FixedSpecs(kernel_argv),
            transport="ipc",
            connection_file=str(Path(cwd) / "kernel.json"),
        )
    client = _BoundedClient(
        notebook,
        km=kernel_manager,
        timeout=cell_timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        interrupt_on_timeout=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
    )
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
        if kernel_manager is not None:  # nbclient leaves a kernel it did not create running
            if client.kc is not None:
                client.kc.stop_channels()
            if kernel_manager.has_kernel:
                run_sync(kernel_manager.shutdown_kernel)(now=True)
    result.truncated = client.truncated
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
