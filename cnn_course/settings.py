"""What crosses processes, written once: environment variables, paths inside a grading sandbox,
the datasets. It imports nothing (no torch): the grader's worker reads it as the labs do."""

from __future__ import annotations

from enum import Enum

__all__ = [
    "BWRAP_ENV",
    "CACHE_ENV",
    "CACHE_VIEW",
    "COURSE_VIEW",
    "DATASETS",
    "DATA_ENV",
    "DATA_VIEW",
    "DEVICE_ENV",
    "FAST_ENV",
    "GRADER_VIEW",
    "GRADING_ENV",
    "KERNEL_RUN",
    "NO_CGROUPS_ENV",
    "PLAN_VIEW",
    "ProbeKind",
    "RECORD_PATH",
    "SANDBOX_HOME",
    "WIDGETS_ENV",
]

# --- environment variables ----------------------------------------------------------------------
DATA_ENV = "CNN_COURSE_DATA"  # the data root
CACHE_ENV = "CNN_COURSE_CACHE"  # the writable cache of decoded datasets
FAST_ENV = "CNN_COURSE_FAST"  # "1": the labs' shortened runs (CI and grading)
GRADING_ENV = "CNN_COURSE_GRADING"  # "1": a grading kernel (figures and widgets do nothing)
DEVICE_ENV = "CNN_COURSE_DEVICE"  # cuda, mps or cpu: the device the training cells use
WIDGETS_ENV = "CNN_COURSE_WIDGETS"  # "1" or "0": whether the frontend shows widgets
BWRAP_ENV = "CNN_COURSE_BWRAP"  # the grader's bubblewrap, in place of the one it finds
NO_CGROUPS_ENV = "CNN_COURSE_NO_CGROUPS"  # "1": no cgroup per sandbox (the grader's watch)

# --- inside a grading sandbox -------------------------------------------------------------------
SANDBOX_HOME = "/home/student"  # the home and working folder (a tmpfs of its own)
KERNEL_RUN = "/run/kernel"  # the kernel's sockets and the grading record (a tmpfs of its own)
RECORD_PATH = f"{KERNEL_RUN}/record.pt"  # what the probe leaves for the judge
GRADER_VIEW = "/run/grader"  # the grader's files, read-only
PLAN_VIEW = f"{GRADER_VIEW}/plan.pt"  # what the probe records, and the inputs it draws
DATA_VIEW = f"{GRADER_VIEW}/data"  # the data root
CACHE_VIEW = f"{GRADER_VIEW}/cache"  # the cache entries the code reads, each CACHE_VIEW/<name>
COURSE_VIEW = f"{GRADER_VIEW}/course"  # the course's grading content (judges only)

# --- the datasets a lab may train on: name -> title (their loaders: cnn_course.data.load) -------
DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


# --- what the probe records in the student's kernel: the kinds of its plan's steps -------------
class ProbeKind(str, Enum):
    """The kind of one step of the probe's plan: what it records from the student's names, and
    how (the grader's lab contract says); the plan crosses to the kernel as plain strings."""

    MODEL = "model"
    OPTIMIZER = "optimizer"
    CALLS = "calls"
    HISTORY = "history"
    VALUE = "value"
    MODEL_CALLS = "model_calls"
    TRAINING = "training"  # what an answer cell did while it ran (see grading/probe.py)
