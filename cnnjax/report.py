"""Writing run results to disk: JSON files, JSON-lines logs, CSV tables, PNG plots and text
summaries.

Figures are drawn on ``matplotlib.figure.Figure`` objects directly rather than
through ``pyplot``, so plotting works on machines without a display, does not
change the process-wide backend, and never leaves figures open in pyplot's
global registry during a long training run.
"""

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from cnnjax.metrics import FOLD_METRICS, REGRESSION_METRICS

# Above this many classes, per-cell counts are unreadable and slow to draw, so
# the confusion matrix plot shows colour only.
MAX_ANNOTATED_CLASSES = 30
PNG_DPI = 100  # every plot is written at this resolution


def _to_json(value: Any) -> Any:
    """Let ``json`` serialise numpy/JAX scalars and arrays, which turn up in metric records."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_text(path: str | os.PathLike, newline: str | None = None) -> Iterator[TextIO]:
    """A text file that replaces ``path`` only once fully written and synced.

    The data goes to a temporary file in the same directory, so a crash mid-write never
    leaves a truncated file behind and an error keeps the previous one. The file gets the
    permissions an ordinary ``open`` would (``mkstemp`` makes it private to its owner), so
    colleagues sharing a workdir can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with _atomic_text(path) as f:
        json.dump(obj, f, indent=2, default=_to_json)
        f.write("\n")


def write_csv(path: str | os.PathLike, fields: Sequence[str],
              rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV with a header of ``fields``, atomically. Floats keep every
    digit (``repr``), so values read back compare equal."""
    with _atomic_text(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line.

    The file is opened and closed on every call, so each line reaches the file
    immediately and a log survives the process being killed between epochs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_to_json)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read every record written by ``append_jsonl``, skipping blank lines."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _save_png(fig: Figure, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=PNG_DPI)


def png_bytes(fig: Figure) -> bytes:
    """`fig` as the PNG that `_save_png` would write, for figures that go elsewhere than a
    file (TensorBoard)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


def plot_confusion_matrix(
    confusion: ArrayLike,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
) -> None:
    """Save a confusion-matrix heat map as PNG: true class on y, predicted class on x."""
    _save_png(confusion_matrix_figure(confusion, class_names, title), path)


def confusion_matrix_figure(confusion: ArrayLike, class_names: Sequence[str],
                            title: str = "Confusion matrix") -> Figure:
    """The heat map `plot_confusion_matrix` saves: true class on y, predicted class on x."""
    matrix = np.asarray(confusion)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"Got {n} class names for a confusion matrix of shape {matrix.shape}.")

    side = min(max(4.0, 0.6 * n + 2.0), 20.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))

    ax.set_title(title)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=class_names)

    if n <= MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                count = int(matrix[i, j])
                color = "white" if count > threshold else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color)
    return fig


Panels = Sequence[tuple[str, Sequence[tuple[str, str]]]]  # (title, ((record key, label), ...))
_LOSS_PANEL = ("Loss", (("train_loss", "train"), ("val_loss", "validation")))
CLASSIFICATION_CURVES: Panels = (
    _LOSS_PANEL,
    ("Accuracy", (("train_accuracy", "train"), ("val_accuracy", "validation"))),
)
REGRESSION_CURVES: Panels = (
    _LOSS_PANEL,
    ("MAE", (("train_mae", "train"), ("val_mae", "validation"))),
)


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike,
                panels: Panels = CLASSIFICATION_CURVES) -> None:
    """Save curves by epoch as a PNG with one panel per entry of ``panels``: loss and
    accuracy by default, loss and MAE for a regression run (``REGRESSION_CURVES``).

    Each record may lack any of the keys (validation may run only every few
    epochs, for example); each series is drawn from the records that have it.
    Records without ``epoch`` are placed by their 1-based position.
    """
    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, series) in zip(axes, panels):
        plotted = False
        for key, label in series:
            points = [
                (record.get("epoch", position), record[key])
                for position, record in enumerate(history, start=1)
                if record.get(key) is not None
            ]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
                plotted = True
        ax.set_title(panel_title)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)

    _save_png(fig, path)


def format_summary(report: dict[str, Any], *, title: str = "Validation") -> str:
    """Render a ``classification_report`` dict as a short plain-text block for logs and consoles."""
    names = [str(name) for name in report["class_names"]]
    name_width = max([len("class"), *map(len, names)])

    lines = [
        f"{title} ({report['num_examples']} examples)",
        f"  accuracy           {report['accuracy']:.4f}",
        f"  error rate         {report['error_rate']:.4f}",
        f"  balanced accuracy  {report['balanced_accuracy']:.4f}",
        f"  macro-F1           {report['macro_f1']:.4f}",
        "",
        f"  {'class':<{name_width}}  precision  recall      f1  support",
    ]
    for name in names:
        stats = report["per_class"][name]
        lines.append(
            f"  {name:<{name_width}}  {stats['precision']:9.4f}  {stats['recall']:6.4f}"
            f"  {stats['f1']:6.4f}  {stats['support']:7d}"
        )

    matrix = report["confusion_matrix"]
    cell_width = max([*map(len, names), *(len(str(c)) for row in matrix for c in row)])
    lines += [
        "",
        "  confusion matrix (rows: true, columns: predicted)",
        f"  {'':<{name_width}}  " + " ".join(f"{name:>{cell_width}}" for name in names),
    ]
    for name, row in zip(names, matrix):
        lines.append(
            f"  {name:<{name_width}}  " + " ".join(f"{count:>{cell_width}d}" for count in row)
        )
    return "\n".join(lines)


TOP_LOSS_FIELDS = ("file", "actual", "predicted", "predicted_probability",
                   "actual_probability", "loss")


def top_losses(
    file_names: Sequence[str],
    labels: ArrayLike,
    probabilities: ArrayLike,
    class_names: Sequence[str],
    k: int | None = None,
) -> list[dict[str, Any]]:
    """The misclassified examples, most confidently wrong first: the recordings worth
    listening to first (mislabelled ones, or the model's blind spots).

    Sorted by the cross-entropy loss ``-ln p(actual)``, largest first (ties keep the input
    order), at most ``k`` of them. ``probabilities`` is ``[examples, classes]`` (softmax
    outputs); a probability that underflowed to 0 counts as the smallest positive float64,
    so its loss stays finite (about 708). Each row has the fields ``TOP_LOSS_FIELDS``.
    """
    names = [str(name) for name in class_names]
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(file_names)
    if probs.shape != (n, len(names)) or labels.shape != (n,):
        raise ValueError(
            f"Expected {n} labels and [{n}, {len(names)}] probabilities for {n} files and "
            f"{len(names)} classes, got shapes {labels.shape} and {probs.shape}."
        )
    if labels.size and (not np.issubdtype(labels.dtype, np.integer)
                        or labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must be class indices in [0, {len(names)}), got {labels}.")
    if k is not None and k < 0:
        raise ValueError(f"k must be None or non-negative, got {k}.")
    predicted = probs.argmax(axis=1)
    actual_probability = probs[np.arange(n), labels]
    losses = -np.log(np.maximum(actual_probability, np.finfo(np.float64).tiny))
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-losses[wrong], kind="stable")][:k]
    return [
        {
            "file": str(file_names[i]),
            "actual": names[labels[i]],
            "predicted": names[predicted[i]],
            "predicted_probability": float(probs[i, predicted[i]]),
            "actual_probability": float(actual_probability[i]),
            "loss": float(losses[i]),
        }
        for i in order
    ]


def write_top_losses_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``top_losses`` rows as CSV (header only when nothing was misclassified)."""
    write_csv(path, TOP_LOSS_FIELDS, rows)


def format_regression_summary(report: dict[str, Any], *, title: str = "Validation") -> str:
    """Render a regression report (``metrics.regression_report``, with its ``baseline``)
    as a short plain-text block: each metric beside that of always predicting the
    training targets' mean."""
    baseline = report["baseline"]
    lines = [
        f"{title} ({report['num_examples']} examples; targets "
        f"{report['target_mean']:.4g} ± {report['target_std']:.4g})",
        f"  {'':<6}  {'model':>10}  {'always ' + format(baseline['prediction'], '.4g'):>14}",
    ]
    for key, name in (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²")):
        lines.append(f"  {name:<6}  {report[key]:10.4f}  {baseline[key]:14.4f}")
    return "\n".join(lines)


def plot_predictions(targets: ArrayLike, predictions: ArrayLike, path: str | os.PathLike,
                     title: str = "Predicted vs true") -> None:
    """Save a scatter plot of predicted against true values, with the diagonal on which
    exact predictions lie."""
    true, predicted = np.asarray(targets, float), np.asarray(predictions, float)
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(true, predicted, s=14, alpha=0.7)
    low = float(min(true.min(), predicted.min()))
    high = float(max(true.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    _save_png(fig, path)


TOP_ERROR_FIELDS = ("file", "actual", "predicted", "error")


def top_errors(file_names: Sequence[str], targets: ArrayLike, predictions: ArrayLike,
               k: int | None = None) -> list[dict[str, Any]]:
    """The regression counterpart of ``top_losses``: the examples by absolute error,
    largest first (ties keep the input order), at most ``k``; ``error`` is predicted minus
    actual. Each row has the fields ``TOP_ERROR_FIELDS``."""
    true = np.asarray(targets, np.float64)
    predicted = np.asarray(predictions, np.float64)
    if true.shape != (len(file_names),) or predicted.shape != true.shape:
        raise ValueError(f"Expected {len(file_names)} targets and predictions, got shapes "
                         f"{true.shape} and {predicted.shape}.")
    errors = predicted - true
    order = np.argsort(-np.abs(errors), kind="stable")[:k]
    return [{"file": str(file_names[i]), "actual": float(true[i]),
             "predicted": float(predicted[i]), "error": float(errors[i])} for i in order]


def _cv_title(summary: dict[str, Any]) -> str:
    kind = "patient-grouped" if summary["grouped"] else "stratified"
    return f"{summary['num_folds']}-fold {kind} cross-validation (mean ± std over folds)"


def cv_markdown(summary: dict[str, Any], *, model: str = "cnnjax", title: str = "") -> str:
    """A `metrics.summarize_folds` summary (with `num_folds` and `grouped`) as a Markdown
    table (mean +- std over folds); `model` heads the column of `summary`'s own numbers,
    `title` replaces the k-fold heading."""
    lines = [title or _cv_title(summary), "",
             f"| metric | {model} | always '{summary['baseline']['answer']}' |", "|---|---|---|"]
    for metric in FOLD_METRICS:
        ours, base = summary["metrics"][metric], summary["baseline"][metric]
        lines.append(f"| {metric.replace('_', ' ')} | {ours['mean']:.3f} ± {ours['std']:.3f} "
                     f"| {base['mean']:.3f} ± {base['std']:.3f} |")
    for name, recall in summary["recall"].items():
        lines.append(f"| recall {name} | {recall['mean']:.3f} ± {recall['std']:.3f} | "
                     f"{1.0 if name == summary['baseline']['answer'] else 0.0:.3f} |")
    pooled = summary["pooled"]
    lines += ["", f"Pooled over folds ({pooled['num_examples']} recordings): accuracy "
              f"{pooled['accuracy']:.3f}, balanced accuracy {pooled['balanced_accuracy']:.3f}, "
              f"macro-F1 {pooled['macro_f1']:.3f}.", ""]
    return "\n".join(lines)


def cv_regression_markdown(summary: dict[str, Any]) -> str:
    """A `metrics.summarize_regression_folds` summary as a Markdown table (mean +- std over
    folds)."""
    lines = [_cv_title(summary), "",
             "| metric | cnnjax | always the training mean |", "|---|---|---|"]
    for metric, name in zip(REGRESSION_METRICS, ("MAE", "RMSE", "R²")):
        ours, base = summary["metrics"][metric], summary["baseline"][metric]
        lines.append(f"| {name} | {ours['mean']:.3f} ± {ours['std']:.3f} "
                     f"| {base['mean']:.3f} ± {base['std']:.3f} |")
    lines += ["", f"{summary['num_examples']} recordings, each validated once.", ""]
    return "\n".join(lines)
