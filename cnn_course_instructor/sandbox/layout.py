"""The bwrap command line: what is bound where (the private file systems first, the host's
paths over them), the namespaces, the limits set inside; and its root form (as root: an outer
bwrap that builds the view, an inner one, as a leased uid, that makes the rest)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

from .bwrap import bwrap_binds, find_bwrap
from .spec import HOME, INNER_UID, KERNEL_RUN, MB, VIEW, Mount, Sandbox, SandboxError

__all__ = [
    "PRIVATE",
    "bwrap_command",
    "check_layout",
    "identity_files",
    "python_binds",
    "root_form",
]

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc/fonts: fontconfig's configuration, without which matplotlib's font lookup writes
# "Fontconfig error" to stderr in the student's notebook.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts")

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


def identity_files() -> dict[str, str]:
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
    placed = check_layout([*binds, *bwrap_binds(bwrap), *sandbox.binds])
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


def root_form(command: list[str], uid: int) -> list[str]:
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
