"""`train_and_evaluate(config, workdir)`: epochs of training, evaluation at each epoch end,
checkpoints that let the same command resume exactly, metrics and the final report."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from cnnjax import report as reporting
from cnnjax.checkpoint import CheckpointError, Checkpoints, load_weights
from cnnjax.config import validate_config
from cnnjax.data.datasets import Datasets, get_datasets
from cnnjax.errors import DataError
from cnnjax.metrics import classification_report, confusion_matrix
from cnnjax.models.registry import get_model
from cnnjax.train.optim import make_optimizer
from cnnjax.train.preemption import StopRequests
from cnnjax.train.resume import check_resumable, config_changes
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import jit_eval_step, jit_train_step

METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(CheckpointError):
    """The loss became NaN or Inf."""


def _log(message: str) -> None:
    print(f"cnnjax: {message}", file=sys.stderr, flush=True)


def _is_chief() -> bool:
    """Only process 0 writes logs, metrics, plots and reports."""
    return jax.process_index() == 0


def evaluate(state: TrainState, datasets: Datasets) -> tuple[float, np.ndarray]:
    """Mean loss and confusion matrix over the validation set (padding excluded)."""
    loss_sum, labels, predictions = 0.0, [], []
    for batch in datasets.eval_batches():
        out = jax.device_get(jit_eval_step(state, batch))
        mask = out["mask"]
        loss_sum += float(out["loss"][mask].sum())
        labels.append(batch["label"][mask])
        predictions.append(out["prediction"][mask])
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    confusion = confusion_matrix(labels, predictions, len(datasets.class_names))
    return loss_sum / len(labels), confusion


@dataclass
class Progress:
    """Where the run stands, beyond the train state: saved with every checkpoint as JSON."""
    epoch: int = 1  # the epoch in progress (or next to start)
    iterator_state: str | None = None  # grain's state within `epoch`; None: at its start
    loss_sum: float = 0.0  # sums over the steps of `epoch` so far
    accuracy_sum: float = 0.0
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch done

    def extra(self, config: Any, class_names: tuple[str, ...]) -> dict[str, Any]:
        return {**self.__dict__, "config": config.to_json(), "class_names": list(class_names)}


def _setup(config: Any) -> tuple[Datasets, TrainState, Any]:
    validate_config(config)
    datasets = get_datasets(config)
    model = get_model(config.model, num_classes=len(datasets.class_names))
    total_steps = config.num_epochs * datasets.steps_per_epoch
    tx, schedule = make_optimizer(config.optimizer, total_steps)
    state = create_train_state(model, tx, datasets.input_shape, jax.random.PRNGKey(config.seed))
    return datasets, state, schedule


def _checkpoints(config: Any, workdir: Path) -> Checkpoints:
    c = config.checkpoint
    return Checkpoints(workdir / "checkpoints", max_to_keep=c.max_to_keep,
                       best_metric=c.best_metric, best_mode=c.best_mode,
                       asynchronous=c.asynchronous)


def _start(config: Any, workdir: Path, checkpoints: Checkpoints, state: TrainState,
           class_names: tuple[str, ...]) -> tuple[TrainState, Progress]:
    """Resumes from the newest readable checkpoint, or starts afresh (from `init_from`'s
    weights when given)."""
    restored = checkpoints.restore_newest_good(state, warn=lambda m: _log(f"warning: {m}"))
    if restored is None:
        if config.init_from:
            state = load_weights(config.init_from, state)
            _log(f"starting from the weights of {config.init_from}")
        return state, Progress()
    state, extra, step = restored
    changes = config_changes(extra["config"], config)
    check_resumable(changes, extra["class_names"], class_names)
    if changes and _is_chief():
        _log(f"resuming with changed config fields: "
             + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
        reporting.append_jsonl(workdir / "config_changes.jsonl",
                               {"step": step, "changes": {k: list(v) for k, v in
                                                          changes.items()}})
    progress = Progress(**{k: extra[k] for k in Progress.__dataclass_fields__})
    where = f"{len(progress.history)} epochs done" + (
        f", {progress.steps} steps into epoch {progress.epoch}" if progress.steps else "")
    _log(f"resuming from the checkpoint at step {step} ({where})")
    return state, progress


def _write_metrics(workdir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrites metrics.jsonl from the history (the checkpoint's copy is the truth, so a
    resumed run never has gaps or duplicated epochs)."""
    path = workdir / METRICS_FILE
    partial = path.with_suffix(".jsonl.tmp")
    partial.write_text("".join(json.dumps(record) + "\n" for record in history))
    partial.replace(path)


def _save(checkpoints: Checkpoints, state: TrainState, progress: Progress, config: Any,
          class_names: tuple[str, ...], metrics: dict[str, float] | None = None) -> None:
    checkpoints.save(state, progress.extra(config, class_names), metrics)


def train_and_evaluate(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Trains `config.num_epochs` epochs, evaluating at each epoch end, and returns the final
    validation report. Writes to `workdir`: `config.json`, `metrics.jsonl` (one line per
    epoch), `checkpoints/`, `report.json`, `confusion_matrix.png`, `curves.png`. Re-running
    with the same workdir resumes exactly where the newest checkpoint left off."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    datasets, state, schedule = _setup(config)
    names = datasets.class_names
    if _is_chief():
        (workdir / "config.json").write_text(config.to_json(indent=2))
    _log(f"{len(datasets.train)} train / {len(datasets.val)} validation examples, classes "
         f"{list(names)}, input {datasets.input_shape}, "
         f"{jax.device_count()} {jax.default_backend()} device(s)")
    checkpoints = _checkpoints(config, workdir)
    state, progress = _start(config, workdir, checkpoints, state, names)
    if _is_chief():
        _write_metrics(workdir, progress.history)
    steps_per_epoch, every = datasets.steps_per_epoch, config.checkpoint.every_steps
    confusion = None
    try:
        with StopRequests() as stop, tqdm(
                total=config.num_epochs * steps_per_epoch, unit="step", dynamic_ncols=True,
                initial=(progress.epoch - 1) * steps_per_epoch + progress.steps,
                file=sys.stderr, disable=not _is_chief()) as bar:
            while progress.epoch <= config.num_epochs:
                epoch = progress.epoch
                bar.set_description(f"epoch {epoch}/{config.num_epochs}")
                epoch_started = time.perf_counter()
                state_bytes = progress.iterator_state.encode() if progress.iterator_state \
                    else None
                batches = datasets.train_batches(epoch, state_bytes)
                for batch in batches:
                    state, metrics = jit_train_step(state, batch)
                    loss = float(metrics["loss"])
                    if not np.isfinite(loss):
                        raise TrainingDiverged(
                            f"the training loss is {loss} at step {int(state.step)} (epoch "
                            f"{epoch}); nothing from this step on was saved, the newest "
                            f"checkpoint is step {checkpoints.latest_step()}. Lower "
                            f"config.optimizer.learning_rate and run again.")
                    progress.loss_sum += loss
                    progress.accuracy_sum += float(metrics["accuracy"])
                    progress.steps += 1
                    progress.iterator_state = batches.get_state().decode()
                    bar.update()
                    bar.set_postfix(loss=f"{loss:.3f}")
                    if stop.requested:
                        _save(checkpoints, state, progress, config, names)
                        checkpoints.wait()
                        _log(f"stopped by {stop.requested} at step {int(state.step)} and "
                             f"saved; run the same command again to resume.")
                        raise SystemExit(143 if stop.requested == "SIGTERM" else 130)
                    if every and int(state.step) % every == 0 \
                            and progress.steps < steps_per_epoch:
                        _save(checkpoints, state, progress, config, names)
                val_loss, confusion = evaluate(state, datasets)
                val = classification_report(confusion, names)
                record = {
                    "epoch": epoch, "step": int(state.step),
                    "learning_rate": float(schedule(int(state.step) - 1)),
                    "train_loss": progress.loss_sum / progress.steps,
                    "train_accuracy": progress.accuracy_sum / progress.steps,
                    "val_loss": val_loss, "val_accuracy": val["accuracy"],
                    "val_error_rate": val["error_rate"],
                    "val_balanced_accuracy": val["balanced_accuracy"],
                    "val_macro_f1": val["macro_f1"],
                    "epoch_seconds": round(time.perf_counter() - epoch_started, 3)}
                progress = Progress(epoch=epoch + 1, history=progress.history + [record])
                if _is_chief():
                    _write_metrics(workdir, progress.history)
                _save(checkpoints, state, progress, config, names, metrics=record)
                bar.write(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc "
                          f"{record['train_accuracy']:.3f} | val loss {val_loss:.4f} acc "
                          f"{val['accuracy']:.3f} error_rate {val['error_rate']:.3f}",
                          file=sys.stderr)
    finally:
        checkpoints.wait()
        checkpoints.close()
    if confusion is None:  # everything was done already: evaluate the restored state
        _, confusion = evaluate(state, datasets)
    report = _final_report(workdir, confusion, names,
                           title=f"Validation after {config.num_epochs} epochs")
    if _is_chief():
        reporting.plot_curves(progress.history, workdir / "curves.png")
    _log(f"done in {time.perf_counter() - started:.1f} s; outputs in {workdir}")
    return report


def _final_report(workdir: Path, confusion: np.ndarray, class_names: tuple[str, ...],
                  title: str) -> dict[str, Any]:
    report = classification_report(confusion, class_names)
    if _is_chief():
        reporting.write_json(workdir / "report.json", report)
        reporting.plot_confusion_matrix(confusion, class_names,
                                        workdir / "confusion_matrix.png", title=title)
        print(reporting.format_summary(report, title=title), flush=True)
    return report


def evaluate_checkpoint(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Evaluates the newest readable checkpoint in `workdir` on the validation set and
    rewrites `report.json` and `confusion_matrix.png`."""
    workdir = Path(workdir)
    datasets, state, _ = _setup(config)
    checkpoints = _checkpoints(config, workdir)
    try:
        restored = checkpoints.restore_newest_good(state, warn=lambda m: _log(f"warning: {m}"))
    finally:
        checkpoints.close()
    if restored is None:
        raise DataError(f"{workdir / 'checkpoints'} holds no checkpoint: train first with "
                        f"--mode=train --workdir={workdir}.")
    state, _, step = restored
    _, confusion = evaluate(state, datasets)
    return _final_report(workdir, confusion, datasets.class_names,
                         title=f"Validation, checkpoint at step {step}")
