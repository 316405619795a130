"""The learning-rate range test (Smith 2015, fastai's `lr_find`): train for a few steps with
the learning rate growing exponentially, watch the loss, and stop when it diverges.

The state is a throwaway copy: the sweep never touches a run's checkpoints. `--mode=lr_find`
(`find_learning_rate`) runs it on a run's first phase.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import jax
import ml_collections
import numpy as np
import optax
from matplotlib.figure import Figure

from cnnjax import report as reporting
from cnnjax.logs import logger
from cnnjax.parallel import DataParallel
from cnnjax.progress import progress_bar
from cnnjax.train.run import is_chief, setup_run
from cnnjax.train.state import TrainState
from cnnjax.train.warm_start import initial_state

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


def lr_find(state: TrainState, batches: Iterable[dict[str, Any]], parallel: DataParallel, *,
            start: float = 1e-7, end: float = 10.0, num_steps: int = 100,
            stop_factor: float = 4.0, beta: float = 0.98) -> LrFindResult:
    """Sweeps the learning rate from `start` to `end` over `num_steps` steps of `state`'s own
    optimizer, which must be built with a learning rate of 1 (the sweep's rate multiplies its
    updates: Adam's update is linear in the rate, so this equals Adam at that rate), through
    `parallel`'s train step (its loss, its devices). Stops once the smoothed loss exceeds
    `stop_factor` times its minimum, or is not finite."""
    rates = exponential_learning_rates(start, end, num_steps)
    sweep = optax.chain(state.tx, optax.scale_by_schedule(
        lambda count: jax.numpy.asarray(rates)[jax.numpy.minimum(count, num_steps - 1)]))
    # A copy: the compiled step donates its input, and the caller's state must survive.
    state = jax.tree.map(jax.numpy.copy, state)
    state = parallel.place(state.replace(tx=sweep, opt_state=sweep.init(state.params)))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    with progress_bar(num_steps, "lr_find", "step") as bar:
        for step, batch in zip(range(num_steps), batches):
            state, metrics = parallel.train_step(state, parallel.put_train_batch(batch))
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


def find_learning_rate(config: Any, workdir: str | Path) -> LrFindResult:
    """`--mode=lr_find`: the learning-rate range test on the first phase's setup (what is
    frozen stays frozen), from the weights a fresh run would start with. Writes
    `lr_find.png` and `lr_find.json` and prints the suggestion; no checkpoint is touched."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    unit = ml_collections.ConfigDict(config.to_dict())
    unit.optimizer.learning_rate, unit.optimizer.schedule = 1.0, "constant"
    unit.fine_tune.unfreeze_after = 0
    run, state = setup_run(unit)
    state, origin = initial_state(config, state, run.num_outputs, run.datasets.input_shape[-1])
    logger.info(f"{origin}; sweeping the learning rate from {config.lr_find.start:g} to "
                f"{config.lr_find.end:g} over at most {config.lr_find.num_steps} steps")

    def batches() -> Iterator[dict[str, Any]]:
        for epoch in itertools.count(1):
            yield from run.datasets.train_batches(epoch)

    result = lr_find(state, batches(), run.parallel, start=config.lr_find.start,
                     end=config.lr_find.end, num_steps=config.lr_find.num_steps)
    if is_chief():
        plot_lr_find(result, workdir / "lr_find.png")
        reporting.write_json(workdir / "lr_find.json", result.as_dict())
    stopped = "stopped at divergence" if result.diverged else "did not diverge"
    print(f"lr_find: {len(result.learning_rates)} steps, {stopped}; suggested learning rate "
          f"{result.suggestion:.2e} ({result.rule}). Plot: {workdir / 'lr_find.png'}",
          flush=True)
    return result
