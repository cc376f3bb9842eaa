"""Shared fixtures: tiny datasets in the canonical file formats, and the real data root."""

from __future__ import annotations

import functools
import gzip
import json
import os
import pickle
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cnn_course_instructor.corpus import Sample, samples, write_corpus
from cnn_course_instructor.course import Course

REPO = Path(__file__).resolve().parents[1]
COURSE = Course(REPO)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", help="rewrite the golden files under tests/goldens"
    )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own cache, so cached state never leaks between tests."""
    if os.environ.get("CNN_COURSE_TEST_SHARED_CACHE") is None:
        monkeypatch.setenv("CNN_COURSE_CACHE", str(tmp_path_factory.mktemp("cache")))


_ROOT_CANDIDATES = [os.environ.get("CNN_COURSE_DATA", ""), str(REPO.parent / "shared" / "data")]


def find_real_root() -> Path | None:
    """The real MNIST/CIFAR-10 root: $CNN_COURSE_DATA, else ../shared/data beside the repo."""
    for candidate in filter(None, _ROOT_CANDIDATES):
        path = Path(candidate)
        if (path / "MNIST" / "raw").is_dir() and (path / "CIFAR-10").is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real data root (see ``find_real_root``); skips, or fails where required, without."""
    found = find_real_root()
    if found is not None:
        return found
    message = f"real data not found (set CNN_COURSE_DATA); looked in {_ROOT_CANDIDATES}"
    if os.environ.get("CNN_COURSE_REQUIRE_DATA"):
        pytest.fail(message)
    pytest.skip(message)


def searchable_text(content: bytes) -> str:
    """A file's text; for a notebook, its cells' sources as text (not JSON-escaped, which can
    look like a Python string literal of the same line), then the rest of its JSON."""
    text = content.decode("utf-8", errors="replace")
    try:
        notebook = json.loads(text)
    except ValueError:
        return text
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        return text
    sources = []
    for cell in notebook["cells"]:
        source = cell.pop("source", "") if isinstance(cell, dict) else ""
        sources.append("".join(source) if isinstance(source, list) else str(source))
    return "\n".join(sources) + "\n" + json.dumps(notebook)


def grade_command(submissions: Path, out: Path, *options: str) -> list[str]:
    """``cnn-course grade SUBMISSIONS --out OUT`` on this repository's course, in this Python."""
    argv = [sys.executable, "-m", "cnn_course_instructor.cli", "grade", str(submissions)]
    return [*argv, "--out", str(out), "--repo", str(REPO), *options]


@pytest.fixture(scope="session")
def real_cache(request: pytest.FixtureRequest) -> Path:
    """One cache for the whole session, so the LZMA pack is decompressed once (the classes
    graded in the background share it)."""
    return _session_cache(request.config)


def _session_cache(config: pytest.Config) -> Path:
    if not hasattr(config, "_cnn_real_cache"):
        config._cnn_real_cache = config._tmp_path_factory.mktemp("real-cache")
    return config._cnn_real_cache


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


def copy_of_the_course(folder: Path) -> tuple[Path, Path]:
    """A copy of this course and its tools in ``folder``, and the Python of a venv beside it
    that imports them from the copy (and everything else from this venv)."""
    clone = folder / "cnn-course"
    ignore = shutil.ignore_patterns(".venv", ".git", "artifacts", "__pycache__", "*.pyc")
    shutil.copytree(REPO, clone, ignore=ignore)
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "checkout.pth").write_text(f"{clone}\n{here}\n")
    return clone, venv / "bin" / "python"


# --- the classes graded once per session ------------------------------------------------------


def full_marks(lab: str) -> dict[str, float]:
    """Each question the lab grades automatically, with its points (the front matter's)."""
    return {question: facts.points for question, facts in COURSE.lab(lab).graded.items()}


def corpus(lab: str, *, fast: bool = False) -> list[Sample]:
    """The lab's sample corpus (``autograder/<lab>/corpus.py``; ``fast``: the samples CI grades)."""
    return [sample for sample in samples(COURSE, lab) if sample.fast or not fast]


def corpus_labs() -> list[str]:
    """The labs that keep a sample corpus, in the course's order."""
    return [lab for lab in COURSE.labs if corpus(lab)]


@dataclass
class GradedClass:
    """A class graded once per test session, whose outputs several tests read."""

    lab: str  # the lab whose corpus it holds, or (the heavy class) whose notebooks it attacks
    out: Path
    submissions: Path
    results: dict  # student -> SubmissionResult
    corpus: list  # the corpus samples graded
    hostile: list  # the hostile samples graded (empty where the machine cannot sandbox)
    canary: Path | None
    connections: int  # connections the host listener received while grading
    sandboxed: bool


class _ClassRun:
    """A class written to disk, then graded by `cnn-course grade` in a process of its own.

    Started as soon as the session knows that a selected test needs it (``pytest_collection_
    finish``), so that the tests needing no grading run meanwhile; the grader's budgets are in
    CPU time, so sharing the machine with them changes no grade. The process gets its
    environment when it starts: nothing a test later sets reaches it.
    """

    CELL_TIMEOUT = 20  # CPU seconds: twice the lab's longest shortened cell
    # Two at once in each class, and two classes at once (AT_ONCE): with the tests that run
    # meanwhile, the two cores stay busy (budgets in CPU time keep every grade as it is alone);
    # three per class measured slower, the machine then spending its time switching.
    JOBS = 2
    AT_ONCE = 2

    def __init__(
        self,
        name: str,
        make: Callable[[_ClassRun], GradedClass],
        config: pytest.Config,
        root: Path,
    ):
        from cnn_course_instructor.sandbox import sandbox_available

        self.name, self.make, self.root = name, make, root
        self.sandboxed = sandbox_available() is None  # else graded with --no-sandbox
        self.work = config._tmp_path_factory.mktemp(name)
        self.work.chmod(0o755)  # as a normal user too, its folders stay private (0700)
        self.cache = _session_cache(config)
        self.env = {**os.environ, "CNN_COURSE_CACHE": str(self.cache)}  # before any test runs
        self.done = threading.Event()
        self.process: subprocess.Popen | None = None
        self.graded: GradedClass | None = None
        self.failure = ""

    def run(self) -> None:
        """Write the class, grade it, and keep what the tests read (in a background thread)."""
        try:
            self.graded = self.make(self)
        except BaseException as exc:  # noqa: BLE001 - the fixture reports it in the test
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def grade(self, submissions: Path, out: Path, *options: str) -> dict:
        """``cnn-course grade`` on ``submissions``; the results by student."""
        from cnn_course_instructor.grading.results import SubmissionResult

        if not self.sandboxed:
            options = (*options, "--no-sandbox")
        argv = [sys.executable, "-m", "cnn_course_instructor.cli", "grade", str(submissions)]
        argv += ["--out", str(out), "--jobs", str(self.JOBS), "--data-root", str(self.root)]
        argv += ["--cell-timeout", str(self.CELL_TIMEOUT), "--repo", str(REPO), *options]
        with (self.work / "grade.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=log, cwd=self.work, start_new_session=True
            )
            code = self.process.wait()
        if code != 0:
            tail = (self.work / "grade.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"cnn-course grade exited with {code}:\n{tail}")
        return {
            path.stem: SubmissionResult.read(path)
            for path in sorted(Path(out).resolve().glob("*/results/*.json"))
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)


def _corpus_class(run: _ClassRun, lab: str) -> GradedClass:
    """The lab's fast corpus, each notebook telling its lab by its metadata."""
    chosen, submissions, out = corpus(lab, fast=True), run.work / "submitted", run.work / "out"
    write_corpus(COURSE, lab, chosen, submissions)
    results = run.grade(submissions, out)
    return GradedClass(lab, out, submissions, results, chosen, [], None, 0, run.sandboxed)


def _hostile_class(run: _ClassRun, *, weight: str) -> GradedClass:
    """The hostile samples of that ``weight`` (sandboxed where possible); with the "light" ones,
    the fast corpus of their lab and a broken file, graded as one class."""
    from hostile import LAB
    from hostile import samples as hostile_samples
    from listener import Listener

    work = run.work
    submissions, out = work / "submitted", work / "out"
    chosen = corpus(LAB, fast=True) if weight == "light" else []
    write_corpus(COURSE, LAB, chosen, submissions)
    if weight == "light":
        (submissions / "broken.ipynb").write_text("{not json")
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
    every = hostile_samples(canary, listener.port, out, submissions, host) if run.sandboxed else []
    hostile = [sample for sample in every if sample.heavy == (weight == "heavy")]
    for sample in hostile:
        sample.write(submissions)
    try:
        # the output folder given through a link; the course has several labs, hand-made
        # notebooks name none: all are graded as the hostile samples' lab
        results = run.grade(submissions, linked_out, "--lab", LAB)
    finally:
        listener.close()
        unix.setblocking(False)
        try:
            unix.accept()
            unix_connections = 1
        except BlockingIOError:
            unix_connections = 0
        unix.close()
    connections = listener.connections + unix_connections
    return GradedClass(
        LAB, out, submissions, results, chosen, hostile, canary, connections, run.sandboxed
    )


HEAVY = "heavy"  # the class of the hostile samples that train the whole lab


def _class_makers() -> dict[str, Callable[[_ClassRun], GradedClass]]:
    """Run name -> how its class is made and graded: one per lab with a corpus, the hostile
    samples' lab's holding its light hostile samples too, then the heavy hostile samples."""
    from hostile import LAB

    makers = {lab: functools.partial(_corpus_class, lab=lab) for lab in corpus_labs()}
    makers[LAB] = functools.partial(_hostile_class, weight="light")
    makers[HEAVY] = functools.partial(_hostile_class, weight="heavy")
    return makers


def _runs_read(item: pytest.Item) -> set[str]:
    """The names of the graded classes a test reads: the lab it parametrizes ``graded_lab``
    with, the hostile samples' lab for ``graded_class``, the heavy class for ``graded_heavy``."""
    fixtures = set(getattr(item, "fixturenames", ()))
    runs = {HEAVY} if "graded_heavy" in fixtures else set()
    if "graded_class" in fixtures:
        from hostile import LAB

        runs.add(LAB)
    if "graded_lab" in fixtures:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "graded_lab" not in callspec.params:
            raise pytest.UsageError(
                f"{item.nodeid}: parametrize graded_lab with the lab ids it reads, e.g. "
                '@pytest.mark.parametrize("graded_lab", corpus_labs(), indirect=True)'
            )
        runs.add(callspec.params["graded_lab"])
    return runs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read a graded class run last (in their order): those needing none run while
    the classes are graded in the background."""
    last = {"graded_lab", "graded_class", "graded_heavy", "classes_graded"}
    items.sort(key=lambda item: any(name in last for name in getattr(item, "fixturenames", ())))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start grading, in background threads, the classes the selected tests read: ``AT_ONCE``
    at a time, in the course's order of labs, then the heavy class."""
    needed = set().union(*(_runs_read(item) for item in session.items))
    root = find_real_root()
    if root is None or not needed or session.config.option.collectonly:
        return
    runs = {
        name: _ClassRun(name, make, session.config, root)
        for name, make in _class_makers().items()
        if name in needed
    }
    session.config._cnn_class_runs = runs
    stopping = session.config._cnn_stopping = threading.Event()  # set when the session ends
    waiting = queue.SimpleQueue()
    for run in runs.values():
        waiting.put(run)

    def grade() -> None:
        while not stopping.is_set():
            try:
                run = waiting.get_nowait()
            except queue.Empty:
                return
            run.run()

    for _ in range(min(_ClassRun.AT_ONCE, len(runs))):
        threading.Thread(target=grade, name="graded", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "_cnn_stopping"):
        session.config._cnn_stopping.set()  # no class starts any more
    for run in getattr(session.config, "_cnn_class_runs", {}).values():
        run.stop()


def wait_for_classes(config: pytest.Config) -> None:
    """Wait until every class of this session is graded (none of their kernels still runs)."""
    for run in getattr(config, "_cnn_class_runs", {}).values():
        run.done.wait()


@pytest.fixture
def classes_graded(request: pytest.FixtureRequest) -> None:
    """For a test whose outcome depends on the CPU share its kernel gets: it runs with the tests
    that read a graded class, once no class of this session is grading in the background."""
    wait_for_classes(request.config)


def _graded(request: pytest.FixtureRequest, name: str) -> GradedClass:
    request.getfixturevalue("real_root")  # skips (or fails, where required) without data
    run = getattr(request.config, "_cnn_class_runs", {}).get(name)
    assert run is not None, f"the class {name} was not started at collection: has it a corpus?"
    run.done.wait()
    if run.graded is None:
        pytest.fail(f"grading the session's class {name} failed: {run.failure}")
    return run.graded


@pytest.fixture(scope="session")
def graded_lab(request: pytest.FixtureRequest) -> GradedClass:
    """The fast corpus of the lab a test parametrizes this fixture with (indirect=True), graded
    once (sandboxed where possible); the hostile samples' lab's is ``graded_class``."""
    return _graded(request, request.param)


@pytest.fixture(scope="session")
def graded_class(request: pytest.FixtureRequest) -> GradedClass:
    """The fast corpus of the hostile samples' lab (part 1), a broken file and, where the machine
    can sandbox, the hostile corpus but for the samples that train the whole lab, graded
    together once."""
    from hostile import LAB

    return _graded(request, LAB)


@pytest.fixture(scope="session")
def graded_heavy(request: pytest.FixtureRequest) -> GradedClass:
    """The hostile samples that train the whole lab (the stress tier's), graded once."""
    return _graded(request, HEAVY)
