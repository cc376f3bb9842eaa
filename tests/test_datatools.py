"""Tests of cnn_course_instructor.datatools: status, checksums and the offline pack."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision
from conftest import tiny_cifar_arrays, write_tiny_cifar_batches, write_tiny_mnist, write_tiny_pack

from cnn_course import data
from cnn_course.errors import CourseError
from cnn_course_instructor import datatools


def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny batches cannot match the real files' md5 sums; the rest is torchvision's own code."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)


# --- status, verify, pack -------------------------------------------------------------------


def test_pack_round_trip_from_canonical_files(tmp_path, monkeypatch):
    """Does `pack` turn canonical files into a root that loads the same images and verifies?"""
    skip_cifar_md5(monkeypatch)
    source = tmp_path / "source"
    arrays = tiny_cifar_arrays()
    write_tiny_cifar_batches(source, arrays)
    write_tiny_mnist(source)
    out = tmp_path / "pack"
    written = datatools.write_pack(out, root=source)
    assert [path.relative_to(out).as_posix() for path in written][-2:] == [
        "CIFAR-10/cifar10_train50_test10.npz",
        "SHA256SUMS",
    ]
    for split in ("train", "test"):
        original = data.load_cifar10(split, root=source)
        packed = data.load_cifar10(split, root=out)
        assert torch.equal(original.images, packed.images)
        assert torch.equal(original.labels, packed.labels)
        assert torch.equal(
            data.load_mnist(split, root=source).images, data.load_mnist(split, root=out).images
        )
    checks = datatools.verify_files(out)
    assert len(checks) == 5 and all(check.ok for check in checks)
    with pytest.raises(CourseError, match="pass --force"):
        datatools.write_pack(out, root=source)
    assert datatools.write_pack(out, root=source, force=True) == written


def test_verify_reports_a_changed_file(tmp_path):
    """Does verify flag a file whose bytes no longer match SHA256SUMS?"""
    pack = write_tiny_pack(tmp_path, tiny_cifar_arrays())
    digest = hashlib.sha256(pack.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  CIFAR-10/tiny.npz\n{'0' * 64}  gone.bin\n")
    checks = {check.path.name: check for check in datatools.verify_files(tmp_path)}
    assert checks["tiny.npz"].ok and not checks["gone.bin"].ok and checks["gone.bin"].actual is None
    pack.write_bytes(pack.read_bytes() + b"x")
    assert not datatools.verify_files(tmp_path)[0].ok


def test_status_on_tiny_root(tmp_path):
    """Does status list what is found, with split sizes, and report what is missing?"""
    write_tiny_mnist(tmp_path)
    mnist, cifar = datatools.data_status(tmp_path)
    assert mnist.found and mnist.counts == {"train": 40, "test": 20}
    assert not cifar.found
    write_tiny_pack(tmp_path, tiny_cifar_arrays())
    assert datatools.data_status(tmp_path)[1].counts == {"train": 50, "test": 10}


# --- the real data --------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_root_status_and_verify(real_root, use_real_cache):
    """Does status find both real datasets, and do their checksums all match?"""
    mnist, cifar = datatools.data_status(real_root)
    assert mnist.found and mnist.counts == {"train": 60000, "test": 10000}
    assert cifar.found and cifar.counts == {"train": 50000, "test": 1000}
    checks = datatools.verify_files(real_root)
    assert len(checks) >= 9 and all(check.ok for check in checks)
