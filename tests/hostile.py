"""A hostile and broken corpus: submissions that attack or break the grader, with the outcome each must get.

Each sample is a file written into a submissions folder. ``status`` and ``total`` are what its
row must say; other students' rows must not change. Cells that try to escape print what they
found, so a test can read the executed notebook and see that each attempt failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat
from corpus import SOLUTION, STUDENT

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Hostile:
    """A submission file's content, and the status and total its row must show."""

    name: str
    content: str  # the file's text
    status: str | None  # None: any status (a fork bomb may or may not leave a kernel to answer)
    total: float


def _notebook(cells: list[str], base: Path | None = None, at_end: bool = True) -> str:
    notebook = nbformat.read(base, as_version=4) if base else nbformat.v4.new_notebook()
    new = [nbformat.v4.new_code_cell(cell) for cell in cells]
    notebook.cells = notebook.cells + new if at_end else new + notebook.cells
    return nbformat.writes(notebook)


def attempts(canary: Path, port: int, out: Path, submissions: Path) -> str:
    """One cell trying every escape; it prints ESCAPED <what> for each one that works."""
    return f"""
import os, socket, subprocess
targets = {{
    "read hidden tests": "{REPO / "autograder" / "cnn_lab" / "__init__.py"}",
    "read the instructor tools": "{REPO / "cnn_course_instructor" / "worker.py"}",
    "read the lab source": "{REPO / "source" / "cnn_lab.md"}",
    "read the solution": "{REPO / "notebooks" / "solution" / "cnn_lab.ipynb"}",
    "read another submission": "{submissions / "solution.ipynb"}",
    "read the gradebook": "{out / "gradebook.db"}",
    "read the grading seed": "{out / ".grading-seed"}",
}}
for what, path in targets.items():
    try:
        open(path, "rb").read(10)
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked:", what, type(exc).__name__)
for what, path in {{"write canary": "{canary}", "write /tmp": "/tmp/owned", "write repo": "{REPO / "owned"}"}}.items():
    try:
        open(path, "w").write("owned")
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked:", what, type(exc).__name__)
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"owned")
    print("ESCAPED network")
except OSError as exc:
    print("blocked: network", type(exc).__name__)
print("processes visible:", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("uid", os.getuid())
"""


NOISE = [
    "import time\ntime.sleep(10**6)",  # interrupted by the cell timeout
    "x = bytearray(40 * 1024**3)",  # MemoryError under the memory limit
    "for _ in range(200000):\n    print('spam ' * 20)",  # output over the cap is dropped
    "import sys\nsys.exit(3)",  # IPython turns it into an error, the kernel lives on
    "print('All tests passed!  Total: 18/18')",  # printing a pass changes nothing
]

CHEATS = [
    # monkeypatch torch, replace the grader's helpers, lie about types: on an unanswered notebook
    "import torch\ntorch.argmax = lambda *a, **k: torch.tensor([1])\ntorch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)",
    "import cnn_course.judging as j\nj.layer_records = lambda *a, **k: {'layers': [], 'error': None}",
    "class Liar(torch.Tensor):\n    def __eq__(self, other): return True\nvector_to_class = lambda x: Liar(torch.zeros(len(x)))\ncnn_accuracy = lambda p, l: float('nan')",
    "print('All tests passed!')",
]


def _edited_solution(edit) -> str:
    """The solution notebook after ``edit(cells)`` rearranged its list of cells in place."""
    notebook = nbformat.read(SOLUTION, as_version=4)
    edit(notebook.cells)
    return nbformat.writes(notebook)


def _index(cells, question: str) -> int:
    return next(
        i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("grade_id") == question
    )


def _reshape(cells) -> None:
    """Swap two independent exercise cells, duplicate one, and replace a check by a fake pass."""
    q3, q4 = _index(cells, "q3_vector_to_class"), _index(cells, "q4_cnn_accuracy")
    cells[q3], cells[q4] = cells[q4], cells[q3]
    q1 = _index(cells, "q1_mnist_model")
    duplicate = nbformat.from_dict({**dict(cells[q1]), "id": "q1-again"})
    cells.insert(q1, duplicate)
    check = next(c for c in cells if c.source.startswith("checks.q1_mnist_model"))
    check.source = "print('All tests passed!')"


def _rename(cells) -> None:
    cell = cells[_index(cells, "q1_mnist_model")]
    cell.source = cell.source.replace("mnist_model = nn.Sequential(", "net = nn.Sequential(")


def _delete(cells) -> None:
    del cells[_index(cells, "q4_cnn_accuracy")]


def samples(canary: Path, port: int, out: Path, submissions: Path) -> list[Hostile]:
    probe = attempts(canary, port, out, submissions)
    return [
        Hostile("invalid_json", "{not json", "invalid", 0),
        Hostile("not_a_notebook", json.dumps({"hello": "world"}), "invalid", 0),
        Hostile("empty_notebook", nbformat.writes(nbformat.v4.new_notebook()), "invalid", 0),
        Hostile("escape_attempts", _notebook([probe]), "graded", 0),
        Hostile("noisy_solution", _notebook([probe, *NOISE], SOLUTION), "graded", 18),
        Hostile("cheating_stub", _notebook(CHEATS, STUDENT, at_end=False), "graded", 0),
        Hostile("segfault", _notebook(["import ctypes\nctypes.string_at(0)"]), "crashed", 0),
        Hostile("os_exit", _notebook(["import os\nos._exit(0)"]), "crashed", 0),
        Hostile(
            "kill_kernel",
            _notebook(["import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"]),
            "graded",  # PID 1 of its namespace ignores signals it sends itself
            0,
        ),
        Hostile(
            "fork_bomb",
            _notebook(
                [
                    "import os\nfor _ in range(100000):\n    try:\n        os.fork()\n    except OSError:\n        break"
                ]
            ),
            None,
            0,
        ),
        Hostile(
            "infinite_loop",
            _notebook(["while True:\n    pass", "print('after the loop')"]),
            "graded",
            0,
        ),
        # Reordered independent cells, a duplicated cell and an edited check change nothing.
        Hostile("reshaped_solution", _edited_solution(_reshape), "graded", 18),
        # Renaming mnist_model loses what needs that name: q1, q2 (its optimiser), q5.
        Hostile("renamed_model", _edited_solution(_rename), "graded", 11),
        # Deleting cnn_accuracy loses q4 and both training loops, which call it.
        Hostile("deleted_cell", _edited_solution(_delete), "graded", 9),
    ]
