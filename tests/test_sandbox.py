"""Grading untrusted notebooks: the hostile corpus, isolation, resuming after kill -9, parallel runs."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, wait_for_classes
from corpus import FULL, STUDENT
from hostile import ATTEMPTS, PROCESS_HOLDER, TOTAL

from cnn_course_instructor.course import Course
from cnn_course_instructor.sandbox import sandbox_available
from cnn_course_instructor.scheduler import grade_class

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(
        sandbox_available() is not None and not os.environ.get("CNN_COURSE_REQUIRE_SANDBOX"),
        reason=f"{sandbox_available()}",
    ),
]


def test_the_sandbox_is_available_where_it_is_required():
    """Where CI requires the sandbox, can this machine make one (else: why not)?"""
    assert sandbox_available() is None, sandbox_available()


def _sandbox_processes() -> list[str]:
    """Processes still running in a sandbox (their environment names the sandbox's home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"HOME=/home/student\0" in environ:
                found.append(entry.name)
    return found


# Sandboxed processes already running when these tests were collected belong to another run
# on this machine: the tests count only those that appeared since.
_BEFORE = set(_sandbox_processes())


def _new_sandbox_processes() -> list[str]:
    """Sandboxed processes that were not running when this module was collected."""
    return [pid for pid in _sandbox_processes() if pid not in _BEFORE]


def _status(pid: int | str) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (OSError once the process is gone)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _sandbox_of(pid_file: Path) -> tuple[str, int | None]:
    """The PID namespace of the sandbox whose init ``launch_kernel`` wrote to ``pid_file``, and
    the uid it was leased as root (None as a normal user: it runs as that user)."""
    pid = int(pid_file.read_text())
    uid = int(_status(pid)["Uid"].split()[0]) if os.geteuid() == 0 else None
    return os.readlink(f"/proc/{pid}/ns/pid"), uid


def _still_running(namespace: str, uid: int | None) -> list[int]:
    """The processes of one sandbox, and of no other, still running: those in its PID
    namespace and, given its leased ``uid``, every process whose real uid is that one. Zombies
    aside: they run nothing, and their parent reaps them."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status, inside = _status(entry.name), os.readlink(entry / "ns" / "pid")
            except OSError:
                continue
            if status["State"].startswith("Z"):
                continue
            if inside == namespace or int(status["Uid"].split()[0]) == uid:
                found.append(int(entry.name))
    return found


def _end_sandbox(namespace: str) -> None:
    """Kill what still runs in a sandbox's PID namespace, and nothing else: the bwraps around
    it then end by themselves."""
    for _ in range(50):
        pids = _still_running(namespace, None)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


# A grader of one notebook in a sandbox (what a worker does), in its own process group.
_GRADER = """
import sys
from pathlib import Path
import nbformat
from cnn_course_instructor.execute import run_notebook
from cnn_course_instructor.sandbox import Sandbox
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(sys.argv[2])])
run_notebook(notebook, cwd=Path(sys.argv[1]), sandboxed=Sandbox(), env={"HOLD_SECONDS": "300"})
"""


def test_a_killed_grader_leaves_no_process_of_its_sandbox(tmp_path):
    """Killed with SIGKILL, its whole process group at once, while its sandboxed kernel holds
    all the processes it may, does a grader leave no process of its sandbox (as root: none under
    the uid its sandbox was leased)?"""
    grader = subprocess.Popen(
        [sys.executable, "-c", _GRADER, str(tmp_path), PROCESS_HOLDER],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "grader.log").open("w"),
        start_new_session=True,
    )
    namespace = None
    try:
        pid_file, deadline = tmp_path / "sandbox.json.pid", time.monotonic() + 60
        while not pid_file.is_file() and grader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        namespace, uid = _sandbox_of(pid_file)
        while len(_still_running(namespace, uid)) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_still_running(namespace, uid)) >= 100, "the holder never held its processes"
        os.killpg(grader.pid, signal.SIGKILL)
        grader.wait()
        deadline = time.monotonic() + 10  # under 1 s here, on a machine under load
        while _still_running(namespace, uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _still_running(namespace, uid) == [], "the sandbox outlived its killed grader"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(grader.pid, signal.SIGKILL)
        grader.wait()
        if namespace is not None:  # what this test started, and only that
            _end_sandbox(namespace)


def _row(rows: dict, sample, results: dict) -> dict:
    """The grades.csv row of ``sample``; one with an unusable name is found by its reason."""
    if sample.name in rows:
        return rows[sample.name]
    matches = [row for student, row in rows.items() if repr(sample.name) in results[student].reason]
    assert len(matches) == 1, (sample.name, matches)
    return matches[0]


def _check_rows(graded, request) -> dict:
    """Each hostile sample's row as expected, and no escape, no harm, no process left behind:
    the checks every hostile class passes. The rows by student."""
    out = graded.out / "cnn_lab"
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert graded.hostile and len(rows) == len(graded.results)
    for sample in graded.hostile:
        row = _row(rows, sample, graded.results)
        if sample.status is not None:
            assert row["status"] == sample.status, (sample.name, row)
        if sample.total is not None:
            assert float(row["total"]) == sample.total, (sample.name, row)
        if sample.words:
            result = graded.results[row["student"]]
            said = result.reason + " " + " ".join(t.message for t in result.tests)
            assert sample.words in said, (sample.name, said)
    assert graded.connections == 0
    assert not graded.canary.exists() and not (REPO / "owned").exists()
    assert not Path("/tmp/owned-by-student").exists()
    wait_for_classes(request.config)  # no other class of this session is grading now
    assert _new_sandbox_processes() == []
    # Nothing of the grader's own is left in the output folder.
    assert list((graded.out / ".work").iterdir()) == []
    return rows


def test_hostile_corpus_grades_to_its_expected_outcomes(graded_class, request):
    """Does every hostile or broken submission end with its expected row, no escape, no harm to others?"""
    rows = _check_rows(graded_class, request)
    assert float(rows["solution"]["total"]) == TOTAL, "a hostile neighbour changed an honest grade"
    out = graded_class.out / "cnn_lab"
    executed = nbformat.read(out / "executed" / "escape_attempts.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "ESCAPED" not in printed and printed.count("blocked:") == ATTEMPTS, printed
    visible = eval(printed.split("processes visible: ")[1].splitlines()[0])
    assert visible[0] == 1 and len(visible) <= 4, visible  # bwrap's init, the kernel: no host's
    assert "uid 1000" in printed
    # The output flood is capped, whatever message type carried it.
    assert (out / "executed" / "output_flood.ipynb").stat().st_size < 5_000_000
    # A link to a root-only file shows none of it anywhere.
    shadow = graded_class.results[
        _row(rows, _by_name(graded_class, "root_only_link"), graded_class.results)["student"]
    ]
    assert "root:" not in shadow.to_json()


@pytest.mark.stress
def test_hostile_samples_that_train_the_whole_lab_grade_as_expected(graded_heavy, request):
    """Do the hostile samples built on the whole solution (noise, reordered, renamed or deleted
    cells) get their rows, the escape probe inside them blocked?"""
    _check_rows(graded_heavy, request)
    noisy = graded_heavy.results["noisy_solution"]
    assert "output over" in noisy.reason and "MemoryError" in noisy.reason


def _by_name(graded_class, name: str):
    return next(sample for sample in graded_class.hostile if sample.name == name)


def test_a_history_the_student_made_up_earns_no_points(graded_class):
    """Does a made-up training History (no trained model) score nothing on the training questions?"""
    result = graded_class.results["fake_history"]
    assert result.scores["q8_mnist_training"] == 0 and result.scores["q12_cifar_training"] == 0


def test_a_second_run_on_the_same_output_folder_refuses(tmp_path):
    """Does a second grading run on an output folder in use stop at once, saying why?"""
    from cnn_course.errors import CourseError
    from cnn_course_instructor.scheduler import _exclusive

    with _exclusive(tmp_path):
        with pytest.raises(CourseError, match="Another `cnn-course grade` is using"):
            with _exclusive(tmp_path):
                pass
    with _exclusive(tmp_path):  # free again once the first run ended
        pass


def _stub_variants(folder: Path, count: int) -> None:
    for number in range(count):
        notebook = nbformat.read(STUDENT, as_version=4)
        notebook.cells.insert(1, nbformat.v4.new_code_cell(f"print('student {number}')"))
        nbformat.write(notebook, folder / f"s{number:02d}.ipynb")


@pytest.mark.stress
def test_grading_resumes_after_kill_9_without_losing_or_repeating_rows(
    real_root, real_cache, tmp_path, request
):
    """Killed with SIGKILL mid-class, does a rerun finish with exactly one row per student?"""
    wait_for_classes(request.config)  # the sandboxes it counts at the end are its own
    submissions, out = tmp_path / "submitted", tmp_path / "out"
    submissions.mkdir()
    _stub_variants(submissions, 6)
    env = {**os.environ, "CNN_COURSE_DATA": str(real_root), "CNN_COURSE_CACHE": str(real_cache)}
    command = [
        sys.executable,
        "-m",
        "cnn_course_instructor.cli",
        "grade",
        str(submissions),
        "--out",
        str(out),
        "--jobs",
        "2",
    ]
    process = subprocess.Popen(
        command, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    results = out / "cnn_lab" / "results"
    while len(list(results.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert 2 <= len(done_before) < 6, "the kill came too late to test a resume"
    assert not (out / "cnn_lab" / "grades.csv").exists()

    rerun = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done_before)} already graded" in rerun.stdout
    rows = list(csv.DictReader((out / "cnn_lab" / "grades.csv").open()))
    assert sorted(row["student"] for row in rows) == [f"s{n:02d}" for n in range(6)]
    assert all(row["status"] == "graded" and float(row["total"]) == 0 for row in rows)
    for name, mtime in done_before.items():  # graded once, never again
        assert (results / name).stat().st_mtime_ns == mtime
    assert list((out / ".work").iterdir()) == [], "the rerun left the killed run's folders"
    assert _new_sandbox_processes() == []


@pytest.mark.stress
def test_parallel_grades_equal_serial_grades(real_root, real_cache, tmp_path, monkeypatch):
    """Do two workers at once give exactly the rows one worker gives?"""
    monkeypatch.setenv("CNN_COURSE_CACHE", str(real_cache))
    submissions = tmp_path / "submitted"
    submissions.mkdir()
    _stub_variants(submissions, 3)
    notebook = nbformat.read(STUDENT, as_version=4)
    for cell in notebook.cells:  # answer q3 and q4 only: partial credit, quickly
        cell.source = cell.source.replace(
            '    raise NotImplementedError("Replace this line with your code")\n    # --- END CODE HERE\n    return y',
            "    y = x.argmax(dim=1)\n    # --- END CODE HERE\n    return y",
        ).replace(
            '    raise NotImplementedError("Replace this line with your code")\n    # --- END CODE HERE\n    return accuracy',
            "    accuracy = (predict == labels).sum().item()\n    # --- END CODE HERE\n    return accuracy",
        )
    nbformat.write(notebook, submissions / "partial.ipynb")
    quiet = {"data_root": real_root, "progress": lambda _: None, "course": Course(REPO)}
    serial = grade_class(submissions, tmp_path / "serial", jobs=1, **quiet)
    (tmp_path / "parallel").mkdir()  # the same secret inputs, so even the messages must agree
    shutil.copy(tmp_path / "serial" / ".grading-seed", tmp_path / "parallel" / ".grading-seed")
    parallel = grade_class(submissions, tmp_path / "parallel", jobs=2, **quiet)
    for result in [*serial, *parallel]:
        result.seconds = 0.0
    assert serial == parallel
    partial = next(r for r in serial if r.student == "partial")
    assert partial.scores["q6_vector_to_class"] == 2 and partial.scores["q7_cnn_accuracy"] == 1


def _partial(folder: Path, name: str) -> None:
    """A notebook answering q3 and q4 only (their full points, quickly), that also starts 100
    threads."""
    notebook = nbformat.read(STUDENT, as_version=4)
    for cell in notebook.cells:
        cell.source = cell.source.replace(
            '    raise NotImplementedError("Replace this line with your code")\n    # --- END CODE HERE\n    return y',
            "    y = x.argmax(dim=1)\n    # --- END CODE HERE\n    return y",
        ).replace(
            '    raise NotImplementedError("Replace this line with your code")\n    # --- END CODE HERE\n    return accuracy',
            "    accuracy = (predict == labels).sum().item() / len(labels)\n    # --- END CODE HERE\n    return accuracy",
        )
    threads = "import threading, time\nts = [threading.Thread(target=time.sleep, args=(2,)) for _ in range(100)]\nfor t in ts: t.start()\nfor t in ts: t.join()\nprint('100 threads ran')"
    notebook.cells.insert(1, nbformat.v4.new_code_cell(threads))
    nbformat.write(notebook, folder / f"{name}.ipynb")


@pytest.mark.stress
def test_a_process_holder_in_one_run_never_changes_a_concurrent_runs_grades(
    real_root, real_cache, tmp_path, request
):
    """With one run's sandbox holding all the processes it may, does a run started at the same
    time still grade its honest notebooks exactly as alone?"""
    wait_for_classes(request.config)  # the sandboxes it counts are its own
    hostile, honest = tmp_path / "hostile", tmp_path / "honest"
    hostile.mkdir()
    honest.mkdir()
    (hostile / "holder.ipynb").write_text(
        nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROCESS_HOLDER)]))
    )
    _partial(honest, "honest_a")
    _partial(honest, "honest_b")
    env = {
        **os.environ,
        "CNN_COURSE_DATA": str(real_root),
        "CNN_COURSE_CACHE": str(real_cache),
        "HOLD_SECONDS": "120",
    }

    def grade(folder: Path, out: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "cnn_course_instructor.cli", "grade", str(folder)]
        command += ["--out", str(out), "--jobs", "2", "--cell-timeout", "200", "--lab", "cnn_lab"]
        return subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    first = grade(hostile, tmp_path / "out-hostile")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_sandbox_processes()) < 100:
        time.sleep(0.5)
    assert len(_sandbox_processes()) >= 100, "the holder never held its processes"
    second = grade(honest, tmp_path / "out-honest")
    second_out, second_err = second.communicate(timeout=600)
    assert first.poll() is None, "the holder's run ended before the honest run"
    (pid_file,) = (tmp_path / "out-hostile" / ".work").glob("*/sandbox.json.pid")
    namespace, uid = _sandbox_of(pid_file)  # the holder's sandbox
    os.killpg(first.pid, signal.SIGKILL)  # the grader and its workers
    first.communicate()
    try:  # its sandbox ends with it, every process it held included
        deadline = time.monotonic() + 10
        while _still_running(namespace, uid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _still_running(namespace, uid) == [], "the killed run's sandbox outlived it"
    finally:  # so that no later test or run inherits it
        _end_sandbox(namespace)
    assert second.returncode == 0, second_err
    rows = list(csv.DictReader((tmp_path / "out-honest" / "cnn_lab" / "grades.csv").open()))
    alone = FULL["q6_vector_to_class"] + FULL["q7_cnn_accuracy"]  # what they get alone
    assert [(r["student"], r["status"], float(r["total"])) for r in rows] == [
        ("honest_a", "graded", alone),
        ("honest_b", "graded", alone),
    ], second_out
