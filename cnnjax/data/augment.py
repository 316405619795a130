"""Seeded augmentations on numpy arrays; every function takes the `np.random.Generator`
it draws from, so a pipeline seeded per record and epoch is exactly repeatable."""

from __future__ import annotations

import functools

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


def random_noise(spectrogram: np.ndarray, loudest_db: float, quietest_db: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Stationary noise added to a dB spectrogram in power (a noisy room or recording chain):
    a level drawn uniformly in [quietest_db, loudest_db] dB of the loudest bin (0 dB), each
    cell's noise power that level times an Exp(1) draw (white noise's power in one STFT bin).
    `loudest_db` = 0 is off."""
    if not loudest_db:
        return spectrogram
    level = rng.uniform(quietest_db, loudest_db)
    noise = 10.0 ** (level / 10) * rng.standard_exponential(spectrogram.shape)
    return (10 * np.log10(10.0 ** (spectrogram / 10) + noise)).astype(np.float32)


@functools.lru_cache(maxsize=32)
def filter_matrix(bands: int, points: int) -> np.ndarray:
    """`[bands, points]` float32: times `points` gains, the dB gain of every band on straight
    lines between them, the gains sitting at evenly spaced bands from the lowest to the
    highest. One rule for the host's numpy and the devices' jnp."""
    knots = np.linspace(0, bands - 1, points)
    return np.stack([np.interp(np.arange(bands), knots, unit) for unit in np.eye(points)],
                    axis=1).astype(np.float32)


def random_filter(spectrogram: np.ndarray, max_db: float, points: int,
                  rng: np.random.Generator) -> np.ndarray:
    """A random equaliser on a dB spectrogram (FilterAugment, Nam et al., 2022): each band
    shifted by `filter_matrix` through `points` uniform gains in [-max_db, max_db], the
    same over time: another microphone or stethoscope's frequency response."""
    if not max_db:
        return spectrogram
    values = rng.uniform(-max_db, max_db, points).astype(np.float32)
    return spectrogram + (filter_matrix(spectrogram.shape[0], points) @ values)[:, None]


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


def keras_affine(shape: tuple[int, ...], *, shift: tuple[float, float] = (0.0, 0.0),
                 shear: float = 0.0, zoom: tuple[float, float] = (1.0, 1.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Keras ImageDataGenerator's affine map for an image of `shape` ([H, W, ...]), as
    `(matrix, offset)`: output pixel (row, col) samples the input at
    `matrix @ (row, col) + offset` (the inverse map, as `scipy.ndimage.affine_transform`).

    About the centre ((H - 1) / 2, (W - 1) / 2), in Keras' x = column, y = row terms:
    `x_in = zx * x - sin(shear) * zy * y + tx` and `y_in = cos(shear) * zy * y + ty`, with
    `shift = (ty, tx)` in pixels (rows, columns), `zoom = (zy, zx)` and `shear` in degrees
    as Keras' `shear_range` (Keras 1 read it as radians). A positive shift samples from
    further down/right, so the content moves up/left; a zoom above 1 shows more of the
    image, smaller."""
    angle = np.deg2rad(shear)
    zy, zx = zoom
    matrix = np.array([[np.cos(angle) * zy, 0.0], [-np.sin(angle) * zy, zx]])
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    return matrix, centre - matrix @ centre + np.asarray(shift, np.float64)


def warp(image: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`[H, W, C]` float32 image resampled by the inverse map `(matrix, offset)` with
    bilinear interpolation, pixels beyond the edge taking the nearest edge pixel's value
    (Keras' `fill_mode='nearest'`, `interpolation_order=1`)."""
    image = np.asarray(image, np.float32)
    return np.stack([scipy.ndimage.affine_transform(image[..., c], matrix, offset, order=1,
                                                    mode="nearest")
                     for c in range(image.shape[-1])], axis=-1)


def random_affine(image: np.ndarray, rng: np.random.Generator, *,
                  width_shift_range: float = 0.0, height_shift_range: float = 0.0,
                  shear_range: float = 0.0, zoom_range: float = 0.0,
                  horizontal_flip: bool = False) -> np.ndarray:
    """Keras ImageDataGenerator's random transform of an `[H, W, C]` image, as float32: a
    shift of up to `height_shift_range` / `width_shift_range` of the height / width, a
    shear of up to `shear_range` degrees, zooms `zy, zx` drawn from
    [1 - zoom_range, 1 + zoom_range], all as one warp (`keras_affine`), then a horizontal
    flip with probability 1/2. (Keras scales the shift along the columns by the height and
    the one along the rows by the width, which is the same for square images.) Every draw is
    made whatever is switched off, so one setting never changes another's random numbers;
    all zero (and no flip) returns the image."""
    height, width = image.shape[:2]
    shift = rng.uniform(-1, 1, 2) * (height_shift_range * height, width_shift_range * width)
    shear = rng.uniform(-1, 1) * shear_range
    zoom = rng.uniform(1 - zoom_range, 1 + zoom_range, 2)
    flip = rng.random() < 0.5 and horizontal_flip
    out = np.asarray(image, np.float32)
    if height_shift_range or width_shift_range or shear_range or zoom_range:
        out = warp(out, *keras_affine(image.shape, shift=tuple(shift), shear=shear,
                                      zoom=tuple(zoom)))
    return out[:, ::-1] if flip else out
