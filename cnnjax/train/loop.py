"""`train_and_evaluate(config, workdir)`: epochs of training, evaluation at each epoch end,
checkpoints that let the same command resume exactly, metrics and the final report.

The run (data, loss, every phase's model and optimizer, the compiled steps) is built once
(`cnnjax.train.run`); an epoch is `train_epoch`, its end `end_epoch`; the state takes a
phase's model and optimizer as the first epoch of that phase begins (`enter_phase`)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
from flax import traverse_util

from cnnjax import report as reporting
from cnnjax.checkpoint import CheckpointError, Checkpoints, NonFiniteState
from cnnjax.logs import logger
from cnnjax.parallel import prefetch_to_devices
from cnnjax.progress import progress_bar
from cnnjax.tensorboard import SummaryWriter
from cnnjax.train.preemption import StopRequests
from cnnjax.train.recipe import PhaseSetup, setup_of_epoch
from cnnjax.train.resume import check_classes, check_resumable, config_changes
from cnnjax.train.run import Run, final_report, is_chief, open_checkpoints, setup_run
from cnnjax.train.state import TrainState
from cnnjax.train.tasks import Evaluation
from cnnjax.train.tracking import Progress, RunningMetrics, StepLog
from cnnjax.train.warm_start import initial_state

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class TrainingDiverged(CheckpointError):
    """The loss or the parameters became NaN or Inf."""


@dataclass
class Launch:
    """What one launch of the loop writes to and answers to: the run, its checkpoints, the
    stop requests (SIGTERM, SIGINT), TensorBoard, the progress bar and the step-level log."""
    config: Any
    workdir: Path
    run: Run
    checkpoints: Checkpoints
    stop: StopRequests
    tensorboard: Any
    bar: Any
    step_log: StepLog

    def save(self, state: TrainState, progress: Progress,
             metrics: dict[str, float] | None = None) -> None:
        """Saves a checkpoint; a state whose parameters went NaN or Inf (while its loss,
        computed before the update, was still finite) ends the run as diverged instead."""
        extra = progress.extra(self.config, self.run.datasets.class_names, self.run.loss)
        saveable = self.run.parallel.saveable(state)
        try:
            self.checkpoints.save(saveable, extra, metrics)
        except NonFiniteState:
            raise _diverged("the parameters hold NaN or Inf", int(saveable.step),
                            progress.epoch, self.checkpoints) from None


def train_and_evaluate(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Trains `config.num_epochs` epochs, evaluating at each epoch end, and returns the final
    validation report. Writes to `workdir`: `config.json`, `metrics.jsonl` (one line per
    epoch), `checkpoints/`, `report.json`, `curves.png`, `top_losses.csv` and
    `confusion_matrix.png` (regression: `predicted_vs_true.png`). Re-running with the same
    workdir resumes exactly where the newest checkpoint left off."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    checkpoints = open_checkpoints(config, workdir)
    try:
        run, state, progress, step = _prepare(config, workdir, checkpoints)
    except BaseException:
        checkpoints.close()  # orbax's background threads must not outlive the error message
        raise
    if is_chief():  # only now: a run its checkpoints refused leaves the config as it was
        (workdir / "config.json").write_text(config.to_json(indent=2))
        _write_metrics(workdir, progress.history)
    evaluation, current = None, None
    try:
        with _launch(config, workdir, run, checkpoints, progress, step) as launch:
            while progress.epoch <= config.num_epochs:
                setup = setup_of_epoch(run.phases, progress.epoch)
                if setup is not current:
                    state, current = enter_phase(state, setup, len(run.phases) > 1), setup
                epoch_started = time.perf_counter()
                state, step = train_epoch(launch, state, progress, step, setup)
                progress, evaluation = end_epoch(launch, state, progress, step, setup,
                                                 epoch_started)
    finally:
        checkpoints.wait()
        checkpoints.close()
    if evaluation is None:  # everything was done already: evaluate the restored state
        evaluation = run.evaluate(state)
    report = final_report(workdir, run, evaluation,
                          title=f"Validation after {config.num_epochs} epochs")
    if is_chief():
        reporting.plot_curves(progress.history, workdir / "curves.png", run.task.curves)
    logger.info(f"done in {time.perf_counter() - started:.1f} s; outputs in {workdir}")
    return report


def _prepare(config: Any, workdir: Path, checkpoints: Checkpoints
             ) -> tuple[Run, TrainState, Progress, int]:
    """The run, its state placed on the devices (resumed or fresh), where it stands and
    its global step."""
    run, state = setup_run(config, _newest_record(checkpoints))
    datasets = run.datasets
    logger.info(f"{len(datasets.train)} train / {len(datasets.val)} validation examples, "
                f"classes {list(datasets.class_names)}, input {datasets.input_shape}, "
                f"{jax.device_count()} {jax.default_backend()} device(s)")
    # Restored arrays come back in the form of their target: global, on every process.
    state = run.parallel.replicate(state)
    state, progress = _start(config, workdir, checkpoints, state, run)
    state = run.parallel.place(state)
    step = int(np.ravel(jax.device_get(state.step))[0])  # counted on the host from here on
    return run, state, progress, step


@contextlib.contextmanager
def _launch(config: Any, workdir: Path, run: Run, checkpoints: Checkpoints,
            progress: Progress, step: int) -> Iterator[Launch]:
    """Opens what a launch writes to for the time of its epochs."""
    steps_per_epoch = run.datasets.steps_per_epoch
    with StopRequests() as stop, _tensorboard(workdir) as tensorboard, progress_bar(
            config.num_epochs * steps_per_epoch, "", "step",
            initial=(progress.epoch - 1) * steps_per_epoch + progress.steps) as bar:
        if is_chief():
            _describe_run(tensorboard, config, step)
        yield Launch(config, workdir, run, checkpoints, stop, tensorboard, bar,
                     StepLog(config.batch_size))


def enter_phase(state: TrainState, setup: PhaseSetup, announce: bool) -> TrainState:
    """`state` with the model and optimizer of `setup`'s phase."""
    phase = setup.phase
    if announce:
        logger.info(f"phase '{phase.name}' (epochs {phase.first_epoch}-{phase.last_epoch}): "
                    f"{setup.frozen_count:,} parameters frozen, peak learning rate "
                    f"{phase.optimizer.learning_rate:g}")
    return state.replace(apply_fn=setup.model.apply, tx=setup.tx)


def train_epoch(launch: Launch, state: TrainState, progress: Progress, step: int,
                setup: PhaseSetup) -> tuple[TrainState, int]:
    """The rest of `progress.epoch`'s training steps (all of them unless resumed within it);
    `progress` follows them. Returns the state and the global step after them."""
    run, epoch = launch.run, progress.epoch
    launch.bar.set_description(f"epoch {epoch}/{launch.config.num_epochs}")
    state_bytes = progress.iterator_state.encode() if progress.iterator_state else None
    batches = run.datasets.train_batches(epoch, state_bytes)
    running = RunningMetrics()
    for batch, iterator_state in prefetch_to_devices(
            batches, run.parallel.put_train_batch, lambda: batches.get_state().decode()):
        state, metrics = run.parallel.train_step(state, batch)
        running.add(metrics)
        progress.steps += 1
        progress.iterator_state = iterator_state
        launch.bar.update()
        step += 1
        _after_step(launch, state, progress, running, step, setup)
    return state, step


def _after_step(launch: Launch, state: TrainState, progress: Progress,
                running: RunningMetrics, step: int, setup: PhaseSetup) -> None:
    """Reads the metrics when something needs them (a log, a save, a stop, the epoch's
    end), logs the step-level window, saves every `config.checkpoint.every_steps` and stops
    on request after saving."""
    config, every = launch.config, launch.config.checkpoint.every_steps
    epoch_end = progress.steps == launch.run.datasets.steps_per_epoch
    save_now = every and step % every == 0 and not epoch_end
    if launch.stop.reached(step) or save_now or epoch_end \
            or step % config.log_every_steps == 0:
        losses = running.flush_into(progress)  # waits for the device
        launch.step_log.losses += losses
        loss = float(np.mean(losses))
        if not np.isfinite(loss):
            raise _diverged(f"the training loss is {loss}", step, progress.epoch,
                            launch.checkpoints)
        launch.bar.set_postfix(loss=f"{loss:.3f}")
    if step % config.log_every_steps == 0:  # on every process: a new window
        scalars = launch.step_log.scalars(float(setup.schedule(step - 1)))
        if is_chief():
            launch.tensorboard.scalars(step, scalars)
    if launch.stop.requested:
        launch.save(state, progress)
        launch.checkpoints.wait()
        logger.info(f"stopped by {launch.stop.requested} at step {step} and saved; run the "
                    f"same command again to resume.")
        raise SystemExit(143 if launch.stop.requested == "SIGTERM" else 130)
    if save_now:
        launch.save(state, progress)


def end_epoch(launch: Launch, state: TrainState, progress: Progress, step: int,
              setup: PhaseSetup, epoch_started: float) -> tuple[Progress, Evaluation]:
    """Evaluates the epoch's state, records the epoch (metrics.jsonl, TensorBoard, the
    console) and saves a checkpoint ranked by the record. Returns the progress at the next
    epoch's start and the evaluation."""
    run, epoch, bar = launch.run, progress.epoch, launch.bar
    task, num_epochs = run.task, launch.config.num_epochs
    bar.set_description(f"epoch {epoch}/{num_epochs} evaluating")
    evaluation = run.evaluate(state)
    bar.set_description(f"epoch {epoch}/{num_epochs}", refresh=False)
    record = {
        "epoch": epoch, "step": step,
        "phase": setup.phase.name,
        "learning_rate": float(setup.schedule(step - 1)),
        **task.train_record(progress.means()),
        "val_loss": evaluation.loss,
        **task.val_record(task.report(evaluation, run.datasets)),
        "epoch_seconds": round(time.perf_counter() - epoch_started, 3)}
    progress = Progress(epoch=epoch + 1, history=progress.history + [record])
    if is_chief():
        _write_metrics(launch.workdir, progress.history)
        launch.tensorboard.scalars(step, {k: v for k, v in record.items()
                                          if isinstance(v, float) and k != "epoch_seconds"})
        _log_confusion(launch.tensorboard, step, epoch, evaluation, run.datasets.class_names)
    launch.save(state, progress, metrics=record)
    if is_chief():
        bar.write(task.epoch_line(record), file=sys.stderr)
    return progress, evaluation


def _start(config: Any, workdir: Path, checkpoints: Checkpoints, state: TrainState,
           run: Run) -> tuple[TrainState, Progress]:
    """Resumes from the newest readable checkpoint, or starts afresh (from pretrained or
    another run's weights when the config names them)."""
    datasets = run.datasets
    class_names = datasets.class_names

    def check(extra: dict[str, Any]) -> None:  # the checkpoint restored may be an older one
        check_resumable(config_changes(extra["config"], config))
        check_classes(extra["class_names"], class_names)

    restored = checkpoints.restore_latest(state, warn=logger.warning, check=check)
    if restored is None:
        state, origin = initial_state(config, state, run.num_outputs, datasets.input_shape[-1])
        logger.info(origin)
        return state, Progress()
    state, extra, step = restored
    changes = config_changes(extra["config"], config)
    if changes and is_chief():
        logger.info("resuming with changed config fields: "
                    + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
        reporting.append_jsonl(workdir / "config_changes.jsonl",
                               {"step": step, "changes": {k: list(v) for k, v in
                                                          changes.items()}})
    progress = Progress.from_extra(extra)
    where = f"{len(progress.history)} epochs done" + (
        f", {progress.steps} steps into epoch {progress.epoch}" if progress.steps else "")
    logger.info(f"resuming from the checkpoint at step {step} ({where})")
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
    return SummaryWriter(workdir / TENSORBOARD_DIR) if is_chief() else contextlib.nullcontext()


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
