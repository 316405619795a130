"""Log-mel spectrograms of whole recordings held in memory, cut into fixed-size image batches.

Each recording's spectrogram is computed once; training takes a random window of
`crop_frames` frames per epoch (seeded by `seed` and the epoch, so a run is repeatable),
evaluation the centre window. Evaluation batches keep one shape (padded, with a `mask`), so
the compiled eval step is reused for the last, partial batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cnnjax.audio.features import MelSettings, crop_frames, load_audio, log_mel, to_image

Batch = dict[str, np.ndarray]


def spectrograms_of(paths: Sequence[Path], mel: MelSettings) -> list[np.ndarray]:
    """Log-mel spectrogram `[n_mels, frames]` of every recording, at `mel.sample_rate`."""
    return [log_mel(load_audio(path, mel.sample_rate), mel) for path in paths]


@dataclass
class SpectrogramImages:
    """Recordings' spectrograms and labels; yields `{'image', 'label'[, 'mask']}` batches."""
    spectrograms: list[np.ndarray]
    labels: np.ndarray
    crop_frames: int
    image_size: tuple[int, int]
    channels: int
    top_db: float

    def __len__(self) -> int:
        return len(self.spectrograms)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def image(self, index: int, start: int | None) -> np.ndarray:
        window = crop_frames(self.spectrograms[index], self.crop_frames, start)
        image = to_image(window, self.image_size, self.top_db)
        return np.repeat(image, self.channels, axis=-1) if self.channels > 1 else image

    def _random_start(self, index: int, rng: np.random.Generator) -> int | None:
        spare = self.spectrograms[index].shape[1] - self.crop_frames
        return int(rng.integers(0, spare + 1)) if spare > 0 else None

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        """Shuffled full batches of random windows; the last partial batch is dropped."""
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self))
        for first in range(0, len(order) - batch_size + 1, batch_size):
            chosen = order[first:first + batch_size]
            images = [self.image(i, self._random_start(i, rng)) for i in chosen]
            yield {"image": np.stack(images), "label": self.labels[chosen].astype(np.int32)}

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Centre windows in order; the last batch is padded and `mask` marks real examples."""
        for first in range(0, len(self), batch_size):
            chosen = np.arange(first, min(first + batch_size, len(self)))
            images = np.zeros((batch_size, *self.image_shape), np.float32)
            labels = np.zeros(batch_size, np.int32)
            images[:chosen.size] = np.stack([self.image(i, None) for i in chosen])
            labels[:chosen.size] = self.labels[chosen]
            yield {"image": images, "label": labels, "mask": np.arange(batch_size) < chosen.size}
