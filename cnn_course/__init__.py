"""What students import in the cnn-course labs: data, plots, training helpers, checks and widgets
(shared by every lab), and each lab's own helpers under ``cnn_course.labs.<lab>``."""

__all__ = [
    "__version__",
    "checks",
    "data",
    "display",
    "errors",
    "judging",
    "labs",
    "plots",
    "settings",
    "training",
    "widgets",
]
__version__ = "0.1.0"

_MODULES = tuple(name for name in __all__ if not name.startswith("_"))


def __getattr__(name: str):
    # `from cnn_course import data, plots` works without importing torch at package import.
    if name in _MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
