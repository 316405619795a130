"""grain input pipeline: spectrograms in memory -> windows -> images -> batches.

Training shuffles per epoch from the seed, draws each record's window and augmentations from
grain's per-record generator, batches with the remainder dropped, and can save and restore its
iterator state mid-epoch. Evaluation takes centre windows in order and pads the last batch
(with `mask`) so the compiled eval step keeps one shape.
"""

from __future__ import annotations

import abc
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np

from cnnjax.audio.features import crop_frames, to_image
from cnnjax.data.augment import (mixup, random_filter, random_gain, random_noise,
                                 random_window_start, spec_augment)
from cnnjax.data.contract import Datasets, EvalBatch, TrainBatches
from cnnjax.imagenet import IMAGENET_MEAN, IMAGENET_STD

NORMALIZATIONS = ("db", "imagenet")


@dataclass(frozen=True)
class ImageSettings:
    """How a spectrogram window becomes a model input."""
    crop_frames: int
    image_size: tuple[int, int]
    channels: int = 1
    top_db: float = 80.0
    normalization: str = "db"  # 'db': dB scaled to ~[-1, 1]; 'imagenet': [0, 1] then mean/std


@dataclass(frozen=True)
class AugmentSettings:
    """Training-time augmentation; zeros switch each one off."""
    random_crop: bool = True
    noise_db: float = 0.0
    gain_db: float = 0.0
    filter_db: float = 0.0
    filter_points: int = 4
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0
    mixup_alpha: float = 0.0


class SpectrogramSource(grain.sources.RandomAccessDataSource):
    """Random access to `{'spectrogram', 'label'}` records held in memory, with a float32
    `target` each when the recordings carry one (regression). `groups` (each recording's
    source: patient, database) only steer `sampling='by_group'`."""

    def __init__(self, spectrograms: Sequence[np.ndarray], labels: np.ndarray,
                 targets: np.ndarray | None = None, groups: Sequence[str] | None = None):
        self.spectrograms, self.labels = list(spectrograms), np.asarray(labels, np.int32)
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.groups = None if groups is None else np.asarray(groups, str)
        digest = hashlib.sha256(self.labels.tobytes())
        if self.targets is not None:
            digest.update(self.targets.tobytes())
        for spectrogram in self.spectrograms:
            digest.update(np.ascontiguousarray(spectrogram).tobytes())
        self.digest = digest.hexdigest()[:16]

    def __repr__(self) -> str:
        # grain compares this with the one in a saved iterator state: same data, same repr.
        return f"SpectrogramSource(records={len(self)}, sha256={self.digest})"

    def __len__(self) -> int:
        return len(self.spectrograms)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = {"spectrogram": self.spectrograms[index], "label": self.labels[index]}
        if self.targets is not None:
            record["target"] = self.targets[index]
        return record


def _targets_of(record: dict[str, Any]) -> dict[str, Any]:
    """The entries an example passes on besides its image: its label and any target."""
    return {key: record[key] for key in ("label", "target") if key in record}


def spectrogram_image(window: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """`[H, W, channels]` float32 model input from a dB spectrogram window."""
    image = to_image(window, settings.image_size, settings.top_db)
    if settings.normalization == "imagenet":
        image = (image + 1.0) / 2.0  # dB in [-top_db, 0] -> [0, 1]
    if settings.channels > 1:
        image = np.repeat(image, settings.channels, axis=-1)
    if settings.normalization == "imagenet":
        mean = np.asarray(IMAGENET_MEAN[:settings.channels], np.float32)
        std = np.asarray(IMAGENET_STD[:settings.channels], np.float32)
        image = (image - mean) / std
    return image.astype(np.float32)


class TrainWindow(grain.transforms.RandomMap):
    """A random window of the recording, augmented, as an image."""

    def __init__(self, image: ImageSettings, augment: AugmentSettings):
        self.image, self.augment = image, augment

    def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        spectrogram, a = record["spectrogram"], self.augment
        start = random_window_start(spectrogram.shape[1], self.image.crop_frames, rng) \
            if a.random_crop else None
        window = crop_frames(spectrogram, self.image.crop_frames, start)
        window = random_noise(window, a.noise_db, -self.image.top_db, rng)
        window = random_gain(window, a.gain_db, rng)
        window = random_filter(window, a.filter_db, a.filter_points, rng)
        if a.freq_masks or a.time_masks:
            window = spec_augment(window, rng, freq_masks=a.freq_masks,
                                  freq_width=a.freq_mask_width, time_masks=a.time_masks,
                                  time_width=a.time_mask_width)
        return {"image": spectrogram_image(window, self.image), **_targets_of(record)}


class Mixup(grain.transforms.RandomMap):
    def __init__(self, alpha: float):
        self.alpha = alpha

    def random_map(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return mixup(batch["image"], batch["label"], self.alpha, rng)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for one epoch's shuffle and augmentations."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


SAMPLINGS = ("shuffle", "balanced", "by_group")


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch of `len(labels)` record indices in which every class comes up equally often
    (the remainder going to classes drawn at random): a class's records are drawn uniformly
    with replacement, so a rare class's records repeat within an epoch and a common class's
    are subsampled. In random order."""
    classes = np.unique(labels)
    counts = np.full(len(classes), len(labels) // len(classes))
    counts[rng.choice(len(classes), len(labels) % len(classes), replace=False)] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), n) for c, n in zip(classes, counts)]
    return rng.permutation(np.concatenate(picks)).astype(np.int32)


def group_batch_order(groups: np.ndarray, global_batch: int, rng: np.random.Generator
                      ) -> np.ndarray:
    """One epoch of `len(groups) // global_batch` global batches, each drawn from one group,
    so that BatchNorm normalises every training batch with a single source's statistics, as
    test-time adaptation (`config.adapt_batch_norm`) does on a new source.

    A group gets batches in proportion to its size (largest remainders first); its records
    come shuffled, repeating only when the group is smaller than its batches, and a group too
    small for a share of one batch gets none that epoch. Batches in random order."""
    _, group_of = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_of)
    batches = len(groups) // global_batch
    shares = sizes / len(groups) * batches
    counts = np.floor(shares).astype(int)
    counts[np.argsort(counts - shares, kind="stable")[:batches - counts.sum()]] += 1
    runs = []
    for group, count in enumerate(counts):
        if count:
            members = np.flatnonzero(group_of == group)
            laps = -(-count * global_batch // len(members))
            runs.extend(np.concatenate([rng.permutation(members) for _ in range(laps)])
                        [:count * global_batch].reshape(count, global_batch))
    runs = np.reshape(runs, (-1, global_batch))
    return runs[rng.permutation(len(runs))].ravel().astype(np.int32)


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


class DrawnOrderSampler:
    """grain's `IndexSampler` for one epoch of record keys drawn up front (`self.order`), each
    position's generator seeded as grain seeds it."""
    seed: int
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        return grain.RecordMetadata(
            index=index, record_key=int(self.order[index]),
            rng=np.random.Generator(np.random.Philox(key=self.seed + index)))


class BalancedSampler(DrawnOrderSampler):
    """One epoch of `balanced_order`: the same record keys for the same labels and seed."""

    def __init__(self, labels: np.ndarray, seed: int):
        self.seed, self.labels = seed, np.asarray(labels, np.int32)
        self.order = balanced_order(self.labels, np.random.default_rng(seed))

    def __repr__(self) -> str:
        return (f"BalancedSampler(records={len(self)}, seed={self.seed}, "
                f"labels={_digest(self.labels)})")


class GroupBatchSampler(DrawnOrderSampler):
    """One epoch of `group_batch_order`: the same record keys for the same groups, global
    batch size and seed."""

    def __init__(self, groups: np.ndarray, global_batch: int, seed: int):
        self.seed, self.groups, self.global_batch = seed, np.asarray(groups, str), global_batch
        self.order = group_batch_order(self.groups, global_batch, np.random.default_rng(seed))

    def __repr__(self) -> str:
        return (f"GroupBatchSampler(records={len(self)}, global_batch={self.global_batch}, "
                f"seed={self.seed}, groups={_digest(self.groups)})")


def epoch_order(labels: np.ndarray, seed: int, sampling: str = "shuffle",
                groups: np.ndarray | None = None, global_batch: int = 1) -> Any:
    """One epoch's record keys and per-record generators as a grain sampler: every record
    once, shuffled (grain's `IndexSampler`), `BalancedSampler`'s draw by class, or
    `GroupBatchSampler`'s global batches of one of `groups` each."""
    if sampling == "balanced":
        return BalancedSampler(labels, seed)
    if sampling == "by_group":
        return GroupBatchSampler(groups, global_batch, seed)
    return grain.samplers.IndexSampler(len(labels), shuffle=True, num_epochs=1, seed=seed)


class ProcessShareSampler:
    """One process's share of every global batch of an epoch (`epoch_order`).

    The epoch's order, each record's random generator and the global batches are those of
    a single process; process p of P reads records [p * b, (p + 1) * b) of every global batch
    of B = P * b. So a run on several hosts sees exactly the batches, windows and
    augmentations that one host with all the devices sees, and each host loads only its
    part. (Mixup pairs examples within a process's share.)
    """

    def __init__(self, epoch_order: Any, records: int, global_batch: int,
                 process_index: int = 0, process_count: int = 1):
        self.share = global_batch // process_count
        self.global_batch, self.process_index = global_batch, process_index
        self.epoch_order = epoch_order  # older grain's IndexSampler has no len(): `records`
        self.length = records // global_batch * self.share

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:  # grain checks a restored iterator state against it
        return (f"ProcessShareSampler({self.epoch_order!r}, global_batch={self.global_batch}, "
                f"share={self.share}, process_index={self.process_index})")

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} is outside this epoch's {self.length} records.")
        batch, position = divmod(index, self.share)
        global_index = batch * self.global_batch + self.process_index * self.share + position
        chosen = self.epoch_order[global_index]
        return grain.RecordMetadata(index=index, record_key=chosen.record_key, rng=chosen.rng)


def epoch_loader(source: Any, transform: Any, mixup_alpha: float, *, batch_size: int,
                 seed: int, epoch: int, workers: int = 0, sampling: str = "shuffle",
                 groups: np.ndarray | None = None) -> grain.DataLoader:
    """One epoch of full batches, each record through `transform` (a grain random map:
    augmentation), then mixup when `mixup_alpha` > 0, in the `sampling` order
    (`epoch_order`; 'by_group' draws by the records' `groups`).
    `batch_size` is global; with several processes each one reads its share of every batch
    (`ProcessShareSampler`)."""
    order = epoch_order(source.labels, epoch_seed(seed, epoch), sampling, groups, batch_size)
    sampler = ProcessShareSampler(order, len(source.labels), batch_size, jax.process_index(),
                                  jax.process_count())
    operations: list[Any] = [transform,
                             grain.transforms.Batch(sampler.share, drop_remainder=True)]
    if mixup_alpha > 0:
        operations.append(Mixup(mixup_alpha))
    return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                            worker_count=workers, shard_options=grain.sharding.NoSharding())


def train_loader(source: SpectrogramSource, image: ImageSettings, augment: AugmentSettings, *,
                 batch_size: int, seed: int, epoch: int, workers: int = 0,
                 sampling: str = "shuffle") -> grain.DataLoader:
    """One epoch of batches (`epoch_loader`) of randomly cropped, augmented spectrogram
    windows."""
    return epoch_loader(source, TrainWindow(image, augment), augment.mixup_alpha,
                        batch_size=batch_size, seed=seed, epoch=epoch, workers=workers,
                        sampling=sampling, groups=source.groups)


EVAL_WINDOWS = ("centre", "all")


def window_starts(frames: int, width: int, windows: str) -> list[int | None]:
    """Where each window of a `frames`-long spectrogram starts: 'centre' one window (None:
    centred, padded with silence when the recording is shorter), 'all' consecutive windows
    covering the whole recording, the last one flush with its end."""
    if windows not in EVAL_WINDOWS:
        raise ValueError(f"windows={windows!r} is not one of {EVAL_WINDOWS}.")
    if windows == "centre" or frames <= width:
        return [None]
    return [min(i * width, frames - width) for i in range(math.ceil(frames / width))]


def window_images(spectrogram: np.ndarray, image: ImageSettings, windows: str
                  ) -> list[np.ndarray]:
    """The model inputs of one recording: its windows cut and scaled."""
    return [spectrogram_image(crop_frames(spectrogram, image.crop_frames, start), image)
            for start in window_starts(spectrogram.shape[1], image.crop_frames, windows)]


def eval_batches(source: SpectrogramSource, image: ImageSettings, batch_size: int,
                 windows: str = "all") -> Iterator[EvalBatch]:
    """Every record's windows (`window_starts`) in order, in batches of exactly
    `batch_size`; `record` says whose window each row is (`label`, and `target` when the
    source has targets, are its record's), and the last batch is padded with zeros, `mask`
    marking the real rows. Predictions average over a record's windows."""
    rows: list[tuple[np.ndarray, int, int]] = []

    def batch(rows: list[tuple[np.ndarray, int, int]]) -> EvalBatch:
        real, pad = len(rows), batch_size - len(rows)
        images = np.stack([r[0] for r in rows] + [np.zeros_like(rows[0][0])] * pad)
        out: EvalBatch = {"image": images,
                          "label": np.array([r[1] for r in rows] + [0] * pad, np.int32),
                          "record": np.array([r[2] for r in rows] + [0] * pad, np.int32),
                          "mask": np.arange(batch_size) < real}
        if source.targets is not None:
            out["target"] = np.array([source.targets[r[2]] for r in rows] + [0.0] * pad,
                                     np.float32)
        return out

    for index in range(len(source)):
        record = source[index]
        for window in window_images(record["spectrogram"], image, windows):
            rows.append((window, int(record["label"]), index))
            if len(rows) == batch_size:
                yield batch(rows)
                rows = []
    if rows:
        yield batch(rows)


class EpochBatches(Datasets):
    """The part of `Datasets` both implementations share, given `train`, `batch_size` and
    the subclass's `_train_loader(epoch)`: the step count, and an epoch's batches resumable
    mid-epoch from its grain iterator's state."""
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train) // self.batch_size

    @abc.abstractmethod
    def _train_loader(self, epoch: int) -> grain.DataLoader:
        """Epoch `epoch`'s grain loader of training batches."""

    def train_batches(self, epoch: int, state: bytes | None = None) -> TrainBatches:
        iterator = iter(self._train_loader(epoch))
        if state is not None:
            iterator.set_state(state)
        return iterator
