"""Grade one submission in a process of its own: run it with the probe, then judge the record.

    python -m cnn_course_instructor.worker JOB.json

The student's code runs in a Jupyter kernel (sandboxed when the job names a uid); the hidden
tests run here, on the plain record the probe left, never in the student's kernel.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
import torch

from cnn_course import data

from .course import Course
from .execute import OUTPUT_LIMIT, run_notebook
from .locked import restore_locked_cells
from .probe import probe_cell
from .records import Status, SubmissionResult
from .registry import Context
from .sandbox import Limits, kernel_argv

__all__ = ["CELL_TIMEOUT", "Job", "grade_notebook", "main"]

CELL_TIMEOUT = 300


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to grade one submission (passed to it as JSON)."""

    course: str  # the course repository: its lab sources and grading content
    lab: str
    notebook: str
    result: str
    executed: str
    scratch: str
    seed: int
    data_root: str
    cell_timeout: int = CELL_TIMEOUT
    uid: int | None = None  # None: no sandbox (development only)
    hide: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Job:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{**fields, "hide": tuple(fields["hide"]), "keep": tuple(fields["keep"])})


def grade_notebook(job: Job) -> SubmissionResult:
    """Execute one submission with the probe appended, then judge the plain record it leaves."""
    started = time.perf_counter()
    content = Course(Path(job.course)).content(job.lab)
    points = {qid: question.points for qid, question in content.lab.graded.items()}

    changed: list[str] = []

    def outcome(status: Status, reason: str, tests=()) -> SubmissionResult:
        return SubmissionResult.from_tests(
            status,
            reason,
            list(tests),
            points,
            lab=job.lab,
            seconds=time.perf_counter() - started,
            changed_locked_cells=changed,
        )

    try:
        notebook = nbformat.read(job.notebook, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # any unreadable file is an invalid notebook, whatever the reason
        return outcome(
            Status.INVALID, f"not a valid notebook: {type(exc).__name__}: {str(exc)[:300]}"
        )
    if not any(cell.cell_type == "code" for cell in notebook.cells):
        return outcome(Status.INVALID, "the notebook has no code cells")
    released = Path(job.course) / "notebooks" / "student" / f"{job.lab}.ipynb"
    if released.is_file():  # grade on the released setup, as nbgrader does
        restored = restore_locked_cells(notebook, nbformat.read(released, as_version=4))
        notebook, changed[:] = restored.notebook, restored.changed
    scratch = Path(job.scratch)
    inputs = content.grading_inputs(job.seed)
    plan_path, record_path = scratch / "grader_plan.pt", scratch / "probe.pt"
    torch.save({"plan": content.probe_plan, "inputs": inputs}, plan_path)
    plan_path.chmod(0o644)
    notebook.cells.append(nbformat.v4.new_code_cell(probe_cell(str(plan_path), str(record_path))))
    env = {
        "CNN_COURSE_FAST": "1",
        "CNN_COURSE_GRADING": "1",  # the helpers skip what no hidden test reads
        "CNN_COURSE_DATA": job.data_root,
        "CNN_COURSE_CACHE": str(data.cache_dir()),
        "MPLBACKEND": "Agg",
    }
    kernel = None
    if job.uid is not None:
        for name in (
            "HOME",
            "MPLCONFIGDIR",
            "IPYTHONDIR",
            "TMPDIR",
            "JUPYTER_RUNTIME_DIR",
            "JUPYTER_DATA_DIR",
        ):
            env[name] = str(scratch)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / ".torchinductor")  # torch would use /tmp
        env["USER"] = env["LOGNAME"] = "student"
        hide, keep = [Path(p) for p in job.hide], [Path(p) for p in job.keep]
        kernel = kernel_argv(job.uid, scratch, hide, keep, Limits())
    execution = run_notebook(
        notebook,
        cwd=scratch,
        env=env,
        cell_timeout=job.cell_timeout,
        allow_errors=True,
        kernel_argv=kernel,
    )
    notebook.cells.pop()  # the probe is the grader's, not part of the student's record
    nbformat.write(notebook, job.executed)
    errors = [
        (p.index, p.text.splitlines()[-1] if p.text.strip() else p.text)
        for p in execution.problems
        if p.kind == "error"
    ]
    notes = "; ".join(dict.fromkeys(f"cell {index + 1}: {text}" for index, text in errors[:8]))
    if execution.truncated:
        notes = f"output over {OUTPUT_LIMIT:,} bytes was dropped; {notes}"
    if not record_path.is_file():
        status = Status.TIMEOUT if execution.error_name == "CellTimeoutError" else Status.CRASHED
        if any(text.startswith("MemoryError") for _, text in errors):
            status = Status.OUT_OF_MEMORY
        what = execution.error_name or "no grading record was written"
        return outcome(status, f"the kernel stopped before grading ({what}). {notes}".strip())
    try:
        record = torch.load(record_path, weights_only=True)
        if not isinstance(record, dict):
            raise TypeError(f"expected a dict, found {type(record).__name__}")
    except Exception as exc:  # a record the student's code tampered with is unusable
        return outcome(Status.CRASHED, f"the grading record is unreadable: {exc}")
    context = Context(content.lab, inputs, Path(job.data_root))
    return outcome(Status.GRADED, notes, content.tests.run(record, context))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cnn_course_instructor.worker JOB.json", file=sys.stderr)
        return 2
    job = Job.read(Path(argv[0]))
    result = grade_notebook(job)
    path = Path(job.result)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(result.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
