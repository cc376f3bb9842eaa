"""Read files that a student controls without trusting them, and remove trees that never stop us."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnsafeFile", "read_regular", "read_under", "remove_tree"]


class UnsafeFile(Exception):
    """The file is a link, not a regular file, too large, or cannot be opened."""


def _read_fd(fd: int, limit: int, what: str) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{what} is not a regular file")
    if info.st_size > limit:
        raise UnsafeFile(f"{what} is {info.st_size:,} bytes, over the limit of {limit:,}")
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise UnsafeFile(f"{what} grew over the limit of {limit:,} bytes while being read")
    return b"".join(chunks)


_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_regular(path: Path, limit: int, what: str = "the file") -> bytes:
    """The bytes of ``path``: a regular file (never a link, FIFO or device) of ``limit`` bytes
    at most. Folders above it are trusted; see :func:`read_under` when they are not."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise UnsafeFile(f"{what} cannot be opened ({exc.strerror}; a link is refused)") from None
    try:
        return _read_fd(fd, limit, what)
    finally:
        os.close(fd)


def read_under(root: Path, relative: Path, limit: int, what: str = "the file") -> bytes:
    """Like :func:`read_regular` for ``root/relative``, where no folder below ``root`` may be a
    link either (each one is opened without following links)."""
    parts = Path(relative).parts
    if not parts or any(part in ("..", ".", "/") for part in parts):
        raise UnsafeFile(f"{what}: {relative} is not a plain relative path")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafeFile(f"{root} cannot be opened ({exc.strerror})") from None
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _FLAGS | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                raise UnsafeFile(
                    f"{what}: the folder {part!r} cannot be opened ({exc.strerror}; a link is refused)"
                ) from None
            os.close(fd)
            fd = child
        try:
            leaf = os.open(parts[-1], _FLAGS, dir_fd=fd)
        except OSError as exc:
            raise UnsafeFile(
                f"{what} cannot be opened ({exc.strerror}; a link is refused)"
            ) from None
        try:
            return _read_fd(leaf, limit, what)
        finally:
            os.close(leaf)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> list[str]:
    """Remove ``path`` and everything under it, however deep, whatever links or modes it holds.

    Never raises and never follows a link; returns what could not be removed (empty on success).
    Works without recursion and with two open folders at most, so a tree thousands of levels
    deep is no harder than a flat one.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return problems
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.unlink(path)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
        return problems
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    names: list[str] = []  # the way down from ``path`` to the folder ``fd`` is open on
    skipped: set[tuple[int, int]] = set()  # folders that could not be emptied
    try:
        while True:
            descended = False
            try:
                os.chmod(fd, 0o700)  # ours to remove: a read-only folder must not stop us
            except OSError:
                pass
            try:
                entries = list(os.scandir(fd))
            except OSError as exc:
                problems.append(f"{path.joinpath(*names)}: {exc.strerror}")
                entries = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    try:
                        child_info = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
                        if (child_info.st_dev, child_info.st_ino) in skipped:
                            continue
                        child = os.open(
                            entry.name,
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd,
                        )
                    except OSError as exc:
                        problems.append(f"{path.joinpath(*names, entry.name)}: {exc.strerror}")
                        continue
                    os.close(fd)
                    fd = child
                    names.append(entry.name)
                    descended = True
                    break
                try:
                    os.unlink(entry.name, dir_fd=fd)
                except OSError as exc:
                    problems.append(f"{path.joinpath(*names, entry.name)}: {exc.strerror}")
            if descended:
                continue
            if not names:
                break
            done = names.pop()
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            mine = os.fstat(fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(done, dir_fd=fd)
            except OSError as exc:
                skipped.add((mine.st_dev, mine.st_ino))
                problems.append(f"{path.joinpath(*names, done)}: {exc.strerror}")
    except OSError as exc:  # the tree changed under us: report, never raise
        problems.append(f"{path}: {exc.strerror}")
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError as exc:
        problems.append(f"{path}: {exc.strerror}")
    return problems
