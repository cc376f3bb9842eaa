"""Tests of cnn_course.data: tiny canonical files (unit) and the real MNIST/CIFAR-10 (realdata)."""

from __future__ import annotations

import functools
import http.server
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import (
    tiny_cifar_arrays,
    write_idx,
    write_tiny_cifar_batches,
    write_tiny_mnist,
    write_tiny_pack,
)
from torchvision.datasets import MNIST

from cnn_course import data
from cnn_course.errors import CourseError


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny batches cannot match the real files' md5 sums; the rest is torchvision's own code."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


# --- data root ------------------------------------------------------------------------------


def test_root_precedence(tmp_path, monkeypatch):
    """Does the explicit root win over $CNN_COURSE_DATA, which wins over ./data?"""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNN_COURSE_DATA", raising=False)
    assert data.resolve_root() == data.DataRoot(tmp_path / "data", "default")
    monkeypatch.setenv("CNN_COURSE_DATA", str(tmp_path / "env"))
    assert data.resolve_root().path == tmp_path / "env"
    assert data.resolve_root(tmp_path / "arg").path == tmp_path / "arg"
    assert data.resolve_root(tmp_path / "arg").origin == "argument"


# --- MNIST through torchvision ----------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["idx", "idx.gz"])
def test_mnist_tiny_files_read_by_torchvision(tmp_path, compress):
    """Are tiny IDX files (plain or gzip) read by torchvision into (N, 1, 28, 28) floats in [0, 1]?"""
    arrays = write_tiny_mnist(tmp_path, compress=compress)
    train = data.load_mnist("train", root=tmp_path)
    test = data.load_mnist("test", root=tmp_path)
    assert train.images.shape == (40, 1, 28, 28) and test.images.shape == (20, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    expected = torch.from_numpy(arrays["train"][0]).float().div(255).unsqueeze(1)
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == arrays["train"][1].tolist()
    assert train.class_names == tuple("0123456789")


def test_mnist_read_only_gz_root_unpacks_into_cache(tmp_path, monkeypatch):
    """Does a read-only root holding only .gz files load, writing nothing into the root?"""
    root = tmp_path / "ro"
    write_tiny_mnist(root, compress=True)
    make_read_only(root)
    before = tree(root)
    try:
        loaded = data.load_mnist("test", root=root)
    finally:
        root.chmod(0o755)
    assert len(loaded) == 20
    assert tree(root) == before
    cached = list(
        Path(os.environ["CNN_COURSE_CACHE"]).glob("mnist-*/MNIST/raw/t10k-images-idx3-ubyte")
    )
    assert len(cached) == 1


@pytest.mark.parametrize("compress", [False, True], ids=["idx", "idx.gz"])
def test_mnist_later_loads_come_from_the_cache_without_torchvision(tmp_path, compress):
    """After torchvision's first read, does a new process load MNIST from the cache, never
    importing torchvision (1.3 s of every kernel and judge), and does replacing a file
    make a new copy?"""
    write_tiny_mnist(tmp_path / "root", compress=compress)
    first = data.load_mnist("train", root=tmp_path / "root")
    cache = Path(os.environ["CNN_COURSE_CACHE"])
    assert len(list(cache.glob("mnist-arrays-*/complete"))) == 1
    assert data.cache_entries(tmp_path / "root")[0].name.startswith("mnist-arrays-")
    script = (
        "import sys; from cnn_course import data\n"
        f"images = data.load_mnist('train', root={str(tmp_path / 'root')!r}).images\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
        "print(round(float(images.sum()), 3))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == round(float(first.images.sum()), 3)
    time.sleep(0.01)
    labels = tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.full(20, 7, dtype=np.uint8), compress)
    assert data.load_mnist("test", root=tmp_path / "root").labels.tolist() == [7] * 20


def test_images_by_position_and_split_sizes(tmp_path):
    """Do ``indices`` load exactly those images, in that order, and does split_size count a
    split without loading it? Out-of-range positions and n with indices are explained."""
    write_tiny_mnist(tmp_path)
    write_tiny_pack(tmp_path, tiny_cifar_arrays())
    assert data.split_size("mnist", "train", tmp_path) == 40
    assert data.split_size("cifar10", "test", tmp_path) == 10
    for loader in (data.load_mnist, data.load_cifar10):
        full = loader("train", root=tmp_path)
        picked = loader("train", root=tmp_path, indices=torch.tensor([7, 2, 9]))
        assert torch.equal(picked.images, full.images[[7, 2, 9]])
        assert picked.labels.tolist() == full.labels[[7, 2, 9]].tolist()
        assert picked.indices.tolist() == [7, 2, 9]
        with pytest.raises(CourseError, match=r"indices must lie in 0\.\.\d+"):
            loader("train", root=tmp_path, indices=torch.tensor([0, 1000]))
        with pytest.raises(CourseError, match="either n .* or indices"):
            loader("train", root=tmp_path, n=3, indices=torch.tensor([0]))
    with pytest.raises(CourseError, match="dataset must be 'mnist' or 'cifar10'"):
        data.split_size("svhn", "train", tmp_path)


def test_seeded_subset_is_reproducible_and_disjoint_from_the_rest(tmp_path):
    """Is the n-image sample the same for the same seed, different for another, and disjoint from the held-out rest?"""
    write_tiny_mnist(tmp_path)
    first = data.load_mnist("train", root=tmp_path, n=10, seed=3)
    again = data.load_mnist("train", root=tmp_path, n=10, seed=3)
    other = data.load_mnist("train", root=tmp_path, n=10, seed=4)
    assert torch.equal(first.indices, again.indices) and torch.equal(first.images, again.images)
    assert not torch.equal(first.indices, other.indices)
    chosen, rest = data.split_indices(40, 10, seed=3)
    assert torch.equal(chosen, first.indices)
    assert set(chosen.tolist()).isdisjoint(rest.tolist()) and len(chosen) + len(rest) == 40
    full = data.load_mnist("train", root=tmp_path)
    assert torch.equal(full.images[first.indices], first.images)
    with pytest.raises(CourseError, match="Asked for 41 images, but the split holds 40"):
        data.load_mnist("train", root=tmp_path, n=41)


def test_loader_batches_cover_the_set_once_in_seeded_order(tmp_path):
    """Does the loader yield every image once per epoch, in an order fixed by its seed?"""
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    labels = torch.arange(10)
    loader = data.make_loader(images, labels, batch_size=4, seed=1)
    batches = list(loader)
    assert [len(batch[1]) for batch in batches] == [4, 4, 2]
    seen = torch.cat([batch[1] for batch in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert torch.equal(seen, torch.cat([b[1] for b in data.make_loader(images, labels, 4, seed=1)]))
    assert all(torch.equal(x.view(-1), y.float()) for x, y in batches)
    in_order = torch.cat([b[1] for b in data.make_loader(images, labels, 3, shuffle=False)])
    assert in_order.tolist() == list(range(10))
    with pytest.raises(CourseError, match="same length"):
        data.make_loader(images, labels[:5])


def test_bad_split_is_explained():
    """Is a wrong split name answered with the accepted names?"""
    with pytest.raises(CourseError, match="split must be 'train' or 'test'; got 'valid'"):
        data.load_mnist("valid")


# --- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar_canonical_batches_read_by_torchvision(tmp_path, monkeypatch):
    """Are canonical pickle batches read by torchvision's CIFAR10 into NCHW floats?"""
    arrays = tiny_cifar_arrays()
    write_tiny_cifar_batches(tmp_path, arrays)
    skip_cifar_md5(monkeypatch)
    train = data.load_cifar10("train", root=tmp_path)
    assert train.images.shape == (50, 3, 32, 32)
    expected = torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == arrays["y_train"].tolist()
    assert train.class_names[:2] == ("airplane", "automobile")


def test_cifar_corrupted_batches_are_reported(tmp_path):
    """Do batches failing torchvision's md5 check give a clear error naming the folder?"""
    write_tiny_cifar_batches(tmp_path, tiny_cifar_arrays())
    with pytest.raises(CourseError, match="(?s)incomplete or corrupted.*data verify"):
        data.load_cifar10("train", root=tmp_path)


def test_cifar_pack_second_load_comes_from_the_cache(tmp_path):
    """Does the first pack load write an uncompressed cache that later loads memory-map?"""
    arrays = tiny_cifar_arrays()
    write_tiny_pack(tmp_path, arrays)
    first = data.load_cifar10("test", root=tmp_path)
    cache = Path(os.environ["CNN_COURSE_CACHE"])
    cached = list(cache.glob("cifar10-pack-*/complete"))
    assert len(cached) == 1
    second = data.load_cifar10("test", root=tmp_path)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.images.shape == (10, 3, 32, 32)
    # Replacing the pack invalidates the cache (the key follows size and mtime).
    time.sleep(0.01)
    arrays["y_test"][:] = 9
    write_tiny_pack(tmp_path, arrays)
    assert data.load_cifar10("test", root=tmp_path).labels.tolist() == [9] * 10


def test_cifar_pack_in_read_only_root_with_unwritable_cache(tmp_path, monkeypatch):
    """Does a pack in a read-only root still load when the cache cannot be written?"""
    write_tiny_pack(tmp_path / "ro", tiny_cifar_arrays())
    make_read_only(tmp_path / "ro")
    monkeypatch.setenv("CNN_COURSE_CACHE", "/proc/no-such-cache")
    try:
        assert len(data.load_cifar10("train", root=tmp_path / "ro", n=5)) == 5
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_pack_with_missing_keys_is_explained(tmp_path):
    """Is an npz lacking the pack's arrays rejected with the keys it lacks?"""
    path = tmp_path / "CIFAR-10" / "wrong.npz"
    path.parent.mkdir()
    np.savez(path, x_train=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(CourseError, match="lacks y_train, x_test, y_test, label_names"):
        data.load_cifar10(root=tmp_path)


def test_truncated_pack_is_explained(tmp_path):
    """Is a truncated pack reported as unreadable, not with a zipfile traceback?"""
    path = write_tiny_pack(tmp_path, tiny_cifar_arrays())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CourseError, match="Could not read the offline pack"):
        data.load_cifar10(root=tmp_path)


# --- missing data and downloads ---------------------------------------------------------------


def test_missing_data_error_names_root_variable_and_files(tmp_path, monkeypatch):
    """Does loading from an empty root say which root, which variable and which files?"""
    monkeypatch.setenv("CNN_COURSE_DATA", str(tmp_path))
    with pytest.raises(CourseError) as caught:
        data.load_mnist()
    message = str(caught.value)
    assert f"data root searched: {tmp_path} (from $CNN_COURSE_DATA)" in message
    assert "train-images-idx3-ubyte" in message and "CNN_COURSE_DATA" in message
    with pytest.raises(CourseError, match=r"cifar-10-batches-py.*\n.*CIFAR-10/\*\.npz"):
        data.load_cifar10()


def _serve(folder: Path, truncate: bool = False):
    """A loopback HTTP server over ``folder``; with ``truncate``, every file is cut short."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def copyfile(self, source, outputfile):
            body = source.read()
            outputfile.write(body[: len(body) // 2] if truncate else body)

    handler = functools.partial(Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_without_network_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    """With no reachable mirror, does download=True fail with our message and leave the root empty?"""
    closed = _serve(tmp_path)  # bind a port, then close it: connections are refused
    port = closed.server_address[1]
    closed.shutdown()
    closed.server_close()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    root = tmp_path / "root"
    with pytest.raises(CourseError) as caught:
        data.load_mnist(root=root, download=True)
    message = str(caught.value)
    assert "MNIST is not available" in message and "download failed" in message
    assert "Traceback" not in message
    assert tree(root) == []


def test_interrupted_download_leaves_no_half_written_file(tmp_path, monkeypatch):
    """When the transfer is cut short (md5 fails), is nothing left in the data root?"""
    served = tmp_path / "served"
    served.mkdir()
    write_tiny_mnist(served / "x", compress=True)
    for path in (served / "x" / "MNIST" / "raw").iterdir():
        path.rename(served / path.name)
    server = _serve(served, truncate=True)
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    root = tmp_path / "root"
    try:
        with pytest.raises(CourseError, match="download failed"):
            data.load_mnist(root=root, download=True)
    finally:
        server.shutdown()
    assert tree(root) == []


@pytest.mark.realdata
def test_download_path_fetches_real_mnist_from_a_local_mirror(tmp_path, monkeypatch, real_root):
    """Does torchvision's real download path (md5-checked) fill an empty root from a mirror?"""
    server = _serve(real_root / "MNIST" / "raw")
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    root = tmp_path / "root"
    try:
        test = data.load_mnist("test", root=root, download=True)
    finally:
        server.shutdown()
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    names = tree(root)
    assert (
        "MNIST/raw/t10k-images-idx3-ubyte" in names
        and "MNIST/raw/train-images-idx3-ubyte.gz" in names
    )
    assert not [name for name in names if ".download-" in name]


# --- the real data --------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_mnist_known_facts(real_root):
    """Does real MNIST load with its known labels, counts, shapes, range and pixel sums?"""
    train = data.load_mnist("train", root=real_root)
    test = data.load_mnist("test", root=real_root)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    assert round(float(train.images[0].sum() * 255)) == 27525
    assert abs(float(train.images.mean()) - 0.1307) < 1e-4
    assert train.class_names == tuple(str(d) for d in range(10))


@pytest.mark.realdata
def test_real_cifar_known_facts(real_root, use_real_cache):
    """Does the real CIFAR-10 pack load with its known labels, shapes, means and class names?"""
    train = data.load_cifar10("train", root=real_root)
    test = data.load_cifar10("test", root=real_root)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (1000, 3, 32, 32)
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert train.class_names == data.CIFAR10_CLASSES
    assert round(float(train.images[0].sum() * 255)) == 317790
    # Canonical row 0 of data_batch_1 starts 59, 43, 50: the red channel of the first row.
    assert (train.images[0, 0, 0, :3] * 255).round().tolist() == [59, 43, 50]
    means = train.images.mean(dim=(0, 2, 3)).tolist()
    assert np.allclose(means, [0.4914, 0.4822, 0.4465], atol=1e-4)


@pytest.mark.realdata
def test_real_cifar_later_loads_skip_the_lzma_pack(real_root, use_real_cache, monkeypatch):
    """After the first load, is the LZMA-compressed pack never opened again (the cache serves)?"""
    data.load_cifar10("test", root=real_root)

    def refuse(path):
        raise AssertionError(f"the pack {path} was decompressed again")

    monkeypatch.setattr(data, "_read_pack", refuse)
    subset = data.load_cifar10("train", root=real_root, n=2000)
    assert len(subset) == 2000 and subset.labels.dtype == torch.int64


def test_grading_mode_loads_only_the_start_of_a_test_split(tmp_path, monkeypatch):
    """While grading, does a whole test split hold only its first images, and train stay whole?"""
    from cnn_course import data

    write_tiny_mnist(tmp_path)  # 40 training and 20 test images
    monkeypatch.setattr(data, "GRADING_TEST_IMAGES", 3)
    whole = data.load_mnist("test", root=tmp_path)
    monkeypatch.setenv("CNN_COURSE_GRADING", "1")
    shrunk = data.load_mnist("test", root=tmp_path)
    assert len(whole) == 20 and len(shrunk) == 3
    assert torch.equal(shrunk.images, whole.images[:3])
    assert len(data.load_mnist("train", root=tmp_path)) == 40
    assert len(data.load_mnist("test", root=tmp_path, n=10)) == 10  # an asked-for sample stays
