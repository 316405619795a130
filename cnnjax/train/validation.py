"""Validation per recording: the model's outputs averaged over each recording's windows,
then the task's loss, metrics and confusion matrix over recordings. Used after every epoch
and by `--mode=eval`."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cnnjax.data.datasets import Datasets
from cnnjax.progress import progress_bar
from cnnjax.train.state import TrainState
from cnnjax.train.tasks import Evaluation, Task


def evaluate(state: TrainState, datasets: Datasets,
             eval_batch: Callable[[TrainState, Any], dict[str, np.ndarray]],
             task: Task) -> Evaluation:
    """Per validation recording, in validation order: `task.window_outputs` (softmax
    probabilities, hinge scores or predicted values) averaged over its windows
    (`config.data.eval_windows`); the mean over recordings of their loss (the negative
    log-likelihood of the averaged probabilities for the cross-entropies), and the confusion
    matrix of a classifier. `eval_batch` runs `eval_step` on one batch and returns numpy
    (`DataParallel.evaluate_batch`, for a state it has placed)."""
    count = len(datasets.val)
    sums = np.zeros((count, task.window_width(len(datasets.class_names))), np.float64)
    windows = np.zeros(count, np.int64)
    with progress_bar(count, "evaluating", "recording", leave=False) as bar:
        for batch in datasets.eval_batches():
            out = eval_batch(state, batch)
            mask = np.asarray(out["mask"])
            records = batch["record"][mask]
            np.add.at(sums, records, np.asarray(task.window_outputs(
                np.asarray(out["logits"][mask], np.float32)), np.float64))
            np.add.at(windows, records, 1)
            if records.size:  # windows come in recording order: those before are done
                bar.update(int(records.max()) + 1 - bar.n)
    return task.evaluation(sums / windows[:, None], datasets)
