"""What a run is made of, for every mode that builds one (training, `--mode=eval`,
`--mode=lr_find`): the data, the loss and its task, every phase's model, optimizer and
schedule (built once), the compiled steps on the devices, and the initial state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from cnnjax.checkpoint import Checkpoints
from cnnjax.config import validate_config
from cnnjax.data.datasets import Datasets, get_datasets
from cnnjax.parallel import DataParallel, check_batch_sizes
from cnnjax.train.adapt_norm import adapted, validation_windows
from cnnjax.train.losses import Loss
from cnnjax.train.recipe import PhaseSetup, make_loss, phase_setups
from cnnjax.train.resume import check_classes, check_resumable, config_changes
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.tasks import Evaluation, Task, task_for
from cnnjax.train.validation import evaluate


def is_chief() -> bool:
    """Only process 0 writes logs, metrics, plots and reports."""
    return jax.process_index() == 0


@dataclass(frozen=True)
class Run:
    """What stays fixed through a run: the data, the loss, the compiled steps and every
    phase's setup, in epoch order."""
    datasets: Datasets
    loss: Loss
    parallel: DataParallel
    phases: tuple[PhaseSetup, ...]
    eval_batch_size: int
    adapt_batch_norm: bool = False  # evaluate with statistics of the validation inputs

    @property
    def task(self) -> Task:
        return task_for(self.loss)

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs(len(self.datasets.class_names))

    def evaluate(self, state: TrainState) -> Evaluation:
        """`state` (placed) on the validation set; with `adapt_batch_norm` its BatchNorm
        statistics re-estimated on the validation inputs first (`cnnjax.train.adapt_norm`)."""
        if self.adapt_batch_norm:
            state = adapted(state, validation_windows(self.datasets), self.parallel,
                            self.eval_batch_size)
        return evaluate(state, self.datasets, self.parallel.evaluate_batch, self.task)


def setup_run(config: Any, saved: dict[str, Any] | None = None) -> tuple[Run, TrainState]:
    """The run and its initial state (the first phase's model and optimizer). `saved`, the
    record of the checkpoint a run will resume from: a config it cannot follow stops the run
    before any data is read, and other classes before the model is built."""
    validate_config(config)
    check_batch_sizes(config.batch_size, config.eval_batch_size, config.grad_accum_steps)
    if saved:
        check_resumable(config_changes(saved["config"], config))
    datasets = _datasets_one_process_first(config)
    names = datasets.class_names
    if saved:
        check_classes(saved["class_names"], names)
    loss = make_loss(config, datasets.train.labels, len(names), datasets.train.targets)
    parallel = DataParallel(config.parallel, loss, config.grad_accum_steps,
                            datasets.device_windows)
    phases = phase_setups(config, task_for(loss).num_outputs(len(names)), datasets.input_shape,
                          datasets.steps_per_epoch, norm_axis_name=parallel.norm_axis_name)
    state = create_train_state(phases[0].model, phases[0].tx, datasets.input_shape,
                               jax.random.PRNGKey(config.seed))
    return Run(datasets, loss, parallel, phases, config.eval_batch_size,
               config.adapt_batch_norm), state


def _datasets_one_process_first(config: Any) -> Datasets:
    """`get_datasets`, process 0 first: on a shared disk it builds the dataset and feature
    cache and the others read them; on local disks each host builds its own."""
    if jax.process_count() == 1:
        return get_datasets(config)
    datasets = get_datasets(config) if is_chief() else None
    multihost_utils.sync_global_devices("cnnjax: datasets ready")
    return datasets if datasets is not None else get_datasets(config)


def open_checkpoints(config: Any, workdir: Path) -> Checkpoints:
    """The run's checkpoints in `workdir/checkpoints`, kept and ranked as
    `config.checkpoint` says."""
    c = config.checkpoint
    return Checkpoints(workdir / "checkpoints", max_to_keep=c.max_to_keep,
                       best_metric=c.best_metric, best_mode=c.best_mode,
                       asynchronous=c.asynchronous)


def final_report(workdir: Path, run: Run, evaluation: Evaluation, title: str
                 ) -> dict[str, Any]:
    """The task's validation report, written by process 0 (`Task.write_report`)."""
    report = run.task.report(evaluation, run.datasets)
    if is_chief():
        run.task.write_report(workdir, report, evaluation, run.datasets, title)
    return report
