"""Shared fixtures: tiny datasets in the canonical file formats, and the real data root."""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", help="rewrite the golden files under tests/goldens"
    )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own cache, so cached state never leaks between tests."""
    if os.environ.get("CNN_COURSE_TEST_SHARED_CACHE") is None:
        monkeypatch.setenv("CNN_COURSE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real MNIST/CIFAR-10 root: $CNN_COURSE_DATA, else ../shared/data beside the repo."""
    candidates = [os.environ.get("CNN_COURSE_DATA", ""), str(REPO.parent / "shared" / "data")]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "MNIST" / "raw").is_dir() and (path / "CIFAR-10").is_dir():
            return path
    message = f"real data not found (set CNN_COURSE_DATA); looked in {candidates}"
    if os.environ.get("CNN_COURSE_REQUIRE_DATA"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session, so the LZMA pack is decompressed once."""
    return tmp_path_factory.mktemp("real-cache")


@pytest.fixture
def use_real_cache(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNN_COURSE_CACHE", str(real_cache))
    return real_cache


# --- tiny datasets in the canonical formats -------------------------------------------------


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array in LeCun's IDX format (magic 0x08 = unsigned byte)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as stream:
            stream.write(payload)
    else:
        path.write_bytes(payload)


def tiny_images(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def write_tiny_mnist(
    root: Path, compress: bool = False, n_train: int = 40, n_test: int = 20
) -> dict:
    raw = root / "MNIST" / "raw"
    arrays = {
        "train": (tiny_images(n_train, (28, 28), 1), np.arange(n_train, dtype=np.uint8) % 10),
        "test": (tiny_images(n_test, (28, 28), 2), (np.arange(n_test, dtype=np.uint8) * 3) % 10),
    }
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[split]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return arrays


CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def tiny_cifar_arrays(n_train: int = 50, n_test: int = 10) -> dict[str, np.ndarray]:
    return {
        "x_train": tiny_images(n_train, (32, 32, 3), 3),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": tiny_images(n_test, (32, 32, 3), 4),
        "y_test": ((np.arange(n_test) * 7) % 10).astype(np.uint8),
        "label_names": np.asarray(CIFAR_NAMES),
    }


def write_tiny_cifar_batches(root: Path, arrays: dict[str, np.ndarray]) -> None:
    """torchvision's canonical layout: pickled dicts with rows of 1024 R, 1024 G, 1024 B."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def rows(x: np.ndarray) -> np.ndarray:
        return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)

    chunks = np.array_split(np.arange(len(arrays["y_train"])), 5)
    for number, chunk in enumerate(chunks, start=1):
        batch = {
            "data": rows(arrays["x_train"][chunk]),
            "labels": arrays["y_train"][chunk].tolist(),
        }
        (folder / f"data_batch_{number}").write_bytes(pickle.dumps(batch))
    test = {"data": rows(arrays["x_test"]), "labels": arrays["y_test"].tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    meta = {"label_names": list(arrays["label_names"])}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def write_tiny_pack(root: Path, arrays: dict[str, np.ndarray], name: str = "tiny.npz") -> Path:
    path = root / "CIFAR-10" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


# --- one class graded once per session ------------------------------------------------------


@dataclass
class GradedClass:
    """A class graded once per test session, whose outputs several tests read."""

    out: Path
    submissions: Path
    results: dict  # student -> SubmissionResult
    corpus: list  # the corpus samples graded
    hostile: list  # the hostile samples graded (empty where the machine cannot sandbox)
    canary: Path
    connections: int  # connections the host listener received while grading
    sandboxed: bool


@pytest.fixture(scope="session")
def graded_class(real_root: Path, real_cache: Path, tmp_path_factory) -> GradedClass:
    """The corpus's CI subset, a broken file and, where the machine can sandbox, the hostile
    corpus, graded together once (2 jobs, sandboxed where possible)."""
    import shutil

    import nbformat
    from corpus import SAMPLES
    from hostile import samples as hostile_samples
    from listener import Listener

    from cnn_course_instructor.course import Course
    from cnn_course_instructor.sandbox import sandbox_available
    from cnn_course_instructor.scheduler import grade_class

    work = tmp_path_factory.mktemp("class")
    work.chmod(0o755)  # as a normal user too, its folders stay private (mktemp makes them 0700)
    submissions, out = work / "submitted", work / "out"
    submissions.mkdir()
    corpus = [sample for sample in SAMPLES if sample.fast]
    for sample in corpus:
        nbformat.write(sample.notebook(), submissions / f"{sample.name}.ipynb")
    (submissions / "broken.ipynb").write_text("{not json")
    sandboxed = sandbox_available() is None
    canary_folder = work / "canary"
    canary_folder.mkdir(parents=True, exist_ok=True)
    canary_folder.chmod(0o777)
    canary = canary_folder / "owned"
    previous = work / "previous-out"  # a previous run's output, readable by anyone
    previous.mkdir()
    (previous / "grades.csv").write_text("student,total\nalice,18\n")
    (previous / "grades.csv").chmod(0o644)
    linked_out = work / "linked-out"
    out.mkdir()
    linked_out.symlink_to(out)
    unix_path = work / "host.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    unix_path.chmod(0o777)
    host = {"previous": previous / "grades.csv", "linked_out": linked_out, "socket": unix_path}
    listener = Listener()
    hostile = hostile_samples(canary, listener.port, out, submissions, host) if sandboxed else []
    for sample in hostile:
        sample.write(submissions)
    saved = os.environ.get("CNN_COURSE_CACHE")
    os.environ["CNN_COURSE_CACHE"] = str(real_cache)
    try:
        results = grade_class(
            submissions,
            linked_out,  # the output folder, given through a link
            course=Course(REPO),
            lab="cnn_lab",  # the course has two labs; hand-made notebooks name none
            jobs=2,
            data_root=real_root,
            sandbox=sandboxed,
            cell_timeout=60,
            progress=lambda _: None,
        )
    finally:
        listener.close()
        unix.setblocking(False)
        try:
            unix.accept()
            unix_connections = 1
        except BlockingIOError:
            unix_connections = 0
        unix.close()
        if saved is None:
            os.environ.pop("CNN_COURSE_CACHE", None)
        else:
            os.environ["CNN_COURSE_CACHE"] = saved
    yield GradedClass(
        out,
        submissions,
        {result.student: result for result in results},
        corpus,
        hostile,
        canary,
        listener.connections + unix_connections,
        sandboxed,
    )
    shutil.rmtree(canary_folder, ignore_errors=True)
