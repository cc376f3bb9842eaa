"""Check the ground before grading: the sandbox, the install places, the data, a real kernel.

``cnn-course grade`` runs these checks first, on this machine (and on each Dask worker), and
stops with the cause in words rather than write a row for every student it could not grade.
``cnn-course doctor`` prints the same checks and their verdicts.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from cnn_course.errors import CourseError

from .. import TOOLS, sandbox
from ..course import Course
from ..sandbox import cgroups
from ..sandbox.bwrap import bwrap_binds
from .job import GradingRun, course_of

__all__ = [
    "Check",
    "PreflightFailed",
    "environment_checks",
    "kernel_checks",
    "require",
    "warm_data",
]


class PreflightFailed(CourseError):
    """A check before grading failed: nothing was graded, nothing was written."""


@dataclass(frozen=True)
class Check:
    """One check's verdict: ``ok`` True (passed), False (grading cannot run) or None (it runs,
    with what ``detail`` says is weaker here)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        verdict = {True: "ok", False: "FAIL", None: "note"}[self.ok]
        return f"{verdict:5} {self.name}: {self.detail}"


def environment_checks(
    course: Course, data_root: Path | None, sandboxed: bool = True
) -> list[Check]:
    """The checks that start no kernel: the sandbox and what it binds, isolation, the data,
    the gradebook's tools (a second or two)."""
    checks = [Check("python", True, f"{sys.version.split()[0]} at {sys.executable}")]
    if sandboxed:
        checks += _sandbox_checks(course, data_root)
    checks += _data_checks(data_root)
    checks.append(_gradebook_check())
    return checks


def _sandbox_checks(course: Course, data_root: Path | None) -> list[Check]:
    bwrap, where = sandbox.bwrap_source()
    if bwrap is None:
        return [Check("bubblewrap", False, sandbox.sandbox_available() or where)]
    checks = [Check("bubblewrap", True, f"{bwrap} ({where}): {sandbox.bwrap_version(bwrap)}")]
    checks.append(_userns_check())
    problem = sandbox.sandbox_available()
    checks.append(Check("a sandbox starts", problem is None, problem or "bwrap made one"))
    if os.geteuid() == 0:
        checks.append(_uid_range_check())
    checks.append(_layout_check(course, data_root))
    found = cgroups.support()
    if found.kind:
        detail = (
            f"{found.kind} ({found.reason}): each kernel gets a fair CPU share and one memory limit"
        )
        checks.append(Check("isolation", True, detail))
    else:
        checks.append(
            Check("isolation", None, f"no cgroup per sandbox ({found.reason}); {_fallback()}")
        )
    checks.append(_schedstat_check())
    return checks


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _userns_check() -> Check:
    most = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if most == "0" or clone == "0":
        return Check(
            "user namespaces",
            False,
            "turned off (sysctl user.max_user_namespaces or kernel.unprivileged_userns_clone); "
            "bwrap needs them: ask the machine's administrator",
        )
    detail = f"user.max_user_namespaces = {most}"
    if apparmor == "1":
        detail += "; AppArmor restricts them (Ubuntu 24.04): the distribution's bwrap has a profile"
    return Check("user namespaces", True, detail)


def _uid_range_check() -> Check:
    """As root, sandboxes run as uids 61000-64999: no account may own them."""
    low, high = sandbox.UID_BASE, sandbox.UID_BASE + sandbox.UID_COUNT - 1
    owners = []
    for line in (_read("/etc/passwd") or "").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit() and low <= int(fields[2]) <= high:
            owners.append(f"{fields[0]} ({fields[2]})")
    if owners:
        return Check(
            "sandbox uids",
            False,
            f"uids {low}-{high} are leased to sandboxes, but belong to {', '.join(owners[:5])}: "
            "whatever runs as them would be killed; move those accounts",
        )
    return Check("sandbox uids", True, f"{low}-{high} belong to no account")


def _layout_check(course: Course, data_root: Path | None) -> Check:
    """Every path a kernel's and a judge's sandbox bind can be placed (see sandbox.check_layout)."""
    from cnn_course import data

    try:
        root = data.resolve_root(data_root).path.resolve()
        cache = [str(p) for p in data.cache_entries(root)]
        tools = TOOLS
        mounts = [
            *sandbox.python_binds(),
            *bwrap_binds(sandbox.find_bwrap() or "bwrap"),
            sandbox.Mount(str(root), sandbox.DATA_VIEW),
            *(sandbox.Mount(p, f"{sandbox.CACHE_VIEW}/{Path(p).name}") for p in cache),
            sandbox.Mount(str(course.root.resolve()), sandbox.COURSE_VIEW),
            sandbox.Mount(str(tools), str(tools)),
        ]
        sandbox.check_layout(mounts)
    except CourseError as error:
        return Check("install places", False, str(error))
    if os.geteuid() == 0:  # the sandbox then runs as a uid of its own: "others" must read
        for mount in mounts:
            hidden = _not_for_others(Path(mount.source))
            if hidden is not None:
                return Check(
                    "install places",
                    False,
                    f"{hidden} is not readable by other users (mode "
                    f"{oct(hidden.stat().st_mode & 0o777)}), and the sandbox runs as a uid of "
                    f"its own: `chmod o+rX` it (it is bound as {mount.dest})",
                )
    places = f"Python {sys.base_prefix}, venv {sys.prefix}, data {root}"
    return Check("install places", True, f"all bound in the sandbox ({places})")


def _not_for_others(path: Path, depth: int = 2) -> Path | None:
    """The first of ``path`` and what lies ``depth`` levels below it that other users cannot
    read (a folder: read and enter), or None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # (not there: the layout or the data checks say so)
    wanted = 0o005 if path.is_dir() else 0o004
    if mode & wanted != wanted:
        return path
    if path.is_dir() and depth > 0:
        try:
            children = sorted(path.iterdir())[:50]
        except OSError:
            return path
        for child in children:
            found = _not_for_others(child, depth - 1)
            if found is not None:
                return found
    return None


def _fallback() -> str:
    autogroup = _read("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup == "1":
        cpu = "each sandbox is one session (setsid refused), one CPU share (autogroup)"
    else:
        cpu = "CPU is not shared per sandbox (kernel.sched_autogroup_enabled is off)"
    return f"{cpu}; memory: the grader watches each sandbox's total and stops its largest process"


def _schedstat_check() -> Check:
    if Path("/proc/self/schedstat").is_file():
        return Check("time budgets", True, "CPU and wait times readable (schedstat): load-proof")
    return Check(
        "time budgets",
        None,
        "no /proc/PID/schedstat: cells are budgeted in CPU time, and a waiting cell by wall time",
    )


def _data_checks(data_root: Path | None) -> list[Check]:
    from cnn_course import data, settings

    try:
        root = data.resolve_root(data_root)
    except CourseError as error:
        return [Check("data root", False, str(error))]
    checks = [Check("data root", True, root.describe())]
    for dataset, name in settings.DATASETS.items():
        try:
            images = data.load(dataset, "test", root=data_root).images
            checks.append(
                Check(name, True, f"{len(images):,} test images, {tuple(images.shape[1:])}")
            )
        except CourseError as error:
            hint = f"To grade: give cnn-course --data-root DIR, or set {data.DATA_ENV}."
            checks.append(Check(name, False, f"{error}\n{hint}"))
    cache = data.cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache):
            pass
        checks.append(Check("data cache", True, f"{cache} (writable)"))
    except OSError as exc:
        checks.append(
            Check(
                "data cache",
                False,
                f"{cache} is not writable ({exc.strerror}): set {data.CACHE_ENV} to a folder of "
                "yours",
            )
        )
    return checks


def _gradebook_check() -> Check:
    try:
        import nbgrader
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from nbgrader.dbutil import ALEMBIC_DIR

        config = Config()
        config.set_main_option("script_location", ALEMBIC_DIR)
        head = ScriptDirectory.from_config(config).get_current_head()
    except Exception as exc:  # noqa: BLE001 - any failure: the gradebook cannot be written
        return Check(
            "gradebook",
            False,
            f"nbgrader's gradebook cannot be made ({type(exc).__name__}: {exc}); install "
            "cnn-course[instructor]",
        )
    return Check("gradebook", True, f"nbgrader {nbgrader.__version__}, migration {head}")


def preflight_notebook(course: Course, lab: str) -> nbformat.NotebookNode:
    """What the preflight kernel runs: the lab's setup cell as released (its imports), then one
    image of each dataset the lab trains on (the probe and the judge follow, as for a
    submission)."""
    released = course.root / "notebooks" / "student" / f"{lab}.ipynb"
    cells = []
    if released.is_file():
        notebook = nbformat.read(released, as_version=4)
        first = next((cell for cell in notebook.cells if cell.cell_type == "code"), None)
        if first is not None:
            cells.append(nbformat.v4.new_code_cell(first.source))
    datasets = sorted({subset.dataset for subset in course.lab(lab).subsets.values()})
    cells.append(
        nbformat.v4.new_code_cell(
            "from cnn_course import data as _data\n"
            f"for _name in {datasets!r}:\n"
            "    _images = _data.load(_name, 'test').images[:1]\n"
            "    print('preflight:', _name, tuple(_images.shape), float(_images.float().mean()) >= 0)\n"
        )
    )
    return nbformat.v4.new_notebook(cells=cells)


def kernel_checks(run: GradingRun, labs: list[str], work_parent: Path) -> list[Check]:
    """For each lab, one sandboxed kernel started exactly as a submission's (its own worker
    process, sandbox, probe and judge), running ``preflight_notebook``: passes when the judge
    answered and no cell failed."""
    from .local import Started

    course, found = course_of(run.course), []
    for lab in labs:
        content = nbformat.writes(preflight_notebook(course, lab)).encode()
        started = Started(run, lab, "preflight", content, work_parent, restore_locked=False)
        result = started.finish().result
        name = f"kernel and judge ({lab})"
        if result.status.value == "graded" and not result.reason:
            detail = "a sandboxed kernel ran the setup and read the data; the judge answered"
            found.append(Check(name, True, detail))
            continue
        reason = result.reason.removesuffix("; rerun the same command to grade it")
        detail = f"{result.status.value}: {reason or 'the judge gave no test results'}"
        found.append(Check(name, False, detail))
    return found


def warm_data(data_root: Path) -> None:
    """Fail early if the data is missing, and warm the cache the kernels read."""
    from cnn_course import data, settings

    for dataset in settings.DATASETS:
        data.load(dataset, "test", root=data_root)


def require(checks: list[Check], where: str = "this machine") -> None:
    """Raise PreflightFailed, naming every failed check and what to do, if any failed."""
    failed = [check for check in checks if check.ok is False]
    if failed:
        lines = "\n".join(f"  - {check.name}: {check.detail}" for check in failed)
        raise PreflightFailed(
            f"Grading cannot start on {where}; nothing was graded and no row was written:\n"
            f"{lines}\nFix these, then run the same command again (`cnn-course doctor` checks "
            "them alone)."
        )


def machine_summary() -> str:
    return f"{platform.node()}, {platform.system()} {platform.release()}, {os.cpu_count()} cores"
