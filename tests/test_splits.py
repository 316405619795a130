import warnings
from collections import Counter

import numpy as np
import pytest

from cnnjax.data import assign_folds, group_split, split_indices, stratified_split


def imbalanced(seed=0):
    """60 recordings of 20 patients, 3 classes, patients holding 1-5 recordings."""
    rng = np.random.default_rng(seed)
    groups = [f"p{i}" for i in rng.integers(0, 20, 60)]
    labels = rng.choice(3, 60, p=[0.6, 0.3, 0.1])
    return labels, groups


def test_group_split_keeps_every_group_on_one_side_near_the_ratio():
    labels, groups = imbalanced()
    train, val = group_split(labels, groups, 0.3, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert 0.2 <= len(val) / 60 <= 0.4
    for label in range(3):  # every class on the validation side
        assert (labels[val] == label).any()


def test_folds_partition_the_data_stratified_and_grouped():
    labels, groups = imbalanced(1)
    folds = assign_folds(labels, 5, seed=0, groups=groups)
    for group in set(groups):
        assert len({folds[i] for i, g in enumerate(groups) if g == group}) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() >= 6 and sizes.max() <= 18
    plain = assign_folds(labels, 5, seed=0)  # no groups: every class spread evenly
    for label, total in Counter(labels.tolist()).items():
        per_fold = np.bincount(plain[labels == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (label, per_fold)


def test_split_indices_picks_the_fold_and_checks_it():
    labels, groups = imbalanced(2)
    folds = assign_folds(labels, 4, seed=3, groups=groups)
    train, val = split_indices(labels, groups, val_fraction=0.3, seed=3, num_folds=4, fold=2)
    assert val.tolist() == np.flatnonzero(folds == 2).tolist()
    assert train.tolist() == np.flatnonzero(folds != 2).tolist()
    with pytest.raises(ValueError, match="fold must lie in"):
        split_indices(labels, None, val_fraction=0.3, seed=0, num_folds=4, fold=4)


def test_splits_are_pinned_for_a_seed():
    # The split of a seed must never change between runs, machines or versions: these are
    # the indices numpy's PCG64 gives for seed 0; a change here changes every published split.
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    train, val = stratified_split(labels, 0.3, seed=0)
    assert val.tolist() == PINNED_VAL
    groups = ["a", "a", "b", "c", "c", "d", "e", "e", "f", "g"]
    assert assign_folds(labels, 3, seed=0, groups=groups).tolist() == PINNED_FOLDS


PINNED_VAL = [2, 4, 7, 8]
PINNED_FOLDS = [2, 2, 1, 0, 0, 0, 1, 1, 0, 2]


def test_named_groups_validate_and_every_other_group_trains():
    labels = [0, 1, 0, 1, 0, 1, 1]
    groups = ["a", "a", "b", "c", "c", "b", "a"]
    train, val = split_indices(labels, groups, val_fraction=0.3, seed=0, num_folds=5, fold=1,
                               val_groups=("a",))
    assert val.tolist() == [0, 1, 6] and train.tolist() == [2, 3, 4, 5]
    train, val = split_indices(labels, groups, val_fraction=0.3, seed=0, val_groups=("b", "c"))
    assert val.tolist() == [2, 3, 4, 5] and train.tolist() == [0, 1, 6]
    with pytest.raises(ValueError, match=r"\['d'\] are not among the data's groups"):
        split_indices(labels, groups, val_fraction=0.3, seed=0, val_groups=("d",))
    with pytest.raises(ValueError, match="leave nothing to train on"):
        split_indices(labels, groups, val_fraction=0.3, seed=0, val_groups=("a", "b", "c"))
    with pytest.raises(ValueError, match="need the data's groups"):
        split_indices(labels, None, val_fraction=0.3, seed=0, val_groups=("a",))


def fold_of(splitter, labels, groups=None) -> np.ndarray:
    """The test fold of every example under a scikit-learn splitter."""
    folds = np.empty(len(labels), np.int64)
    with warnings.catch_warnings():  # 'the least populated class has fewer members than folds'
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[test] = fold
    return folds


def class_spread(folds, labels, num_folds) -> float:
    """How far any fold's count of any class strays from an equal share."""
    share = np.bincount(labels) / num_folds
    return max(np.abs(np.bincount(labels[folds == f], minlength=share.size) - share).max()
               for f in range(num_folds))


@pytest.mark.parametrize("seed", range(4))
def test_stratified_folds_and_hold_out_share_scikit_learns_class_counts(seed):
    """Another seeded shuffle puts other examples in each fold, but stratification fixes how
    many of each class a fold gets: as many as scikit-learn's StratifiedKFold gives, and a
    hold-out within one of train_test_split's per class."""
    model_selection = pytest.importorskip("sklearn.model_selection")
    labels, _ = imbalanced(seed)
    for k in (3, 5):
        ours = assign_folds(labels, k, seed=seed)
        reference = fold_of(model_selection.StratifiedKFold(k, shuffle=True, random_state=seed),
                            labels)
        for label in range(3):
            assert sorted(np.bincount(ours[labels == label], minlength=k)) == \
                sorted(np.bincount(reference[labels == label], minlength=k)), (k, label)
    _, val = stratified_split(labels, 0.3, seed=seed)
    _, reference_val = model_selection.train_test_split(
        np.arange(labels.size), test_size=0.3, stratify=labels, random_state=seed)
    difference = np.bincount(labels[val], minlength=3) - np.bincount(labels[reference_val],
                                                                     minlength=3)
    assert np.abs(difference).max() <= 1, difference


def test_grouped_folds_are_group_k_folds_stratified_at_least_as_well_as_scikit_learns():
    """As with GroupKFold, every example is validated once and no group spans two folds; over
    several data sets, the folds' class counts stray from an equal share no more than those
    of scikit-learn's StratifiedGroupKFold."""
    model_selection = pytest.importorskip("sklearn.model_selection")
    ours, reference = [], []
    for seed in range(8):
        labels, groups = imbalanced(seed)
        folds = assign_folds(labels, 5, seed=seed, groups=groups)
        assert sorted(set(folds.tolist())) == list(range(5))
        for group in set(groups):
            assert len(set(folds[np.asarray(groups) == group].tolist())) == 1, group
        ours.append(class_spread(folds, labels, 5))
        splitter = model_selection.StratifiedGroupKFold(5, shuffle=True, random_state=seed)
        reference.append(class_spread(fold_of(splitter, labels, groups), labels, 5))
    assert np.mean(ours) <= np.mean(reference), (ours, reference)
