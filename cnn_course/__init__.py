"""Helper package for the cnn-course labs: data, plots, training helpers and checks."""

__all__ = ["__version__", "data", "plots", "training"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `from cnn_course import data, plots` works without importing torch at package import.
    if name in ("data", "plots", "training", "checks", "widgets"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
