"""Classification or regression, as `config.loss.name` makes it: what an epoch records, what
the validation report holds and which files it is written to, and what a prediction row
says. The loop, evaluation and prediction ask the run's task instead of branching on the
kind; the jitted side (model outputs, loss, step metrics) is the `Loss`'s."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from cnnjax import report as reporting
from cnnjax.data.datasets import Datasets
from cnnjax.metrics import classification_report, confusion_matrix, r_squared, regression_report
from cnnjax.train.losses import Loss

PREDICTION_PLOT = "predicted_vs_true.png"
TOP_LOSSES_FILE = "top_losses.csv"


class Evaluation(NamedTuple):
    """The validation recordings, each judged on its `Loss.window_outputs` averaged over
    its windows."""
    loss: float  # the mean over recordings of `Loss.recording_losses`
    confusion: np.ndarray | None  # classification: [C, C] (rows true); regression: None
    outputs: np.ndarray  # per recording: class probabilities [N, C], or predicted values [N]


@dataclass(frozen=True)
class Classification:
    """Accuracy during training; accuracy, balanced accuracy, macro-F1, per-class metrics
    and the confusion matrix in validation."""
    loss: Loss
    train_metrics = ("accuracy",)
    val_metrics = ("accuracy", "error_rate", "balanced_accuracy", "macro_f1")
    curves = reporting.CLASSIFICATION_CURVES

    def window_width(self, num_classes: int) -> int:
        return num_classes

    def evaluation(self, averaged: np.ndarray, datasets: Datasets) -> Evaluation:
        labels = datasets.val.labels
        probabilities = self.loss.probabilities(averaged)
        confusion = confusion_matrix(labels, probabilities.argmax(-1), len(datasets.class_names))
        return Evaluation(float(self.loss.recording_losses(averaged, labels).mean()),
                          confusion, probabilities.astype(np.float32))

    def train_record(self, means: dict[str, float]) -> dict[str, float]:
        return {"train_loss": means["loss"], "train_accuracy": means["accuracy"]}

    def report(self, evaluation: Evaluation, datasets: Datasets) -> dict[str, Any]:
        return classification_report(evaluation.confusion, datasets.class_names)

    def val_record(self, report: dict[str, Any]) -> dict[str, float]:
        return {f"val_{name}": report[name] for name in self.val_metrics}

    def epoch_line(self, record: dict[str, Any]) -> str:
        return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc "
                f"{record['train_accuracy']:.3f} | val loss {record['val_loss']:.4f} acc "
                f"{record['val_accuracy']:.3f} error_rate {record['val_error_rate']:.3f}")

    def write_report(self, workdir: Path, report: dict[str, Any], evaluation: Evaluation,
                     datasets: Datasets, title: str) -> None:
        """`report.json`, `confusion_matrix.png`, `top_losses.csv` (the recordings most
        confidently misclassified) and the summary on stdout."""
        names = datasets.class_names
        reporting.write_json(workdir / "report.json", report)
        reporting.plot_confusion_matrix(evaluation.confusion, names,
                                        workdir / "confusion_matrix.png", title=title)
        reporting.write_top_losses_csv(workdir / TOP_LOSSES_FILE, reporting.top_losses(
            datasets.val_file_names, datasets.val.labels, evaluation.outputs, names))
        print(reporting.format_summary(report, title=title), flush=True)

    def prediction_columns(self, class_names: Sequence[str]) -> list[str]:
        return ["predicted", *class_names]

    def prediction_fields(self, averaged: np.ndarray, class_names: Sequence[str]
                          ) -> dict[str, Any]:
        """One recording's row: the predicted class and each class's probability."""
        probabilities = self.loss.probabilities(averaged[None])[0]
        return {"predicted": class_names[int(probabilities.argmax())],
                **{name: float(p) for name, p in zip(class_names, probabilities)}}


@dataclass(frozen=True)
class Regression:
    """MAE, RMSE and R² in training and validation, each beside the baseline that always
    predicts the training targets' mean."""
    loss: Loss
    train_metrics = ("mae", "rmse", "r2")
    val_metrics = ("mae", "rmse", "r2")
    curves = reporting.REGRESSION_CURVES

    def window_width(self, num_classes: int) -> int:
        return 1

    def evaluation(self, averaged: np.ndarray, datasets: Datasets) -> Evaluation:
        targets = datasets.val.targets
        return Evaluation(float(self.loss.recording_losses(averaged, targets).mean()), None,
                          averaged[:, 0].astype(np.float32))

    def train_record(self, means: dict[str, float]) -> dict[str, float]:
        """From the epoch's means of the step sums: RMSE is the root of the mean squared
        error and R² compares it with the variance of the epoch's targets."""
        variance = means["target_squared"] - means["target"] ** 2
        return {"train_loss": means["loss"], "train_mae": means["mae"],
                "train_rmse": math.sqrt(means["mse"]),
                "train_r2": r_squared(means["mse"], variance)}

    def report(self, evaluation: Evaluation, datasets: Datasets) -> dict[str, Any]:
        targets = datasets.val.targets
        mean = float(np.mean(datasets.train.targets))
        baseline = regression_report(targets, np.full(len(targets), mean))
        return {**regression_report(targets, evaluation.outputs),
                "baseline": {"prediction": mean,
                             **{name: baseline[name] for name in self.val_metrics}}}

    def val_record(self, report: dict[str, Any]) -> dict[str, float]:
        return {f"val_{name}": report[name] for name in self.val_metrics}

    def epoch_line(self, record: dict[str, Any]) -> str:
        return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} mae "
                f"{record['train_mae']:.3f} | val loss {record['val_loss']:.4f} mae "
                f"{record['val_mae']:.3f} rmse {record['val_rmse']:.3f} r2 "
                f"{record['val_r2']:.3f}")

    def write_report(self, workdir: Path, report: dict[str, Any], evaluation: Evaluation,
                     datasets: Datasets, title: str) -> None:
        """`report.json`, `predicted_vs_true.png`, `top_losses.csv` (the
        recordings by absolute error, largest first) and the summary on stdout."""
        targets = datasets.val.targets
        reporting.write_json(workdir / "report.json", report)
        reporting.plot_predictions(targets, evaluation.outputs, workdir / PREDICTION_PLOT,
                                   title=title)
        reporting.write_csv(workdir / TOP_LOSSES_FILE, reporting.TOP_ERROR_FIELDS,
                            reporting.top_errors(datasets.val_file_names, targets,
                                                 evaluation.outputs))
        print(reporting.format_regression_summary(report, title=title), flush=True)

    def prediction_columns(self, class_names: Sequence[str]) -> list[str]:
        return ["predicted"]

    def prediction_fields(self, averaged: np.ndarray, class_names: Sequence[str]
                          ) -> dict[str, Any]:
        """One recording's row: its predicted value."""
        return {"predicted": float(averaged[0])}


Task = Classification | Regression


def task_for(loss: Loss) -> Task:
    return Regression(loss) if loss.regression else Classification(loss)


def record_keys(task: Task) -> tuple[str, ...]:
    """The numbers an epoch's record holds, any of which can pick the best checkpoint."""
    return ("learning_rate", "train_loss", *(f"train_{m}" for m in task.train_metrics),
            "val_loss", *(f"val_{m}" for m in task.val_metrics))
