"""Tests of the cnn-course command line: `data status`, `data verify` and `data pack`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import tiny_cifar_arrays, write_tiny_cifar_batches, write_tiny_mnist, write_tiny_pack

from cnn_course import data
from cnn_course_instructor.cli import main


def run(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    """Run the command line in-process; return its exit status, stdout and stderr."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_sums(root: Path) -> None:
    """List every file under ``root`` in a SHA256SUMS, as the offline pack does."""
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(root).as_posix()}\n"
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "SHA256SUMS"
    ]
    (root / "SHA256SUMS").write_text("".join(lines))


def tiny_root(root: Path, mnist: bool = True, cifar: bool = True) -> Path:
    """A data root with tiny MNIST files and/or a tiny CIFAR-10 pack, listed in SHA256SUMS."""
    if mnist:
        write_tiny_mnist(root)
    if cifar:
        write_tiny_pack(root, tiny_cifar_arrays())
    root.mkdir(parents=True, exist_ok=True)
    write_sums(root)
    return root


def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny batches cannot match the real files' md5 sums; the rest is torchvision's own code."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)


# --- data status ----------------------------------------------------------------------------


def test_status_exits_0_when_both_datasets_are_found(tmp_path, capsys):
    """Does `data status` list both tiny datasets with their counts and checksums, and exit 0?"""
    root = tiny_root(tmp_path / "root")
    code, out, err = run(capsys, "data", "status", "--root", root)
    assert code == 0, out + err
    assert out.splitlines()[0] == f"data root: {root} (from argument)"
    assert f"MNIST     found: torchvision MNIST files at {root / 'MNIST' / 'raw'}" in out
    assert "images: train 40, test 20; 4 files match their checksums" in out
    assert "CIFAR-10  found: offline pack (npz) at " in out
    assert "images: train 50, test 10; 1 files match their checksums" in out
    assert "MISSING" not in out and "not found" not in out
    assert err == ""


@pytest.mark.parametrize(
    ("present", "missing"),
    [("MNIST", "CIFAR-10"), ("CIFAR-10", "MNIST")],
    ids=["no-cifar", "no-mnist"],
)
def test_status_exits_1_and_names_what_is_missing(tmp_path, capsys, monkeypatch, present, missing):
    """With one dataset missing, does status exit 1, naming it and $CNN_COURSE_DATA?"""
    root = tiny_root(tmp_path / "root", mnist=present == "MNIST", cifar=present == "CIFAR-10")
    monkeypatch.setenv("CNN_COURSE_DATA", str(root))
    code, out, _ = run(capsys, "data", "status")
    assert code == 1
    assert f"data root: {root} (from $CNN_COURSE_DATA)" in out
    assert f"{missing:9} MISSING" in out
    assert f"{present:9} found:" in out
    assert f"{missing} not found. Set CNN_COURSE_DATA to the folder that holds the data" in out


def test_status_on_an_empty_root_names_both(tmp_path, capsys):
    """On an empty root, does status exit 1 and say that both datasets are missing?"""
    code, out, _ = run(capsys, "data", "status", "--root", tmp_path)
    assert code == 1
    assert "MNIST and CIFAR-10 not found. Set CNN_COURSE_DATA" in out


def test_status_exits_1_when_files_fail_their_known_md5(tmp_path, capsys):
    """Are tiny MNIST files, which are not LeCun's, reported as failing the known md5 sums?"""
    write_tiny_mnist(tmp_path)
    write_tiny_pack(tmp_path, tiny_cifar_arrays())
    code, out, _ = run(capsys, "data", "status", "--root", tmp_path)
    assert code == 1
    assert "4 of 4 files FAIL their checksum" in out
    assert "no known checksums for these files" in out  # the pack, without a SHA256SUMS


# --- data verify ----------------------------------------------------------------------------


def test_verify_exits_0_when_every_listed_file_matches(tmp_path, capsys):
    """Does verify check each file in SHA256SUMS and exit 0 when all match?"""
    root = tiny_root(tmp_path)
    code, out, _ = run(capsys, "data", "verify", "--root", root)
    assert code == 0
    assert f"ok       sha256 {root / 'CIFAR-10' / 'tiny.npz'}" in out
    assert out.rstrip().endswith("5 of 5 files verified.")


def test_verify_exits_1_on_a_tampered_or_missing_file(tmp_path, capsys):
    """Does verify exit 1, marking a changed file MISMATCH and a deleted one MISSING?"""
    root = tiny_root(tmp_path)
    pack = root / "CIFAR-10" / "tiny.npz"
    pack.write_bytes(pack.read_bytes() + b"\0")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    code, out, _ = run(capsys, "data", "verify", "--root", root)
    assert code == 1
    assert f"MISMATCH sha256 {pack}" in out
    assert f"MISSING  sha256 {root / 'MNIST' / 'raw' / 't10k-labels-idx1-ubyte'}" in out
    assert "3 of 5 files verified." in out


def test_verify_with_nothing_to_check_exits_1(tmp_path, capsys):
    """On a root with no known files, does verify say there is nothing to verify and exit 1?"""
    code, out, _ = run(capsys, "data", "verify", "--root", tmp_path)
    assert code == 1
    assert "No known data files found here; nothing to verify." in out


# --- data pack ------------------------------------------------------------------------------


def test_pack_round_trip_then_refusal_without_force(tmp_path, capsys, monkeypatch):
    """Does `data pack` write a root that status, verify and the loaders accept, and refuse to overwrite it without --force?"""
    skip_cifar_md5(monkeypatch)
    source, out = tmp_path / "source", tmp_path / "out"
    write_tiny_cifar_batches(source, tiny_cifar_arrays())
    write_tiny_mnist(source)

    code, stdout, err = run(capsys, "data", "pack", out, "--root", source)
    assert code == 0, err
    wrote = [
        line.removeprefix("wrote ") for line in stdout.splitlines() if line.startswith("wrote ")
    ]
    assert [Path(path).relative_to(out).as_posix() for path in wrote] == [
        "MNIST/raw/train-images-idx3-ubyte.gz",
        "MNIST/raw/train-labels-idx1-ubyte.gz",
        "MNIST/raw/t10k-images-idx3-ubyte.gz",
        "MNIST/raw/t10k-labels-idx1-ubyte.gz",
        "CIFAR-10/cifar10_train50_test10.npz",
        "SHA256SUMS",
    ]
    assert stdout.rstrip().endswith(f"Offline data root ready: set CNN_COURSE_DATA={out}")

    for split in ("train", "test"):
        original, packed = data.load_cifar10(split, root=source), data.load_cifar10(split, root=out)
        assert torch.equal(original.images, packed.images)
        assert torch.equal(original.labels, packed.labels)
        assert torch.equal(
            data.load_mnist(split, root=source).images, data.load_mnist(split, root=out).images
        )
    assert run(capsys, "data", "status", "--root", out)[0] == 0
    code, stdout, _ = run(capsys, "data", "verify", "--root", out)
    assert code == 0 and "5 of 5 files verified." in stdout

    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    code, stdout, err = run(capsys, "data", "pack", out, "--root", source)
    assert code == 2
    assert stdout == ""
    assert err.startswith("cnn-course: error:")
    assert "pass --force" in err and "Traceback" not in err
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before

    code, stdout, _ = run(capsys, "data", "pack", out, "--root", source, "--force")
    assert code == 0 and stdout.count("wrote ") == 6


def test_pack_into_its_own_root_is_refused(tmp_path, capsys):
    """Is packing a root into itself refused with exit status 2 and a one-line reason?"""
    root = tiny_root(tmp_path)
    code, _, err = run(capsys, "data", "pack", root, "--root", root)
    assert code == 2
    assert err.startswith("cnn-course: error: The pack must go to a new folder")


def test_installed_command_refuses_to_overwrite_without_a_traceback(tmp_path, capsys):
    """Run as the installed `cnn-course` program, does a refused pack exit 2 with our message only?"""
    program = Path(sys.executable).with_name("cnn-course")
    assert program.is_file(), f"{program} is missing: install the package (make test does)"
    source, out = tiny_root(tmp_path / "source"), tmp_path / "out"
    assert run(capsys, "data", "pack", out, "--root", source)[0] == 0
    result = subprocess.run(
        [str(program), "data", "pack", str(out), "--root", str(source)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("cnn-course: error:")
    assert "--force" in result.stderr and "Traceback" not in result.stderr


# --- the real data --------------------------------------------------------------------------


@pytest.mark.realdata
def test_status_finds_both_real_datasets(real_root, capsys, monkeypatch):
    """With CNN_COURSE_DATA at the real root, does status find both datasets at full size?"""
    monkeypatch.setenv("CNN_COURSE_DATA", str(real_root))
    code, out, err = run(capsys, "data", "status")
    assert code == 0, out + err
    assert "(from $CNN_COURSE_DATA)" in out
    assert "MNIST     found: torchvision MNIST files" in out
    assert "images: train 60,000, test 10,000" in out
    assert "CIFAR-10  found: offline pack (npz)" in out
    assert "images: train 50,000, test 1,000" in out
    assert "MISSING" not in out and "FAIL" not in out
