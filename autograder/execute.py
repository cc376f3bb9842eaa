"""Run a notebook top to bottom in a fresh Jupyter kernel and collect what each cell printed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

__all__ = ["CellProblem", "Execution", "run_notebook"]


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

    @property
    def ok(self) -> bool:
        return self.stopped_at is None and not self.problems


def run_notebook(
    notebook: NotebookNode | Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    cell_timeout: int = 600,
    allow_errors: bool = False,
) -> Execution:
    """Execute every code cell in order in a new kernel.

    By default the run stops at the first error; with ``allow_errors`` every cell runs (a cell
    that exceeds ``cell_timeout`` is interrupted) so later cells still produce their results.
    ``env`` is added to this process's environment for the kernel.
    """
    if not isinstance(notebook, NotebookNode):
        notebook = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        notebook,
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
