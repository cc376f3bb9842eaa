"""Part 1 (``cnn_lab``): its visible checks, teaching figures, tables of layers and own verdicts.

The notebook imports ``from cnn_course.labs.cnn_lab import checks, figures`` beside the shared
runtime; the grader's hidden tests use ``specs`` and ``verdicts``, the rules the checks apply.
"""

__all__ = ["checks", "figures", "specs", "verdicts"]
