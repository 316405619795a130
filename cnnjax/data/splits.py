"""Train/validation splits and k-fold assignment: stratified by class, optionally grouped
(no patient or speaker on both sides), seeded. Only numpy's PCG64 generator and stable sorts
are used, so a seed gives the same split on every run and machine."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, val)`: each class split `1 - val_fraction : val_fraction`, seeded.

    Every class with at least two examples lands on both sides.
    """
    _check_fraction(val_fraction)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = int(round(val_fraction * members.size))
        if members.size >= 2:
            num_val = min(max(num_val, 1), members.size - 1)
        val.extend(members[:num_val])
        train.extend(members[num_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}.")


def _group_counts(labels: np.ndarray, groups: Sequence[str], rng: np.random.Generator
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Members and per-class counts of each group, in a seeded order, larger groups first."""
    names = sorted(set(groups))
    names = [names[i] for i in rng.permutation(len(names))]
    position = {name: i for i, name in enumerate(names)}
    group_of = np.array([position[g] for g in groups])
    num_classes = int(labels.max()) + 1
    members = [np.flatnonzero(group_of == i) for i in range(len(names))]
    counts = np.stack([np.bincount(labels[m], minlength=num_classes) for m in members])
    order = np.argsort(-counts.sum(axis=1), kind="stable")
    return [members[i] for i in order], counts[order]


def group_split(labels: Sequence[int], groups: Sequence[str], val_fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, val)` with every group wholly on one side and each class's share of
    validation examples as close to `val_fraction` as whole groups allow (greedy)."""
    _check_fraction(val_fraction)
    labels = np.asarray(labels)
    members, counts = _group_counts(labels, groups, np.random.default_rng(seed))
    target = val_fraction * np.bincount(labels).astype(float)
    in_val = np.zeros_like(target)
    val: list[int] = []
    for group_members, group_counts in zip(members, counts):
        if np.abs(target - in_val - group_counts).sum() < np.abs(target - in_val).sum():
            in_val += group_counts
            val.extend(group_members)
    val_set = set(val)
    train = [i for i in range(labels.size) if i not in val_set]
    return np.array(train, dtype=np.int64), np.sort(np.array(val, dtype=np.int64))


def assign_folds(labels: Sequence[int], num_folds: int, seed: int,
                 groups: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0..num_folds-1) of every example: stratified, and with `groups` no group in
    two folds. Groups go, larger first, to the fold whose class counts they bring closest to
    an equal share."""
    labels = np.asarray(labels)
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}.")
    groups = [str(i) for i in range(labels.size)] if groups is None else list(groups)
    members, counts = _group_counts(labels, groups, np.random.default_rng(seed))
    target = np.bincount(labels).astype(float) / num_folds
    fold_counts = np.zeros((num_folds, target.size))
    folds = np.empty(labels.size, dtype=np.int64)
    for group_members, group_counts in zip(members, counts):
        gain = (np.abs(target - fold_counts - group_counts).sum(axis=1)
                - np.abs(target - fold_counts).sum(axis=1))
        best = int(np.lexsort((np.arange(num_folds), fold_counts.sum(axis=1), gain))[0])
        fold_counts[best] += group_counts
        folds[group_members] = best
    return folds


def leave_groups_out(groups: Sequence[str], val_groups: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, val)` with exactly the members of `val_groups` validating: a model
    judged on a source (a hospital, a stethoscope) it never saw in training."""
    groups = np.asarray([str(g) for g in groups])
    unknown = sorted(set(val_groups) - set(groups.tolist()))
    if unknown:
        raise ValueError(f"validation groups {unknown} are not among the data's groups "
                         f"{sorted(set(groups.tolist()))}.")
    in_val = np.isin(groups, list(val_groups))
    if in_val.all():
        raise ValueError(f"validation groups {list(val_groups)} leave nothing to train on.")
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def split_indices(labels: Sequence[int], groups: Sequence[str] | None, *, val_fraction: float,
                  seed: int, num_folds: int = 0, fold: int = 0, val_groups: Sequence[str] = ()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The split an experiment asks for: the members of `val_groups` as validation when
    given, else fold `fold` of `num_folds` when `num_folds` >= 2, else a `val_fraction`
    hold-out; grouped when `groups` is given."""
    if val_groups:
        if groups is None:
            raise ValueError("validation groups need the data's groups (a 'group' column).")
        return leave_groups_out(groups, val_groups)
    if num_folds >= 2:
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must lie in [0, {num_folds}), got {fold}.")
        folds = assign_folds(labels, num_folds, seed, groups)
        return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    if groups is not None:
        return group_split(labels, groups, val_fraction, seed)
    return stratified_split(labels, val_fraction, seed)
