"""Worker process: grade one submission and write its result as JSON (`python -m autograder.runner`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .grading import grade_notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.runner")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    args = parser.parse_args(argv)
    result = grade_notebook(args.notebook, args.scratch, args.seed, args.data_root)
    tmp = args.result.with_name(f".{args.result.name}.tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
