"""Instructor tools for the cnn-course labs: build, grade, publish and the data tools."""

import sys
from pathlib import Path

__all__ = ["TOOLS", "__version__"]
__version__ = "0.1.0"
TOOLS = Path(__file__).resolve().parent  # this package's folder: judges import it from there

# nbformat validates notebooks with fastjsonschema, yet imports jsonschema, whose format checkers
# compile about 40 grammars of the optional rfc3987-syntax package at import: a second of CPU in
# every grading worker, for IRI formats no notebook schema uses. The tools go without them (a
# process that imported the package before keeps it).
sys.modules.setdefault("rfc3987_syntax", None)
