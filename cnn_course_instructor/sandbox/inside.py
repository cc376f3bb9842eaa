"""What runs in a sandbox, seen from the grader: its processes (ended, measured) and its root,
pinned, from which paths inside are opened without following a link."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path, PurePosixPath

from .leases import process_status, processes, real_uid

__all__ = ["Inside", "end_strays", "memory_in", "processes_in"]


def _pid_namespace(pid: int) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        info = os.stat(f"/proc/{pid}/ns/pid")
        return info.st_dev, info.st_ino
    return None


def processes_in(init: int) -> list[tuple[int, int]]:
    """(host pid, pid inside) of every running process in the PID namespace whose init is host
    process ``init`` (the sandbox's pid): its init is 1 inside, the command bwrap started (the
    kernel) 2. Zombies aside."""
    namespace = _pid_namespace(init)
    if namespace is None:
        return []
    found = []
    for pid, status in processes():
        levels = status.get("NSpid", "").split()
        if status.get("State", "").startswith("Z"):
            continue  # ended: it runs nothing, and its parent reaps it
        if len(levels) > 1 and _pid_namespace(pid) == namespace:
            found.append((pid, int(levels[-1])))
    return found


def _kill_checked(pid: int, still_ours) -> None:
    """SIGKILL ``pid`` through a pidfd, if ``still_ours(pid)`` once the pidfd is open (a pid
    that ended and was reused in between is never signalled)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # ended meanwhile
        return
    try:
        if still_ours(pid):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def end_strays(init: int, timeout: float = 5.0) -> int:
    """Kill every process of the sandbox but its init and its kernel (what cells started and
    left running: forked workers, a fork bomb's holders), again until none is left or
    ``timeout``; how many were found the first time."""
    namespace = _pid_namespace(init)
    first, deadline = None, time.monotonic() + timeout
    while namespace is not None:
        strays = [pid for pid, inside in processes_in(init) if inside > 2]
        first = len(strays) if first is None else first
        if not strays or time.monotonic() > deadline:
            break
        for pid in strays:
            _kill_checked(pid, lambda p: _pid_namespace(p) == namespace)
        time.sleep(0.02)
    return first or 0


def memory_in(init: int) -> tuple[int, int | None]:
    """(bytes of memory the sandbox's processes use together, the host pid of the largest),
    counting shared pages once (proportional set size, swap included)."""
    total, largest, most = 0, None, -1
    for pid, inside in processes_in(init):
        if inside == 1:
            continue  # bwrap's init
        used = 0
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Pss:", "SwapPss:")):
                    used += int(line.split()[1]) * 1024
        total += used
        if used > most:
            largest, most = pid, used
    return total, largest


class Inside:
    """The root of a running sandbox, pinned by a descriptor: paths inside are opened from it
    one folder at a time, never following a link, so nothing the code inside changes (a link
    in place of a socket, a folder swapped) can make the grader open a host path.

    ``init`` is the sandbox's host pid, ``launcher`` the process that started it (the pid must
    still be one of its descendants once the root is open: not a reused pid). Everything the
    sandbox made is owned by the uid its init runs as (as root: its leased uid)."""

    def __init__(self, init: int, launcher: int):
        self.fd = os.open(f"/proc/{init}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            status = process_status(init)
            self.owner = real_uid(status)
            if not _descends_from(init, launcher):
                raise OSError(f"process {init} is not the sandbox any more")
        except OSError:
            os.close(self.fd)
            raise

    @property
    def path(self) -> Path:
        """The pinned root as a path this process may open (``/proc/self/fd/N``)."""
        return Path(f"/proc/self/fd/{self.fd}")

    def open_path(self, path: str, kind: int) -> int:
        """An ``O_PATH`` descriptor of ``path`` (absolute, inside), of file type ``kind``
        (``stat.S_IFSOCK``...), owned by the sandbox; OSError otherwise."""
        parts = PurePosixPath(path).parts[1:]
        if not parts or any(part in ("..", ".") for part in parts):
            raise OSError(f"{path} is not a plain absolute path")
        fd = os.dup(self.fd)
        try:
            for index, part in enumerate(parts):
                child = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = child
                info = os.fstat(fd)
                wanted = kind if index == len(parts) - 1 else stat.S_IFDIR
                if stat.S_IFMT(info.st_mode) != wanted:
                    raise OSError(f"{path}: {part} is not what the sandbox made (a link?)")
            if info.st_uid != self.owner:
                raise OSError(f"{path} is owned by uid {info.st_uid}, not the sandbox's")
            return fd
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = int(process_status(pid).get("PPid", "0"))
    return False
