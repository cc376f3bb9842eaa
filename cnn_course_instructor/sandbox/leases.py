"""As root, a host uid for each sandbox alone (a lock file per uid), and the host's processes
seen through /proc: who runs as a uid, which pid a process has in the host's namespace."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from .layout import root_form

__all__ = [
    "LEASE_DIR",
    "UID_BASE",
    "UID_COUNT",
    "UidLease",
    "host_pid",
    "lease",
    "process_status",
    "processes",
    "real_uid",
]

UID_BASE, UID_COUNT = 61000, 4000  # as root: host uids leased to sandboxes, one each
LEASE_DIR = Path("/run/cnn-course/uids")
LEFTOVER_SECONDS = 10.0  # how long a lease waits for what still runs as its uid to end


class UidLease:
    """As root: a host uid no other sandbox uses while this one runs (a lock file per uid).

    The lock goes with the process that holds it, so a killed grader frees its uids. Whatever
    still runs as the uid when it is leased, or when its lease ends, is killed first: no sandbox
    shares its uid, or the process budget counted per uid, with what an earlier one left. A uid
    whose processes do not end within ``LEFTOVER_SECONDS`` is passed over.
    """

    def __init__(self) -> None:
        self.uid: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> UidLease:
        LEASE_DIR.mkdir(parents=True, exist_ok=True)
        start = os.getpid() % UID_COUNT  # spread the search; any free uid will do
        for offset in range(UID_COUNT):
            uid = UID_BASE + (start + offset) % UID_COUNT
            fd = os.open(LEASE_DIR / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if not _end_processes(uid):  # something an earlier sandbox left will not die
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return self
        raise RuntimeError(f"all {UID_COUNT} sandbox uids are in use")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            assert self.uid is not None
            _end_processes(self.uid)  # nothing of this sandbox outlives its lease
            os.close(self._fd)
            self._fd = None

    def wrap(self, command: list[str]) -> list[str]:
        """The root form of a ``bwrap_command``: outer bwrap as root, setpriv, inner bwrap."""
        assert self.uid is not None
        return root_form(command, self.uid)

    def host_pid(self, outer: int, pid: int) -> int | None:
        """The host pid of the process that the inner bwrap's ``--info-fd`` names ``pid``
        (a pid in the outer bwrap's PID namespace); ``outer`` is the outer bwrap's host pid.
        None when no such process runs (any more)."""
        return host_pid(outer, pid)


class _NoLease:
    uid = None

    def __enter__(self) -> _NoLease:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def wrap(self, command: list[str]) -> list[str]:
        return command

    def host_pid(self, outer: int, pid: int) -> int | None:
        return pid  # bwrap runs in the host's PID namespace: its pids are the host's


def process_status(pid: int | str) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (OSError once the process is gone)."""
    text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8", errors="replace")
    return {
        name: value.strip()
        for name, _, value in (line.partition(":") for line in text.splitlines())
    }


def real_uid(status: dict[str, str]) -> int:
    return int(status.get("Uid", "-1").split()[0])


def processes() -> Iterator[tuple[int, dict[str, str]]]:
    """``(pid, status fields)`` of every process this one may read, skipping those that end."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = process_status(entry.name)
        except OSError:
            continue
        yield int(entry.name), status


def _running_as(uid: int) -> list[int]:
    """The pids of the processes whose real uid is ``uid``, zombies aside (they run nothing)."""
    return [
        pid
        for pid, status in processes()
        if real_uid(status) == uid and not status.get("State", "").startswith("Z")
    ]


def _end_processes(uid: int, timeout: float | None = None) -> bool:
    """As root: SIGKILL every process whose real uid is ``uid``, again until none is left;
    False if some still run after ``timeout`` seconds (``LEFTOVER_SECONDS`` by default).

    Each is signalled through a pidfd opened before its uid is checked again, so a pid that
    ended and was reused in between is never signalled.
    """
    deadline = time.monotonic() + (LEFTOVER_SECONDS if timeout is None else timeout)
    while pids := _running_as(uid):
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:  # ended meanwhile
                continue
            try:
                if real_uid(process_status(pid)) == uid:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:  # ended meanwhile
                pass
            finally:
                os.close(pidfd)
        time.sleep(0.05)
    return True


def host_pid(outer: int, pid: int) -> int | None:
    """The descendant of host process ``outer`` whose pid one PID namespace down is ``pid``."""
    parents: dict[int, int] = {}
    found = []
    for host, status in processes():
        parents[host] = int(status.get("PPid", "0"))
        levels = status.get("NSpid", "").split()  # pids from the host's namespace inwards
        if len(levels) > 1 and int(levels[1]) == pid:
            found.append(host)
    for host in found:  # pids repeat across namespaces: keep the one in the outer bwrap's
        ancestor = parents.get(host, 0)
        while ancestor > 1 and ancestor != outer:
            ancestor = parents.get(ancestor, 0)
        if ancestor == outer:
            return host
    return None


def lease() -> UidLease | _NoLease:
    """A uid lease as root; as a normal user, nothing to lease (bwrap runs as that user)."""
    return UidLease() if os.geteuid() == 0 else _NoLease()
