"""Grading untrusted notebooks: the hostile corpus, isolation, resuming after kill -9, parallel runs."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, copy_of_the_course, grade_command, wait_for_classes
from hostile import ATTEMPTS, POINTS, PROCESS_HOLDER, STUDENT, TOTAL

from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.run import grade_class
from cnn_course_instructor.sandbox import cgroups, sandbox_available

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
from cnn_course_instructor.grading.kernel import run_notebook
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
    out = graded.out / graded.lab
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
    out = graded_class.out / graded_class.lab
    executed = nbformat.read(out / "executed" / "escape_attempts.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    written = printed.count("written, to be checked on the host:")  # and not found there
    assert "ESCAPED" not in printed and printed.count("blocked:") + written == ATTEMPTS, printed
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
    from cnn_course_instructor.grading.run import _Exclusive

    with _Exclusive(tmp_path):
        with pytest.raises(CourseError, match="Another `cnn-course grade` is using"):
            with _Exclusive(tmp_path):
                pass
    with _Exclusive(tmp_path):  # free again once the first run ended
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
    command = grade_command(submissions, out, "--jobs", "2")
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
    alone = POINTS["q6_vector_to_class"] + POINTS["q7_cnn_accuracy"]  # what they get alone
    assert [(r["student"], r["status"], float(r["total"])) for r in rows] == [
        ("honest_a", "graded", alone),
        ("honest_b", "graded", alone),
    ], second_out


# --- hostile kernels, one sandbox at a time (run_notebook, as a worker runs it) ----------------


def _run_cells(tmp_path: Path, cells: list[str], cell_timeout: int = 3, **options):
    """``cells`` run in a sandboxed kernel as grading runs them (errors allowed, CPU budgets);
    the Execution."""
    import nbformat

    from cnn_course_instructor.grading.kernel import run_notebook
    from cnn_course_instructor.sandbox import Sandbox

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    box = options.pop("sandboxed", Sandbox())
    return run_notebook(
        notebook,
        cwd=tmp_path,
        sandboxed=box,
        allow_errors=True,
        cell_timeout=cell_timeout,
        **options,
    )


def _printed(execution, index: int) -> str:
    cell = execution.notebook.cells[index]
    return "".join(output.get("text", "") for output in cell.get("outputs", []))


_RUNNING = (
    "import os\n"
    "def state(pid):\n"
    "    try:\n"
    "        return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]\n"
    "    except OSError:\n"
    "        return 'gone'\n"
    "print('running:', sorted(int(p) for p in os.listdir('/proc') if p.isdigit() and state(p) not in ('Z', 'gone')))"
)


def test_an_interrupted_cell_leaves_no_process_of_its_own_running(tmp_path):
    """Once a cell that forked 30 sleepers and then spun is interrupted, does nothing it started
    still run (only the sandbox's init and its kernel), and is the count reported? The sleepers
    ignore SIGINT from birth (the kernel's interrupt may reach its process group): none ends by
    itself, whatever the machine's load, so the grader must end all 30."""
    fork = (
        "import os, signal, time\n"
        "previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the forks\n"
        "for _ in range(30):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "        os._exit(0)\n"
        "signal.signal(signal.SIGINT, previous)\n"
        "while True:\n"
        "    pass"
    )
    execution = _run_cells(tmp_path, [fork, _RUNNING])
    assert [t.why for t in execution.timed_out] == ["cpu"]
    assert execution.strays == 30
    assert "running: [1, 2]" in _printed(execution, 1), _printed(execution, 1)


@pytest.mark.stress
def test_a_cell_that_ignores_its_interrupt_has_its_kernel_stopped(tmp_path):
    """Does a cell that ignores the interrupt and spins end anyway (its kernel stopped after a
    grace), rather than hold its slot until the grader's safety net?"""
    deaf = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    started = time.monotonic()
    execution = _run_cells(tmp_path, [deaf, "print('after')"], cell_timeout=2)
    assert execution.kernel_stopped and execution.timed_out[0].why == "cpu"
    assert execution.error_name == "DeadKernelError"
    assert "after" not in _printed(execution, 1)
    assert time.monotonic() - started < 120


def test_code_in_a_sandbox_cannot_start_a_session_of_its_own(tmp_path):
    """Does setsid fail inside (so a sandbox stays one session: one CPU share under the kernel's
    autogroup scheduling, however many processes it runs)?"""
    cell = (
        "import os, subprocess\n"
        "try:\n"
        "    os.setsid()\n"
        "    print('ESCAPED setsid')\n"
        "except OSError as exc:\n"
        "    print('blocked: setsid', exc.errno)\n"
        "try:\n"
        "    subprocess.run(['true'], start_new_session=True)\n"
        "    print('ESCAPED new session')\n"
        "except OSError as exc:\n"
        "    print('blocked: new session', exc.errno)\n"
    )
    printed = _printed(_run_cells(tmp_path, [cell]), 0)
    assert "blocked: setsid 1" in printed and "blocked: new session 1" in printed, printed


@pytest.mark.skipif(
    not cgroups.support().kind,
    reason="no cgroup per sandbox on this machine (the fallback is tested)",
)
def test_each_kernel_runs_in_a_cgroup_of_its_own_removed_after(tmp_path):
    """Where the machine allows: is the kernel in a cgroup of its own (a CPU share, the
    sandbox's memory limit), and the group gone once the kernel has ended?"""
    import threading

    from cnn_course_instructor import sandbox
    from cnn_course_instructor.sandbox import cgroups

    seen = {}

    def look():
        spec = str(tmp_path / "sandbox.json")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "group" not in seen:
            pid, group = sandbox.read_pid(spec), sandbox.read_group(spec)
            kernel = [p for p, inside in sandbox.processes_in(pid)] if pid else []
            if group is not None and len(kernel) >= 2:
                seen["group"] = group
                seen["kernel"] = Path(f"/proc/{kernel[1]}/cgroup").read_text()
            time.sleep(0.2)

    watcher = threading.Thread(target=look)
    watcher.start()
    _run_cells(tmp_path, ["import time\ntime.sleep(3)"], cell_timeout=10)
    watcher.join()
    group = seen["group"]
    assert all(f"/{folder.name}" in seen["kernel"] for folder in group.folders)
    assert group.folders[0].name.startswith(cgroups.PREFIX)
    assert not any(folder.exists() for folder in group.folders)


def test_a_socket_swap_attack_connects_the_grader_to_nothing_on_the_host(tmp_path):
    """When the kernel replaces its sockets with links to host sockets (one in a folder only this
    user may enter, one anyone may) and cuts its connections, does the grader connect to
    neither (it reconnects only to the sockets it checked), and does the run still end?"""
    import socket
    import threading

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    listeners, accepted, stop = [], [0], threading.Event()
    for path in (private / "host.sock", tmp_path / "open.sock"):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen(256)
        listener.settimeout(0.1)
        listeners.append((path, listener))
    targets = [str(path) for path, _ in listeners]

    def accept():
        while not stop.is_set():
            for _, listener in listeners:
                try:
                    connection, _ = listener.accept()
                    accepted[0] += 1
                    connection.close()
                except OSError:
                    pass

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    attack = (
        "import os, socket, stat, time\n"
        f"targets = {targets!r}\n"
        "swapped = 0\n"
        "for index, name in enumerate(sorted(os.listdir('/run/kernel'))):\n"
        "    path = f'/run/kernel/{name}'\n"
        "    if stat.S_ISSOCK(os.lstat(path).st_mode):\n"
        "        os.unlink(path)\n"
        "        os.symlink(targets[index % 2], path)\n"
        "        swapped += 1\n"
        "print('swapped', swapped, flush=True)\n"
        "for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "    try:\n"
        "        s = socket.socket(fileno=fd)\n"
        "    except OSError:\n"
        "        continue\n"
        "    try:\n"
        "        if s.family == socket.AF_UNIX and not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):\n"
        "            s.shutdown(socket.SHUT_RDWR)\n"
        "    except OSError:\n"
        "        pass\n"
        "    s.detach()\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    (tmp_path / "work").mkdir()
    try:
        execution = _run_cells(tmp_path / "work", [attack, "print('after')"], cell_timeout=4)
        time.sleep(2)  # reconnections come every 100 ms: give them time to show
    finally:
        stop.set()
        acceptor.join()
        for _, listener in listeners:
            listener.close()
    assert accepted[0] == 0, f"the grader connected {accepted[0]} times to a host socket"
    assert execution.timed_out or execution.error_name, "the attack's cell ended on its own?"
    assert time.monotonic() - started < 120


@pytest.mark.stress
@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "grader-watch"])
def test_a_memory_hog_split_across_processes_costs_only_its_own_sandbox(tmp_path, cgroup):
    """Do eight processes of 150 MB each, in a sandbox allowed 600 MB in all, have the sandbox's
    own processes stopped (by its cgroup's limit, or by the grader's watch where there is no
    cgroup), the run reported as over its memory, and the grader untouched?"""
    from cnn_course_instructor.sandbox import Limits, Sandbox, cgroups

    if cgroup and not cgroups.support().kind:
        pytest.skip(f"no cgroup per sandbox here ({cgroups.support().reason})")
    hog = (
        "import os, time\n"
        "children = []\n"
        "for _ in range(8):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(150 * 1024 * 1024)\n"
        "        for i in range(0, len(block), 4096):\n"
        "            block[i] = 1\n"
        "        time.sleep(5)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "ended = 0\n"
        "for pid in children:\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    ended += os.WIFSIGNALED(status)\n"
        "print('killed:', ended)\n"
    )
    env = {} if cgroup else {"CNN_COURSE_NO_CGROUPS": "1"}
    box = Sandbox(limits=Limits(total_memory_mb=600))
    execution = _run_cells(tmp_path, [hog], cell_timeout=120, sandboxed=box, env=env)
    printed = _printed(execution, 0)
    assert execution.memory_exceeded, printed
    killed = int(printed.split("killed:")[1]) if "killed:" in printed else None
    assert killed is None or killed >= 1, printed  # the kernel itself may be the one stopped


def test_a_module_that_exits_on_import_does_not_stop_the_kernel_from_starting(tmp_path):
    """Does a preloaded module that raises SystemExit when imported (unittest's __main__) leave
    the kernel to start and run its cells (it killed the worker before)?"""
    from cnn_course_instructor.sandbox import Sandbox

    box = Sandbox(preload=("unittest.__main__", "json"))
    execution = _run_cells(tmp_path, ["print('kernel up')"], sandboxed=box)
    assert "kernel up" in _printed(execution, 0) and execution.error_name is None


@pytest.mark.stress
def test_host_paths_under_the_private_folders_are_found_inside(real_root):
    """With a venv under the system temp folder (as a checkout there has), the data root under
    /dev/shm and the cache under the system temp folder, does a sandboxed Python find its
    interpreter, the student runtime and the data?"""
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix="cnn-course-places-") as folder,
        tempfile.TemporaryDirectory(prefix="cnn-course-data-", dir="/dev/shm") as shm,
    ):
        Path(folder).chmod(0o755)  # as root, the sandbox runs as a uid of its own
        Path(shm).chmod(0o755)
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = next((venv / "lib").glob("python*/site-packages"))
        here = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
        (site / "course.pth").write_text(f"{REPO}\n{here}\n")
        data_root = Path(shm)
        (data_root / "MNIST").mkdir()
        shutil.copytree(real_root / "MNIST" / "raw", data_root / "MNIST" / "raw")
        os.symlink(real_root / "CIFAR-10", data_root / "CIFAR-10")  # (bound where it lies)
        program = (
            "import sys\n"
            "from cnn_course_instructor import sandbox\n"
            "from cnn_course_instructor.grading.job import GradingRun\n"
            "from cnn_course_instructor.grading.worker import data_view\n"
            "from cnn_course import data\n"
            "root = data.resolve_root(sys.argv[1]).path\n"
            "data.load_mnist('test', root=root)\n"
            "entries = tuple(str(p) for p in data.cache_entries(root))\n"
            "run = GradingRun('', 0, str(root.resolve()), cache_entries=entries)\n"
            "binds, env = data_view(run)\n"
            "inside = 'import sys; from cnn_course import data; "
            'print(sys.prefix, tuple(data.load_mnist("test").images.shape))\'\n'
            "box = sandbox.Sandbox(binds=binds, env=env)\n"
            "done = sandbox.run(box, [sys.executable, '-c', inside], timeout=120)\n"
            "print(done.returncode, done.stdout.decode(), done.stderr.decode()[-2000:])\n"
        )
        env = {**os.environ, "CNN_COURSE_CACHE": str(Path(folder) / "cache")}
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", program, str(data_root)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=folder,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"0 {venv} (10000, 1, 28, 28)"), done.stdout


# --- the ground checked before grading ------------------------------------------------------------


@pytest.mark.stress
def test_a_sandbox_that_cannot_start_a_kernel_stops_the_run_before_its_first_row(
    tmp_path, real_root, real_cache
):
    """When bwrap can make sandboxes but not start a kernel in one (here: a bwrap that fails
    each kernel's start as a missing interpreter does), does grading stop before writing any row,
    exit non-zero, and say what bwrap said?"""
    real = sandbox_available.__module__  # (the module that found the machine's bwrap)
    from cnn_course_instructor.sandbox import find_bwrap

    wrapper = tmp_path / "bin" / "bwrap"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *kernelapp*)\n'
        '  echo "bwrap: execvp /nowhere/.venv/bin/python: No such file or directory" >&2\n'
        "  exit 1;;\n"
        "esac\n"
        f'exec {find_bwrap()} "$@"\n'
    )
    wrapper.chmod(0o755)
    (tmp_path / "bin").chmod(0o755)
    submissions, out = tmp_path / "submitted", tmp_path / "out"
    submissions.mkdir()
    shutil.copy(REPO / "notebooks" / "solution" / "cnn_lab.ipynb", submissions / "ann.ipynb")
    env = {
        **os.environ,
        "CNN_COURSE_BWRAP": str(wrapper),
        "CNN_COURSE_DATA": str(real_root),
        "CNN_COURSE_CACHE": str(real_cache),
    }
    done = subprocess.run(
        grade_command(submissions, out, "--jobs", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert real and done.returncode == 2, done.stdout + done.stderr
    assert "no row was written" in done.stderr
    assert "execvp /nowhere/.venv/bin/python" in done.stderr, done.stderr
    assert not list(out.glob("*/results/*.json")) and not list(out.glob("*/grades.csv"))
    assert not list((out / ".work").glob("*")) if (out / ".work").exists() else True


def test_doctor_prints_each_check_and_its_verdict(tmp_path, real_root, real_cache):
    """Does `cnn-course doctor --quick` name each check (bubblewrap, user namespaces, install
    places, isolation, data, gradebook) with a verdict, and end ready?"""
    env = {**os.environ, "CNN_COURSE_DATA": str(real_root), "CNN_COURSE_CACHE": str(real_cache)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn_course_instructor.cli",
            "doctor",
            "--quick",
            "--repo",
            str(REPO),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (
        "bubblewrap",
        "user namespaces",
        "a sandbox starts",
        "install places",
        "isolation",
        "MNIST",
        "CIFAR-10",
        "data cache",
        "gradebook",
    ):
        assert re.search(rf"^(ok|note)\s+{name}: ", done.stdout, re.M), (name, done.stdout)


@pytest.mark.stress
def test_a_checkout_under_the_system_temp_folder_grades_the_solution_in_full(
    real_root, real_cache, request
):
    """From a copy of the course and its tools under the system temp folder, with a venv there
    too (the sandbox's own /tmp once hid them all: every row crashed), does the solution get
    full marks, sandboxed, as root and as a user who is not root?"""
    import tempfile

    wait_for_classes(request.config)
    with tempfile.TemporaryDirectory(prefix="cnn-course-checkout-") as folder:
        clone, python = copy_of_the_course(Path(folder))
        submissions = clone / "submitted"
        submissions.mkdir()
        shutil.copy(clone / "notebooks" / "solution" / "cnn_lab.ipynb", submissions / "ann.ipynb")
        env = {
            **os.environ,
            "CNN_COURSE_DATA": str(real_root),
            "CNN_COURSE_CACHE": str(real_cache),
            "PYTHONPATH": "",
        }
        command = [
            str(python),
            "-m",
            "cnn_course_instructor.cli",
            "grade",
            str(submissions),
            "--out",
            str(clone / "out"),
            "--jobs",
            "1",
        ]
        done = subprocess.run(
            command, env=env, cwd=clone, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stdout + done.stderr
        rows = list(csv.DictReader((clone / "out" / "cnn_lab" / "grades.csv").open()))
        assert [(r["student"], r["status"], float(r["total"])) for r in rows] == [
            ("ann", "graded", float(TOTAL))
        ], done.stdout
        located = subprocess.run(
            [
                str(python),
                "-c",
                "import cnn_course_instructor as t; print(t.__file__)",
            ],
            env=env,
            cwd=clone,
            capture_output=True,
            text=True,
        )
        assert located.stdout.startswith(str(clone)), located.stdout  # the copy's tools graded
