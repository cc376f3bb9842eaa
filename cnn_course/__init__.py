"""What students import in the cnn-course labs: data, plots, training helpers, checks and widgets."""

__all__ = [
    "__version__",
    "checks",
    "checks_part2",
    "data",
    "judging",
    "labs",
    "plots",
    "training",
    "widgets",
]
__version__ = "0.1.0"

_MODULES = ("checks", "checks_part2", "data", "judging", "labs", "plots", "training", "widgets")


def __getattr__(name: str):
    # `from cnn_course import data, plots` works without importing torch at package import.
    if name in _MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
