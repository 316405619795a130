"""Data: what the trainer reads, and where it comes from.

    contract        `Datasets` (what `get_datasets(config)` returns), its `Split`s and batches:
                    the one declaration of what the layers above read from data
    datasets        get_datasets; recordings -> cached log-mels -> `SpectrogramDatasets`
    image_datasets  image sources -> `ImageDatasets`
    builders, image_builders, index, pascal   TFDS builders (array_record), recording indexes
    splits, pipeline, image_pipeline, augment, feature_cache, synthetic_images

Data sits below training: it imports `cnnjax.audio` and the shared modules, never
`cnnjax.train`, the modes or `cnnjax.main` (tests/test_layering.py).
"""

from cnnjax.data.augment import (keras_affine, mixup, random_affine, random_filter, random_gain,
                                 random_noise, spec_augment, warp)
from cnnjax.data.builders import AudioFolder, PascalHeartbeat
from cnnjax.data.contract import Datasets, EvalBatch, Split, TrainBatch
from cnnjax.data.datasets import SOURCES, SpectrogramDatasets, get_datasets, load_recordings
from cnnjax.data.image_builders import ImageFolder, image_folder_index, read_image
from cnnjax.data.image_datasets import IMAGE_SOURCES, ImageDatasets, load_images
from cnnjax.data.index import Index, audio_folder_index, pascal_index
from cnnjax.data.pascal import Recording, canonical_name, read_index
from cnnjax.data.pipeline import AugmentSettings, ImageSettings
from cnnjax.data.splits import assign_folds, group_split, split_indices, stratified_split
from cnnjax.data.synthetic_images import draw_image, write_image_folder

__all__ = ["AudioFolder", "AugmentSettings", "Datasets", "EvalBatch", "IMAGE_SOURCES",
           "ImageDatasets", "ImageFolder", "ImageSettings", "Index", "PascalHeartbeat",
           "Recording", "SOURCES", "SpectrogramDatasets", "Split", "TrainBatch", "assign_folds",
           "audio_folder_index", "canonical_name", "draw_image", "get_datasets", "group_split",
           "image_folder_index", "keras_affine", "load_images", "load_recordings", "mixup",
           "pascal_index", "random_affine", "random_filter", "random_gain", "random_noise",
           "read_image", "read_index", "spec_augment", "split_indices", "stratified_split", "warp",
           "write_image_folder"]
