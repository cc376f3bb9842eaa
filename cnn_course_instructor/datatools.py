"""Instructor data tools: what is found where, checksums, and the offline pack (`cnn-course data`)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_course.data import (
    CIFAR_FOLDER,
    PACK_FOLDER,
    PACK_KEYS,
    SPLITS,
    DataRoot,
    _atomic_file,
    _cifar_arrays,
    _cifar_from_torchvision,
    _file_key,
    _find_pack,
    _mnist_arrays,
    _mnist_expected,
    _mnist_raw_paths,
    _not_found,
    cache_dir,
    resolve_root,
)
from cnn_course.errors import CourseError

__all__ = ["MNIST_MD5", "DatasetStatus", "FileCheck", "data_status", "verify_files", "write_pack"]

# md5 of LeCun's files: the .gz ones are torchvision's own list, the others the published ones.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _npz_shapes(pack: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes from the ``.npy`` headers inside an ``.npz``, without decompressing data."""
    shapes = {}
    with zipfile.ZipFile(pack) as archive:
        for member in archive.namelist():
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(stream)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(stream)
            shapes[member.removesuffix(".npy")] = shape
    return shapes


@dataclass(frozen=True)
class FileCheck:
    """One file checked against a known digest."""

    path: Path
    algorithm: str
    expected: str
    actual: str | None  # None when the file is missing

    @property
    def ok(self) -> bool:
        return self.actual == self.expected


@dataclass(frozen=True)
class DatasetStatus:
    """Where a dataset was found, how many images each split holds, and its checksums."""

    name: str
    source: str | None  # None when not found
    path: Path | None
    counts: dict[str, int]
    checks: list[FileCheck]

    @property
    def found(self) -> bool:
        return self.source is not None


def verify_files(root: str | os.PathLike | None = None) -> list[FileCheck]:
    """Checksum every known data file under the root.

    Known files are MNIST's eight raw files, torchvision's CIFAR-10 batches and anything
    listed in a ``SHA256SUMS`` file at the root (the offline pack writes one).
    """
    data_root = resolve_root(root)
    checks: list[FileCheck] = []
    listed = _sha256sums(data_root.path)
    raw = data_root.path / "MNIST" / "raw"
    for name, md5 in MNIST_MD5.items():
        path = raw / name
        if path.is_file() and path not in listed:
            checks.append(FileCheck(path, "md5", md5, _digest(path, "md5")))
    canonical = data_root.path / CIFAR_FOLDER
    if canonical.is_dir():
        from torchvision.datasets import CIFAR10

        known = [
            *CIFAR10.train_list,
            *CIFAR10.test_list,
            [CIFAR10.meta["filename"], CIFAR10.meta["md5"]],
        ]
        for name, md5 in known:
            path = canonical / name
            checks.append(
                FileCheck(path, "md5", md5, _digest(path, "md5") if path.is_file() else None)
            )
    for path, sha in listed.items():
        checks.append(
            FileCheck(path, "sha256", sha, _digest(path, "sha256") if path.is_file() else None)
        )
    return checks


def data_status(root: str | os.PathLike | None = None) -> list[DatasetStatus]:
    """What is found where under the root, with split sizes and checksum results."""
    data_root = resolve_root(root)
    checks = verify_files(data_root.path)
    return [_mnist_status(data_root, checks), _cifar_status(data_root, checks)]


def _mnist_status(root: DataRoot, checks: list[FileCheck]) -> DatasetStatus:
    raw = root.path / "MNIST" / "raw"
    mine = [check for check in checks if check.path.parent == raw]
    if all(path.is_file() for path in _mnist_raw_paths(raw)):
        source = "torchvision MNIST files"
    elif all(path.is_file() for path in _mnist_raw_paths(raw, ".gz")):
        source = "torchvision MNIST files (gzip)"
    else:
        return DatasetStatus("MNIST", None, None, {}, mine)
    arrays = _mnist_arrays(root, download=False)
    counts = {split: len(arrays[f"y_{split}"]) for split in SPLITS}
    return DatasetStatus("MNIST", source, raw, counts, mine)


def _cifar_status(root: DataRoot, checks: list[FileCheck]) -> DatasetStatus:
    canonical = root.path / CIFAR_FOLDER
    if canonical.is_dir():
        mine = [check for check in checks if check.path.parent == canonical]
        counts = {}
        if all(check.ok for check in mine):
            arrays = _cifar_from_torchvision(root)
            counts = {split: len(arrays[f"y_{split}"]) for split in SPLITS}
        return DatasetStatus("CIFAR-10", "torchvision CIFAR-10 batches", canonical, counts, mine)
    pack = _find_pack(root)
    if pack is None:
        return DatasetStatus("CIFAR-10", None, None, {}, [])
    mine = [check for check in checks if check.path == pack]
    try:
        shapes = _npz_shapes(pack)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CourseError(f"Could not read the offline pack {pack}: {exc}.") from None
    counts = {split: shapes[f"y_{split}"][0] for split in SPLITS if f"y_{split}" in shapes}
    return DatasetStatus("CIFAR-10", "offline pack (npz)", pack, counts, mine)


def write_pack(
    out: str | os.PathLike, root: str | os.PathLike | None = None, force: bool = False
) -> list[Path]:
    """Write an offline data root at ``out``: MNIST's ``.gz`` files and a CIFAR-10 pack.

    The pack is an ``.npz`` with ``x_train (N, 32, 32, 3) uint8``, ``y_train``, ``x_test``,
    ``y_test`` and ``label_names``, read from torchvision's canonical files (or an existing
    pack). A ``SHA256SUMS`` lists what was written. Every file appears whole or not at all.
    """
    source = resolve_root(root)
    out_path = Path(out).expanduser().absolute()
    if out_path.resolve() == source.path.resolve():
        raise CourseError(
            f"The pack must go to a new folder, not the data root itself ({out_path})."
        )
    arrays = _cifar_arrays(source, download=False)
    gz_sources = _mnist_gz_sources(source)
    n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
    targets = [out_path / "MNIST" / "raw" / path.name for path in gz_sources]
    targets.append(out_path / PACK_FOLDER / f"cifar10_train{n_train}_test{n_test}.npz")
    sums = out_path / "SHA256SUMS"
    other_packs = sorted(set((out_path / PACK_FOLDER).glob("*.npz")) - {targets[-1]})
    if other_packs:
        raise CourseError(
            f"{out_path / PACK_FOLDER} already holds another pack ({other_packs[0].name}); a data root "
            "holds one pack. Remove it, or choose an empty folder."
        )
    existing = [path for path in [*targets, sums] if path.exists()]
    if existing and not force:
        raise CourseError(
            f"{out_path} already holds {existing[0].relative_to(out_path)}; pass --force to replace "
            "the pack's files, or choose an empty folder."
        )
    try:
        for src, dst in zip(gz_sources, targets, strict=False):
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as reader, _atomic_file(dst) as writer:
                shutil.copyfileobj(reader, writer)
        targets[-1].parent.mkdir(parents=True, exist_ok=True)
        with _atomic_file(targets[-1]) as writer:
            np.savez_compressed(writer, **{key: np.asarray(arrays[key]) for key in PACK_KEYS})
        lines = [
            f"{_digest(path, 'sha256')}  {path.relative_to(out_path).as_posix()}\n"
            for path in targets
        ]
        with _atomic_file(sums) as writer:
            writer.write("".join(lines).encode())
    except OSError as exc:
        raise CourseError(f"Could not write the pack into {out_path}: {exc}.") from None
    return [*targets, sums]


def _mnist_gz_sources(root: DataRoot) -> list[Path]:
    """MNIST's canonical ``.gz`` files, compressed from the raw files when only those exist."""
    raw = root.path / "MNIST" / "raw"
    gz_paths = _mnist_raw_paths(raw, ".gz")
    if all(path.is_file() for path in gz_paths):
        return gz_paths
    if not all(path.is_file() for path in _mnist_raw_paths(raw)):
        raise _not_found("MNIST", root, _mnist_expected(root))
    staged = cache_dir() / f"mnist-gz-{_file_key(*_mnist_raw_paths(raw))}"
    staged.mkdir(parents=True, exist_ok=True)
    for path, gz_path in zip(_mnist_raw_paths(raw), gz_paths, strict=True):
        target = staged / gz_path.name
        if not target.is_file():
            with open(path, "rb") as reader, _atomic_file(target) as raw_writer:
                with gzip.GzipFile(
                    filename=path.name, fileobj=raw_writer, mode="wb", mtime=0
                ) as writer:
                    shutil.copyfileobj(reader, writer)
    return [staged / path.name for path in gz_paths]


def _sha256sums(folder: Path) -> dict[Path, str]:
    listing = folder / "SHA256SUMS"
    if not listing.is_file():
        return {}
    sums = {}
    for line in listing.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[folder / name.lstrip("*")] = digest.lower()
    return sums


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as reader:
        for block in iter(lambda: reader.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()
