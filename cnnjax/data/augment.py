"""Seeded augmentations on numpy arrays; every function takes the `np.random.Generator`
it draws from, so a pipeline seeded per record and epoch is exactly repeatable."""

from __future__ import annotations

import numpy as np
import scipy.ndimage


def random_window_start(frames: int, width: int, rng: np.random.Generator) -> int | None:
    """A uniformly random start for a `width`-frame window (None: shorter than the window)."""
    spare = frames - width
    return int(rng.integers(0, spare + 1)) if spare > 0 else None


def random_gain(spectrogram: np.ndarray, max_db: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Shifts a dB spectrogram by a uniform offset in [-max_db, max_db] (a louder or quieter
    recording once the spectrogram's level is fixed)."""
    return spectrogram + np.float32(rng.uniform(-max_db, max_db)) if max_db else spectrogram


def spec_augment(spectrogram: np.ndarray, rng: np.random.Generator, *, freq_masks: int,
                 freq_width: int, time_masks: int, time_width: int) -> np.ndarray:
    """SpecAugment (Park et al., 2019): `freq_masks` bands of up to `freq_width` mel bins and
    `time_masks` spans of up to `time_width` frames set to the spectrogram's mean."""
    out = spectrogram.copy()
    fill = out.mean()
    for axis, count, width in ((0, freq_masks, freq_width), (1, time_masks, time_width)):
        size = out.shape[axis]
        for _ in range(count):
            span = int(rng.integers(0, min(width, size) + 1))
            start = int(rng.integers(0, size - span + 1))
            index = [slice(None), slice(None)]
            index[axis] = slice(start, start + span)
            out[tuple(index)] = fill
    return out


def mixup(images: np.ndarray, labels: np.ndarray, alpha: float, rng: np.random.Generator
          ) -> dict[str, np.ndarray]:
    """mixup (Zhang et al., 2018) within a batch: `image = w * x + (1 - w) * x[perm]` with one
    w ~ Beta(alpha, alpha) per example. The loss is `w * CE(label) + (1 - w) * CE(mix_label)`."""
    weight = rng.beta(alpha, alpha, size=labels.shape[0]).astype(np.float32)
    perm = rng.permutation(labels.shape[0])
    w = weight.reshape(-1, *([1] * (images.ndim - 1)))
    return {"image": w * images + (1 - w) * images[perm], "label": labels,
            "mix_label": labels[perm], "mix_weight": weight}


def random_affine(image: np.ndarray, rng: np.random.Generator, *, shift: float = 0.0,
                  shear: float = 0.0, zoom: float = 0.0, flip: bool = False) -> np.ndarray:
    """Keras ImageDataGenerator-style image augmentation on `[H, W, C]`: shifts up to `shift`
    of the height/width, shear up to `shear` radians, zoom in [1 - zoom, 1 + zoom] per axis,
    horizontal flip with probability 1/2; nearest-edge fill."""
    height, width = image.shape[:2]
    ty, tx = rng.uniform(-shift, shift, 2) * (height, width)
    angle = rng.uniform(-shear, shear)
    zy, zx = rng.uniform(1 - zoom, 1 + zoom, 2)
    # Output pixel (y, x) samples input at matrix @ (y, x) + offset, about the centre.
    matrix = np.array([[zy, 0.0], [-np.sin(angle) * zy, np.cos(angle) * zx]])
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    offset = centre - matrix @ centre - (ty, tx)
    out = np.stack([scipy.ndimage.affine_transform(image[..., c], matrix, offset, order=1,
                                                   mode="nearest")
                    for c in range(image.shape[-1])], axis=-1)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return out.astype(image.dtype)
