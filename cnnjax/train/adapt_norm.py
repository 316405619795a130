"""Test-time BatchNorm adaptation (AdaBN, Li et al., 2016): before evaluating, every
BatchNorm layer's running statistics are re-estimated on the validation inputs, labels
unused, so a network trained on one recording chain normalises a new one by that chain's own
statistics. It is the cheapest answer to a domain shift (a new stethoscope, a new clinic)
that needs no labels from the new domain, only a batch of its recordings.

`config.adapt_batch_norm=True` applies it to every evaluation of a run (each epoch's, the
final report, `--mode=eval`, each cv fold on its own validation fold) and to `--mode=predict`
(adapted to the recordings it is given, so give it a batch of them). The checkpoints keep the
statistics training produced; only the evaluated copy is adapted.

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


def shuffled_batches(windows: Iterable[np.ndarray], batch_size: int, multiple: int = 1,
                     seed: int = 0) -> Iterator[np.ndarray]:
    """The windows of every array in `windows`, in turn, in batches of `batch_size`,
    shuffled within runs of `SHUFFLE_BATCHES` batches; the one short batch at the end is
    cut to a multiple of `multiple` (the device count) and dropped if that leaves nothing."""
    rng = np.random.default_rng(seed)
    run_size = batch_size * SHUFFLE_BATCHES

    def batches_of(run: np.ndarray) -> Iterator[np.ndarray]:
        run = run[rng.permutation(len(run))]
        for start in range(0, len(run), batch_size):
            part = run[start:start + batch_size]
            part = part[:len(part) - len(part) % multiple]
            if len(part):
                yield part

    pending: list[np.ndarray] = []
    held = 0
    for array in windows:
        pending.append(np.asarray(array))
        held += len(pending[-1])
        if held >= run_size:
            joined = np.concatenate(pending)
            yield from batches_of(joined[:run_size])
            pending, held = [joined[run_size:]], held - run_size
    if held:
        yield from batches_of(np.concatenate(pending))


def validation_windows(datasets: Datasets) -> Iterator[np.ndarray]:
    """Every window evaluation sees, one evaluation batch at a time, padding dropped and
    labels unused."""
    for batch in datasets.eval_batches():
        yield np.asarray(batch["image"])[np.asarray(batch["mask"])]


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
        raise ValueError("no inputs to estimate BatchNorm statistics from")
    return jax.tree.map(lambda x: (x / count).astype(np.float32), total)


def adapted(state: TrainState, windows: Iterable[np.ndarray], parallel: Any,
            batch_size: int) -> TrainState:
    """`state` (placed by `parallel`, a `cnnjax.parallel.DataParallel`) with its BatchNorm
    statistics re-estimated on `windows` (arrays of model inputs) in global batches of
    `batch_size`. A model without BatchNorm comes back as it was."""
    if not jax.tree.leaves(state.batch_stats):
        return state
    stats = average_statistics(
        shuffled_batches(windows, batch_size, multiple=jax.device_count()),
        lambda images: parallel.norm_statistics(state, {"image": images}))
    return state.replace(batch_stats=parallel.place(stats))
