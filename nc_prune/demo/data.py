"""The demo's data: scikit-learn's handwritten digits (8x8 images, 10 classes), shipped inside the package.

Nothing is downloaded: ``sklearn.datasets.load_digits`` reads a file that comes with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class Digits:
    """A train/test split of the digits, images ``(N, 1, 8, 8)`` float32 in ``[0, 1]``, labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return 10

    def channels_last(self) -> "Digits":
        """The same split with images ``(N, 8, 8, 1)``, as Keras convolutions expect."""
        t = (0, 2, 3, 1)
        return Digits(np.ascontiguousarray(self.x_train.transpose(t)), self.y_train,
                      np.ascontiguousarray(self.x_test.transpose(t)), self.y_test)


def load_digits_split(test_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> Digits:
    """Shuffle the 1,797 digits with ``seed`` and split them.

    Args:
        test_fraction: share of the images held out for accuracy.
        seed: shuffling seed (the split is the same for every framework).
        limit: use only the first ``limit`` shuffled images (for quick runs).

    Raises:
        ImportError: scikit-learn is missing (it is in the ``dev`` extra).

    >>> d = load_digits_split(limit=100)
    >>> d.x_train.shape, d.x_test.shape
    ((80, 1, 8, 8), (20, 1, 8, 8))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the demo data comes from scikit-learn: pip install scikit-learn "
                          "(or pip install 'nc-prune[dev]')") from exc
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be between 0 and 1")
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    if limit is not None:
        order = order[:limit]
    n_test = max(1, int(round(len(order) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return Digits(x[train], y[train], x[test], y[test])


def batch_indices(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Indices of one shuffled epoch, ``batch_size`` at a time (the last batch may be smaller)."""
    order = np.random.default_rng(seed).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
