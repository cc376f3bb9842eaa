"""Grading on Dask workers: a real scheduler and workers on loopback, one of them killed mid-run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_cifar_arrays, write_tiny_mnist, write_tiny_pack

from cnn_course.errors import CourseError
from cnn_course_instructor import cli
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading import cluster as distributed_grading
from cnn_course_instructor.grading.job import GradingRun
from cnn_course_instructor.grading.results import Status
from cnn_course_instructor.grading.run import grade_class
from cnn_course_instructor.sandbox import sandbox_available

SAMPLE_COURSE = Path(__file__).parent / "samples" / "build_repo"
SOLUTION = "notebooks/solution/sample_lab.ipynb"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Cluster:
    """A Dask scheduler and workers on loopback, each a process group of this test's own."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.processes: dict[str, subprocess.Popen] = {}
        self.address = f"tcp://127.0.0.1:{_free_port()}"

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", *argv],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killed whole, and only what it started
        )

    def start(self, workers: dict[str, dict[str, str]]) -> None:
        port = self.address.rsplit(":", 1)[1]
        scheduler = ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port]
        self._start("scheduler", [*scheduler, "--no-dashboard"], {})
        for name, env in workers.items():
            argv = ["distributed.cli.dask_worker", self.address, "--name", name, "--nthreads", "1"]
            argv += ["--no-nanny", "--no-dashboard", "--death-timeout", "120"]
            argv += ["--local-directory", str(self.folder / name)]
            self._start(name, argv, env)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.kill(name)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def sample_class(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The sample course built, tiny data, and a class: right, stub, wrong, unreadable, right."""
    from cnn_course_instructor import build

    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=60)
    write_tiny_pack(root, tiny_cifar_arrays())
    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    build.build(course_root)
    solution = (course_root / SOLUTION).read_text()
    notebooks = {
        "ann": solution,
        "bo": (course_root / "notebooks/student/sample_lab.ipynb").read_text(),
        "cy": solution.replace("x * factor", "x * factor + 1"),
        "dee": "{ not a notebook",
        "eve": solution,
    }
    assert notebooks["cy"] != solution
    for student, text in notebooks.items():
        folder = tmp_path / "class" / "submitted" / student / "sample_lab"
        folder.mkdir(parents=True)
        (folder / "sample_lab.ipynb").write_text(text)
    return course_root, tmp_path / "class", root


def _grades(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "sample_lab" / "grades.csv").open()))


@pytest.mark.slow
@pytest.mark.stress
def test_a_class_graded_on_dask_workers_matches_a_local_run_though_a_worker_dies(
    sample_class, tmp_path
):
    """Graded on two Dask workers, one killed (kill -9) while grading: is every student's row
    there exactly once, with the grades, statuses and test verdicts of a local run?"""
    course_root, class_folder, data_root = sample_class
    sandbox = sandbox_available() is None
    local_out, dask_out = tmp_path / "local", tmp_path / "dask"
    for out in (local_out, dask_out):  # the same secret inputs for both runs
        out.mkdir()
        (out / ".grading-seed").write_text("12345")
    local = grade_class(
        class_folder,
        local_out,
        course=Course(course_root),
        data_root=data_root,
        sandbox=sandbox,
        progress=lambda _: None,
    )

    cluster = _Cluster(tmp_path)
    try:
        worker_env = {"CNN_COURSE_DATA": str(data_root), "MPLBACKEND": "Agg"}
        cluster.start(
            {
                name: {**worker_env, "CNN_COURSE_CACHE": str(tmp_path / f"cache-{name}")}
                for name in ("w1", "w2")
            }
        )
        from distributed import Client

        with Client(cluster.address, timeout="60s", set_as_default=False) as watcher:
            watcher.wait_for_workers(2, timeout=120)
            names = {
                info["name"]: address
                for address, info in watcher.scheduler_info(n_workers=-1)["workers"].items()
            }
            lines: list[str] = []
            outcome: dict[str, object] = {}

            def run() -> None:
                try:
                    outcome["results"] = grade_class(
                        class_folder,
                        dask_out,
                        course=Course(course_root),
                        sandbox=sandbox,
                        scheduler=cluster.address,
                        progress=lines.append,
                    )
                except BaseException as error:  # reported by the test below
                    outcome["error"] = error

            grading = threading.Thread(target=run, daemon=True)
            grading.start()
            deadline = time.monotonic() + 300
            while not watcher.processing(workers=[names["w1"]]).get(names["w1"]):
                assert grading.is_alive(), f"grading ended early: {outcome}, {lines}"
                assert time.monotonic() < deadline, cluster.log("w1")
                time.sleep(0.2)
            time.sleep(1.0)  # into the task: its worker process and sandbox are running
            busy = watcher.processing(workers=[names["w1"]]).get(names["w1"])
            cluster.kill("w1")
            grading.join(timeout=600)
        assert not grading.is_alive(), "grading did not finish"
        assert "error" not in outcome, (outcome.get("error"), cluster.log("w2"))
    finally:
        cluster.stop()

    assert busy, "w1 was killed while it held a task"
    graded = outcome["results"]
    assert sorted(r.student for r in graded) == ["ann", "bo", "cy", "dee", "eve"]
    reported = [line.split()[0] for line in lines if line.startswith("  ")]
    assert sorted(reported) == ["ann", "bo", "cy", "dee", "eve"], lines  # each recorded once
    rows = _grades(dask_out)
    assert [row["student"] for row in rows] == ["ann", "bo", "cy", "dee", "eve"]
    assert rows == _grades(local_out)
    by_student = {r.student: r for r in graded}
    for result in local:
        remote = by_student[result.student]
        assert (remote.status, remote.total, remote.max) == (
            result.status,
            result.total,
            result.max,
        )
        assert [(t.name, t.points, t.passed) for t in remote.tests] == [
            (t.name, t.points, t.passed) for t in result.tests
        ]
    assert by_student["ann"].total == 2 and by_student["cy"].total == 0
    assert by_student["dee"].status is Status.INVALID
    executed = sorted(p.name for p in (dask_out / "sample_lab" / "executed").iterdir())
    assert executed == ["ann.ipynb", "bo.ipynb", "cy.ipynb", "eve.ipynb"]
    assert not list((dask_out / ".work").iterdir())  # nothing graded on the client


def test_an_unreachable_scheduler_is_one_clear_message(monkeypatch, tmp_path, capsys):
    """Does `grade --scheduler` at an address where nothing listens, or with a --data-root of
    this machine's, stop with a message that says what was expected and what to do?"""
    monkeypatch.setattr(distributed_grading, "CONNECT_TIMEOUT", 2)
    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "ann.ipynb").write_text("{}")
    address = f"tcp://127.0.0.1:{_free_port()}"
    argv = ["grade", str(tmp_path / "class"), "--out", str(tmp_path / "out")]
    argv += ["--repo", str(course_root), "--lab", "sample_lab", "--scheduler", address]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"Cannot reach the Dask scheduler at '{address}'" in error
    assert "dask scheduler" in error and "without --scheduler" in error
    assert "Traceback" not in error
    assert cli.main([*argv, "--data-root", str(tmp_path)]) == 2
    assert "set CNN_COURSE_DATA in each worker's environment" in capsys.readouterr().err


def test_the_course_archive_holds_the_grading_content_and_nothing_else(tmp_path, monkeypatch):
    """Does the archive sent to workers hold the lab sources, hidden tests and released
    notebooks, the same bytes each time, without links or caches?"""
    import io
    import tarfile

    course_root = tmp_path / "course"
    shutil.copytree(SAMPLE_COURSE, course_root)
    (course_root / "notebooks" / "student").mkdir(parents=True)
    (course_root / "notebooks/student/sample_lab.ipynb").write_text("{}")
    (course_root / "autograder/sample_lab/__pycache__").mkdir()
    (course_root / "autograder/sample_lab/__pycache__/x.pyc").write_bytes(b"x")
    (course_root / "autograder/sample_lab/link.py").symlink_to("/etc/passwd")
    (course_root / "data").mkdir()
    (course_root / "data/big.bin").write_bytes(b"0" * 1000)
    course = Course(course_root)
    archive = distributed_grading.course_archive(course)
    assert archive == distributed_grading.course_archive(course)
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert names == [
        "source/sample_lab.md",
        "autograder/sample_lab/__init__.py",
        "notebooks/student/sample_lab.ipynb",
    ]
    monkeypatch.setattr(distributed_grading, "COURSE_ARCHIVE_LIMIT", 100)
    with pytest.raises(CourseError, match="at most 100 bytes are sent with each task"):
        distributed_grading.course_archive(course)


def test_the_check_on_each_worker_says_what_is_wrong_with_it(tmp_path, monkeypatch):
    """Does the check every worker runs before grading name its fault: other grading code
    than the client's, or no data at its data root (and which variable to set)?"""
    monkeypatch.setenv("CNN_COURSE_DATA", str(tmp_path / "nothing"))
    distributed_grading._worker_data_root.cache_clear()
    fingerprint = distributed_grading.tools_fingerprint()
    other = distributed_grading.worker_problem("0" * 64, False)
    assert other and "tools differ" in other and "same version" in other
    missing = distributed_grading.worker_problem(fingerprint, False)
    assert missing and str(tmp_path / "nothing") in missing and "CNN_COURSE_DATA" in missing
    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=60)
    write_tiny_pack(root, tiny_cifar_arrays())
    monkeypatch.setenv("CNN_COURSE_DATA", str(root))
    assert distributed_grading.worker_problem(fingerprint, False) is None


def test_a_worker_that_fails_its_preflight_stops_the_run_naming_it(tmp_path):
    """Does a Dask worker whose own checks fail (its data root, its kernel) stop the run before
    anything is sent, naming the worker and each failed check?"""
    from cnn_course_instructor.grading.preflight import PreflightFailed

    class Client:
        def run(self, function, *args):
            assert function is distributed_grading.worker_preflight
            return {
                "tcp://10.0.0.7:4000": ["data root: MNIST was not found"],
                "tcp://10.0.0.8:4000": [],
            }

    with pytest.raises(PreflightFailed) as raised:
        run = GradingRun(str(SAMPLE_COURSE), 0, "/nowhere")
        distributed_grading.preflight_workers(Client(), Course(SAMPLE_COURSE), ["sample_lab"], run)
    message = str(raised.value)
    assert "1 of the 2 Dask workers cannot grade" in message and "no row was written" in message
    assert "tcp://10.0.0.7:4000: data root: MNIST was not found" in message
    assert "10.0.0.8" not in message
