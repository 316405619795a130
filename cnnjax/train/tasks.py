"""Classification or regression, as `config.loss.name` makes it (`task_kind`, the one place a
loss name picks a kind): how many outputs the model needs, what evaluation averages over a
recording's windows and what it makes of the averages (probabilities, values, losses per
recording), what an epoch records, what the validation report holds and which files it is
written to, what a prediction row says and what cross-validation summarizes. The loop,
evaluation, prediction and cv ask the run's task instead of branching on the kind; the
jitted side (the loss, the step metrics) is the `Loss`'s."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import report as reporting
from cnnjax.data.datasets import Datasets
from cnnjax.errors import ConfigError
from cnnjax.metrics import (classification_report, confusion_matrix, r_squared,
                            regression_report, summarize_folds, summarize_regression_folds)
from cnnjax.train.losses import REGRESSION_LOSSES, Loss, multi_margin_loss

PREDICTION_PLOT = "predicted_vs_true.png"
TOP_LOSSES_FILE = "top_losses.csv"
VAL_PREDICTIONS_FILE = "val_predictions.csv"


class Evaluation(NamedTuple):
    """The validation recordings, each judged on its `window_outputs` averaged over its
    windows."""
    loss: float  # the mean over recordings of `recording_losses`
    confusion: np.ndarray | None  # classification: [C, C] (rows true); regression: None
    outputs: np.ndarray  # per recording: class probabilities [N, C], or predicted values [N]


class _Task:
    """What both kinds share: the record keys and the validation record."""
    loss: Loss
    train_metrics: ClassVar[tuple[str, ...]]
    val_metrics: ClassVar[tuple[str, ...]]

    @classmethod
    def record_keys(cls) -> tuple[str, ...]:
        """The numbers an epoch's record holds, any of which can pick the best checkpoint."""
        return ("learning_rate", "train_loss", *(f"train_{m}" for m in cls.train_metrics),
                "val_loss", *(f"val_{m}" for m in cls.val_metrics))

    def val_record(self, report: dict[str, Any]) -> dict[str, float]:
        return {f"val_{name}": report[name] for name in self.val_metrics}


@dataclass(frozen=True)
class Classification(_Task):
    """Accuracy during training; accuracy, balanced accuracy, macro-F1, per-class metrics
    and the confusion matrix in validation."""
    loss: Loss = Loss()
    train_metrics: ClassVar = ("accuracy",)
    val_metrics: ClassVar = ("accuracy", "error_rate", "balanced_accuracy", "macro_f1")
    curves: ClassVar = reporting.CLASSIFICATION_CURVES

    @property
    def _hinge(self) -> bool:
        """The hinge's scores are margins, not logits: evaluation averages the scores."""
        return self.loss.name == "hinge"

    def num_outputs(self, num_classes: int) -> int:
        """How many units the model's output layer needs for the data's classes."""
        if self.loss.name != "binary_cross_entropy":
            return num_classes
        if num_classes != 2:
            raise ConfigError(f"config.loss.name='binary_cross_entropy' needs exactly 2 classes "
                              f"(the second one positive); the data has {num_classes}.")
        return 1

    def window_width(self, num_classes: int) -> int:
        return num_classes

    def window_outputs(self, outputs: jax.Array) -> jax.Array:
        """What evaluation averages over a recording's windows: class probabilities, or the
        hinge's scores."""
        scores = self.loss.class_scores(outputs)
        return scores if self._hinge else jax.nn.softmax(scores, -1)

    def probabilities(self, averaged: np.ndarray) -> np.ndarray:
        """Class probabilities from averaged `window_outputs`; for the hinge, whose scores
        are not probabilities, their softmax (its argmax is the hinge's prediction)."""
        if not self._hinge:
            return averaged
        return np.asarray(jax.nn.softmax(jnp.asarray(averaged, jnp.float32), -1), np.float64)

    def recording_losses(self, averaged: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The loss of each recording judged on its averaged `window_outputs`: the negative
        log of the true class's averaged probability (at least 1e-12), or the hinge of the
        averaged scores."""
        if self._hinge:
            return np.asarray(multi_margin_loss(jnp.asarray(averaged, jnp.float32),
                                                jnp.asarray(labels)))
        true = np.clip(averaged[np.arange(len(labels)), labels], 1e-12, None)
        return -np.log(true)

    def evaluation(self, averaged: np.ndarray, datasets: Datasets) -> Evaluation:
        labels = datasets.val.labels
        probabilities = self.probabilities(averaged)
        confusion = confusion_matrix(labels, probabilities.argmax(-1), len(datasets.class_names))
        return Evaluation(float(self.recording_losses(averaged, labels).mean()),
                          confusion, probabilities.astype(np.float32))

    def train_record(self, means: dict[str, float]) -> dict[str, float]:
        return {"train_loss": means["loss"], "train_accuracy": means["accuracy"]}

    def report(self, evaluation: Evaluation, datasets: Datasets) -> dict[str, Any]:
        return classification_report(evaluation.confusion, datasets.class_names)

    def epoch_line(self, record: dict[str, Any]) -> str:
        return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc "
                f"{record['train_accuracy']:.3f} | val loss {record['val_loss']:.4f} acc "
                f"{record['val_accuracy']:.3f} error_rate {record['val_error_rate']:.3f}")

    def write_report(self, workdir: Path, report: dict[str, Any], evaluation: Evaluation,
                     datasets: Datasets, title: str) -> None:
        """`report.json`, `confusion_matrix.png`, `top_losses.csv` (the recordings most
        confidently misclassified), `val_predictions.csv` (every validation recording's
        class probabilities, what `cnnjax.ensemble` averages) and the summary on stdout."""
        names = datasets.class_names
        reporting.write_json(workdir / "report.json", report)
        reporting.plot_confusion_matrix(evaluation.confusion, names,
                                        workdir / "confusion_matrix.png", title=title)
        reporting.write_top_losses_csv(workdir / TOP_LOSSES_FILE, reporting.top_losses(
            datasets.val_file_names, datasets.val.labels, evaluation.outputs, names))
        reporting.write_csv(workdir / VAL_PREDICTIONS_FILE, ["file", "label", *names], (
            {"file": file, "label": names[label], **dict(zip(names, map(float, row)))}
            for file, label, row in zip(datasets.val_file_names, datasets.val.labels,
                                        evaluation.outputs)))
        print(reporting.format_summary(report, title=title), flush=True)

    def prediction_columns(self, class_names: Sequence[str]) -> list[str]:
        return ["predicted", *class_names]

    def prediction_fields(self, averaged: np.ndarray, class_names: Sequence[str]
                          ) -> dict[str, Any]:
        """One recording's row: the predicted class and each class's probability."""
        probabilities = self.probabilities(averaged[None])[0]
        return {"predicted": class_names[int(probabilities.argmax())],
                **{name: float(p) for name, p in zip(class_names, probabilities)}}

    @staticmethod
    def summarize_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
        return summarize_folds(folds)

    @staticmethod
    def write_cv_report(workdir: Path, summary: dict[str, Any]) -> str:
        """`cv_report.md` and `cv_confusion_matrix.png` (pooled over folds); returns the
        Markdown."""
        text = reporting.cv_markdown(summary)
        (workdir / "cv_report.md").write_text(text)
        reporting.plot_confusion_matrix(
            summary["pooled"]["confusion_matrix"], summary["class_names"],
            workdir / "cv_confusion_matrix.png",
            title=f"{summary['num_folds']}-fold cross-validation, pooled")
        return text


@dataclass(frozen=True)
class Regression(_Task):
    """MAE, RMSE and R² in training and validation, each beside the baseline that always
    predicts the training targets' mean."""
    loss: Loss
    train_metrics: ClassVar = ("mae", "rmse", "r2")
    val_metrics: ClassVar = ("mae", "rmse", "r2")
    curves: ClassVar = reporting.REGRESSION_CURVES

    def num_outputs(self, num_classes: int) -> int:
        return 1

    def window_width(self, num_classes: int) -> int:
        return 1

    def window_outputs(self, outputs: jax.Array) -> jax.Array:
        """What evaluation averages over a recording's windows: the predicted value
        ([B, 1])."""
        return self.loss.values(outputs)[:, None]

    def recording_losses(self, averaged: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The regression loss of each recording's averaged value."""
        return np.asarray(self.loss.regression_term(jnp.asarray(averaged[:, 0], jnp.float32),
                                                    targets))

    def evaluation(self, averaged: np.ndarray, datasets: Datasets) -> Evaluation:
        targets = datasets.val.targets
        return Evaluation(float(self.recording_losses(averaged, targets).mean()), None,
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

    @staticmethod
    def summarize_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
        return summarize_regression_folds(folds)

    @staticmethod
    def write_cv_report(workdir: Path, summary: dict[str, Any]) -> str:
        """`cv_report.md` (no confusion matrix to draw); returns the Markdown."""
        text = reporting.cv_regression_markdown(summary)
        (workdir / "cv_report.md").write_text(text)
        return text


Task = Classification | Regression


def task_kind(loss_name: str) -> type[Classification] | type[Regression]:
    """The kind of target a loss trains for; its class-level parts (`record_keys`, the cv
    summary) need no trained loss."""
    return Regression if loss_name in REGRESSION_LOSSES else Classification


def task_for(loss: Loss) -> Task:
    """The task of a run trained with `loss`."""
    return task_kind(loss.name)(loss)
