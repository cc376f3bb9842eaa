"""``python -m cnn_course_instructor``: the ``cnn-course`` command, for an interpreter without
the script on its PATH."""

import sys

from .cli import main

sys.exit(main())
