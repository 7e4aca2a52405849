"""Synthetic generators and loaders for the paper's data sets (numpy only, no torch).

Where each recipe comes from:

- :func:`make_pacman`: the paper's Sec. 5.2 and Appendix B.2.1 (two close annuli whose continuous
  responses have opposite trends).
- :func:`make_noisy_mnist`: Sec. 5.1 and Appendix B.1 (digits 2 and 7, half of each with a CIFAR-10
  background; y = the digit, the wanted clusters = digit x background).
- :func:`make_two_groupings`: not in the paper; a tabular analogue of noisy MNIST with a strong
  unsupervised grouping A and a weak grouping B that the response follows (DESIGN.md, the
  initialisation discussion).
- :func:`make_survival`: in the spirit of the VaDeSC simulation (Manduchi et al., 2022): clustered
  latent codes, a random nonlinear map to features, Weibull times with cluster-specific
  coefficients, independent censoring.
- Loaders for the standard file formats of MNIST (IDX), CIFAR-10 (npz or the official python
  batches) and SVHN (``.mat``), so the same code reads ``../shared/data`` or a user's downloads.

Generators take ``random_state`` (``None``, an int or a ``numpy.random.RandomState``) and return
frozen dataclasses of numpy arrays.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.optimize import brentq
from scipy.stats import norm
from sklearn.utils import check_random_state

__all__ = [
    "NOISY_MNIST_LABELS",
    "NoisyMNIST",
    "Pacman",
    "Survival",
    "TwoGroupings",
    "WEAK_DISTANCE_085",
    "load_cifar10_npz",
    "load_mnist",
    "load_svhn_mat",
    "make_noisy_mnist",
    "make_pacman",
    "make_survival",
    "make_two_groupings",
    "split_svhn_subset",
]

# --------------------------------------------------------------------------- Pacman


@dataclass(frozen=True)
class Pacman:
    """Pacman split. ``x`` float32 (n, 2), ``y`` float32 (n,), ``c`` int64: 0 outer, 1 inner."""

    x_train: np.ndarray
    y_train: np.ndarray
    c_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    c_test: np.ndarray


def make_pacman(
    n_per_annulus=10_000,
    n_train_per_annulus=7_500,
    mouth_degrees=60.0,
    noise=0.0,
    random_state=None,
) -> Pacman:
    """Two annuli with opposite response trends (paper, Sec. 5.2 and Appendix B.2.1).

    Points lie on two circles centred at the origin, the outer of radius 1 and the inner of
    radius 0.8 (``noise`` > 0 adds isotropic Gaussian noise of that standard deviation to the
    coordinates; the paper adds none). The paper gives no mouth angle; we open the mouth
    symmetrically around the positive x axis, ``mouth_degrees`` wide, so the body runs from
    330 degrees clockwise to 30 degrees by default. Both annuli carry ``n_per_annulus`` points
    evenly spaced in angle along the body.

    With ``s = linspace(0, 1, n_per_annulus)`` the clockwise position along the body (``s = 0``
    just below the mouth), the responses are

    - inner: ``y = 1 - s``, linear, decreasing from 1 to 0 clockwise;
    - outer: ``y = (exp(s) - 1) / (e - 1)``, exponential rescaled to [0, 1], increasing from 0 to
      1 clockwise.

    The appendix's wording ("increasing (from 1 to 0)", "decreasing (from 0 to 1)") contradicts
    itself; we follow its parenthesised ranges and the main text's "opposite direction". The
    paper divides [0, 1] into 10,000 sub-intervals; we use ``n_per_annulus`` split points
    (endpoints included) so that each point gets one.

    The training set holds ``n_train_per_annulus`` points drawn at random from each annulus,
    the rest form the test set; both are shuffled.
    """
    rng = check_random_state(random_state)
    s = np.linspace(0.0, 1.0, n_per_annulus)
    half_mouth = np.deg2rad(mouth_degrees) / 2
    theta = (2 * np.pi - half_mouth) - s * (2 * np.pi - 2 * half_mouth)  # clockwise = decreasing
    unit = np.column_stack([np.cos(theta), np.sin(theta)])
    annuli = [  # (radius, response, label)
        (1.0, np.expm1(s) / np.expm1(1.0), 0),
        (0.8, 1.0 - s, 1),
    ]
    train, test = [], []
    for radius, y, label in annuli:
        x = radius * unit + noise * rng.standard_normal(unit.shape)
        c = np.full(n_per_annulus, label)
        order = rng.permutation(n_per_annulus)
        tr, te = order[:n_train_per_annulus], order[n_train_per_annulus:]
        train.append((x[tr], y[tr], c[tr]))
        test.append((x[te], y[te], c[te]))
    return Pacman(*_stack_shuffled(train, rng), *_stack_shuffled(test, rng))


def _stack_shuffled(parts, rng):
    x, y, c = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = rng.permutation(len(x))
    return x[order].astype(np.float32), y[order].astype(np.float32), c[order].astype(np.int64)


# --------------------------------------------------------------------------- two groupings

#: Mahalanobis distance between the B means giving a Bayes accuracy of 0.85: 2 * Phi^-1(0.85).
WEAK_DISTANCE_085 = float(2 * norm.ppf(0.85))


@dataclass(frozen=True)
class TwoGroupings:
    """Table with two independent binary groupings; ``ab = 2 * a + b`` is the 4-way label."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    ab: np.ndarray
    bayes_accuracy_a: float
    bayes_accuracy_b: float


def make_two_groupings(
    n=2000,
    n_features=20,
    task="categorical",
    strong=8.0,
    weak=WEAK_DISTANCE_085,
    noise_y=0.1,
    random_state=None,
) -> TwoGroupings:
    """A strong grouping A that dominates x and a weak grouping B that the response follows.

    ``x = shift_A * (a - 1/2) + shift_B * (b - 1/2) + eps`` with ``eps ~ N(0, I)`` and
    ``a, b ~ Bernoulli(1/2)`` independent. A shifts the first half of the features, B the other
    half, each evenly, so that the distance between the two A means is ``strong`` and between
    the two B means ``weak`` (both Mahalanobis, i.e. in noise standard deviations).

    Because the noise is isotropic and A, B act on disjoint features, the Bayes-optimal accuracy
    for a grouping from x is ``Phi(d / 2)`` for its distance d. The defaults give
    ``Phi(4) = 0.99997`` for A and ``Phi(1.0364) = 0.85`` for B (``weak = 2 Phi^-1(0.85) =
    2.0729``); a logistic regression fitted on one half of n = 2000 rows scores 1.000 on A and
    0.825-0.854 (mean 0.844, seeds 0-4) on B on the other half. The two Bayes accuracies are
    returned as ``bayes_accuracy_a`` and ``bayes_accuracy_b``.

    Parameters
    ----------
    task : {"categorical", "continuous"}
        ``"categorical"``: ``y = b`` (int64). ``"continuous"``: ``y = x @ w_b + noise_y * eps``
        (float32) with ``w_0``, ``w_1`` two independent random unit vectors, so y is a
        different linear function of x in each B group.
    """
    if task not in ("categorical", "continuous"):
        raise ValueError(f"task must be 'categorical' or 'continuous', got {task!r}")
    rng = check_random_state(random_state)
    half = n_features // 2
    shift_a = np.zeros(n_features)
    shift_a[:half] = strong / np.sqrt(half)
    shift_b = np.zeros(n_features)
    shift_b[half:] = weak / np.sqrt(n_features - half)
    a, b = rng.randint(0, 2, n), rng.randint(0, 2, n)
    x = (
        np.outer(a - 0.5, shift_a)
        + np.outer(b - 0.5, shift_b)
        + rng.standard_normal((n, n_features))
    )
    if task == "categorical":
        y = b.astype(np.int64)
    else:
        w = rng.standard_normal((2, n_features))
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        y = (np.einsum("ij,ij->i", x, w[b]) + noise_y * rng.standard_normal(n)).astype(np.float32)
    return TwoGroupings(
        x.astype(np.float32),
        y,
        a.astype(np.int64),
        b.astype(np.int64),
        (2 * a + b).astype(np.int64),
        float(norm.cdf(strong / 2)),
        float(norm.cdf(weak / 2)),
    )


# --------------------------------------------------------------------------- survival


@dataclass(frozen=True)
class Survival:
    """Simulated survival table: ``time`` float32 > 0, ``event`` int64 (1 = observed)."""

    x: np.ndarray
    time: np.ndarray
    event: np.ndarray
    c: np.ndarray


def _leaky_relu(v, slope=0.2):
    return np.where(v > 0, v, slope * v)


def make_survival(
    n=3000,
    n_clusters=3,
    latent_dim=5,
    n_features=20,
    censoring=0.3,
    weibull_shape=1.5,
    noise=0.1,
    random_state=None,
) -> Survival:
    """Clustered survival data in the spirit of VaDeSC's nonlinear simulation.

    1. ``c ~ Uniform{0..K-1}``; ``z | c ~ N(mu_c, I)`` with ``mu_c ~ U(-2, 2)^latent_dim``.
    2. ``x = leaky_relu(z W1 + b1) W2 + b2 + noise * eps``: a fixed random two-layer network
       (hidden width ``n_features``, weights ``N(0, 1/fan_in)``).
    3. True times ``T ~ Weibull(shape=weibull_shape, scale=lambda)`` with
       ``lambda = softplus(z @ beta_c + b_c)``, ``beta_c ~ U(-1, 1)^latent_dim``,
       ``b_c ~ U(-2, 2)``: each cluster has its own covariate effects and baseline.
    4. Censoring times ``C ~ Exponential(rate)`` independent of everything else, the rate solved
       (``scipy.optimize.brentq``) so that the expected censored fraction ``mean(1 - exp(-rate
       T))`` equals ``censoring``; observed ``time = min(T, C)``, ``event = T <= C``.
    """
    rng = check_random_state(random_state)
    c = rng.randint(0, n_clusters, n)
    mu = rng.uniform(-2, 2, (n_clusters, latent_dim))
    z = mu[c] + rng.standard_normal((n, latent_dim))
    w1 = rng.standard_normal((latent_dim, n_features)) / np.sqrt(latent_dim)
    w2 = rng.standard_normal((n_features, n_features)) / np.sqrt(n_features)
    b1, b2 = rng.standard_normal(n_features), rng.standard_normal(n_features)
    x = _leaky_relu(z @ w1 + b1) @ w2 + b2 + noise * rng.standard_normal((n, n_features))
    beta = rng.uniform(-1, 1, (n_clusters, latent_dim))
    intercept = rng.uniform(-2, 2, n_clusters)
    scale = np.logaddexp(0.0, np.einsum("ij,ij->i", z, beta[c]) + intercept[c])  # softplus
    t_true = scale * rng.weibull(weibull_shape, n)
    if censoring > 0:
        rate = brentq(lambda r: np.mean(-np.expm1(-r * t_true)) - censoring, 1e-12, 1e12)
        t_cens = rng.exponential(1 / rate, n)
    else:
        t_cens = np.full(n, np.inf)
    event = (t_true <= t_cens).astype(np.int64)
    time = np.maximum(np.minimum(t_true, t_cens), np.finfo(np.float32).tiny)
    return Survival(x.astype(np.float32), time.astype(np.float32), event, c.astype(np.int64))


# --------------------------------------------------------------------------- MNIST (IDX)

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"MNIST file not found: {data_dir / name}.gz (or {name} unzipped)")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes: a big-endian header (magic, dims...), then data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    n_dims = magic & 0xFF
    header = 4 * (1 + n_dims)
    if len(raw) < header or struct.unpack(">i", raw[:4])[0] != magic:
        raise ValueError(f"{path}: not an IDX file with magic number {magic}")
    shape = struct.unpack(f">{n_dims}i", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def load_mnist(data_dir, split="train"):
    """Read MNIST from the four standard IDX files, gzipped or not.

    Parameters
    ----------
    data_dir : str or Path
        Folder holding e.g. ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``.
    split : {"train", "test"}
        ``"test"`` reads the ``t10k-*`` files.

    Returns
    -------
    images : ndarray of uint8, shape (n, 28, 28)
    labels : ndarray of uint8, shape (n,)
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = Path(data_dir)
    image_name, label_name = _MNIST_FILES[split]
    images = _read_idx(_find(data_dir, image_name), 2051)
    labels = _read_idx(_find(data_dir, label_name), 2049)
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


# --------------------------------------------------------------------------- CIFAR-10, SVHN


def load_cifar10_npz(path_or_dir):
    """Read CIFAR-10 images from an npz file or from the official python batches.

    Parameters
    ----------
    path_or_dir : str or Path
        An ``.npz`` file with arrays ``x`` (n, 32, 32, 3) uint8 and ``y`` (n,) (read with
        ``allow_pickle=False``, e.g. ``cifar10_train_first4000.npz``); or a folder holding either
        the official ``data_batch_1`` .. ``data_batch_5`` (directly or in ``cifar-10-batches-py``)
        or a single ``.npz`` file. The official batches are python pickles: that is how
        CIFAR-10 is distributed, so only files with those exact names are unpickled.

    Returns
    -------
    x : ndarray of uint8, shape (n, 32, 32, 3)
    y : ndarray of uint8, shape (n,)
    """
    path = Path(path_or_dir)
    if path.is_dir():
        for folder in (path, path / "cifar-10-batches-py"):
            batches = sorted(folder.glob("data_batch_[1-5]"))
            if batches:
                return _read_cifar_batches(batches)
        npz = sorted(path.glob("*.npz"))
        if len(npz) != 1:
            raise FileNotFoundError(f"{path}: expected data_batch_1..5 or exactly one .npz file")
        path = npz[0]
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
        raise ValueError(f"{path}: expected x (n, 32, 32, 3) and y (n,), got {x.shape}, {y.shape}")
    return x.astype(np.uint8), y.astype(np.uint8)


def _read_cifar_batches(batches):
    xs, ys = [], []
    for batch in batches:
        with open(batch, "rb") as f:
            data = pickle.load(f, encoding="bytes")  # official CIFAR-10 format
        # Rows are 3072 bytes: the red, green, then blue 32 x 32 planes.
        xs.append(np.asarray(data[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(data[b"labels"], np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def load_svhn_mat(path):
    """Read an SVHN cropped-digits ``.mat`` file (``train_32x32.mat`` layout).

    The file holds ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) with 10 standing for digit 0.

    Returns
    -------
    x : ndarray of uint8, shape (N, 32, 32, 3)
    y : ndarray of int64, shape (N,), digits 0..9 (label 10 mapped to 0)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SVHN file not found: {path}")
    data = scipy.io.loadmat(path)
    x = np.ascontiguousarray(np.transpose(data["X"], (3, 0, 1, 2))).astype(np.uint8)
    y = data["y"].ravel().astype(np.int64) % 10
    return x, y


def split_svhn_subset(x, y, test_fraction=0.2, random_state=0):
    """Seeded random split of a subset into train and test parts.

    Returns
    -------
    x_train, x_test, y_train, y_test : ndarray
        In scikit-learn's ``train_test_split`` order; ``round(test_fraction * n)`` test rows.
    """
    rng = check_random_state(random_state)
    order = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], x[test], y[train], y[test]


# --------------------------------------------------------------------------- noisy MNIST

#: Names of the 4-way label ``2 * digit + background`` of :func:`make_noisy_mnist`.
NOISY_MNIST_LABELS = ("2", "2B", "7", "7B")
_FULL_MNIST = {"train": (60_000, 12_223), "test": (10_000, 2_060)}  # split: (all, digits 2/7)


@dataclass(frozen=True)
class NoisyMNIST:
    """Noisy MNIST: ``x`` float32 (n, 784) in [0, 1]; ``y`` 0 for digit 2, 1 for digit 7."""

    x: np.ndarray
    y: np.ndarray
    background: np.ndarray
    label4: np.ndarray


def _gray(images):
    """ITU-R 601 luma of uint8 RGB images, in [0, 1]."""
    return images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0


def make_noisy_mnist(
    mnist_dir,
    cifar_path,
    split="train",
    random_state=None,
    blend="max",
    alpha=0.5,
) -> NoisyMNIST:
    """Digits 2 and 7, half of each with a CIFAR-10 background (paper, Appendix B.1).

    For each digit, half of its images (chosen at random) get a background: pick a CIFAR-10
    class at random, then an image of that class at random, convert it to grayscale, crop a
    random 28 x 28 window from the 32 x 32 image, and blend it with the digit. On the full
    MNIST files the train split has 12,223 images of 2s and 7s and the test split 2,060, as
    the paper states (checked).

    The paper does not say how it superposes. ``blend="max"`` (default) takes
    ``max(digit, alpha * background)``: strokes (near 1) stay exactly as they were because the
    background is capped at ``alpha`` < 1, and only the black surround turns into texture; a
    sum would saturate strokes and background alike, and an average would halve the digit's
    contrast. ``blend="add"`` gives ``clip(digit + alpha * background, 0, 1)``.

    Returns
    -------
    NoisyMNIST
        ``x`` (n, 784) float32, ``y`` int64 (0 = digit 2, 1 = digit 7), ``background`` int64
        (1 = background added) and ``label4 = 2 * y + background``, named by
        ``NOISY_MNIST_LABELS``.
    """
    if blend not in ("max", "add"):
        raise ValueError(f"blend must be 'max' or 'add', got {blend!r}")
    rng = check_random_state(random_state)
    images, labels = load_mnist(mnist_dir, split)
    keep = np.isin(labels, (2, 7))
    full_total, full_kept = _FULL_MNIST[split]
    if len(labels) == full_total and keep.sum() != full_kept:
        raise ValueError(f"MNIST {split}: {keep.sum()} images of 2s and 7s, expected {full_kept}")
    digits = images[keep].astype(np.float32) / 255.0
    y = (labels[keep] == 7).astype(np.int64)
    background = np.zeros(len(y), np.int64)
    for d in (0, 1):
        rows = np.flatnonzero(y == d)
        background[rng.choice(rows, len(rows) // 2, replace=False)] = 1

    cifar_x, cifar_y = load_cifar10_npz(cifar_path)
    noisy = np.flatnonzero(background)
    classes = np.unique(cifar_y)
    picked_class = classes[rng.randint(0, len(classes), len(noisy))]
    source = np.empty(len(noisy), np.int64)
    for k in classes:  # a random image of the picked class
        pool, slots = np.flatnonzero(cifar_y == k), np.flatnonzero(picked_class == k)
        source[slots] = pool[rng.randint(0, len(pool), len(slots))]
    top, left = rng.randint(0, 5, len(noisy)), rng.randint(0, 5, len(noisy))
    window = np.arange(28)
    crops = _gray(cifar_x[source])[
        np.arange(len(noisy))[:, None, None],
        (top[:, None] + window)[:, :, None],
        (left[:, None] + window)[:, None, :],
    ]
    if blend == "max":
        digits[noisy] = np.maximum(digits[noisy], alpha * crops)
    else:
        digits[noisy] = np.clip(digits[noisy] + alpha * crops, 0.0, 1.0)
    return NoisyMNIST(digits.reshape(len(y), -1), y, background, 2 * y + background)
