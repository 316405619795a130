"""Data: TFDS builders for recordings, splits, features and the grain pipeline behind
`get_datasets(config)`."""

from cnnjax.data.augment import mixup, random_affine, random_gain, spec_augment
from cnnjax.data.builders import AudioFolder, PascalHeartbeat
from cnnjax.data.datasets import SOURCES, Datasets, get_datasets, load_recordings
from cnnjax.data.index import Index, audio_folder_index, pascal_index
from cnnjax.data.pascal import Recording, canonical_name, read_index
from cnnjax.data.pipeline import AugmentSettings, ImageSettings
from cnnjax.data.splits import assign_folds, group_split, split_indices, stratified_split

__all__ = ["AudioFolder", "AugmentSettings", "Datasets", "ImageSettings", "Index",
           "PascalHeartbeat", "Recording", "SOURCES", "assign_folds", "audio_folder_index",
           "canonical_name", "get_datasets", "group_split", "load_recordings", "mixup",
           "pascal_index", "random_affine", "random_gain", "read_index", "spec_augment",
           "split_indices", "stratified_split"]
