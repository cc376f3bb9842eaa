"""Run untrusted code under bubblewrap (``bwrap``): an allow-list of what exists, and limits.

A sandbox is a new, empty root that holds, read-only, only what the code needs (the system
libraries, the Python install, the venv, the student runtime package, the data root, the data
cache entries it reads), with a private ``/dev``, ``/proc``, size-capped ``/tmp``,
``/dev/shm``, home and ``/run/kernel`` (each a tmpfs of its own), and nothing else of the host:
no course repository, no output of any run, no submission, no home, no host socket.

Every namespace is new (user, mount, PID, IPC, network, UTS, cgroup), so there is no network but
an unconfigured loopback; the code runs with no capability, as an unprivileged user, in a new
session, cannot make user namespaces of its own, and dies with the process that started it.
Inside, before the command runs, resource limits are set: address space, CPU time, processes
(counted in the sandbox's own user namespace, so sandboxes never share a budget), file size.

``bwrap`` comes from the ``bubblewrap`` package of the distribution (Debian: ``apt-get install
bubblewrap``), or from ``$CNN_COURSE_BWRAP``; it needs unprivileged user namespaces, which Debian
and most distributions allow. As a normal user, bwrap runs as that user. As root, an outer
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
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "HOME",
    "Limits",
    "Mount",
    "Sandbox",
    "UidLease",
    "bwrap_command",
    "find_bwrap",
    "run",
    "sandbox_available",
]

BWRAP_ENV = "CNN_COURSE_BWRAP"
MIN_BWRAP = (0, 8, 0)  # --size, --perms and --disable-userns
HOME = "/home/student"  # the sandbox's home and working folder (a tmpfs of its own)
KERNEL_RUN = "/run/kernel"  # the kernel's sockets and the probe's record (a tmpfs of its own)
INNER_UID = 1000  # the uid the code sees inside
UID_BASE, UID_COUNT = 61000, 4000  # as root: host uids leased to sandboxes, one each
LEASE_DIR = Path("/run/cnn-course/uids")
LEFTOVER_SECONDS = 10.0  # how long a lease waits for what still runs as its uid to end
MB = 1024 * 1024

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc/fonts: fontconfig's configuration, without which matplotlib's font lookup writes
# "Fontconfig error" to stderr in the student's notebook.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts")

# Run inside the sandbox, before the command: limits counted in the sandbox's own user
# namespace, and a high OOM score, so that under memory pressure the kernel kills student code
# before anything of the grader.
_LIMITER = """\
import os, resource, sys
limits = {limits}
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))
try:
    with open("/proc/self/oom_score_adj", "w") as stream:
        stream.write("1000")
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


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


def find_bwrap() -> str | None:
    """``$CNN_COURSE_BWRAP``, else ``bwrap`` on the PATH or in /usr/bin; None when missing."""
    configured = os.environ.get(BWRAP_ENV, "").strip()
    if configured:
        return configured
    return shutil.which("bwrap") or (
        "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None
    )


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


def sandbox_available() -> str | None:
    """None when sandboxes can be made here, else the reason why not (and what to do)."""
    if sys.platform != "linux":
        return f"the sandbox needs Linux namespaces; this is {sys.platform}"
    bwrap = find_bwrap()
    if bwrap is None:
        return (
            "bubblewrap (bwrap) is not installed: install it (Debian and Ubuntu: "
            f"`apt-get install bubblewrap`), or set {BWRAP_ENV} to its path"
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
    for size, path in (
        (limits.tmp_mb, "/dev/shm"),
        (limits.tmp_mb, "/tmp"),
        (limits.home_mb, HOME),
        (limits.run_mb, KERNEL_RUN),
    ):
        args += ["--perms", "0700" if path in (HOME, KERNEL_RUN) else "1777"]
        args += ["--size", str(size * MB), "--tmpfs", path]
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
) -> list[str]:
    """The bwrap command line (as a normal user) that runs ``argv`` in ``sandbox``.

    ``data_fds`` maps a path inside to an open file whose content is copied there, read-only
    (``--ro-bind-data``: the grader's plan, the kernel's connection file). With ``python``, the
    limits are set inside by that interpreter before ``argv`` runs. As root, pass the result to
    ``UidLease.wrap``.
    """
    bwrap = find_bwrap() or "bwrap"
    binds = [] if python is None else python_binds()
    args = [bwrap, *_system_args()]
    for mount in [*binds, *sandbox.binds]:
        args += ["--ro-bind", mount.source, mount.dest]
    args += ["--dir", "/etc", "--dir", "/run", "--dir", "/home"]
    args += _private_args(sandbox)
    for dest, fd in (data_fds or {}).items():
        args += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
    args += ["--remount-ro", "/"]  # the root tmpfs: only the tmpfs mounts above are writable
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    args.append("--")
    if python is not None:
        limiter = _LIMITER.format(limits=sandbox.limits.rlimits())
        argv = [python, "-I", "-S", "-c", limiter, *argv]
    return args + argv


# The root form splits one command line in two: every bind (the view of the host) goes to the
# outer bwrap, run as root; the inner bwrap, run as the leased uid, binds each of them again from
# the outer's tree (where every folder above them is the outer's, world-readable) and does all
# the rest.
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
}


def _root_form(command: list[str], uid: int) -> list[str]:
    bwrap, rest = command[0], command[1:]
    split = rest.index("--")
    options, argv = rest[:split], rest[split + 1 :]
    # The inner bwrap builds its root on the outer's /tmp: a tmpfs made first, so that binds of
    # host paths under /tmp (a course or data folder there) land on it rather than under it.
    outer = [bwrap, "--perms", "1777", "--size", str(MB), "--tmpfs", "/tmp"]
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
        "--bind",  # the host's /proc, whole: the inner bwrap may mount a new one only then
        "/proc",
        "/proc",
        "--dev",
        "/dev",
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
    with lease() as held, _DataFiles(sandbox.files) as fds:
        command = held.wrap(bwrap_command(sandbox, argv, data_fds=fds))
        with piped(command, pass_fds=[*fds.values(), *pass_fds]) as process:
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
            os.close(fd)


def _identity_files_paths() -> dict[str, str]:
    return {dest: f"data:{content}" for dest, content in _identity_files().items()}


# What ``python -m ipykernel_launcher`` does, after importing the modules named in argv[1] (a
# JSON list) from the Python install (the kernel's folder, first on the path as IPython puts
# it, is still empty): a module that fails to import is left to the cell that imports it,
# which reports the error where the student sees it.
_KERNEL_START = """
import importlib, json, sys
def preload(names):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            pass
preload(json.loads(sys.argv.pop(1)))
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


def launch_kernel(spec_path: str, connection_file: str) -> int:
    """The kernel command of a sandboxed Jupyter kernel (see execute.py).

    Starts ipykernel in the sandbox the spec describes, with the connection file copied in, writes
    the sandbox's host pid (whose ``/proc/PID/root`` is the sandbox's root, where the grader
    reaches the kernel's sockets) to ``<spec>.pid``, then waits for it to end.
    """
    die_with_parent()
    sandbox = Sandbox.from_json(Path(spec_path).read_text(encoding="utf-8"))
    files = {**sandbox.files, f"{KERNEL_RUN}.json": connection_file}
    kernel = [sys.executable, "-c", _KERNEL_START, json.dumps(list(sandbox.preload))]
    kernel += ["-f", f"{KERNEL_RUN}.json"]
    info_read, info_write = os.pipe()
    with lease() as held, _DataFiles(files) as fds:
        command = held.wrap(bwrap_command(sandbox, kernel, data_fds=fds, info_fd=info_write))
        process = subprocess.Popen(command, pass_fds=[*fds.values(), info_write])
        os.close(info_write)
        for fd in fds.values():
            os.close(fd)
        fds.clear()
        with os.fdopen(info_read) as stream:
            info = stream.read()
        try:
            pid = held.host_pid(process.pid, json.loads(info)["child-pid"])
            if pid is not None:  # else the sandbox ended at once: its error is on stderr
                tmp = Path(f"{spec_path}.pid.tmp")
                tmp.write_text(str(pid))
                os.replace(tmp, f"{spec_path}.pid")
        except (ValueError, KeyError):
            pass  # bwrap failed before it started the sandbox: its error is on stderr

        def forward(signum, _frame):
            process.send_signal(signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
        while True:
            try:
                return process.wait()
            except InterruptedError:
                continue


def wait_for_pid(spec_path: str, alive, timeout: float = 60.0) -> int | None:
    """The sandbox pid ``launch_kernel`` wrote, once it is there (None if the launcher died)."""
    path = Path(f"{spec_path}.pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return int(path.read_text())
        if not alive():
            return None
        time.sleep(0.01)
    return None


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
