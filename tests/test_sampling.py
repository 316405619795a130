"""Balanced sampling (`config.data.sampling='balanced'`) and batches of one group each
('by_group') on both input paths."""

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from cnnjax.config import validate_config
from cnnjax.data import get_datasets
from cnnjax.data.device_windows import IndexBatches
from cnnjax.data.pipeline import (BalancedSampler, GroupBatchSampler, ProcessShareSampler,
                                  SpectrogramSource, balanced_order, epoch_order, epoch_seed,
                                  group_batch_order, train_loader)
from cnnjax.errors import ConfigError
from experiments import heartbeat_synthetic
from test_pipeline import (AUGMENT, IMAGE, batches, patient_folder,  # noqa: F401
                           tiny_config)

LABELS = np.array([0] * 12 + [1] * 4 + [2] * 2, np.int32)  # 18 records, 6 : 2 : 1


def source(labels=LABELS, frames=40, groups=None):
    rng = np.random.default_rng(0)
    return SpectrogramSource([rng.uniform(-80, 0, (16, frames + i)).astype(np.float32)
                              for i in range(len(labels))], labels, groups=groups)


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
    epoch = list(IndexBatches(data, 6, seed=3, epoch=2, sampling="balanced"))
    labels = np.concatenate([b["label"] for b in epoch])
    assert Counter(labels.tolist()) == {0: 6, 1: 6, 2: 6}
    np.testing.assert_array_equal(labels, LABELS[np.concatenate([b["index"] for b in epoch])])
    iterator = IndexBatches(data, 6, seed=3, epoch=2, sampling="balanced")
    next(iterator)
    rest = list(IndexBatches(data, 6, seed=3, epoch=2, state=iterator.get_state(),
                             sampling="balanced"))
    for a, b in zip(rest, epoch[1:], strict=True):
        for key in ("index", "label", "seed"):
            np.testing.assert_array_equal(a[key], b[key])
    shares = [list(IndexBatches(data, 6, seed=3, epoch=2, process_index=p, process_count=2,
                                sampling="balanced")) for p in range(2)]
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


def test_group_batches_hold_one_group_each_in_proportion_to_its_size():
    groups = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 12 + ["d"] * 3)
    order = group_batch_order(groups, 8, np.random.default_rng(0))
    # 95 records, 11 batches of 8; shares 5.79, 3.47, 1.39, 0.35: floors 5, 3, 1, 0 and the
    # two largest remainders (a's, b's) one more each.
    assert len(order) == 88
    batch_groups = [set(groups[batch]) for batch in order.reshape(11, 8)]
    assert all(len(g) == 1 for g in batch_groups)
    assert Counter(g.pop() for g in batch_groups) == {"a": 6, "b": 4, "c": 1}
    counts = Counter(order.tolist())
    assert len([i for i in counts if groups[i] == "a"]) == 48 == 6 * 8  # enough: no repeats
    assert len([i for i in counts if groups[i] == "b"]) == 30  # 32 picks: all 30, two twice
    assert sorted(counts[i] for i in counts if groups[i] == "b") == [1] * 28 + [2] * 2
    np.testing.assert_array_equal(order, group_batch_order(groups, 8, np.random.default_rng(0)))
    assert not np.array_equal(order, group_batch_order(groups, 8, np.random.default_rng(1)))
    # A group smaller than its one batch repeats its records, each once or twice.
    small = np.array(["a"] * 20 + ["b"] * 5)  # shares 2.4 and 0.6: a 2 batches, b 1
    order = group_batch_order(small, 8, np.random.default_rng(0))
    b_counts = Counter(order[small[order] == "b"].tolist())
    assert sorted(b_counts) == [20, 21, 22, 23, 24] and set(b_counts.values()) <= {1, 2}


GROUPS = np.array([f"g{label}" for label in LABELS])  # 12 : 4 : 2 records


def test_host_path_group_batches_are_seeded_and_shared_between_processes():
    data = source(groups=GROUPS)
    epoch = batches(train_loader(data, IMAGE, AUGMENT, batch_size=3, seed=5, epoch=1,
                                 sampling="by_group"))
    labels = np.stack([b[1] for b in epoch])
    assert labels.shape == (6, 3) and (labels == labels[:, :1]).all()  # one group a batch
    assert Counter(labels[:, 0].tolist()) == {0: 4, 1: 1, 2: 1}  # shares 4, 1.33, 0.67
    np.testing.assert_array_equal(
        labels.ravel(), LABELS[GroupBatchSampler(GROUPS, 3, epoch_seed(5, 1)).order])
    whole = ProcessShareSampler(epoch_order(LABELS, 5, "by_group", GROUPS, 6), len(LABELS), 6)
    shares = [ProcessShareSampler(epoch_order(LABELS, 5, "by_group", GROUPS, 6), len(LABELS),
                                  6, process_index=p, process_count=2) for p in range(2)]
    for batch in range(3):
        expected = [whole[batch * 6 + i].record_key for i in range(6)]
        assert [shares[p][batch * 3 + i].record_key for p in range(2) for i in range(3)] \
            == expected
        assert len(set(GROUPS[expected])) == 1


def test_device_path_group_batches_hold_one_group_and_resume():
    data = source(groups=GROUPS)
    epoch = list(IndexBatches(data, 3, seed=3, epoch=2, sampling="by_group"))
    assert len(epoch) == 6
    assert all(len(set(GROUPS[b["index"]])) == 1 for b in epoch)
    iterator = IndexBatches(data, 3, seed=3, epoch=2, sampling="by_group")
    next(iterator)
    rest = list(IndexBatches(data, 3, seed=3, epoch=2, state=iterator.get_state(),
                             sampling="by_group"))
    for a, b in zip(rest, epoch[1:], strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])


@pytest.mark.parametrize("on_device", [False, True])
def test_the_recordings_groups_reach_either_input_path(tmp_path, on_device):
    """Six patients of three recordings, one class each: batches of three drawn by patient
    hold one class each (shuffled, four such batches would almost never happen)."""
    patient_folder(tmp_path / "patients")
    config = heartbeat_synthetic.get_config()
    config.data.name, config.data.csv = "audio_folder", "labels.csv"
    config.data.manual_dir, config.data.data_dir = str(tmp_path / "patients"), str(tmp_path)
    config.data.image_size, config.data.crop_seconds, config.batch_size = (32, 32), 1.0, 3
    config.data.val_groups = ("p0", "p1")
    config.data.sampling, config.augment.on_device = "by_group", on_device
    datasets = get_datasets(config)
    assert sorted(set(datasets.train.groups)) == ["p2", "p3", "p4", "p5"]
    labels = [b["label"].tolist() for b in datasets.train_batches(1)]
    assert len(labels) == 4 and all(len(set(batch)) == 1 for batch in labels)
    assert sorted(batch[0] for batch in labels) == [0, 0, 1, 2]  # p2..p5: extrastole, normal, murmur, extrastole
    config.data.val_groups = ("p0", "p1", "p2", "p3", "p4")
    with pytest.raises(ConfigError, match="a single group"):
        get_datasets(config)
