"""`train_and_evaluate(config, workdir)`: epochs of training, evaluation at each epoch end,
checkpoints, metrics and the final report with its plots."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from cnnjax import report as reporting
from cnnjax.checkpoint import Checkpoints
from cnnjax.config import validate_config
from cnnjax.data.datasets import Datasets, get_datasets
from cnnjax.errors import DataError
from cnnjax.metrics import classification_report, confusion_matrix
from cnnjax.models.registry import get_model
from cnnjax.train.optim import make_optimizer
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import jit_eval_step, jit_train_step

METRICS_FILE = "metrics.jsonl"


def _log(message: str) -> None:
    print(f"cnnjax: {message}", file=sys.stderr, flush=True)


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


def _setup(config: Any) -> tuple[Datasets, TrainState, Any]:
    validate_config(config)
    datasets = get_datasets(config)
    model = get_model(config.model, num_classes=len(datasets.class_names))
    total_steps = config.num_epochs * datasets.steps_per_epoch
    tx, schedule = make_optimizer(config.optimizer, total_steps)
    state = create_train_state(model, tx, datasets.input_shape, jax.random.PRNGKey(config.seed))
    return datasets, state, schedule


def _resume(checkpoints: Checkpoints, state: TrainState, steps_per_epoch: int,
            metrics_path: Path) -> tuple[TrainState, int]:
    """The newest checkpoint's state and the epoch to start from; a fresh start clears the
    metrics of any earlier run, a resumed one keeps the epochs it had finished."""
    step = checkpoints.latest_step()
    if step is None:
        metrics_path.unlink(missing_ok=True)
        return state, 0
    state = checkpoints.restore(state, step)
    epoch = step // steps_per_epoch
    kept = [r for r in reporting.read_jsonl(metrics_path) if r["epoch"] <= epoch] \
        if metrics_path.exists() else []
    metrics_path.unlink(missing_ok=True)
    for record in kept:
        reporting.append_jsonl(metrics_path, record)
    _log(f"resuming from the checkpoint at step {step} (epoch {epoch} done)")
    return state, epoch


def _final_report(workdir: Path, confusion: np.ndarray, class_names: tuple[str, ...],
                  title: str) -> dict[str, Any]:
    report = classification_report(confusion, class_names)
    reporting.write_json(workdir / "report.json", report)
    reporting.plot_confusion_matrix(confusion, class_names, workdir / "confusion_matrix.png",
                                    title=title)
    print(reporting.format_summary(report, title=title), flush=True)
    return report


def train_and_evaluate(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Trains `config.num_epochs` epochs, evaluating at each epoch end, and returns the final
    validation report. Writes to `workdir`: `config.json`, `metrics.jsonl` (one line per
    epoch), `checkpoints/`, `report.json`, `confusion_matrix.png`, `curves.png`. Re-running
    with the same workdir resumes from its newest checkpoint."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    datasets, state, schedule = _setup(config)
    (workdir / "config.json").write_text(config.to_json(indent=2))
    _log(f"{len(datasets.train)} train / {len(datasets.val)} validation examples, classes "
         f"{list(datasets.class_names)}, input {datasets.input_shape}, "
         f"{jax.device_count()} {jax.default_backend()} device(s)")
    steps_per_epoch = datasets.steps_per_epoch
    metrics_path = workdir / METRICS_FILE
    checkpoints = Checkpoints(workdir / "checkpoints")
    state, start_epoch = _resume(checkpoints, state, steps_per_epoch, metrics_path)
    confusion = None
    with tqdm(total=config.num_epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
              unit="step", dynamic_ncols=True, file=sys.stderr) as bar:
        for epoch in range(start_epoch + 1, config.num_epochs + 1):
            bar.set_description(f"epoch {epoch}/{config.num_epochs}")
            epoch_started = time.perf_counter()
            train_metrics = []
            for batch in datasets.train_batches(epoch):
                state, metrics = jit_train_step(state, batch)
                train_metrics.append(metrics)
                bar.update()
                bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
            train_metrics = jax.device_get(train_metrics)
            val_loss, confusion = evaluate(state, datasets)
            val = classification_report(confusion, datasets.class_names)
            record = {
                "epoch": epoch, "step": int(state.step),
                "learning_rate": float(schedule(int(state.step) - 1)),
                "train_loss": float(np.mean([m["loss"] for m in train_metrics])),
                "train_accuracy": float(np.mean([m["accuracy"] for m in train_metrics])),
                "val_loss": val_loss, "val_accuracy": val["accuracy"],
                "val_error_rate": val["error_rate"],
                "epoch_seconds": round(time.perf_counter() - epoch_started, 3)}
            reporting.append_jsonl(metrics_path, record)
            checkpoints.save(state)
            bar.write(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc "
                      f"{record['train_accuracy']:.3f} | val loss {val_loss:.4f} acc "
                      f"{val['accuracy']:.3f} error_rate {val['error_rate']:.3f}",
                      file=sys.stderr)
    checkpoints.wait()
    checkpoints.close()
    if confusion is None:  # everything was done already: evaluate the restored state
        _, confusion = evaluate(state, datasets)
    reporting.plot_curves(reporting.read_jsonl(metrics_path), workdir / "curves.png")
    report = _final_report(workdir, confusion, datasets.class_names,
                           title=f"Validation after {config.num_epochs} epochs")
    _log(f"done in {time.perf_counter() - started:.1f} s; outputs in {workdir}")
    return report


def evaluate_checkpoint(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Evaluates the newest checkpoint in `workdir` on the validation set and rewrites
    `report.json` and `confusion_matrix.png`."""
    workdir = Path(workdir)
    datasets, state, _ = _setup(config)
    checkpoints = Checkpoints(workdir / "checkpoints")
    step = checkpoints.latest_step()
    if step is None:
        raise DataError(f"{workdir / 'checkpoints'} holds no checkpoint: train first with "
                        f"--mode=train --workdir={workdir}.")
    state = checkpoints.restore(state, step)
    checkpoints.close()
    _, confusion = evaluate(state, datasets)
    return _final_report(workdir, confusion, datasets.class_names,
                         title=f"Validation, checkpoint at step {step}")
