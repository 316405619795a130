"""Image data sources behind `get_datasets(config)`: `image_folder` (a user's folder),
`synthetic_images` (generated cats and dogs, read through the same builder) and
`tfds_cats_vs_dogs` (TFDS' copy of the Microsoft Asirra photos, where it is prepared).

Each source becomes an image folder built once by `ImageFolder` at `config.data.image_size`;
the records are split by `config.data` (stratified hold-out, or fold k of n) and served by
the image pipeline. `ImageDatasets` is a `Datasets` (`cnnjax.data.contract`), as the
spectrograms' `SpectrogramDatasets` are.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from cnnjax.data.contract import EvalBatch
from cnnjax.data.image_builders import build_images, image_folder_index
from cnnjax.data.image_pipeline import (ImageAugment, ImageSource, image_eval_batches,
                                        image_train_loader)
from cnnjax.data.index import Index
from cnnjax.data.pipeline import EpochBatches
from cnnjax.data.splits import split_indices
from cnnjax.data.synthetic_images import SyntheticImageSettings, write_image_folder
from cnnjax.errors import ConfigError, DataError
from cnnjax.logs import logger

CATS_VS_DOGS_ZIP = ("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-"
                    "6DEBA77B919F/kagglecatsanddogs_5340.zip")


def _image_folder(data: Any, root: Path) -> Path:
    if not data.manual_dir:
        raise DataError("config.data.manual_dir is empty: set it to the folder holding one "
                        "sub-folder of images per class for config.data.name='image_folder'.")
    return Path(data.manual_dir).expanduser()


def _synthetic(data: Any, root: Path) -> Path:
    s = data.synthetic_images
    if not 0 < s.min_side <= s.max_side:
        raise ConfigError(f"config.data.synthetic_images: min_side={s.min_side} and "
                          f"max_side={s.max_side} must satisfy 0 < min_side <= max_side.")
    return write_image_folder(SyntheticImageSettings(
        num_per_class=tuple((label, int(n)) for label, n in s.num_per_class),
        min_side=int(s.min_side), max_side=int(s.max_side), seed=int(s.seed)), root)


def _cats_vs_dogs(data: Any, root: Path) -> Path:
    """TFDS' `cats_vs_dogs`, read from a copy prepared in array_record format under
    `<data dir>/tfds` (no TensorFlow needed to read it) and written out once as an image
    folder. Preparing it needs TensorFlow: its builder decodes and re-encodes every JPEG
    with `tf.image`."""
    folder = root / "cats_vs_dogs_images"
    if (folder / "done").exists():
        return folder
    builder = tfds.builder("cats_vs_dogs", data_dir=str(root / "tfds")) \
        if (root / "tfds" / "cats_vs_dogs").is_dir() else None
    if builder is None or not builder.is_prepared() or "array_record" not in [
            f.value for f in builder.info.available_file_formats()]:
        raise DataError(
            f"TFDS' cats_vs_dogs is not prepared in array_record format under {root / 'tfds'}, "
            f"and preparing it needs TensorFlow, which cnnjax does not use: download "
            f"{CATS_VS_DOGS_ZIP}, unzip it and run with --config.data.name=image_folder "
            f"--config.data.manual_dir=<unzipped folder>/PetImages.")
    names = builder.info.features["label"].names
    staging = root / f".cats_vs_dogs_images.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    records = builder.as_data_source(split="train",
                                     decoders={"image": tfds.decode.SkipDecoding()})
    logger.info(f"writing TFDS' cats_vs_dogs ({len(records)} images) out as an image folder "
                f"(once)")
    for record in records:
        path = staging / names[int(record["label"])] / Path(
            record["image/filename"].decode()).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record["image"])
    (staging / "done").write_text("")
    try:
        staging.rename(folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return folder


IMAGE_SOURCES: dict[str, Callable[[Any, Path], Path]] = {
    "image_folder": _image_folder,
    "synthetic_images": _synthetic,
    "tfds_cats_vs_dogs": _cats_vs_dogs,
}


@dataclass
class Images:
    """The labelled images of a built dataset, sorted by file name: where the built records
    lie and each one's position among them."""
    class_names: tuple[str, ...]
    builder_dir: Path
    positions: np.ndarray
    labels: np.ndarray
    file_names: list[str]
    summary: dict[str, Any]


def load_images(data: Any, root: Path, log: Callable[[str], None] = logger.info) -> Images:
    """Builds `data.name` at `data.image_size` once into `<root>/tfds` (a changed folder or
    size builds anew) and lists its records."""
    folder = IMAGE_SOURCES[data.name](data, root)
    index: Index = image_folder_index(folder, tuple(data.classes))
    height, width = (int(v) for v in data.image_size)
    tfds_dir = root / "tfds" / f"{data.name}-{index.fingerprint()}-{height}x{width}"
    builder, summary, records = build_images(index, (height, width), tfds_dir, log=log)
    order = sorted(range(len(records)), key=lambda i: records[i][0])
    return Images(tuple(summary["class_names"]), Path(builder.data_dir), np.array(order),
                  np.array([records[i][1] for i in order], np.int32),
                  [records[i][0] for i in order], summary)


@dataclass
class ImageDatasets(EpochBatches):
    """`Datasets` of images: one evaluation window per image."""
    class_names: tuple[str, ...]
    train: ImageSource
    val: ImageSource
    val_file_names: list[str]
    image_size: tuple[int, int]
    normalization: str
    augment: ImageAugment
    batch_size: int
    eval_batch_size: int
    seed: int
    workers: int = 0
    sampling: str = "shuffle"  # | 'balanced': every class as often in an epoch

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, 3)

    @property
    def device_windows(self) -> None:
        """Images are augmented on the host only."""
        return None

    def _train_loader(self, epoch: int) -> Any:
        return image_train_loader(self.train, self.augment, self.normalization,
                                  batch_size=self.batch_size, seed=self.seed, epoch=epoch,
                                  workers=self.workers, sampling=self.sampling)

    def eval_batches(self) -> Iterator[EvalBatch]:
        return image_eval_batches(self.val, self.normalization, self.eval_batch_size)


def get_image_datasets(config: Any, root: Path) -> ImageDatasets:
    """Loads the image source `config.data.name` (data directory `root`), splits it as
    `config.data` says (stratified hold-out, or fold k of n) and prepares the pipelines."""
    data = config.data
    if data.sampling == "by_group":
        raise ConfigError("config.data.sampling='by_group' is for recordings with groups; "
                          "images have none.")
    if data.channels != 3:
        raise ConfigError(f"config.data.channels={data.channels}: images are read as RGB; "
                          f"set it (and config.model.in_channels) to 3.")
    images = load_images(data, root)
    train_idx, val_idx = split_indices(
        images.labels, images.file_names if data.grouped else None,
        val_fraction=data.val_fraction, seed=data.split_seed, num_folds=data.num_folds,
        fold=data.fold)

    def source(indices: np.ndarray) -> ImageSource:
        return ImageSource(images.builder_dir, images.positions[indices],
                           images.labels[indices])

    augment = ImageAugment(**{f.name: config.augment[f.name]
                              for f in dataclasses.fields(ImageAugment)})
    datasets = ImageDatasets(images.class_names, source(train_idx), source(val_idx),
                             [images.file_names[i] for i in val_idx],
                             tuple(int(v) for v in data.image_size), data.normalization,
                             augment, config.batch_size, config.eval_batch_size, config.seed,
                             data.workers, data.sampling)
    if datasets.steps_per_epoch == 0:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                          f"{len(datasets.train)} training images.")
    return datasets
