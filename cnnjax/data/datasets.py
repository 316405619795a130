"""`get_datasets(config)`: the one entry point the trainer uses for batches and class names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cnnjax.audio.features import MelSettings
from cnnjax.audio.synth import SynthSettings, write_dataset
from cnnjax.data.pascal import Recording, read_index
from cnnjax.data.spectrograms import Batch, SpectrogramImages, spectrograms_of
from cnnjax.data.splits import stratified_split
from cnnjax.errors import ConfigError, DataError


def _synthetic_recordings(data: Any) -> list[Recording]:
    """Writes the synthetic set once (PASCAL set_b layout) and reads it like the real one."""
    settings = SynthSettings(
        num_per_class=tuple((label, int(n)) for label, n in data.synthetic.num_per_class),
        sample_rate=int(data.synthetic.sample_rate), seed=int(data.synthetic.seed))
    folder = write_dataset(settings, Path(data.data_dir).expanduser() if data.data_dir else None)
    return read_index(folder, "set_b")


def _pascal_recordings(data: Any) -> list[Recording]:
    if not data.manual_dir:
        raise DataError("config.data.manual_dir is empty: set it to the folder holding the "
                         "PASCAL heart-sound download (set_a/, set_b/, set_a.csv, set_b.csv).")
    return read_index(data.manual_dir, data.subset)


SOURCES: dict[str, Callable[[Any], list[Recording]]] = {
    "synthetic_heartbeat": _synthetic_recordings,
    "pascal_heartbeat": _pascal_recordings,
}


@dataclass
class Datasets:
    """Train and validation sets of one experiment, and how to batch them."""
    class_names: tuple[str, ...]
    train: SpectrogramImages
    val: SpectrogramImages
    batch_size: int
    eval_batch_size: int
    seed: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train) // self.batch_size

    @property
    def eval_steps(self) -> int:
        return math.ceil(len(self.val) / self.eval_batch_size)

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        return self.train.train_batches(self.batch_size, self.seed, epoch)

    def eval_batches(self) -> Iterator[Batch]:
        return self.val.eval_batches(self.eval_batch_size)


def mel_settings(config: Any) -> MelSettings:
    return MelSettings(**{k: config.audio[k] for k in MelSettings.__dataclass_fields__})


def get_datasets(config: Any) -> Datasets:
    """Loads `config.data.name`, keeps the labelled recordings, splits them stratified
    `1 - val_fraction : val_fraction` (seeded by `config.data.split_seed`) and computes the
    log-mel spectrograms of `config.audio` once."""
    data = config.data
    recordings = [r for r in SOURCES[data.name](data) if r.label]
    class_names = tuple(sorted({r.label for r in recordings}))
    labels = np.array([class_names.index(r.label) for r in recordings])
    train_idx, val_idx = stratified_split(labels, data.val_fraction, data.split_seed)
    mel = mel_settings(config)
    spectrograms = spectrograms_of([r.path for r in recordings], mel)
    crop = max(1, round(data.crop_seconds * mel.sample_rate / mel.hop_length))

    def subset(indices: np.ndarray) -> SpectrogramImages:
        return SpectrogramImages(
            spectrograms=[spectrograms[i] for i in indices], labels=labels[indices],
            crop_frames=crop, image_size=tuple(data.image_size), channels=data.channels,
            top_db=mel.top_db)

    datasets = Datasets(class_names, subset(train_idx), subset(val_idx), config.batch_size,
                        config.eval_batch_size, config.seed)
    if datasets.steps_per_epoch == 0:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                         f"{len(datasets.train)} training examples.")
    return datasets
