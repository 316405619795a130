"""Test-time BatchNorm adaptation (AdaBN, Li et al., 2016): before evaluating, every
BatchNorm layer's running statistics are re-estimated on the validation inputs, labels
unused, so a network trained on one recording chain normalises a new one by that chain's own
statistics. It is the cheapest answer to a domain shift (a new stethoscope, a new clinic)
that needs no labels from the new domain, only a batch of its recordings.

`config.adapt_batch_norm=True` applies it to every evaluation of a run (each epoch's, the
final report, `--mode=eval`, each cv fold on its own validation fold). The checkpoints keep
the statistics training produced; only the evaluated copy is adapted.

The estimate is torch's `torch.optim.swa_utils.update_bn`: train-mode passes over the inputs,
each layer's mean and unbiased variance averaged over the batches (here weighted by batch
size, the same when the batches are equal). Deeper layers see inputs normalised by batch
statistics, so batches must mix recordings: windows are shuffled within runs of
`SHUFFLE_BATCHES` batches, which bounds the memory held to that many evaluation batches.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from cnnjax.data.contract import Datasets
from cnnjax.train.state import TrainState

SHUFFLE_BATCHES = 8


def validation_windows(datasets: Datasets, batch_size: int, multiple: int = 1,
                       seed: int = 0) -> Iterator[np.ndarray]:
    """Every window evaluation sees (padding dropped, labels unused) in batches of
    `batch_size`, shuffled within runs of `SHUFFLE_BATCHES` batches; the one short batch at
    the end is cut to a multiple of `multiple` (the device count) and dropped if that
    leaves nothing."""
    rng = np.random.default_rng(seed)
    run_size = batch_size * SHUFFLE_BATCHES

    def shuffled_batches(windows: np.ndarray) -> Iterator[np.ndarray]:
        windows = windows[rng.permutation(len(windows))]
        for start in range(0, len(windows), batch_size):
            part = windows[start:start + batch_size]
            part = part[:len(part) - len(part) % multiple]
            if len(part):
                yield part

    pending: list[np.ndarray] = []
    held = 0
    for batch in datasets.eval_batches():
        pending.append(np.asarray(batch["image"])[np.asarray(batch["mask"])])
        held += len(pending[-1])
        if held >= run_size:
            windows = np.concatenate(pending)
            yield from shuffled_batches(windows[:run_size])
            pending, held = [windows[run_size:]], held - run_size
    if held:
        yield from shuffled_batches(np.concatenate(pending))


def average_statistics(batches: Iterable[np.ndarray],
                       statistics_of: Callable[[np.ndarray], Any]) -> Any:
    """The batch-size-weighted mean over `batches` of `statistics_of(batch)` (a pytree of
    every BatchNorm layer's batch mean and variance), in float64 until the end."""
    total, count = None, 0
    for batch in batches:
        stats = jax.tree.map(lambda x: np.asarray(x, np.float64) * len(batch),
                             statistics_of(batch))
        total = stats if total is None else jax.tree.map(np.add, total, stats)
        count += len(batch)
    if total is None:
        raise ValueError("no validation windows to estimate BatchNorm statistics from")
    return jax.tree.map(lambda x: (x / count).astype(np.float32), total)


def adapted_to_validation(state: TrainState, datasets: Datasets, parallel: Any,
                          batch_size: int) -> TrainState:
    """`state` (placed by `parallel`, a `cnnjax.parallel.DataParallel`) with its BatchNorm
    statistics re-estimated on `datasets`' validation windows in global batches of
    `batch_size`. A model without BatchNorm comes back as it was."""
    if not jax.tree.leaves(state.batch_stats):
        return state
    stats = average_statistics(
        validation_windows(datasets, batch_size, multiple=jax.device_count()),
        lambda images: parallel.norm_statistics(state, {"image": images}))
    return state.replace(batch_stats=parallel.place(stats))
