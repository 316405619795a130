"""grain input pipeline for images: built RGB records -> augmented, normalised float images ->
batches.

Training shuffles per epoch from the seed, draws each image's Keras-style affine warp and
flip from grain's per-record generator (so a resumed epoch repeats them exactly), batches
with the remainder dropped and can save and restore its iterator state mid-epoch.
Evaluation takes every image once, in order, and pads the last batch (with `mask`) so the
compiled eval step keeps one shape.

The warp runs on the host, per image, with scipy (Keras' own arithmetic). Measured on a
2-core CPU for a batch of 32 150x150 RGB images (`benchmarks/image_augment.py`): 80-85 ms
with scipy, 50-54 ms with the same warp batched in JAX on the CPU. JAX's edge would be spent
on the cores the train step runs on, while the host warp runs in grain's worker processes
(`config.data.workers`) beside the step, keeps the jitted step free of augmentation and
draws from the per-record generator that makes resumption exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds

from cnnjax.data.augment import random_affine
from cnnjax.data.contract import EvalBatch
from cnnjax.data.pipeline import epoch_loader
from cnnjax.imagenet import IMAGENET_MEAN, IMAGENET_STD

IMAGE_NORMALIZATIONS = ("rescale", "imagenet")


@dataclass(frozen=True)
class ImageAugment:
    """Keras ImageDataGenerator's geometric augmentations (`config.augment`); zeros and
    False switch each one off. `shear_range` is in degrees, as in Keras."""
    width_shift_range: float = 0.0  # fraction of the width
    height_shift_range: float = 0.0  # fraction of the height
    shear_range: float = 0.0  # degrees
    zoom_range: float = 0.0  # zooms drawn from [1 - zoom_range, 1 + zoom_range] per axis
    horizontal_flip: bool = False
    mixup_alpha: float = 0.0


def normalize(image: np.ndarray, normalization: str) -> np.ndarray:
    """float32 model input from RGB values in [0, 255]: 'rescale' divides by 255 (Keras'
    `rescale=1/255`), 'imagenet' then subtracts ImageNet's mean and divides by its standard
    deviation per channel (what torchvision's pretrained weights expect)."""
    if normalization not in IMAGE_NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not one of "
                         f"{IMAGE_NORMALIZATIONS}.")
    image = np.asarray(image, np.float32) / 255.0
    if normalization == "imagenet":
        image = (image - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD,
                                                                              np.float32)
    return image.astype(np.float32)


class ImageSource(grain.sources.RandomAccessDataSource):
    """Random access to `{'image' (uint8 [H, W, 3]), 'label'}`: the records at `positions`
    of a built image dataset, read from its array_record files. Picklable for grain's
    worker processes: each process opens the files itself on first use."""

    def __init__(self, builder_dir: str | Path, positions: np.ndarray, labels: np.ndarray):
        self.builder_dir = str(builder_dir)
        self.positions = np.asarray(positions, np.int64)
        self.labels = np.asarray(labels, np.int32)
        self.targets = None  # images carry no regression target
        # The build's folder name holds its source's fingerprint and the image size.
        digest = hashlib.sha256(f"{Path(self.builder_dir).parts[-3:]}|".encode())
        digest.update(self.positions.tobytes())
        digest.update(self.labels.tobytes())
        self.digest = digest.hexdigest()[:16]
        self._records: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_records": None}

    def __repr__(self) -> str:
        # grain compares this with the one in a saved iterator state: same data, same repr.
        return f"ImageSource(records={len(self)}, sha256={self.digest})"

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._records is None:
            self._records = tfds.builder_from_directory(self.builder_dir).as_data_source(
                split="labelled")
        record = self._records[int(self.positions[index])]
        return {"image": record["image"], "label": self.labels[index]}


class TrainImage(grain.transforms.RandomMap):
    """An image, augmented (`random_affine`) and normalised."""

    def __init__(self, augment: ImageAugment, normalization: str):
        self.augment, self.normalization = augment, normalization

    def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        a = self.augment
        image = random_affine(record["image"], rng, width_shift_range=a.width_shift_range,
                              height_shift_range=a.height_shift_range,
                              shear_range=a.shear_range, zoom_range=a.zoom_range,
                              horizontal_flip=a.horizontal_flip)
        return {"image": normalize(image, self.normalization), "label": record["label"]}


def image_train_loader(source: ImageSource, augment: ImageAugment, normalization: str, *,
                       batch_size: int, seed: int, epoch: int, workers: int = 0,
                       sampling: str = "shuffle") -> grain.DataLoader:
    """One epoch of batches (`epoch_loader`) of augmented images."""
    return epoch_loader(source, TrainImage(augment, normalization), augment.mixup_alpha,
                        batch_size=batch_size, seed=seed, epoch=epoch, workers=workers,
                        sampling=sampling)


def image_eval_batches(source: ImageSource, normalization: str, batch_size: int
                       ) -> Iterator[EvalBatch]:
    """Every image once, in order, in batches of exactly `batch_size`: `record` is the
    image's index in `source` (one window per image), and the last batch is padded with
    zeros, `mask` marking the real rows."""
    for start in range(0, len(source), batch_size):
        indices = range(start, min(start + batch_size, len(source)))
        images = [normalize(source[i]["image"], normalization) for i in indices]
        real, pad = len(images), batch_size - len(images)
        yield {"image": np.stack(images + [np.zeros_like(images[0])] * pad),
               "label": np.concatenate([source.labels[start:start + real],
                                        np.zeros(pad, np.int32)]),
               "record": np.concatenate([np.arange(start, start + real, dtype=np.int32),
                                         np.zeros(pad, np.int32)]),
               "mask": np.arange(batch_size) < real}
