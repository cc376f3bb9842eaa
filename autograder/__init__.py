"""Instructor-only tools: reference models, hidden tests and the grading pipeline."""
