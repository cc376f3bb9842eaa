"""Worker process: grade one submission described by a job file (`python -m autograder.runner JOB`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .grading import Job, grade_notebook


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m autograder.runner JOB.json", file=sys.stderr)
        return 2
    fields = json.loads(Path(argv[0]).read_text())
    job = Job(**{**fields, "hide": tuple(fields["hide"]), "keep": tuple(fields["keep"])})
    result = grade_notebook(job)
    path = Path(job.result)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
