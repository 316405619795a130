"""Balanced sampling (`config.data.sampling='balanced'`) on both input paths."""

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from cnnjax.config import validate_config
from cnnjax.data import get_datasets
from cnnjax.data.device_windows import IndexBatches
from cnnjax.data.pipeline import (BalancedSampler, ProcessShareSampler, SpectrogramSource,
                                  balanced_order, epoch_order, epoch_seed, train_loader)
from cnnjax.errors import ConfigError
from experiments import heartbeat_synthetic
from test_pipeline import AUGMENT, IMAGE, batches, tiny_config  # noqa: F401 (a fixture)

LABELS = np.array([0] * 12 + [1] * 4 + [2] * 2, np.int32)  # 18 records, 6 : 2 : 1


def source(labels=LABELS, frames=40):
    rng = np.random.default_rng(0)
    return SpectrogramSource([rng.uniform(-80, 0, (16, frames + i)).astype(np.float32)
                              for i in range(len(labels))], labels)


def test_balanced_order_draws_every_class_equally_and_its_records_uniformly():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 4, np.int32)
    order = balanced_order(labels, np.random.default_rng(0))
    assert len(order) == 64
    assert sorted(Counter(labels[order].tolist()).values()) == [21, 21, 22]
    np.testing.assert_array_equal(order, balanced_order(labels, np.random.default_rng(0)))
    # Over many epochs each of the rarest class's four records comes up equally often.
    rng = np.random.default_rng(1)
    draws = Counter(np.concatenate([balanced_order(labels, rng) for _ in range(300)]).tolist())
    rare = [draws[i] for i in range(60, 64)]
    assert sum(rare) == pytest.approx(300 * 64 / 3, abs=300)
    assert stats.chisquare(rare).pvalue > 1e-3


def test_host_path_epochs_are_balanced_seeded_and_resume_mid_epoch():
    data = source()

    def loader(epoch):
        return train_loader(data, IMAGE, AUGMENT, batch_size=3, seed=5, epoch=epoch,
                            sampling="balanced")

    epoch = batches(loader(1))
    assert len(epoch) == 6
    labels = np.concatenate([b[1] for b in epoch])
    assert Counter(labels.tolist()) == {0: 6, 1: 6, 2: 6}
    np.testing.assert_array_equal(labels, LABELS[BalancedSampler(LABELS, epoch_seed(5, 1)).order])
    assert not np.array_equal(labels, np.concatenate([b[1] for b in batches(loader(2))]))
    iterator = iter(loader(1))
    next(iterator), next(iterator)
    resumed = iter(loader(1))
    resumed.set_state(iterator.get_state())
    for (a, la), (b, lb) in zip(batches(resumed), epoch[2:], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_balanced_process_shares_make_up_the_single_process_batches():
    whole = ProcessShareSampler(epoch_order(LABELS, 5, "balanced"), len(LABELS), 6)
    shares = [ProcessShareSampler(epoch_order(LABELS, 5, "balanced"), len(LABELS), 6,
                                  process_index=p, process_count=3) for p in range(3)]
    for batch in range(3):
        expected = [whole[batch * 6 + i] for i in range(6)]
        got = [shares[p][batch * 2 + i] for p in range(3) for i in range(2)]
        assert [m.record_key for m in got] == [m.record_key for m in expected]
        assert [m.rng.random() for m in got] == [m.rng.random() for m in expected]


def test_device_path_index_batches_are_balanced_and_resume():
    data = source()
    epoch = list(IndexBatches(data, 6, seed=3, epoch=2, balanced=True))
    labels = np.concatenate([b["label"] for b in epoch])
    assert Counter(labels.tolist()) == {0: 6, 1: 6, 2: 6}
    np.testing.assert_array_equal(labels, LABELS[np.concatenate([b["index"] for b in epoch])])
    iterator = IndexBatches(data, 6, seed=3, epoch=2, balanced=True)
    next(iterator)
    rest = list(IndexBatches(data, 6, seed=3, epoch=2, state=iterator.get_state(),
                             balanced=True))
    for a, b in zip(rest, epoch[1:], strict=True):
        for key in ("index", "label", "seed"):
            np.testing.assert_array_equal(a[key], b[key])
    shares = [list(IndexBatches(data, 6, seed=3, epoch=2, process_index=p, process_count=2,
                                balanced=True)) for p in range(2)]
    for step, batch in enumerate(epoch):
        np.testing.assert_array_equal(
            np.concatenate([shares[0][step]["index"], shares[1][step]["index"]]),
            batch["index"])


@pytest.mark.parametrize("on_device", [False, True])
def test_the_config_reaches_either_input_path(tiny_config, on_device):  # noqa: F811
    tiny_config.data.sampling = "balanced"
    tiny_config.augment.on_device = on_device
    datasets = get_datasets(tiny_config)
    counts = Counter(np.concatenate([b["label"] for b in datasets.train_batches(1)]).tolist())
    train_counts = Counter(datasets.train.labels.tolist())
    assert len(set(train_counts.values())) > 1  # the training split itself is not balanced
    assert max(counts.values()) - min(counts.values()) <= 2  # the dropped remainder at most
    assert sum(counts.values()) == datasets.steps_per_epoch * tiny_config.batch_size


@pytest.mark.parametrize("overrides, message", [
    ({"loss.class_weights": "balanced"}, "class_weights='none'"),
    ({"loss.class_weights": "none", "loss.logit_adjustment": 1.0}, "logit_adjustment=0"),
    ({"loss.class_weights": "none", "loss.name": "mse"}, "regression loss 'mse'"),
])
def test_balanced_sampling_refuses_a_second_correction_and_regression(overrides, message):
    config = heartbeat_synthetic.get_config()
    config.data.sampling = "balanced"
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
    config.loss.name, config.loss.class_weights, config.loss.logit_adjustment = (
        "softmax_cross_entropy", "none", 0.0)
    validate_config(config)
