"""Data: the datasets an experiment trains and evaluates on, as batches of images."""

from cnnjax.data.datasets import SOURCES, Datasets, get_datasets
from cnnjax.data.pascal import Recording, canonical_name, read_index
from cnnjax.data.splits import stratified_split

__all__ = ["Datasets", "Recording", "SOURCES", "canonical_name",
           "get_datasets", "read_index", "stratified_split"]
