"""Where a run stands and what its steps measured: the progress saved with every checkpoint,
the step metrics summed over an epoch, and the step-level window TensorBoard logs."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import numpy as np

from cnnjax.train.losses import Loss

@dataclass
class Progress:
    """Where the run stands, beyond the train state: saved with every checkpoint as JSON."""
    epoch: int = 1  # the epoch in progress (or next to start)
    iterator_state: str | None = None  # grain's state within `epoch`; None: at its start
    sums: dict[str, float] = field(default_factory=dict)  # step metrics summed over the
    #                                                       steps of `epoch` so far
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch done

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Progress:
        fields = {k: extra[k] for k in cls.__dataclass_fields__ if k in extra}
        if "sums" not in extra:  # saved when only the loss and accuracy were summed
            fields["sums"] = {"loss": extra["loss_sum"], "accuracy": extra["accuracy_sum"]}
        return cls(**fields)

    def means(self) -> dict[str, float]:
        """The step metrics' means over the steps of `epoch` so far."""
        return {name: total / self.steps for name, total in self.sums.items()}

    def extra(self, config: Any, class_names: tuple[str, ...], loss: Loss) -> dict[str, Any]:
        """The checkpoint's JSON record; the loss (with a regression's target scaling) lets
        prediction rebuild the model's outputs without the training data."""
        return {**self.__dict__, "config": config.to_json(), "class_names": list(class_names),
                "loss": asdict(loss)}


class RunningMetrics:
    """The steps' metrics since the last flush, kept on the devices: holding them does not
    wait for a step, so steps queue up back to back between flushes."""

    def __init__(self) -> None:
        self.pending: list[dict[str, jax.Array]] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self.pending.append(metrics)

    def flush_into(self, progress: Progress) -> list[float]:
        """Adds the steps' metrics to `progress` one step at a time (waiting for the
        devices), so its sums are the same wherever flushes fell: a resumed run flushes at
        other steps than an uninterrupted one. Returns the flushed steps' losses."""
        steps = jax.device_get(self.pending)
        for metrics in steps:
            for name, value in metrics.items():
                progress.sums[name] = progress.sums.get(name, 0.0) + float(value)
        self.pending = []
        return [float(m["loss"]) for m in steps]


class StepLog:
    """The training steps since TensorBoard's last step-level log: their losses and the wall
    time they took (compilation in a launch's first window, validation in one that spans an
    epoch's end), for the scalars written every `config.log_every_steps`."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size  # global: examples per step over every process
        self.losses: list[float] = []
        self.since = time.perf_counter()

    def scalars(self, learning_rate: float) -> dict[str, float]:
        """The window's mean loss and examples per second, and the step's learning rate;
        starts the next window."""
        now = time.perf_counter()
        values = {"step/train_loss": float(np.mean(self.losses)),
                  "step/learning_rate": learning_rate,
                  "step/examples_per_second":
                      len(self.losses) * self.batch_size / (now - self.since)}
        self.losses, self.since = [], now
        return values
