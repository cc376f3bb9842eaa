"""Start-up cost of one sandbox: main's ctypes sandbox (before) and bubblewrap (after), side by side.

    sudo .venv/bin/python benchmarks/bench_sandbox.py [--runs 15]

Each run starts a sandbox around ``python -c pass`` (the interpreter the kernel uses) and waits
for it to end; the same command without a sandbox is the baseline. Runs alternate between the
forms, so both see the same machine. Prints the median and the overhead of each form over the
baseline. The ctypes form needs root and is read from git (``main``'s sandbox.py before issue 11).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnn_course_instructor import sandbox

REPO = Path(__file__).resolve().parents[1]
BEFORE = "297f3f7"  # the last commit with the ctypes sandbox


def _old_sandbox(folder: Path):
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:cnn_course_instructor/sandbox.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = folder / "old_sandbox.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    work.chmod(0o755)
    command = [sys.executable, "-c", "pass"]
    forms: dict[str, callable] = {"no sandbox": lambda: subprocess.run(command, check=True)}

    def bwrap() -> None:
        sandbox.run(sandbox.Sandbox(), command).check_returncode()

    forms["bubblewrap (after)"] = bwrap
    if os.geteuid() == 0:
        old, path = _old_sandbox(work)
        scratch = work / "scratch"
        scratch.mkdir()
        os.chown(scratch, 61999, 61999)
        prefix = Path(sys.prefix)
        keep = [REPO / "cnn_course", prefix, Path(sys.base_prefix)]
        hide = [entry for entry in REPO.iterdir() if entry.name != "cnn_course"] + [Path.home()]
        argv = old.kernel_argv(61999, scratch, hide, keep, old.Limits())
        # kernel_argv ends with the kernel's command: run the same interpreter instead
        split = argv.index("--")
        old_command = [sys.executable, str(path), *argv[2:split], "--", *command]

        def ctypes_form() -> None:
            subprocess.run(old_command, check=True)

        forms["ctypes (before)"] = ctypes_form
    else:
        print("not root: the ctypes sandbox (before) needs root; measuring bubblewrap only")
    times: dict[str, list[float]] = {name: [] for name in forms}
    for run in forms.values():  # warm the page cache once
        run()
    for _ in range(args.runs):
        for name, run in forms.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["no sandbox"])
    print(f"{'form':22} {'median ms':>10} {'overhead ms':>12}   ({args.runs} runs each)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:22} {median * 1000:10.1f} {(median - base) * 1000:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
