"""Start a submission's kernel in a sandbox: new namespaces, an unprivileged uid, resource limits.

Used as the kernel command of the grading kernel (see :func:`kernel_argv`)::

    python -m cnn_course_instructor.sandbox --uid U --scratch S [--hide P ...] [--keep P ...] -- KERNEL ARGV

Running as root, it makes new mount, network, PID and IPC namespaces, hides the instructor's
files behind empty read-only file systems (the ``--hide`` paths, the world-writable /tmp,
/var/tmp and /dev/shm), keeps visible the ``--keep`` paths the kernel needs (Python, the helper
package, the data), makes every mount read-only but ``--scratch``, mounts a fresh /proc, limits CPU time, memory, processes and file size,
drops to the unprivileged ``--uid`` and runs the kernel as PID 1 of its namespace, so every
process it starts dies with it. The only writable place left is ``--scratch``; the only
network is an unconfigured loopback, so no packet leaves.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import stat
import sys
from pathlib import Path

__all__ = ["Limits", "kernel_argv", "sandbox_available"]

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWIPC = (
    0x00020000,
    0x40000000,
    0x20000000,
    0x08000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    32,
    4096,
    16384,
    1 << 18,
)
PR_SET_PDEATHSIG = 1
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)


class Limits:
    """Resource limits of one sandboxed kernel (defaults fit the lab with a wide margin)."""

    def __init__(
        self,
        memory_mb: int = 8192,
        cpu_seconds: int = 1200,
        processes: int = 256,
        file_mb: int = 256,
    ):
        self.memory_mb, self.cpu_seconds, self.processes, self.file_mb = (
            memory_mb,
            cpu_seconds,
            processes,
            file_mb,
        )

    def args(self) -> list[str]:
        return [
            f"--memory-mb={self.memory_mb}",
            f"--cpu-seconds={self.cpu_seconds}",
            f"--processes={self.processes}",
            f"--file-mb={self.file_mb}",
        ]


def sandbox_available() -> str | None:
    """None when sandboxes can be made here, else the reason why not."""
    if sys.platform != "linux":
        return f"sandboxing needs Linux namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return "sandboxing needs root (to make namespaces and switch to an unprivileged uid)"
    return None


def kernel_argv(
    uid: int, scratch: Path, hide: list[Path], keep: list[Path], limits: Limits
) -> list[str]:
    """The kernel command line that starts ipykernel inside a sandbox."""
    options = [f"--uid={uid}", f"--scratch={scratch}", *limits.args()]
    options += [f"--hide={path}" for path in hide] + [f"--keep={path}" for path in keep]
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        *options,
        "--",
        *kernel,
    ]  # needs no import path


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    encode = lambda value: value.encode() if value is not None else None  # noqa: E731
    result = _libc.mount(
        encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)
    )
    _check(result, f"mount {source} on {target}")


def _hide(paths: list[Path], keep: list[Path]) -> None:
    """Cover each path with an empty read-only file system, then put the kept paths back.

    A kept path inside a covered one is bound back at the same place (through a descriptor
    opened before the cover went on), so the kernel sees Python, the helper package and the
    data where they were, and nothing else of the covered trees.
    """
    keep = [path for path in keep if path.exists()]
    paths = sorted(
        {path for path in paths if path.exists() and not path.is_symlink() and path not in keep},
        key=lambda path: len(path.parts),
    )
    paths = [path for path in paths if not any(other in path.parents for other in paths)]
    kept = [(path, os.open(path, os.O_PATH)) for path in keep]
    covered = []
    for path in paths:
        if path.is_dir():
            _mount("tmpfs", str(path), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            covered.append(path)
        else:
            _mount("/dev/null", str(path), None, MS_BIND)
    rebind = [(p, fd) for p, fd in kept if any(c in p.parents for c in covered)]
    for path, descriptor in rebind:  # mount points, made while the covers are writable
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(path.parent, exist_ok=True)
            path.touch()
    for path in covered:
        _mount(None, str(path), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path, descriptor in rebind:
        _mount(f"/proc/self/fd/{descriptor}", str(path), None, MS_BIND | MS_REC)
    for _, descriptor in kept:
        os.close(descriptor)


def _read_only_except(writable: Path) -> None:
    """Make every mount read-only in this namespace, then ``writable`` alone read-write again."""
    with open("/proc/self/mountinfo") as mountinfo:
        points = {line.split()[4] for line in mountinfo}
    for point in sorted(points, key=len):
        try:
            _mount(None, point.replace("\\040", " "), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError:
            pass  # a few kernel file systems refuse; the uid cannot write to them anyway
    _mount(str(writable), str(writable), None, MS_BIND)
    _mount(None, str(writable), None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)


def _limit(args: argparse.Namespace) -> None:
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_mb * mb, args.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_seconds, args.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_NPROC, (args.processes, args.processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_mb * mb, args.file_mb * mb))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child(args: argparse.Namespace, kernel: list[str]) -> None:
    """PID 1 of the new namespaces: set up the view of the system, drop privileges, exec."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host
    hide = [Path(p) for p in args.hide] + [Path(p) for p in WORLD_WRITABLE]
    _hide(hide, [Path(p) for p in args.keep] + [Path(args.scratch)])
    _read_only_except(Path(args.scratch))
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)  # only this namespace's processes
    _limit(args)
    os.chdir(args.scratch)
    os.setgroups([])
    os.setgid(args.uid)
    os.setuid(args.uid)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL), "prctl")
    os.execv(kernel[0], kernel)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m cnn_course_instructor.sandbox")
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--keep", action="append", default=[])
    parser.add_argument("--memory-mb", type=int, default=8192)
    parser.add_argument("--cpu-seconds", type=int, default=1200)
    parser.add_argument("--processes", type=int, default=256)
    parser.add_argument("--file-mb", type=int, default=256)
    args = parser.parse_args(argv[:split])
    kernel = argv[split + 1 :]
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL), "prctl")  # die with the grader
    # The connection file may lie where the kernel cannot read it: hand it a copy in scratch.
    if "-f" in kernel:
        index = kernel.index("-f") + 1
        info = json.loads(Path(kernel[index]).read_text())
        copy = Path(args.scratch) / "connection.json"
        copy.write_text(json.dumps(info))
        os.chown(copy, args.uid, args.uid)
        copy.chmod(0o600)
        kernel[index] = str(copy)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    child = os.fork()
    if child == 0:
        try:
            _child(args, kernel)
        except BaseException as exc:  # report why the sandbox could not start, then die
            print(f"sandbox: {exc!r}", file=sys.stderr, flush=True)
            os._exit(70)

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
