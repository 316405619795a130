"""`train_and_evaluate(config, workdir)`: epochs of training, evaluation at each epoch end,
checkpoints that let the same command resume exactly, metrics and the final report."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from cnnjax import report as reporting
from cnnjax.checkpoint import CheckpointError, Checkpoints, NonFiniteState
from cnnjax.config import validate_config
from cnnjax.data.datasets import Datasets, get_datasets
from cnnjax.errors import ConfigError, DataError
from cnnjax.parallel import DataParallel, check_batch_sizes, prefetch_to_devices
from cnnjax.progress import progress_bar
from cnnjax.tensorboard import SummaryWriter
from cnnjax.train.losses import Loss
from cnnjax.train.lr_find import LrFindResult, lr_find, plot_lr_find
from cnnjax.train.phases import Phase, phase_of_epoch, training_phases
from cnnjax.train.preemption import StopRequests
from cnnjax.train.recipe import make_loss, phase_setup
from cnnjax.train.resume import check_classes, check_resumable, config_changes
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import jit_eval_step
from cnnjax.train.tasks import Classification, Evaluation, Task, task_for, task_kind
from cnnjax.train.warm_start import initial_state

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class TrainingDiverged(CheckpointError):
    """The loss or the parameters became NaN or Inf."""


def _log(message: str) -> None:
    print(f"cnnjax: {message}", file=sys.stderr, flush=True)


def _is_chief() -> bool:
    """Only process 0 writes logs, metrics, plots and reports."""
    return jax.process_index() == 0


def _eval_on_one_device(state: TrainState, batch: dict[str, Any], loss: Loss
                        ) -> dict[str, np.ndarray]:
    return jax.device_get(jit_eval_step(state, batch, loss=loss))


def evaluate(state: TrainState, datasets: Datasets,
             eval_batch: Callable[[TrainState, Any], dict[str, np.ndarray]] | None = None,
             task: Task = Classification()) -> Evaluation:
    """Per validation recording, in validation order: `task.window_outputs` (softmax
    probabilities, hinge scores or predicted values) averaged over its windows
    (`config.data.eval_windows`); the mean over recordings of their loss (the negative
    log-likelihood of the averaged probabilities for the cross-entropies), and the confusion
    matrix of a classifier. `eval_batch` runs `eval_step` on one batch and returns numpy
    (`DataParallel.evaluate_batch` for a state on several devices; one device by default)."""
    eval_batch = eval_batch or functools.partial(_eval_on_one_device, loss=task.loss)
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
        return cls(**{k: extra[k] for k in cls.__dataclass_fields__ if k in extra})

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


@dataclass
class Run:
    """What the loop trains with: the data, the phases, the loss and its task, and the
    current phase's learning-rate schedule."""
    datasets: Datasets
    phases: list[Phase]
    loss: Loss
    parallel: DataParallel
    phase: Phase | None = None
    schedule: Any = None

    @property
    def task(self) -> Task:
        return task_for(self.loss)

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs(len(self.datasets.class_names))

    def enter(self, config: Any, state: TrainState, epoch: int) -> TrainState:
        """`state` with the model and optimizer of `epoch`'s phase (unchanged within one)."""
        phase = phase_of_epoch(self.phases, epoch)
        if phase == self.phase:
            return state
        d = self.datasets
        setup = phase_setup(config, phase, self.num_outputs, d.input_shape,
                            d.steps_per_epoch, norm_axis_name=self.parallel.norm_axis_name)
        if self.phase is not None or len(self.phases) > 1:
            _log(f"phase '{phase.name}' (epochs {phase.first_epoch}-{phase.last_epoch}): "
                 f"{setup.frozen_count:,} parameters frozen, peak learning rate "
                 f"{phase.optimizer.learning_rate:g}")
        self.phase, self.schedule = phase, setup.schedule
        return state.replace(apply_fn=setup.model.apply, tx=setup.tx)


def _setup(config: Any, saved: dict[str, Any] | None = None) -> tuple[Run, TrainState]:
    """The run's data, loss, phases and initial state. `saved`, the record of the checkpoint
    a run will resume from: a config it cannot follow stops the run before any data is read,
    and other classes before the model is built."""
    validate_config(config)
    check_batch_sizes(config.batch_size, config.eval_batch_size, config.grad_accum_steps)
    if saved:
        check_resumable(config_changes(saved["config"], config))
    datasets = _datasets_one_process_first(config)
    names = datasets.class_names
    if saved:
        check_classes(saved["class_names"], names)
    loss = make_loss(config, datasets.train.labels, len(names), datasets.train.targets)
    parallel = DataParallel(config.parallel, loss, config.grad_accum_steps)
    run = Run(datasets, training_phases(config), loss, parallel)
    setup = phase_setup(config, run.phases[0], run.num_outputs, datasets.input_shape,
                        datasets.steps_per_epoch, norm_axis_name=parallel.norm_axis_name)
    state = create_train_state(setup.model, setup.tx, datasets.input_shape,
                               jax.random.PRNGKey(config.seed))
    return run, state


def _datasets_one_process_first(config: Any) -> Datasets:
    """`get_datasets`, process 0 first: on a shared disk it builds the dataset and feature
    cache and the others read them; on local disks each host builds its own."""
    if jax.process_count() == 1:
        return get_datasets(config)
    datasets = get_datasets(config) if _is_chief() else None
    multihost_utils.sync_global_devices("cnnjax: datasets ready")
    return datasets if datasets is not None else get_datasets(config)


def _checkpoints(config: Any, workdir: Path) -> Checkpoints:
    c = config.checkpoint
    return Checkpoints(workdir / "checkpoints", max_to_keep=c.max_to_keep,
                       best_metric=c.best_metric, best_mode=c.best_mode,
                       asynchronous=c.asynchronous)


def _start(config: Any, workdir: Path, checkpoints: Checkpoints, state: TrainState,
           run: Run) -> tuple[TrainState, Progress]:
    """Resumes from the newest readable checkpoint, or starts afresh (from pretrained or
    another run's weights when the config names them)."""
    datasets = run.datasets
    class_names = datasets.class_names

    def check(extra: dict[str, Any]) -> None:  # the checkpoint restored may be an older one
        check_resumable(config_changes(extra["config"], config))
        check_classes(extra["class_names"], class_names)

    restored = checkpoints.restore_latest(state, warn=lambda m: _log(f"warning: {m}"),
                                          check=check)
    if restored is None:
        state, origin = initial_state(config, state, run.num_outputs, datasets.input_shape[-1])
        _log(origin)
        return state, Progress()
    state, extra, step = restored
    changes = config_changes(extra["config"], config)
    if changes and _is_chief():
        _log("resuming with changed config fields: "
             + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
        reporting.append_jsonl(workdir / "config_changes.jsonl",
                               {"step": step, "changes": {k: list(v) for k, v in
                                                          changes.items()}})
    progress = Progress.from_extra(extra)
    where = f"{len(progress.history)} epochs done" + (
        f", {progress.steps} steps into epoch {progress.epoch}" if progress.steps else "")
    _log(f"resuming from the checkpoint at step {step} ({where})")
    return state, progress


def _newest_record(checkpoints: Checkpoints) -> dict[str, Any] | None:
    """The JSON record of the newest checkpoint whose record reads (the one a resumed run
    starts from, unless its arrays fail), or None; unreadable ones are named when restoring."""
    for step in reversed(checkpoints.all_steps()):
        try:
            return checkpoints.read_extra(step)
        except Exception:  # any unreadable record: the restore will warn and walk past it
            continue
    return None


def _tensorboard(workdir: Path) -> contextlib.AbstractContextManager:
    """The run's TensorBoard event file (one per launch; TensorBoard merges them by step)."""
    return SummaryWriter(workdir / TENSORBOARD_DIR) if _is_chief() else contextlib.nullcontext()


def _describe_run(tensorboard: SummaryWriter, config: Any, step: int) -> None:
    """The config as text, and its bool, number and string fields (by dotted name) as the
    run's session in TensorBoard's HParams tab, which compares runs on them."""
    tensorboard.text(step, "config", f"```json\n{config.to_json(indent=2)}\n```")
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    tensorboard.hparams({name: value for name, value in flat.items()
                         if isinstance(value, (bool, int, float, str))})


def _log_confusion(tensorboard: SummaryWriter, step: int, epoch: int, evaluation: Evaluation,
                   class_names: tuple[str, ...]) -> None:
    """The epoch's validation confusion matrix as an image (classification runs have one)."""
    if evaluation.confusion is not None:
        figure = reporting.confusion_matrix_figure(evaluation.confusion, class_names,
                                                   title=f"Validation, epoch {epoch}")
        tensorboard.image(step, "confusion_matrix", reporting.png_bytes(figure))


def _write_metrics(workdir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrites metrics.jsonl from the history (the checkpoint's copy is the truth, so a
    resumed run never has gaps or duplicated epochs)."""
    path = workdir / METRICS_FILE
    partial = path.with_suffix(".jsonl.tmp")
    partial.write_text("".join(json.dumps(record) + "\n" for record in history))
    partial.replace(path)


def _diverged(what: str, step: int, epoch: int, checkpoints: Checkpoints) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged at step {step} (epoch {epoch}): {what}; nothing from "
        f"this step on was saved, the newest checkpoint is step {checkpoints.latest_step()}. "
        f"Lower config.optimizer.learning_rate and run again.")


def _save(checkpoints: Checkpoints, state: TrainState, progress: Progress, config: Any,
          run: Run, metrics: dict[str, float] | None = None) -> None:
    """Saves a checkpoint; a state whose parameters went NaN or Inf (while its loss, computed
    before the update, was still finite) ends the run as diverged instead."""
    try:
        checkpoints.save(state, progress.extra(config, run.datasets.class_names, run.loss),
                         metrics)
    except NonFiniteState:
        raise _diverged("the parameters hold NaN or Inf", int(state.step), progress.epoch,
                        checkpoints) from None


def train_and_evaluate(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Trains `config.num_epochs` epochs, evaluating at each epoch end, and returns the final
    validation report. Writes to `workdir`: `config.json`, `metrics.jsonl` (one line per
    epoch), `checkpoints/`, `report.json`, `curves.png`, `top_losses.csv` and
    `confusion_matrix.png` (regression: `predicted_vs_true.png`). Re-running with the same
    workdir resumes exactly where the newest checkpoint left off."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    checkpoints = _checkpoints(config, workdir)
    try:
        run, state = _setup(config, _newest_record(checkpoints))
        datasets, names, task = run.datasets, run.datasets.class_names, run.task
        _log(f"{len(datasets.train)} train / {len(datasets.val)} validation examples, classes "
             f"{list(names)}, input {datasets.input_shape}, "
             f"{jax.device_count()} {jax.default_backend()} device(s)")
        parallel = run.parallel
        # Restored arrays come back in the form of their target: global, on every process.
        state = parallel.replicate(state)
        state, progress = _start(config, workdir, checkpoints, state, run)
        state = parallel.place(state)
        step = int(np.ravel(jax.device_get(state.step))[0])  # counted on the host from here on
    except BaseException:
        checkpoints.close()  # orbax's background threads must not outlive the error message
        raise
    if _is_chief():  # only now: a run its checkpoints refused leaves the config as it was
        (workdir / "config.json").write_text(config.to_json(indent=2))
        _write_metrics(workdir, progress.history)
    steps_per_epoch, every = datasets.steps_per_epoch, config.checkpoint.every_steps
    evaluation = None

    def save(metrics: dict[str, float] | None = None) -> None:
        _save(checkpoints, parallel.saveable(state), progress, config, run, metrics)

    try:
        with StopRequests() as stop, _tensorboard(workdir) as tensorboard, progress_bar(
                config.num_epochs * steps_per_epoch, "", "step",
                initial=(progress.epoch - 1) * steps_per_epoch + progress.steps) as bar:
            if _is_chief():
                _describe_run(tensorboard, config, step)
            step_log = StepLog(config.batch_size)
            while progress.epoch <= config.num_epochs:
                epoch = progress.epoch
                state = run.enter(config, state, epoch)
                bar.set_description(f"epoch {epoch}/{config.num_epochs}")
                epoch_started = time.perf_counter()
                state_bytes = progress.iterator_state.encode() if progress.iterator_state \
                    else None
                batches = datasets.train_batches(epoch, state_bytes)
                running = RunningMetrics()
                for batch, iterator_state in prefetch_to_devices(
                        batches, parallel.put_batch, lambda: batches.get_state().decode()):
                    state, metrics = parallel.train_step(state, batch)
                    running.add(metrics)
                    progress.steps += 1
                    progress.iterator_state = iterator_state
                    bar.update()
                    step += 1
                    epoch_end = progress.steps == steps_per_epoch
                    save_now = every and step % every == 0 and not epoch_end
                    if stop.reached(step) or save_now or epoch_end \
                            or step % config.log_every_steps == 0:
                        losses = running.flush_into(progress)  # waits for the device
                        step_log.losses += losses
                        loss = float(np.mean(losses))
                        if not np.isfinite(loss):
                            raise _diverged(f"the training loss is {loss}", step, epoch,
                                            checkpoints)
                        bar.set_postfix(loss=f"{loss:.3f}")
                    if step % config.log_every_steps == 0:  # on every process: a new window
                        scalars = step_log.scalars(float(run.schedule(step - 1)))
                        if _is_chief():
                            tensorboard.scalars(step, scalars)
                    if stop.requested:
                        save()
                        checkpoints.wait()
                        _log(f"stopped by {stop.requested} at step {step} and "
                             f"saved; run the same command again to resume.")
                        raise SystemExit(143 if stop.requested == "SIGTERM" else 130)
                    if save_now:
                        save()
                bar.set_description(f"epoch {epoch}/{config.num_epochs} evaluating")
                evaluation = evaluate(state, datasets, parallel.evaluate_batch, run.task)
                bar.set_description(f"epoch {epoch}/{config.num_epochs}", refresh=False)
                record = {
                    "epoch": epoch, "step": step,
                    "phase": run.phase.name,
                    "learning_rate": float(run.schedule(step - 1)),
                    **task.train_record(progress.means()),
                    "val_loss": evaluation.loss,
                    **task.val_record(task.report(evaluation, datasets)),
                    "epoch_seconds": round(time.perf_counter() - epoch_started, 3)}
                progress = Progress(epoch=epoch + 1, history=progress.history + [record])
                if _is_chief():
                    _write_metrics(workdir, progress.history)
                    tensorboard.scalars(record["step"], {
                        k: v for k, v in record.items()
                        if isinstance(v, float) and k != "epoch_seconds"})
                    _log_confusion(tensorboard, step, epoch, evaluation, names)
                save(metrics=record)
                if _is_chief():
                    bar.write(task.epoch_line(record), file=sys.stderr)
    finally:
        checkpoints.wait()
        checkpoints.close()
    if evaluation is None:  # everything was done already: evaluate the restored state
        evaluation = evaluate(state, datasets, parallel.evaluate_batch, run.task)
    report = _final_report(workdir, run, evaluation,
                           title=f"Validation after {config.num_epochs} epochs")
    if _is_chief():
        reporting.plot_curves(progress.history, workdir / "curves.png", task.curves)
    _log(f"done in {time.perf_counter() - started:.1f} s; outputs in {workdir}")
    return report


def _final_report(workdir: Path, run: Run, evaluation: Evaluation, title: str
                  ) -> dict[str, Any]:
    """The task's validation report, written by process 0 (`Task.write_report`)."""
    report = run.task.report(evaluation, run.datasets)
    if _is_chief():
        run.task.write_report(workdir, report, evaluation, run.datasets, title)
    return report


def evaluate_checkpoint(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Evaluates the best readable checkpoint in `workdir` (by config.checkpoint.best_metric;
    the newest without one) on the validation set and rewrites the reports."""
    workdir = Path(workdir)
    run, state = _setup(config)
    checkpoints = _checkpoints(config, workdir)
    try:
        restored = checkpoints.restore_best(state, warn=lambda m: _log(f"warning: {m}"))
    finally:
        checkpoints.close()
    if restored is None:
        raise DataError(f"{workdir / 'checkpoints'} holds no checkpoint: train first with "
                        f"--mode=train --workdir={workdir}.")
    state, _, step = restored
    return _final_report(workdir, run, evaluate(state, run.datasets, task=run.task),
                         title=f"Validation, checkpoint at step {step}")


def find_learning_rate(config: Any, workdir: str | Path) -> LrFindResult:
    """`--mode=lr_find`: the learning-rate range test on the first phase's setup (what is
    frozen stays frozen), from the weights a fresh run would start with. Writes
    `lr_find.png` and `lr_find.json` and prints the suggestion; no checkpoint is touched."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    unit = ml_collections.ConfigDict(config.to_dict())
    unit.optimizer.learning_rate, unit.optimizer.schedule = 1.0, "constant"
    unit.fine_tune.unfreeze_after = 0
    unit.parallel = "jit"  # the sweep steps on one device
    run, state = _setup(unit)
    state, origin = initial_state(config, state, run.num_outputs, run.datasets.input_shape[-1])
    _log(f"{origin}; sweeping the learning rate from {config.lr_find.start:g} to "
         f"{config.lr_find.end:g} over at most {config.lr_find.num_steps} steps")

    def batches() -> Iterator[dict[str, Any]]:
        for epoch in itertools.count(1):
            yield from run.datasets.train_batches(epoch)

    result = lr_find(state, batches(), start=config.lr_find.start, end=config.lr_find.end,
                     num_steps=config.lr_find.num_steps, loss=run.loss)
    if _is_chief():
        plot_lr_find(result, workdir / "lr_find.png")
        reporting.write_json(workdir / "lr_find.json", result.as_dict())
    stopped = "stopped at divergence" if result.diverged else "did not diverge"
    print(f"lr_find: {len(result.learning_rates)} steps, {stopped}; suggested learning rate "
          f"{result.suggestion:.2e} ({result.rule}). Plot: {workdir / 'lr_find.png'}",
          flush=True)
    return result
