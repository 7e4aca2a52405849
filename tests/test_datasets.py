"""Generators (shapes, recipes, calibration) and loaders (round trips in the real formats)."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from sklearn.linear_model import LinearRegression, LogisticRegression

from dgc_cli import datasets

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --------------------------------------------------------------------------- Pacman


@pytest.fixture(scope="module")
def pacman():
    return datasets.make_pacman(random_state=0)


def test_pacman_shapes_and_counts(pacman):
    assert pacman.x_train.shape == (15_000, 2) and pacman.x_test.shape == (5_000, 2)
    assert pacman.x_train.dtype == np.float32 and pacman.y_train.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(pacman.c_train), [7_500, 7_500])
    np.testing.assert_array_equal(np.bincount(pacman.c_test), [2_500, 2_500])
    all_x = np.concatenate([pacman.x_train, pacman.x_test])
    assert len(np.unique(all_x, axis=0)) == 20_000  # train and test are disjoint


def test_pacman_radii_and_mouth(pacman):
    for x, c in ((pacman.x_train, pacman.c_train), (pacman.x_test, pacman.c_test)):
        radius = np.linalg.norm(x.astype(np.float64), axis=1)
        np.testing.assert_allclose(radius, np.where(c == 0, 1.0, 0.8), atol=1e-6)
        degrees = np.rad2deg(np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi))
        assert degrees.min() >= 30 - 1e-3 and degrees.max() <= 330 + 1e-3


def test_pacman_responses_follow_the_recipe(pacman):
    x, y, c = pacman.x_train, pacman.y_train, pacman.c_train
    assert y.min() >= 0.0 and y.max() <= 1.0
    angle = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi)  # counter-clockwise angle
    inner, outer = c == 1, c == 0
    # Inner: linear, decreasing clockwise, i.e. increasing with the counter-clockwise angle.
    assert np.corrcoef(angle[inner], y[inner])[0, 1] > 0.9999
    # Outer: exponential, increasing clockwise (the opposite trend), strictly monotone.
    order = np.argsort(angle[outer])
    assert np.all(np.diff(y[outer][order]) < 0)
    s = 1 - np.sort(y[inner])  # clockwise position recovered from the inner responses
    assert np.isclose(s.min(), 0.0, atol=1e-3) and np.isclose(s.max(), 1.0, atol=1e-3)


def test_pacman_is_seeded_and_noise_moves_points():
    a, b = datasets.make_pacman(random_state=3), datasets.make_pacman(random_state=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    noisy = datasets.make_pacman(noise=0.05, random_state=3)
    assert np.std(np.linalg.norm(noisy.x_train, axis=1)[noisy.c_train == 0]) > 0.01


# --------------------------------------------------------------------------- two groupings


def holdout_accuracy(x, labels):
    half = len(x) // 2
    model = LogisticRegression(max_iter=1000).fit(x[:half], labels[:half])
    return model.score(x[half:], labels[half:])


def test_two_groupings_calibration():
    data = datasets.make_two_groupings(random_state=0)
    assert data.x.shape == (2000, 20) and data.x.dtype == np.float32
    np.testing.assert_array_equal(data.y, data.b)
    np.testing.assert_array_equal(data.ab, 2 * data.a + data.b)
    assert data.bayes_accuracy_b == pytest.approx(0.85)
    assert holdout_accuracy(data.x, data.a) > 0.98
    assert 0.78 <= holdout_accuracy(data.x, data.b) <= 0.92


def test_two_groupings_continuous_response_differs_by_group():
    data = datasets.make_two_groupings(task="continuous", random_state=1)
    assert data.y.dtype == np.float32
    r2 = [
        LinearRegression().fit(data.x[g], data.y[g]).score(data.x[g], data.y[g])
        for g in (data.b == 0, data.b == 1)
    ]
    pooled = LinearRegression().fit(data.x, data.y).score(data.x, data.y)
    assert min(r2) > 0.95 and pooled < 0.8


# --------------------------------------------------------------------------- survival


@pytest.mark.parametrize("censoring", [0.3, 0.6])
def test_survival_censoring_fraction_and_times(censoring):
    data = datasets.make_survival(censoring=censoring, random_state=0)
    assert data.x.shape == (3000, 20) and data.c.shape == (3000,)
    assert set(np.unique(data.event)) == {0, 1} and set(np.unique(data.c)) == {0, 1, 2}
    assert np.all(data.time > 0) and np.all(np.isfinite(data.time))
    assert abs((1 - data.event.mean()) - censoring) < 0.05


# --------------------------------------------------------------------------- loaders


def write_idx(path, array, magic):
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder, images, labels, split="train", gz=True):
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, 2051)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 2049)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([2, 7, 0, 9, 2], np.uint8)
    write_mnist(tmp_path, images, labels, split="test", gz=gz)
    got_images, got_labels = datasets.load_mnist(tmp_path, split="test")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.uint8


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), 2049)  # bad magic
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(2), 2049)
    with pytest.raises(ValueError, match="magic"):
        datasets.load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)), 2051)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        datasets.load_mnist(tmp_path)


def test_load_cifar10_npz_file_and_dir(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y = np.arange(6, dtype=np.uint8)
    np.savez(tmp_path / "cifar.npz", x=x, y=y, label_names=np.array(["a", "b"]))
    for source in (tmp_path / "cifar.npz", tmp_path):
        got_x, got_y = datasets.load_cifar10_npz(source)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)


def test_load_cifar10_official_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for i, rows in enumerate((slice(0, 3), slice(3, 4)), start=1):
        flat = x[rows].transpose(0, 3, 1, 2).reshape(-1, 3072)  # R, G, B planes per row
        batch = {b"data": flat, b"labels": list(range(rows.start, rows.stop))}
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch, f)
    got_x, got_y = datasets.load_cifar10_npz(tmp_path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, [0, 1, 2, 3])


def test_load_svhn_mat_maps_label_ten_to_zero(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10], [5]], np.uint8)
    scipy.io.savemat(tmp_path / "svhn.mat", {"X": x.transpose(1, 2, 3, 0), "y": y})
    got_x, got_y = datasets.load_svhn_mat(tmp_path / "svhn.mat")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, [0, 1, 9, 0, 5])
    assert got_x.dtype == np.uint8 and got_y.dtype == np.int64


def test_split_svhn_subset_is_seeded_and_disjoint():
    x, y = np.arange(50)[:, None], np.arange(50) % 10
    x_train, x_test, y_train, y_test = datasets.split_svhn_subset(x, y, test_fraction=0.2)
    assert len(x_test) == 10 and len(x_train) == 40
    assert set(x_train.ravel()).isdisjoint(x_test.ravel())
    np.testing.assert_array_equal(y_test, x_test.ravel() % 10)
    np.testing.assert_array_equal(datasets.split_svhn_subset(x, y)[1], x_test)


def test_make_noisy_mnist_on_tiny_files(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([2, 7, 1, 2, 7, 2, 7, 3, 2, 7], np.uint8)
    digits = np.where(rng.random((10, 28, 28)) < 0.2, 255, 0).astype(np.uint8)
    write_mnist(tmp_path, digits, labels)
    cifar_x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar.npz", x=cifar_x, y=np.repeat(np.arange(4, dtype=np.uint8), 2))
    data = datasets.make_noisy_mnist(tmp_path, tmp_path / "cifar.npz", "train", random_state=0)

    kept = np.isin(labels, (2, 7))
    assert data.x.shape == (8, 784) and data.x.dtype == np.float32
    np.testing.assert_array_equal(data.y, labels[kept] == 7)
    np.testing.assert_array_equal(np.bincount(data.label4), [2, 2, 2, 2])  # half of each digit
    np.testing.assert_array_equal(data.label4, 2 * data.y + data.background)
    clean = digits[kept].reshape(8, -1) / 255.0
    np.testing.assert_array_equal(data.x[data.background == 0], clean[data.background == 0])
    noisy_x, noisy_clean = data.x[data.background == 1], clean[data.background == 1]
    assert np.all(noisy_x[noisy_clean == 1.0] == 1.0)  # max blend keeps the strokes
    background_pixels = noisy_x[noisy_clean == 0.0]
    assert background_pixels.max() <= 0.5 and background_pixels.mean() > 0.1


def test_noisy_mnist_counts_on_the_real_files():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (as in a user's clone)")
    cifar = SHARED_DATA / "cifar10" / "cifar10_train_first4000.npz"
    for split, expected in (("train", 12_223), ("test", 2_060)):
        data = datasets.make_noisy_mnist(SHARED_DATA / "mnist", cifar, split, random_state=0)
        assert len(data.x) == expected
        assert 0.0 <= data.x.min() and data.x.max() <= 1.0
        assert abs(data.background.mean() - 0.5) < 0.001
