"""A cgroup per sandbox, where the machine lets the grader make one: a fair CPU share, a memory limit.

Each sandboxed kernel runs in a control group of its own, made as a child of the grader's own
group (so whatever limits the machine puts on the grader still hold), with the same CPU weight
as any other process group and a memory limit for all its processes together: a student who
splits a memory hog across many processes hits their own sandbox's limit, and the kernel's OOM
killer then chooses among that sandbox's processes only.

Two layouts are understood: cgroup v2 (one hierarchy; the grader's group must delegate the
``cpu`` and ``memory`` controllers to its children) and cgroup v1 (a hierarchy per controller,
``cpu`` and ``memory`` writable where the grader is). Where neither is writable (a normal user on
most machines), ``support()`` says why and sandboxes run without a group: see ``sandbox`` for
what bounds a sandbox then.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from cnn_course.settings import NO_CGROUPS_ENV

__all__ = ["PREFIX", "Group", "Support", "new_group", "support"]

PREFIX = "cnn-course-sandbox-"
_CONTROLLERS = ("cpu", "memory")
# What makes a process join a group before it runs anything: a shell that writes its own pid
# to each group's cgroup.procs, then becomes the command (its pid, and so its group, kept).
_JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'


@dataclass(frozen=True)
class Support:
    """Whether sandboxes get a cgroup here: ``kind`` is "cgroup v2", "cgroup v1" or "" (none);
    ``parents`` are the folders their groups are made in; ``reason`` says what, or why not."""

    kind: str
    parents: tuple[Path, ...]
    reason: str


def _mounts() -> list[tuple[str, Path, set[str]]]:
    """(file system type, mount point, super options) of each cgroup file system mounted."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((tail[0], Path(fields[4]), set(tail[2].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """This process's group path in each hierarchy: "" for v2, else each v1 controller."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            groups[""] = path
        for controller in controllers.split(","):
            if controller:
                groups[controller] = path
    return groups


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


@functools.cache
def support() -> Support:
    """Where sandbox groups can be made by this process, or why they cannot (cached)."""
    if os.environ.get(NO_CGROUPS_ENV):
        return Support("", (), f"turned off by {NO_CGROUPS_ENV}")
    try:
        mounts, own = _mounts(), _own_groups()
    except OSError as exc:
        return Support("", (), f"cannot read this process's cgroups ({exc.strerror})")
    v1 = {}
    for kind, point, options in mounts:
        for controller in _CONTROLLERS:
            if kind == "cgroup" and controller in options and controller in own:
                v1[controller] = point / own[controller].lstrip("/")
    if set(v1) == set(_CONTROLLERS):
        if all(_writable(folder) for folder in v1.values()):
            return Support("cgroup v1", tuple(v1[c] for c in _CONTROLLERS), "cpu and memory")
        return Support("", (), "cgroup v1's cpu and memory groups are not writable by this user")
    for kind, point, _ in mounts:
        if kind == "cgroup2" and "" in own:
            folder = point / own[""].lstrip("/")
            problem = _delegated(folder)
            if problem is None:
                return Support("cgroup v2", (folder,), "cpu and memory")
            return Support("", (), problem)
    return Support("", (), "no cgroup hierarchy with the cpu and memory controllers is mounted")


def _delegated(folder: Path) -> str | None:
    """None when groups made in ``folder`` (v2) get the cpu and memory controllers."""
    try:
        enabled = set((folder / "cgroup.subtree_control").read_text().split())
        available = set((folder / "cgroup.controllers").read_text().split())
    except OSError as exc:
        return f"cannot read {folder}'s controllers ({exc.strerror})"
    missing = set(_CONTROLLERS) - enabled
    if missing - available:
        return (
            f"cgroup v2 at {folder} offers no {' or '.join(sorted(missing - available))} controller"
        )
    if missing:  # only a group without processes of its own may delegate (the root excepted)
        try:
            (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
        except OSError as exc:
            return (
                f"cgroup v2 at {folder} does not delegate {' and '.join(sorted(missing))} to its "
                f"children, and this user cannot ({exc.strerror})"
            )
    if not _writable(folder):
        return f"cgroup v2 at {folder} is not writable by this user"
    return None


class Group:
    """One sandbox's control group (a folder in each hierarchy used)."""

    def __init__(self, kind: str, folders: tuple[Path, ...]):
        self.kind, self.folders = kind, folders

    @property
    def memory_folder(self) -> Path:
        return self.folders[-1]  # v1: (cpu, memory); v2: the one folder

    def join(self, argv: list[str]) -> list[str]:
        """``argv`` run so that it, and all it starts, belong to this group from the start."""
        procs = [str(folder / "cgroup.procs") for folder in self.folders]
        return ["/bin/sh", "-c", _JOIN, "sh", str(len(procs)), *procs, *argv]

    def pids(self) -> list[int]:
        """The processes in the group now."""
        try:
            text = (self.memory_folder / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(line) for line in text.split()]

    def memory_limit_hit(self) -> bool:
        """True once the group's processes have reached its memory limit (its own limit: an OOM
        kill of the whole machine, where another user's job filled it, is not counted)."""
        try:
            folder = self.memory_folder
            if self.kind == "cgroup v2":
                events = dict(
                    line.split() for line in (folder / "memory.events").read_text().splitlines()
                )
                return int(events.get("max", 0)) > 0 or int(events.get("oom", 0)) > 0
            peak = int((folder / "memory.max_usage_in_bytes").read_text())
            limit = int((folder / "memory.limit_in_bytes").read_text())
            return int((folder / "memory.failcnt").read_text()) > 0 or peak >= limit
        except (OSError, ValueError):
            return False

    def kill(self, timeout: float = 10.0) -> bool:
        """SIGKILL every process in the group until none is left; False if some remain."""
        with contextlib.suppress(OSError):
            (self.memory_folder / "cgroup.kill").write_text("1")  # v2, Linux 5.14 and later
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        return True

    def remove(self) -> None:
        """End what still runs in the group, and remove its folders (never raises)."""
        with contextlib.suppress(Exception):
            self.kill()
        for folder in self.folders:
            for _ in range(50):  # a killed process leaves its group a moment after it ends
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def new_group(memory_mb: int) -> Group | None:
    """A new group for one sandbox, with the default CPU weight and ``memory_mb`` for all its
    processes together (no swap beyond it); None where ``support()`` finds none. Groups left
    by a grader that was killed (empty, their maker gone) are removed on the way."""
    found = support()
    if not found.kind:
        return None
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    for parent in found.parents:
        _remove_stale(parent)
    folders = tuple(parent / name for parent in found.parents)
    group = Group(found.kind, folders)
    try:
        for folder in folders:
            folder.mkdir()
        limit = str(memory_mb * 1024 * 1024)
        if found.kind == "cgroup v2":
            (group.memory_folder / "memory.max").write_text(limit)
            with contextlib.suppress(OSError):
                (group.memory_folder / "memory.swap.max").write_text("0")
        else:
            (group.memory_folder / "memory.limit_in_bytes").write_text(limit)
            with contextlib.suppress(OSError):  # where swap is accounted
                (group.memory_folder / "memory.memsw.limit_in_bytes").write_text(limit)
    except OSError:
        group.remove()
        return None
    return group


def _remove_stale(parent: Path) -> None:
    """Remove the empty sandbox groups in ``parent`` whose maker no longer runs."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if not entry.name.startswith(PREFIX):
                continue
            maker = entry.name[len(PREFIX) :].split("-")[0]
            if maker.isdigit() and not Path(f"/proc/{maker}").exists():
                with contextlib.suppress(OSError):
                    entry.rmdir()  # refused while a process is in it
