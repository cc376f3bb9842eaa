"""Reading what students control, removing what they leave, the budget and the allow-list."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnn_course import judging
from cnn_course_instructor import sandbox
from cnn_course_instructor.grading.rebuild import over_budget
from cnn_course_instructor.grading.results import Status
from cnn_course_instructor.grading.submissions import find_submissions, lab_id_of, read, screen
from cnn_course_instructor.safefiles import UnsafeFile, read_regular, read_under, remove_tree

REPO = Path(__file__).resolve().parents[1]


def _deep(top: Path, name: str, levels: int) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_a_deep_tree_with_links_and_read_only_folders_is_removed(tmp_path):
    """Does cleanup remove a 1,500-level tree with links and read-only folders, without raising,
    and leave what the links point to alone?"""
    top = tmp_path / "scratch"
    _deep(top, "d", 1500)
    outside = tmp_path / "keep"
    outside.write_text("kept")
    (top / "link").symlink_to(outside)
    (top / "dirlink").symlink_to(tmp_path)
    (top / "d" / "f").write_text("x")
    (top / "d").chmod(0o500)
    assert remove_tree(top) == []
    assert not top.exists() and outside.read_text() == "kept"
    assert remove_tree(tmp_path / "missing") == []


def test_deeper_than_a_path_can_name_is_removed_too(tmp_path):
    """Does cleanup also remove a tree deeper than PATH_MAX allows to name?"""
    top = tmp_path / "deep"
    _deep(top, "dddddddd", 2000)  # 2,000 levels of 9 characters: 18,000 characters of path
    assert remove_tree(top) == [] and not top.exists()


def test_links_fifos_and_oversized_files_are_refused(tmp_path):
    """Are a link, a FIFO, a folder link above the file and a file over the limit all refused?"""
    real = tmp_path / "real.ipynb"
    real.write_text("{}")
    (tmp_path / "link.ipynb").symlink_to(real)
    os.mkfifo(tmp_path / "fifo.ipynb")
    (tmp_path / "student").symlink_to(tmp_path)
    assert read_regular(real, 10) == b"{}"
    for name, words in (("link.ipynb", "link"), ("fifo.ipynb", "not a regular file")):
        with pytest.raises(UnsafeFile, match=words):
            read_regular(tmp_path / name, 10)
    with pytest.raises(UnsafeFile, match="over the limit"):
        read_regular(real, 1)
    with pytest.raises(UnsafeFile, match="link is refused"):
        read_under(tmp_path, Path("student/real.ipynb"), 10)
    assert read_under(tmp_path, Path("real.ipynb"), 10) == b"{}"


def test_unusable_names_get_rows_of_their_own(tmp_path):
    """Does a name that is not a student id (a space, a trailing newline) become an invalid
    submission of its own instead of stopping the class?"""
    for name in ("alice", "bad name", "trailing\n", "-dash"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    found = {s.student: s for s in find_submissions(tmp_path, ["cnn_lab"])}
    assert "alice" in found and found["alice"].problem is None
    unusable = [s for s in found.values() if s.problem]
    assert len(unusable) == 3 and len({s.student for s in unusable}) == 3
    assert all(s.student.startswith("unusable-name-") for s in unusable)
    assert any("'trailing\\n'" in s.problem for s in unusable)
    assert read(found["alice"]) == b"{}"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "not a valid notebook: the file is not JSON"),
        (b"\xff\xfe garbage", "not a valid notebook: the file is not JSON"),
        (b'{"metadata": {}, "cells": []}', "cannot tell which lab this notebook is for"),
    ],
)
def test_a_notebook_of_no_known_lab_is_told_apart_from_a_file_that_is_no_notebook(
    tmp_path, content, words
):
    """In a course of two labs, is a file that is not JSON invalid as no notebook (not as "which
    lab?"), and a notebook naming no lab invalid with what to do?"""
    (tmp_path / "ann.ipynb").write_bytes(content)
    (submission,) = find_submissions(tmp_path, ["cnn_lab", "cnn_part2"])
    graded = screen(
        submission, lab_id_of(submission, ["cnn_lab", "cnn_part2"], None), ["cnn_lab", "cnn_part2"]
    )
    assert graded.result.status is Status.INVALID and words in graded.result.reason


def test_a_model_over_the_budget_is_refused_before_it_is_evaluated():
    """Is a wrong model that would need gigabytes (a 1x1 conv padded by 100) refused, with a
    message, while the lab's own model fits?"""
    good = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 14 * 14, 10),
    )
    assert over_budget(judging.layer_records(good, (1, 28, 28)), (1, 28, 28)) is None
    bad = nn.Sequential(nn.Conv2d(1, 32, 1, padding=100), nn.MaxPool2d(2), nn.Flatten())
    message = over_budget(judging.layer_records(bad, (1, 28, 28)), (1, 28, 28))
    assert message and "budget" in message and "padding" in message
    padded = judging.layer_records(nn.Sequential(nn.Conv2d(1, 4, 1, padding=5000)), (1, 28, 28))
    assert over_budget(padded, (1, 28, 28))  # measured on the meta device: costs nothing
    assert torch.empty(0).device.type == "cpu"


def test_the_sandbox_command_names_only_the_allow_list(tmp_path):
    """Does the bwrap command bind nothing but the system, Python, the runtime package and what
    it is given, read-only, with every namespace new and the limits set inside?"""
    data = tmp_path / "data"
    data.mkdir()
    box = sandbox.Sandbox(binds=(sandbox.Mount(str(data), "/data"),))
    command = sandbox.bwrap_command(box, ["python", "-c", "pass"])
    sources = [command[i + 1] for i, arg in enumerate(command) if arg.startswith("--ro-bind")]
    assert "--bind" not in command and "--dev-bind" not in command
    for source in sources:
        path = Path(source)
        assert not (path / "cnn_course_instructor").exists(), source  # no checkout, no tools
        assert (
            not path.is_relative_to(REPO)
            or path.name in ("cnn_course", ".venv")
            or (REPO / ".venv" in path.parents)
        ), source
    assert str(data) in sources
    for option in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"):
        assert option in command
    assert (
        "--new-session" in command
        and ["--cap-drop", "ALL"]
        == command[command.index("--cap-drop") : command.index("--cap-drop") + 2]
    )
    assert "RLIMIT_NPROC" in command[-4]
    sizes = [command[i + 1] for i, arg in enumerate(command) if arg == "--size"]
    assert len(sizes) == 4  # /dev/shm, /tmp, home and /run/kernel: each capped


def test_as_root_the_sandbox_runs_as_a_uid_of_its_own():
    """Does the root form drop to the leased uid before the inner bwrap, inside a PID namespace
    of the outer one, and lease distinct uids?"""
    if os.geteuid() != 0:
        pytest.skip("the root form is for root")
    # The machine's own lease folder: a lease ends what runs as its uid, so a folder of this
    # test's own could hand it a uid a sandbox of another run is using.
    with sandbox.UidLease() as first, sandbox.UidLease() as second:
        assert first.uid != second.uid
        command = first.wrap(sandbox.bwrap_command(sandbox.Sandbox(), ["true"], python=None))
        setpriv = command.index("setpriv")
        assert f"--reuid={first.uid}" in command[setpriv:]
        assert "--unshare-user" not in command[:setpriv]  # the outer bwrap only builds the view
        # ... and holds the PID namespace, whose end ends every process of the sandbox
        assert {"--unshare-pid", "--die-with-parent"} <= set(command[:setpriv])
        assert "--unshare-user" in command[setpriv:]


@pytest.fixture
def reserved_uid(monkeypatch, tmp_path):
    """As root: a uid leased in the machine's lease folder for the whole test (no sandbox of
    another run can use it), which every lease the test takes, in a folder of its own, gets."""
    if os.geteuid() != 0:
        pytest.skip("uids are leased as root")
    with sandbox.UidLease() as held:
        monkeypatch.setattr(sandbox.leases, "LEASE_DIR", tmp_path / "leases")
        monkeypatch.setattr(sandbox.leases, "UID_BASE", held.uid)
        monkeypatch.setattr(sandbox.leases, "UID_COUNT", 1)
        yield held.uid


def _leave_processes(uid: int, children: int) -> subprocess.Popen:
    """A process running as ``uid``, in a session and process group of its own, that forks
    ``children`` sleeping children: what a sandbox killed from outside could leave. Returns once
    all of them run."""
    code = (
        f"import os, time\nfor _ in range({children}):\n    if os.fork() == 0:\n"
        "        time.sleep(600)\n        os._exit(0)\nprint('held', flush=True)\ntime.sleep(600)"
    )
    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    process = subprocess.Popen(
        [*command, sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout.readline() == b"held\n"
    return process


@contextlib.contextmanager
def _ended(left: subprocess.Popen):
    """``left`` and its children, killed on exit whatever the test found."""
    try:
        yield left
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(left.pid, signal.SIGKILL)  # the children too: they share its group
        left.wait()


def test_leasing_a_uid_first_ends_what_still_runs_as_it(reserved_uid):
    """Does a new lease of a uid end every process an earlier sandbox left running as it?"""
    with _ended(_leave_processes(reserved_uid, 20)) as left:
        assert len(sandbox.leases._running_as(reserved_uid)) == 21
        with sandbox.UidLease() as lease:
            assert lease.uid == reserved_uid
            assert sandbox.leases._running_as(reserved_uid) == []
        assert left.wait(timeout=10) == -signal.SIGKILL


def test_ending_a_lease_ends_what_still_runs_as_its_uid(reserved_uid):
    """Once its lease ends, does nothing run as the uid any more?"""
    with sandbox.UidLease() as lease:
        left = _leave_processes(lease.uid, 5)
    with _ended(left):
        assert sandbox.leases._running_as(reserved_uid) == []
        assert left.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.parametrize(
    "layers, shape",
    [
        ([nn.Conv2d(3, 8, 3, stride=2, padding=1)], (3, 32, 32)),
        (
            [nn.Conv2d(3, 6, (5, 3), stride=(1, 2), padding=(0, 2), dilation=2, groups=3)],
            (3, 17, 9),
        ),
        ([nn.MaxPool2d(3, 2), nn.Flatten(), nn.Linear(8 * 8, 5)], (1, 17, 17)),
        ([nn.AvgPool2d(2), nn.Flatten(1, 2)], (4, 9, 7)),
        ([nn.Flatten(), nn.Linear(12, 3), nn.ReLU(), nn.Softmax(dim=1)], (3, 2, 2)),
    ],
)
def test_budget_sizes_are_the_sizes_pytorch_computes(layers, shape, monkeypatch):
    """Does the budget, computed from the records alone, count the values PyTorch's layers give?"""
    from cnn_course_instructor.grading import rebuild

    model = nn.Sequential(*layers)
    records = judging.layer_records(model, shape)
    outputs = []
    for layer in model:
        layer.register_forward_hook(lambda _m, _i, output: outputs.append(output.numel()))
    model(torch.zeros(1, *shape))
    # A refusal quotes the count it refused: a zero budget makes the grader say it.
    monkeypatch.setattr(rebuild, "LAYER_BUDGET", 0)
    assert f"outputs {max(outputs):,} values for one" in over_budget(records, shape)
    monkeypatch.setattr(rebuild, "LAYER_BUDGET", 10**9)
    monkeypatch.setattr(rebuild, "ACTIVATION_BUDGET", 0)
    assert f"layers output {sum(outputs):,} values" in over_budget(records, shape)
