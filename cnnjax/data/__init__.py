"""Data: TFDS builders for recordings and image folders, splits, features, synthetic images
and the grain pipelines behind `get_datasets(config)`."""

from cnnjax.data.augment import keras_affine, mixup, random_affine, random_gain, spec_augment, warp
from cnnjax.data.builders import AudioFolder, PascalHeartbeat
from cnnjax.data.datasets import SOURCES, Datasets, get_datasets, load_recordings
from cnnjax.data.image_builders import ImageFolder, image_folder_index, read_image
from cnnjax.data.image_datasets import IMAGE_SOURCES, ImageDatasets, load_images
from cnnjax.data.index import Index, audio_folder_index, pascal_index
from cnnjax.data.pascal import Recording, canonical_name, read_index
from cnnjax.data.pipeline import AugmentSettings, ImageSettings
from cnnjax.data.splits import assign_folds, group_split, split_indices, stratified_split
from cnnjax.data.synthetic_images import draw_image, write_image_folder

__all__ = ["AudioFolder", "AugmentSettings", "Datasets", "IMAGE_SOURCES", "ImageDatasets",
           "ImageFolder", "ImageSettings", "Index", "PascalHeartbeat", "Recording",
           "SOURCES", "assign_folds", "audio_folder_index", "canonical_name",
           "draw_image", "get_datasets", "group_split", "image_folder_index",
           "keras_affine", "load_images", "load_recordings", "mixup", "pascal_index",
           "random_affine", "random_gain", "read_image", "read_index", "spec_augment",
           "split_indices", "stratified_split", "warp", "write_image_folder"]
