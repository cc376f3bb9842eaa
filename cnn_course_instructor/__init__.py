"""Instructor tools for the cnn-course labs: build, grade, publish and the data tools."""

__all__ = ["__version__"]
__version__ = "0.1.0"
