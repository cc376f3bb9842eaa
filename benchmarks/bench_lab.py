"""A student's run of each lab: the solution notebook at full length, as a student runs it.

    CNN_COURSE_DATA=../shared/data .venv/bin/python benchmarks/bench_lab.py [--labs cnn_lab cnn_part2] [--seeds 0 1 2] [--threads 2]

Each run starts a real kernel (nbclient, ipykernel) with ``--threads`` torch threads (a 2-core
laptop by default) and executes the solution with its seed set to each of ``--seeds``, at full
length (no shortened mode). Prints, per lab and seed, the wall time from kernel start to the last
cell and every ``*test_accuracy`` the notebook computed, then the medians and the lowest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from cnn_course import settings
from cnn_course_instructor.calibrate import with_seed
from cnn_course_instructor.course import Course

REPO = Path(__file__).resolve().parents[1]
REPORT = (
    "import json as _json\n"
    "print(_json.dumps({_k: float(_v) for _k, _v in dict(globals()).items()"
    " if _k.endswith('test_accuracy') and isinstance(_v, (int, float))}))"
)


def run_lab(lab: str, seed: int, threads: int) -> tuple[float, dict[str, float]]:
    """Wall seconds of one full-length run of the lab's solution, and its test accuracies."""
    notebook = with_seed(
        nbformat.read(REPO / "notebooks" / "solution" / f"{lab}.ipynb", as_version=4), seed
    )
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop(settings.FAST_ENV, None)
    env.pop(settings.GRADING_ENV, None)
    with tempfile.TemporaryDirectory() as work:
        client = NotebookClient(
            notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": work}}
        )
        started = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - started
    text = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    return seconds, json.loads(text.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    labs = list(Course(REPO).labs)
    parser.add_argument("--labs", nargs="+", choices=labs, default=labs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for lab in args.labs:
        runs = []
        for seed in args.seeds:
            seconds, accuracies = run_lab(lab, seed, args.threads)
            runs.append((seconds, accuracies))
            shown = ", ".join(f"{name} {value:.4f}" for name, value in sorted(accuracies.items()))
            print(f"{lab} seed {seed}: {seconds:.1f} s, {shown}", flush=True)
        names = sorted(runs[0][1])
        summary = [f"median {statistics.median(s for s, _ in runs):.1f} s"]
        for name in names:
            values = [accuracies[name] for _, accuracies in runs]
            summary.append(
                f"{name} median {statistics.median(values):.4f} lowest {min(values):.4f}"
            )
        print(f"{lab} over seeds {args.seeds}: " + ", ".join(summary), flush=True)


if __name__ == "__main__":
    main()
