"""A hostile and broken corpus: submissions that attack or break the grader, with the outcome each must get.

Each sample is a file written into a submissions folder. ``status`` and ``total`` are what its
row must say; other students' rows must not change. Cells that try to escape print what they
found, so a test can read the executed notebook and see that each attempt failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
from conftest import REPO, full_marks

# The hostile samples are made from part 1's notebooks and name its questions: they are graded
# with its fast corpus, as that lab.
LAB = "cnn_lab"
SOLUTION = REPO / "notebooks" / "solution" / f"{LAB}.ipynb"
STUDENT = REPO / "notebooks" / "student" / f"{LAB}.ipynb"
POINTS = full_marks(LAB)  # question -> its points
TOTAL = sum(POINTS.values())  # the solution's score


@dataclass(frozen=True)
class Hostile:
    """A submission file's content, and the status and total its row must show.

    ``kind`` says what file to write: ``file`` (the content), ``link`` (a symbolic link to the
    path in ``content``, relative names inside the submissions folder), ``fifo`` or ``big``
    (``content`` repeated past the size limit). ``total`` None: any total; ``words``: text the
    row's reason or one of its test messages must hold. ``heavy``: it trains the whole lab
    (graded by the stress tier; `make test` grades the rest).
    """

    name: str
    content: str  # the file's text (or a link's target)
    status: str | None  # None: any status (a fork bomb may or may not leave a kernel to answer)
    total: float | None
    kind: str = "file"
    words: str = ""
    heavy: bool = False

    def write(self, folder: Path) -> None:
        path = folder / f"{self.name}.ipynb"
        if self.kind == "link":
            path.symlink_to(self.content)
        elif self.kind == "fifo":
            os.mkfifo(path)
        elif self.kind == "big":
            with path.open("w") as stream:
                stream.write('{"cells": [], "padding": "')
                stream.write(self.content * (21_000_000 // len(self.content) + 1))
                stream.write('"}')
        else:
            path.write_text(self.content)


def _notebook(cells: list[str], base: Path | None = None, at_end: bool = True) -> str:
    notebook = nbformat.read(base, as_version=4) if base else nbformat.v4.new_notebook()
    new = [nbformat.v4.new_code_cell(cell) for cell in cells]
    notebook.cells = notebook.cells + new if at_end else new + notebook.cells
    return nbformat.writes(notebook)


# Each attempt prints "blocked: <what>" when it fails, "ESCAPED <what>" when it works.
ATTEMPTS = 16


def attempts(canary: Path, port: int, out: Path, submissions: Path, host: dict) -> str:
    """One cell trying every escape; it prints ESCAPED <what> for each one that works.

    ``host`` holds paths the test made on the host: ``previous`` (a world-readable file in a
    previous run's output), ``linked_out`` (an output folder reached through a link) and
    ``socket`` (a Unix socket a host process listens on).
    """
    return f"""
import ctypes, os, socket
targets = {{
    "read hidden tests": "{REPO / "autograder" / LAB / "__init__.py"}",
    "read the instructor tools": "{REPO / "cnn_course_instructor" / "grading" / "worker.py"}",
    "read the lab source": "{REPO / "source" / LAB}.md",
    "read the solution": "{SOLUTION}",
    "read another submission": "{submissions / "solution.ipynb"}",
    "read the gradebook": "{out / "gradebook.db"}",
    "read the grading seed": "{out / ".grading-seed"}",
    "read a previous run's output": "{host["previous"]}",
    "read an output folder given through a link": "{host["linked_out"]}/.grading-seed",
}}
for what, path in targets.items():
    try:
        open(path, "rb").read(10)
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked:", what, type(exc).__name__)
# A write may land in the sandbox's own /tmp (a checkout under /tmp shows its folders there):
# whether it reached the host is checked on the host (test_sandbox's _check_rows).
for what, path in {{"write canary": "{canary}", "write repo": "{REPO / "owned"}"}}.items():
    try:
        open(path, "w").write("owned")
        print("written, to be checked on the host:", what)
    except OSError as exc:
        print("blocked:", what, type(exc).__name__)
open("/tmp/owned-by-student", "w").write("private /tmp: must not reach the host's")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"owned")
    print("ESCAPED network")
except OSError as exc:
    print("blocked: network", type(exc).__name__)
try:
    unix = socket.socket(socket.AF_UNIX)
    unix.settimeout(3)
    unix.connect("{host["socket"]}")
    unix.sendall(b"owned")
    print("ESCAPED host unix socket")
except OSError as exc:
    print("blocked: host unix socket", type(exc).__name__)
mountinfo = open("/proc/self/mountinfo").read()
shown = [p for p in ("{REPO / "autograder"}", "{out}", "{submissions}", "{host["previous"]}") if p in mountinfo]
print("ESCAPED mountinfo lists " + repr(shown) if shown else "blocked: mountinfo lists no hidden path")
if ctypes.CDLL(None).unshare(0x10000000) == 0:  # CLONE_NEWUSER
    print("ESCAPED nested user namespace")
else:
    print("blocked: nested user namespace")
try:
    os.setuid(0)
    print("ESCAPED setuid 0")
except OSError as exc:
    print("blocked: setuid 0", type(exc).__name__)
print("processes visible:", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("uid", os.getuid())
"""


NOISE = [
    "import time\ntime.sleep(10**6)",  # interrupted: it waits without computing
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
    q3, q4 = _index(cells, "q6_vector_to_class"), _index(cells, "q7_cnn_accuracy")
    cells[q3], cells[q4] = cells[q4], cells[q3]
    q1 = _index(cells, "q4_mnist_model")
    duplicate = nbformat.from_dict({**dict(cells[q1]), "id": "q1-again"})
    cells.insert(q1, duplicate)
    check = next(c for c in cells if c.source.startswith("checks.q4_mnist_model"))
    check.source = "print('All tests passed!')"


def _rename(cells) -> None:
    cell = cells[_index(cells, "q4_mnist_model")]
    cell.source = cell.source.replace("mnist_model = nn.Sequential(", "net = nn.Sequential(")


def _delete(cells) -> None:
    del cells[_index(cells, "q7_cnn_accuracy")]


DEEP_TREE = """
import os
for top in (os.path.expanduser("~"), "/tmp"):
    os.chdir(top)
    for _ in range(1500):
        os.mkdir("d")
        os.chdir("d")
    open("f", "w").write("deep")
    os.symlink("/", "root-link")
    os.chmod(".", 0o500)
os.chdir(os.path.expanduser("~"))
"""

DISK_FILLER = """
import os
written = 0
for number in range(100000):
    try:
        with open(os.path.expanduser(f"~/fill{number}"), "wb") as stream:
            stream.write(b"x" * 50_000_000)
        written += 1
    except OSError as exc:
        print("stopped:", type(exc).__name__, written)
        break
"""

PROCESS_HOLDER = """
import os, time
held = 0
for _ in range(10000):
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        held += 1
    except OSError:
        break
print("holding", held, "processes")
time.sleep(float(os.environ.get("HOLD_SECONDS", "90")))
"""

OUTPUT_FLOOD = """
from IPython.display import display
handle = display("start", display_id=True)
for _ in range(400):
    handle.update("u" * 250_000)
import ipywidgets
box = ipywidgets.Text()
display(box)
for _ in range(400):
    box.value = "w" * 250_000
"""

RECORD_LINK = """
import os
def _swap(*args):
    path = "/run/kernel/record.pt"
    if os.path.lexists(path):
        os.remove(path)
        os.symlink("/etc/passwd", path)
get_ipython().events.register("post_run_cell", _swap)
"""

HUGE_MODEL = """
mnist_model = nn.Sequential(
    nn.Conv2d(1, 32, kernel_size=1, padding=100), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(32 * 114 * 114, 10),
)
"""

FAKE_HISTORY = """
from cnn_course import training
mnist_history = training.History({"loss": [2.0, 1.0], "accuracy": [0.5, 0.9]})
cifar_history = training.History({"loss": [2.0, 1.5], "accuracy": [0.3, 0.45]})
"""


def samples(canary: Path, port: int, out: Path, submissions: Path, host: dict) -> list[Hostile]:
    probe = attempts(canary, port, out, submissions, host)
    return [
        Hostile("invalid_json", "{not json", "invalid", 0),
        Hostile("not_a_notebook", json.dumps({"hello": "world"}), "invalid", 0),
        Hostile("empty_notebook", nbformat.writes(nbformat.v4.new_notebook()), "invalid", 0),
        Hostile("escape_attempts", _notebook([probe]), "graded", 0),
        # A cell interrupted by its time budget makes the status visible: timeout, still graded.
        Hostile(
            "noisy_solution",
            _notebook([probe, *NOISE], SOLUTION),
            "timeout",
            TOTAL,
            words="without computing and was interrupted",
            heavy=True,
        ),
        Hostile("cheating_stub", _notebook(CHEATS, STUDENT, at_end=False), "graded", 0),
        Hostile("segfault", _notebook(["import ctypes\nctypes.string_at(0)"]), "crashed", 0),
        Hostile("os_exit", _notebook(["import os\nos._exit(0)"]), "crashed", 0),
        Hostile(
            "kill_kernel",
            _notebook(["import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"]),
            "crashed",  # the kernel is not PID 1 of its namespace: it dies, alone
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
            "timeout",
            0,
            words="s of CPU time and was interrupted",
        ),
        # Reordered independent cells, a duplicated cell and an edited check change nothing.
        Hostile("reshaped_solution", _edited_solution(_reshape), "graded", TOTAL, heavy=True),
        # Renaming mnist_model loses what needs that name: q4, q5 (its optimiser), q8.
        Hostile(
            "renamed_model",
            _edited_solution(_rename),
            "graded",
            TOTAL
            - POINTS["q4_mnist_model"]
            - POINTS["q5_loss_optimizer"]
            - POINTS["q8_mnist_training"],
            heavy=True,
        ),
        # Deleting cnn_accuracy loses q7 and both training loops, which call it.
        Hostile(
            "deleted_cell",
            _edited_solution(_delete),
            "graded",
            TOTAL
            - POINTS["q7_cnn_accuracy"]
            - POINTS["q8_mnist_training"]
            - POINTS["q12_cifar_training"],
            heavy=True,
        ),
        # --- issue 11: one student must never stop the class or touch a neighbour ---
        Hostile("deep_tree", _notebook([DEEP_TREE]), "graded", 0),
        Hostile("disk_filler", _notebook([DISK_FILLER]), "graded", 0),
        Hostile("process_holder", _notebook([PROCESS_HOLDER.replace("90", "10")]), None, 0),
        Hostile(
            "output_flood", _notebook([OUTPUT_FLOOD]), "graded", 0, words="output over 2,000,000"
        ),
        Hostile("record_link", _notebook([RECORD_LINK], STUDENT), "crashed", 0, words="refused"),
        Hostile("huge_model", _notebook([HUGE_MODEL], STUDENT), "graded", 0, words="budget"),
        Hostile("fake_history", _notebook([FAKE_HISTORY], STUDENT), "graded", 0),
        # A last cell that breaks what the grader's probe imports: that row's fault, said so.
        Hostile(
            "probe_breaker",
            _notebook(["import sys\nsys.modules['torch'] = None"], STUDENT),
            "crashed",
            0,
            words="could not read your answers",
        ),
        # Another lab's notebook graded as this one (a wrong file, or a wrong --lab): no crash,
        # no blame on the grader, and the page says whose notebook it is.
        Hostile(
            "other_lab",
            _notebook([], REPO / "notebooks" / "solution" / "cnn_part2.ipynb"),
            "graded",
            0,
            words="this notebook is for the lab 'cnn_part2', but was graded as cnn_lab",
        ),
        Hostile("eve", "solution.ipynb", "invalid", 0, kind="link", words="link"),
        Hostile("root_only_link", "/etc/shadow", "invalid", 0, kind="link", words="link"),
        Hostile("fifo", "", "invalid", 0, kind="fifo", words="not a regular file"),
        Hostile("oversized", "x" * 1000, "invalid", 0, kind="big", words="over the limit"),
        Hostile("bad name", _notebook(["x = 1"]), "invalid", 0, words="not a usable student id"),
        Hostile("trailing\n", _notebook(["x = 1"]), "invalid", 0, words="usable student id"),
    ]
