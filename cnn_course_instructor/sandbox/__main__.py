"""``python -m cnn_course_instructor.sandbox kernel SPEC.json CONNECTION.json``: the command a
sandboxed kernel's manager runs (see ``launch.launch_kernel``)."""

import sys

from .launch import main

sys.exit(main())
