"""Classification metrics computed from a confusion matrix, regression metrics (MAE, RMSE,
R²) computed from targets and predictions, and their summaries over cross-validation folds.

Plain numpy, so evaluation results can be summarised and stored without a
device or a traced computation in the way.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FOLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")  # summarized over cv folds
REGRESSION_METRICS = ("mae", "rmse", "r2")


def _as_class_indices(values: ArrayLike, what: str, num_classes: int) -> np.ndarray:
    """Return ``values`` as a flat int64 array, rejecting anything that is not a class index."""
    array = np.asarray(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integer class indices, got dtype {array.dtype}.")
    array = array.reshape(-1).astype(np.int64)
    outside = (array < 0) | (array >= num_classes)
    if outside.any():
        raise ValueError(
            f"{what} must lie in [0, {num_classes}), but {int(outside.sum())} value(s) do not "
            f"(first: {int(array[outside][0])})."
        )
    return array


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Count (true class, predicted class) pairs.

    The result is a ``(num_classes, num_classes)`` int64 matrix whose rows are
    true classes and whose columns are predicted classes; every other metric in
    this module is derived from it, so evaluation only has to accumulate counts.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
    if np.shape(labels) != np.shape(predictions):
        raise ValueError(
            f"labels and predictions must have the same shape, got {np.shape(labels)} "
            f"and {np.shape(predictions)}."
        )
    true = _as_class_indices(labels, "labels", num_classes)
    predicted = _as_class_indices(predictions, "predictions", num_classes)
    counts = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise division that yields 0.0 where the denominator is 0 (no NaN in reports)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def classification_report(confusion: ArrayLike, class_names: Sequence[str]) -> dict[str, Any]:
    """Summarise a confusion matrix as plain Python types, ready for ``json.dump``.

    Undefined ratios (no predictions of a class, no examples of a class, an
    empty matrix) are reported as 0.0 rather than NaN, matching scikit-learn's
    ``zero_division=0``. Balanced accuracy averages recall only over classes
    that occur in the data, because a class with no examples has no recall;
    macro-F1 averages over every class.
    """
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {matrix.shape}.")
    names = [str(name) for name in class_names]
    if len(names) != matrix.shape[0]:
        raise ValueError(
            f"Got {len(names)} class names for a {matrix.shape[0]}-class confusion matrix."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}.")

    matrix = matrix.astype(np.int64)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    total = int(matrix.sum())

    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support)
    # 2TP / (2TP + FP + FN), the same value as the harmonic mean of precision
    # and recall, but defined (as 0) when both of those are 0.
    f1 = _safe_divide(2 * true_positives, support + predicted)

    accuracy = float(_safe_divide(np.trace(matrix), total))
    present = support > 0
    balanced_accuracy = float(recall[present].mean()) if present.any() else 0.0

    return {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "balanced_accuracy": balanced_accuracy,
        "macro_f1": float(f1.mean()),
        "num_examples": total,
        "class_names": names,
        "confusion_matrix": matrix.tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
    }


def r_squared(squared_error_sum: float, total_sum_of_squares: float) -> float:
    """The coefficient of determination 1 - SSE / SST. Constant targets (SST = 0) give 1.0
    for exact predictions and 0.0 otherwise (scikit-learn's convention), never NaN."""
    if total_sum_of_squares > 0:
        return float(1.0 - squared_error_sum / total_sum_of_squares)
    return 1.0 if squared_error_sum == 0 else 0.0


def regression_report(targets: ArrayLike, predictions: ArrayLike) -> dict[str, Any]:
    """MAE, RMSE and R² of `predictions` against `targets` (float64, plain Python types,
    ready for ``json.dump``), with the targets' mean and standard deviation for scale."""
    true = np.asarray(targets, np.float64).reshape(-1)
    predicted = np.asarray(predictions, np.float64).reshape(-1)
    if true.shape != predicted.shape or not true.size:
        raise ValueError(f"targets and predictions must be non-empty and of one length, got "
                         f"{true.size} and {predicted.size}.")
    errors = predicted - true
    return {
        "mae": float(np.abs(errors).mean()),
        "rmse": float(np.sqrt(np.square(errors).mean())),
        "r2": r_squared(float(np.square(errors).sum()), float(np.square(true - true.mean()).sum())),
        "num_examples": int(true.size),
        "target_mean": float(true.mean()),
        "target_std": float(true.std()),
    }


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and std (ddof=0) over folds, and the folds' values."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "folds": [float(v) for v in values]}


def summarize_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (over folds, ddof=0) of each metric and per-class recall of the folds'
    `classification_report`s, the pooled confusion matrix's report, and the majority-class
    baseline on the same folds."""
    names = folds[0]["class_names"]
    pooled = np.sum([np.asarray(f["confusion_matrix"]) for f in folds], axis=0)
    majority = int(pooled.sum(axis=1).argmax())

    def always_majority(confusion: np.ndarray) -> dict[str, Any]:
        guessed = np.zeros_like(confusion)
        guessed[:, majority] = confusion.sum(axis=1)
        return classification_report(guessed, names)

    baselines = [always_majority(np.asarray(f["confusion_matrix"])) for f in folds]
    return {
        "class_names": names,
        "metrics": {m: spread([f[m] for f in folds]) for m in FOLD_METRICS},
        "recall": {n: spread([f["per_class"][n]["recall"] for f in folds]) for n in names},
        "pooled": classification_report(pooled, names),
        "baseline": {"answer": names[majority],
                     **{m: spread([b[m] for b in baselines]) for m in FOLD_METRICS}},
    }


def summarize_regression_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (over folds, ddof=0) of MAE, RMSE and R², and of the same for the
    baseline that always predicts each fold's training mean (each fold's report holds it)."""
    return {
        "num_examples": int(sum(f["num_examples"] for f in folds)),
        "metrics": {m: spread([f[m] for f in folds]) for m in REGRESSION_METRICS},
        "baseline": {"answer": "the training mean",
                     **{m: spread([f["baseline"][m] for f in folds])
                        for m in REGRESSION_METRICS}},
    }
