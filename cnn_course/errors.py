"""The one exception type the package raises for problems a person must fix."""

__all__ = ["CourseError"]


class CourseError(Exception):
    """A problem with the user's files, settings or input, explained in plain words.

    The message says what was expected, what was found and what to do next. The command
    line prints it without a traceback and exits with status 2.
    """
