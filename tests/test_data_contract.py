"""Both kinds of data answer the trainer through the one declared `Datasets` contract."""

import numpy as np
import pytest

from cnnjax.data import (Datasets, EvalBatch, ImageDatasets, SpectrogramDatasets, TrainBatch,
                         get_datasets)
from test_image_data import synthetic_datasets  # noqa: F401 (a fixture)
from test_pipeline import tiny_config  # noqa: F401 (a fixture)


def check_contract(datasets: Datasets) -> None:
    """What `cnnjax.data.contract` declares, checked on real data."""
    assert isinstance(datasets, Datasets)
    for split in (datasets.train, datasets.val):
        assert split.labels.dtype == np.int32 and len(split.labels) == len(split)
        assert split.targets is None or split.targets.shape == (len(split),)
    assert all(0 <= label < len(datasets.class_names) for label in datasets.train.labels)
    assert len(datasets.val_file_names) == len(datasets.val)
    batches = datasets.train_batches(1)
    batch = next(batches)
    assert TrainBatch.__required_keys__ <= set(batch) <= set(TrainBatch.__annotations__)
    assert batch["image"].shape[1:] == datasets.input_shape
    assert isinstance(batches.get_state(), bytes)
    seen = []
    for batch in datasets.eval_batches():
        assert EvalBatch.__required_keys__ <= set(batch) <= set(EvalBatch.__annotations__)
        assert batch["image"].shape[1:] == datasets.input_shape
        assert batch["mask"].dtype == bool and batch["record"].dtype == np.int32
        seen.extend(batch["record"][batch["mask"]])
    assert sorted(set(seen)) == list(range(len(datasets.val)))


def test_spectrogram_datasets_keep_the_contract(tiny_config):  # noqa: F811
    datasets = get_datasets(tiny_config)
    assert isinstance(datasets, SpectrogramDatasets)
    check_contract(datasets)


def test_image_datasets_keep_the_contract(synthetic_datasets):  # noqa: F811
    _, datasets = synthetic_datasets
    assert isinstance(datasets, ImageDatasets)
    check_contract(datasets)
    assert datasets.train.targets is None


def test_the_contract_cannot_be_instantiated_by_itself():
    with pytest.raises(TypeError):
        Datasets()
