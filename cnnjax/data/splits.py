"""Train/validation splits."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, val)`: each class split `1 - val_fraction : val_fraction`, seeded.

    Every class with at least two examples lands on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = int(round(val_fraction * members.size))
        if members.size >= 2:
            num_val = min(max(num_val, 1), members.size - 1)
        val.extend(members[:num_val])
        train.extend(members[num_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
