"""Training windows cut, augmented and scaled on the devices (`config.augment.on_device`).

The host path (`pipeline.TrainWindow`) crops, augments and resizes every example in numpy:
a few thousand examples/s per host process, far below what an accelerator's train step
consumes. Here the training split's spectrograms are copied to the devices once, back to back
in one array, and the host hands over per example only its record index, label and a seed
(`IndexBatches`: shuffled per epoch, shared over processes and resumable mid-epoch like the
host path, drawn in numpy a whole epoch at a time). `window_batch` then does on the devices what
`TrainWindow` and `Mixup` do: the random (or centred) window, silence padding of short
recordings, gain, SpecAugment masks filled with the window's mean, the bilinear resize of
`scipy.ndimage.zoom(order=1)` as two small matrix products, the dB scaling, channels and
mixup, each drawn from the same distribution (from JAX's generator, not numpy's).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data.augment import filter_matrix
from cnnjax.data.pipeline import (AugmentSettings, ImageSettings, SpectrogramSource,
                                  balanced_order, group_batch_order)
from cnnjax.imagenet import IMAGENET_MEAN, IMAGENET_STD


@flax.struct.dataclass
class ResidentSpectrograms:
    """Every training recording's dB log-mel, back to back in `frames` [mels, total]
    between `width` frames of margin on each side (a window may start before a short
    recording or run past it: `dynamic_slice` never has to clamp)."""
    frames: jax.Array  # float32 [mels, width + sum(lengths) + width]
    offsets: jax.Array  # int32 [records]: each recording's first frame in `frames`
    lengths: jax.Array  # int32 [records]: its frames
    floors: jax.Array  # float32 [records]: its minimum, the silence short windows are padded with
    targets: jax.Array | None = None  # float32 [records], for regression


def resident_spectrograms(spectrograms: Sequence[np.ndarray], width: int,
                          targets: np.ndarray | None = None) -> ResidentSpectrograms:
    """The host arrays of `ResidentSpectrograms` (placed on the devices by `DataParallel`)."""
    lengths = np.array([s.shape[1] for s in spectrograms], np.int32)
    margin = np.zeros((spectrograms[0].shape[0], width), np.float32)
    frames = np.concatenate([margin, *spectrograms, margin], axis=1).astype(np.float32)
    offsets = (width + np.concatenate([[0], np.cumsum(lengths)[:-1]])).astype(np.int32)
    floors = np.array([s.min() for s in spectrograms], np.float32)
    return ResidentSpectrograms(frames, offsets, lengths, floors,
                                None if targets is None else np.asarray(targets, np.float32))


def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] linear interpolation on the grid of `scipy.ndimage.zoom(order=1)`:
    output pixel o samples input position o * (size_in - 1) / (size_out - 1), corners to
    corners."""
    if size_in == size_out:
        return np.eye(size_in, dtype=np.float32)
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    position = np.arange(size_out) * scale
    low = np.minimum(np.floor(position).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = (position - low).astype(np.float32)
    matrix = np.zeros((size_out, size_in), np.float32)
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix


def _window(data: ResidentSpectrograms, index: jax.Array, key: jax.Array, width: int,
            random_crop: bool) -> jax.Array:
    """`crop_frames` of recording `index` at `random_window_start`'s (or the centre's) start."""
    length = data.lengths[index]
    spare = length - width
    centred = jnp.where(spare >= 0, spare // 2, -((-spare) // 2))
    start = jnp.where(spare > 0, jax.random.randint(key, (), 0, jnp.maximum(spare, 0) + 1),
                      centred) if random_crop else centred
    window = jax.lax.dynamic_slice(data.frames, (0, data.offsets[index] + start),
                                   (data.frames.shape[0], width))
    inside = (start + jnp.arange(width) >= 0) & (start + jnp.arange(width) < length)
    return jnp.where(inside, window, data.floors[index])


def _masks(window: jax.Array, key: jax.Array, augment: AugmentSettings) -> jax.Array:
    """`spec_augment`: bands of up to `freq_mask_width` bins and spans of up to
    `time_mask_width` frames set to the window's mean (taken before any mask)."""
    fill = window.mean()
    masked = jnp.zeros(window.shape, bool)
    for axis, count, most in ((0, augment.freq_masks, augment.freq_mask_width),
                              (1, augment.time_masks, augment.time_mask_width)):
        size = window.shape[axis]
        position = jnp.arange(size).reshape((-1, 1) if axis == 0 else (1, -1))
        for mask_key in jax.random.split(jax.random.fold_in(key, axis), count):
            span_key, start_key = jax.random.split(mask_key)
            span = jax.random.randint(span_key, (), 0, min(most, size) + 1)
            begin = jax.random.randint(start_key, (), 0, size - span + 1)
            masked |= (position >= begin) & (position < begin + span)
    return jnp.where(masked, fill, window)


def _noise(window: jax.Array, key: jax.Array, quietest_db: float, loudest_db: float
           ) -> jax.Array:
    """`random_noise`: a level uniform in [quietest_db, loudest_db], each cell's noise power
    that level times an Exp(1) draw, added to the window's power."""
    level_key, cell_key = jax.random.split(key)
    level = jax.random.uniform(level_key, (), minval=quietest_db, maxval=loudest_db)
    noise = 10.0 ** (level / 10) * jax.random.exponential(cell_key, window.shape)
    return 10 * jnp.log10(10.0 ** (window / 10) + noise)


def _filter(bands: int, key: jax.Array, augment: AugmentSettings) -> jax.Array:
    """`random_filter`'s `[bands, 1]` dB gains: `filter_matrix` times `filter_points`
    uniform gains in [-filter_db, filter_db]."""
    values = jax.random.uniform(key, (augment.filter_points,), minval=-augment.filter_db,
                                maxval=augment.filter_db)
    matrix = jnp.asarray(filter_matrix(bands, augment.filter_points))
    return jnp.matmul(matrix, values, precision="highest")[:, None]


def _image(window: jax.Array, image: ImageSettings) -> jax.Array:
    """`spectrogram_image`: resize, dB scaled to ~[-1, 1], channels, normalisation."""
    height, width = image.image_size
    rows = jnp.asarray(resize_matrix(window.shape[0], height))
    cols = jnp.asarray(resize_matrix(window.shape[1], width))
    resized = jnp.matmul(jnp.matmul(rows, window, precision="highest"), cols.T,
                         precision="highest")
    out = ((resized + image.top_db / 2) / (image.top_db / 2))[..., None]
    if image.normalization == "imagenet":
        out = (out + 1.0) / 2.0
    out = jnp.repeat(out, image.channels, axis=-1)
    if image.normalization == "imagenet":
        out = (out - jnp.asarray(IMAGENET_MEAN[:image.channels], jnp.float32)) / \
            jnp.asarray(IMAGENET_STD[:image.channels], jnp.float32)
    return out


def window_image(data: ResidentSpectrograms, index: jax.Array, seed: jax.Array,
                 image: ImageSettings, augment: AugmentSettings) -> jax.Array:
    """One example's `[H, W, channels]` input, drawn from its `seed`."""
    root = jax.random.PRNGKey(seed)
    crop_key, gain_key, mask_key = jax.random.split(root, 3)
    # Keys beside the split's three, which stay as they were before these augmentations.
    noise_key, filter_key = jax.random.fold_in(root, 2), jax.random.fold_in(root, 1)
    window = _window(data, index, crop_key, image.crop_frames, augment.random_crop)
    if augment.noise_db:
        window = _noise(window, noise_key, -image.top_db, augment.noise_db)
    if augment.gain_db:
        window = window + jax.random.uniform(gain_key, (), minval=-augment.gain_db,
                                             maxval=augment.gain_db)
    if augment.filter_db:
        window = window + _filter(window.shape[0], filter_key, augment)
    if augment.freq_masks or augment.time_masks:
        window = _masks(window, mask_key, augment)
    return _image(window, image)


def window_batch(data: ResidentSpectrograms, batch: dict[str, jax.Array], *,
                 image: ImageSettings, augment: AugmentSettings) -> dict[str, jax.Array]:
    """A `TrainBatch` from `{'index', 'label', 'seed'}`: every example's window image, its
    target (regression), and mixup (`pipeline.mixup`'s rule) within the batch when
    `augment.mixup_alpha` > 0."""
    images = jax.vmap(window_image, in_axes=(None, 0, 0, None, None))(
        data, batch["index"], batch["seed"], image, augment)
    out = {"image": images, "label": batch["label"]}
    if data.targets is not None:
        out["target"] = data.targets[batch["index"]]
    if augment.mixup_alpha > 0:
        # The batch's own key: its first example's seed, changed so as not to reuse that key.
        weight_key, order_key = jax.random.split(jax.random.PRNGKey(batch["seed"][0] ^ 0x5EED))
        alpha = augment.mixup_alpha
        weight = jax.random.beta(weight_key, alpha, alpha, batch["label"].shape)
        order = jax.random.permutation(order_key, batch["label"].shape[0])
        w = weight.reshape(-1, 1, 1, 1)
        out.update(image=w * images + (1 - w) * images[order],
                   mix_label=batch["label"][order], mix_weight=weight)
    return out


class IndexBatches:
    """One epoch of `{'index', 'label', 'seed'}` batches for `DeviceWindows`, resumable
    mid-epoch (`TrainBatches`).

    The epoch's order (a permutation, `balanced_order` or `group_batch_order`, as `sampling`
    says) and every example's seed come from one generator seeded by (`seed`, `epoch`), drawn
    for the whole epoch at once: handing over a batch is two numpy slices, so the host keeps
    up with an accelerator (grain's per-record transforms cost ~200 us an example here;
    benchmarks/NOTES.md). As on the host path, process p of P takes rows [p * b, (p + 1) * b)
    of every global batch of P * b, so several hosts see exactly one host's batches, and the
    remainder is dropped.
    """

    def __init__(self, source: SpectrogramSource, batch_size: int, seed: int, epoch: int,
                 state: bytes | None = None, process_index: int = 0, process_count: int = 1,
                 sampling: str = "shuffle"):
        rng = np.random.default_rng([seed, epoch])
        if sampling == "balanced":
            self.order = balanced_order(source.labels, rng)
        elif sampling == "by_group":
            self.order = group_batch_order(source.groups, batch_size, rng)
        else:
            self.order = rng.permutation(len(source)).astype(np.int32)
        self.seeds = rng.integers(0, 2**32, size=len(source), dtype=np.uint32)
        self.labels, self.digest, self.epoch = source.labels, source.digest, epoch
        self.global_batch, self.share = batch_size, batch_size // process_count
        self.first = process_index * self.share
        self.steps, self.next_batch = len(source) // batch_size, 0
        if state is not None:
            self._restore(json.loads(state))

    def _restore(self, saved: dict[str, Any]) -> None:
        mine = {"data": self.digest, "epoch": self.epoch, "global_batch": self.global_batch}
        if {key: saved.get(key) for key in mine} != mine:
            raise ValueError(f"this iterator state belongs to another epoch or data: {saved} "
                             f"is not {mine}.")
        self.next_batch = int(saved["next_batch"])

    def __iter__(self) -> IndexBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.next_batch >= self.steps:
            raise StopIteration
        start = self.next_batch * self.global_batch + self.first
        rows = slice(start, start + self.share)
        self.next_batch += 1
        index = self.order[rows]
        return {"index": index, "label": self.labels[index], "seed": self.seeds[rows]}

    def get_state(self) -> bytes:
        return json.dumps({"data": self.digest, "epoch": self.epoch,
                           "global_batch": self.global_batch,
                           "next_batch": self.next_batch}).encode()


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity, as jax.jit hashes it
class DeviceWindows:
    """How `DataParallel` turns the host's `{'index', 'label', 'seed'}` batches into training
    batches on the devices: `resident` placed there once, then this called inside a compiled
    function on each placed batch."""
    resident: ResidentSpectrograms  # host arrays; placed on every device once
    image: ImageSettings
    augment: AugmentSettings

    def __call__(self, data: ResidentSpectrograms, batch: dict[str, jax.Array]
                 ) -> dict[str, jax.Array]:
        return window_batch(data, batch, image=self.image, augment=self.augment)

