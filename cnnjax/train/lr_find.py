"""The learning-rate range test (Smith 2015, fastai's `lr_find`): train for a few steps with
the learning rate growing exponentially, watch the loss, and stop when it diverges.

The state is a throwaway copy: the sweep never touches a run's checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np
import optax
from matplotlib.figure import Figure

from cnnjax.progress import progress_bar
from cnnjax.train.state import TrainState
from cnnjax.train.steps import Loss, jit_train_step

SUGGESTION_RULE = ("valley: half-way between the first and second third of the longest "
                   "stretch over which the smoothed loss keeps falling")


@dataclass(frozen=True)
class LrFindResult:
    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]  # exponential moving average, debiased (fastai's beta 0.98)
    diverged: bool  # stopped before the end because the loss exploded
    suggestion: float
    rule: str = SUGGESTION_RULE

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def exponential_learning_rates(start: float, end: float, num_steps: int) -> np.ndarray:
    return start * (end / start) ** (np.arange(num_steps) / max(num_steps - 1, 1))


def suggest(learning_rates: list[float], smoothed: list[float]) -> float:
    """fastai's 'valley' rule: the longest run over which the smoothed loss keeps falling
    (a longest decreasing subsequence), and the learning rate half-way between its first and
    second third — well into the descent, safely before the minimum."""
    n = len(smoothed)
    if n == 0:
        raise ValueError("lr_find recorded no finite loss; lower config.lr_find.start.")
    run_length = [1] * n  # longest decreasing subsequence ending at i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j]:
                run_length[i] = max(run_length[i], run_length[j] + 1)
        if run_length[i] > run_length[best_end]:
            best_end = i
    start = best_end - run_length[best_end] + 1
    third = (best_end - start) / 3
    return float(learning_rates[start + int(third) + int(third / 2)])


def lr_find(state: TrainState, batches: Iterable[dict[str, Any]], *, start: float = 1e-7,
            end: float = 10.0, num_steps: int = 100, stop_factor: float = 4.0,
            loss: Loss = Loss(), beta: float = 0.98) -> LrFindResult:
    """Sweeps the learning rate from `start` to `end` over `num_steps` steps of `state`'s own
    optimizer, which must be built with a learning rate of 1 (the sweep's rate multiplies its
    updates: Adam's update is linear in the rate, so this equals Adam at that rate). Stops
    once the smoothed loss exceeds `stop_factor` times its minimum, or is not finite."""
    rates = exponential_learning_rates(start, end, num_steps)
    sweep = optax.chain(state.tx, optax.scale_by_schedule(
        lambda count: jax.numpy.asarray(rates)[jax.numpy.minimum(count, num_steps - 1)]))
    # A copy: the jitted step donates its input, and the caller's state must survive.
    state = jax.tree.map(jax.numpy.copy, state)
    state = state.replace(tx=sweep, opt_state=sweep.init(state.params))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    with progress_bar(num_steps, "lr_find", "step") as bar:
        for step, batch in zip(range(num_steps), batches):
            state, metrics = jit_train_step(state, batch, loss=loss)
            value = float(metrics["loss"])
            average = beta * average + (1 - beta) * value
            current = average / (1 - beta ** (step + 1))
            lrs.append(float(rates[step]))
            losses.append(value)
            smoothed.append(current)
            best = min(best, current)
            bar.set_postfix(lr=f"{rates[step]:.1e}", loss=f"{current:.3f}", refresh=False)
            bar.update()
            if not math.isfinite(current) or current > stop_factor * best:
                diverged = True
                break
    finite = [(lr, s) for lr, s in zip(lrs, smoothed) if math.isfinite(s)]
    suggestion = suggest([lr for lr, _ in finite], [s for _, s in finite])
    return LrFindResult(lrs, losses, smoothed, diverged, suggestion)


def plot_lr_find(result: LrFindResult, path: str | Path) -> None:
    """Smoothed loss against the learning rate (log scale), the suggestion marked. Drawn on a
    `matplotlib.figure.Figure`, as report.py draws, so the process's backend is left alone."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot(result.learning_rates, result.smoothed, label="smoothed loss")
    axes.plot(result.learning_rates, result.losses, alpha=0.3, label="loss")
    axes.axvline(result.suggestion, color="tab:red", linestyle="--",
                 label=f"suggested {result.suggestion:.2e}")
    axes.set_xscale("log")
    finite = [s for s in result.smoothed if math.isfinite(s)]
    if finite:
        axes.set_ylim(min(finite) - 0.1 * abs(min(finite)), 2 * finite[0] + 0.1)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
