"""Part 2 (``cnn_part2``): its visible checks, figures, explorers, table of layers and verdicts.

The notebook imports ``from cnn_course.labs.cnn_part2 import checks, explorers, figures`` beside
the shared runtime; the grader's hidden tests use ``specs`` and ``verdicts``, the rules the
checks apply.
"""

__all__ = ["checks", "explorers", "figures", "specs", "verdicts"]
