"""Budgets the machine's load cannot change: a process tree's CPU time and its own time (the
wall time it did not spend waiting for a CPU), and the kernel's start, which has no clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

from .. import sandbox

__all__ = [
    "IDLE_SHARE",
    "INTERRUPT_GRACE",
    "START_CPU",
    "START_IDLE",
    "WALL_FACTOR",
    "POLL",
    "KernelStartFailed",
    "Progress",
    "guard_start",
    "tree_cpu_seconds",
]

# How a cell's time is limited (see kernel._BoundedClient._watch): CPU time, which the machine's load
# does not change; for a cell that mostly waits, and as a last resort, its own time: the wall
# time it did not spend waiting for a CPU (a busy machine makes a cell wait, never its own).
IDLE_SHARE = 0.1  # a cell using less CPU than this share of its own time is waiting
WALL_FACTOR = 4  # any cell is interrupted after this many times its limit, in its own time
POLL = 0.5  # seconds between two looks at a cell (or a kernel) the budgets watch
# Starting a kernel (the sandbox, Python, the preloaded modules: about 4 CPU-seconds) has no
# clock: a start that computes goes on, however busy the machine. One that neither computes nor
# answers for START_IDLE seconds of its own time, or computes past START_CPU, has failed: the
# grader's failure, never the student's (no student code runs before the first cell).
START_IDLE = 120.0
START_CPU = 300.0
INTERRUPT_GRACE = 30.0  # seconds an interrupted cell has to end before its kernel is stopped


class KernelStartFailed(RuntimeError):
    """The grader could not start the kernel (the sandbox, or the kernel in it): why, in words."""


def _task_delays(pid: int) -> dict[tuple[int, int], int]:
    """Nanoseconds each thread of ``pid`` has waited, runnable, for a CPU (schedstat)."""
    delays = {}
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/task/{task.name}/schedstat", "rb") as stream:
                    delays[(pid, int(task.name))] = int(stream.read().split()[1])
    return delays


def _tree(root: int) -> tuple[list[int], float]:
    """The pids of process ``root`` and its descendants, and the CPU seconds they used (with
    their reaped children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read().decode("ascii", "replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(pid)
        used[pid] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in used:
            pids.append(pid)
        stack.extend(children.get(pid, ()))
    return pids, sum(used[pid] for pid in pids) / ticks


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used by process ``root`` and its descendants (with their reaped children)."""
    return _tree(root)[1]


class Progress:
    """What a process tree has done since this was made: ``cpu`` seconds it computed, and
    ``own`` seconds of wall time it did not spend waiting for a CPU (the time that was its own
    to use: on a machine 20 times oversubscribed, a computing tree's own time grows about as
    slowly as its CPU time). Call :meth:`sample` to bring both up to date."""

    def __init__(self, root: int):
        self.root = root
        self.cpu = self.own = 0.0
        self._wall = time.monotonic()
        _, self._cpu = _tree(root)
        self._delays: dict[tuple[int, int], int] = {}
        self.sample()
        self.cpu = self.own = 0.0

    def sample(self) -> Progress:
        pids, cpu = _tree(self.root)
        delays: dict[tuple[int, int], int] = {}
        for pid in pids:
            delays.update(_task_delays(pid))
        now = time.monotonic()
        elapsed = now - self._wall
        # The tree waited for a CPU as long as its most delayed thread did (a thread that is
        # new since the last sample counts all its delay): generous to the student when the
        # machine is busy, and no gain to code that keeps itself busy (that costs CPU time).
        waited = max((d - self._delays.get(k, 0) for k, d in delays.items()), default=0) / 1e9
        self.own += max(0.0, elapsed - min(elapsed, waited))
        self.cpu += max(0.0, cpu - self._cpu)
        self._wall, self._cpu, self._delays = now, cpu, delays
        return self


async def guard_start(launcher: int, alive: Callable[[], bool], spec_path: str) -> None:
    """Return never while a kernel's start makes progress; raise KernelStartFailed, with the
    cause, once the sandbox has ended or the start neither computes nor answers (START_IDLE
    seconds of its own time) or computes past START_CPU."""
    progress = await asyncio.to_thread(Progress, launcher)
    idle_since = 0.0
    while True:
        await asyncio.sleep(0.2)
        if not alive():
            log = sandbox.read_log(spec_path).strip() if spec_path else ""
            raise KernelStartFailed(
                "the sandbox ended before its kernel answered"
                + (f": {_last_lines(log)}" if log else "")
            )
        before_cpu, before_own = progress.cpu, progress.own
        await asyncio.to_thread(progress.sample)
        if progress.cpu - before_cpu >= IDLE_SHARE * (progress.own - before_own):
            idle_since = progress.own  # it computes: no clock runs
        if progress.own - idle_since > START_IDLE:
            raise KernelStartFailed(
                f"the kernel neither computed nor answered for {START_IDLE:g} s while starting"
            )
        if progress.cpu > START_CPU:
            raise KernelStartFailed(f"the kernel used {START_CPU:g} CPU-seconds to start")


def _last_lines(text: str, count: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-count:])[:600]
