"""`--mode=cv`: one experiment over every fold of a k-fold split, as one command.

Fold i trains in `<workdir>/fold_<i>/` with `config.data.fold = i` (stratified folds, never
splitting a patient when `config.data.grouped`), so an interrupted cv run resumes inside the
fold it was in and skips the folds already finished. The summary goes to `cv_report.json`,
`cv_report.md` and `cv_confusion_matrix.png`: mean and standard deviation over folds of
accuracy, balanced accuracy, macro-F1 and per-class recall, the confusion matrix pooled over
folds (every recording is validated exactly once), and beside them the baseline that always
answers the most common class. A regression run (`config.loss.name` 'mse', 'mae', 'huber')
reports MAE, RMSE and R² instead, beside the baseline that always predicts the fold's
training mean, and draws no confusion matrix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cnnjax import report as reporting
from cnnjax.errors import ConfigError
from cnnjax.metrics import classification_report
from cnnjax.train.losses import REGRESSION_LOSSES, loss_name

DEFAULT_FOLDS = 5
FOLD_REPORT = "cv_fold_report.json"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
REGRESSION_METRICS = ("mae", "rmse", "r2")


def fold_config(config: Any, fold: int, num_folds: int) -> ml_collections.ConfigDict:
    """`config` validating on fold `fold` of `num_folds`."""
    fold_config = ml_collections.ConfigDict(config.to_dict())
    fold_config.data.num_folds, fold_config.data.fold = num_folds, fold
    return fold_config


def cross_validate(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Trains and evaluates every fold (`config.data.num_folds`, 5 when 0), skipping those
    finished before, and writes the cv reports into `workdir`."""
    from cnnjax.train.loop import train_and_evaluate

    num_folds = config.data.num_folds or DEFAULT_FOLDS
    if num_folds < 2:
        raise ConfigError(f"config.data.num_folds={num_folds}: cross-validation needs at "
                          f"least 2 folds.")
    workdir = Path(workdir)
    writer = jax.process_index() == 0
    folds = []
    for fold in range(num_folds):
        fold_dir = workdir / f"fold_{fold}"
        done = fold_dir / FOLD_REPORT
        finished = json.loads(done.read_text()) if done.exists() else None
        if finished and finished["num_epochs"] == config.num_epochs:
            _log(f"fold {fold + 1}/{num_folds}: finished before, reading {done}")
            folds.append(finished["report"])
            continue
        _log(f"fold {fold + 1}/{num_folds} in {fold_dir}")
        report = train_and_evaluate(fold_config(config, fold, num_folds), fold_dir)
        if writer:
            reporting.write_json(done, {"num_epochs": config.num_epochs, "report": report})
        folds.append(report)
    regression = loss_name(config) in REGRESSION_LOSSES
    summary = (summarize_regression if regression else summarize)(folds)
    summary.update(num_folds=num_folds, grouped=bool(config.data.grouped),
                   split_seed=config.data.split_seed)
    if writer:
        text = (markdown_regression if regression else markdown)(summary)
        reporting.write_json(workdir / "cv_report.json", summary)
        (workdir / "cv_report.md").write_text(text)
        if not regression:
            reporting.plot_confusion_matrix(
                summary["pooled"]["confusion_matrix"], summary["class_names"],
                workdir / "cv_confusion_matrix.png",
                title=f"{num_folds}-fold cross-validation, pooled")
        print(text, flush=True)
    return summary


def _log(message: str) -> None:
    print(f"cnnjax: {message}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and std (ddof=0) over folds, and the folds' values."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "folds": [float(v) for v in values]}


def summarize(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (over folds, ddof=0) of each metric and per-class recall, the pooled
    confusion matrix's report, and the majority-class baseline on the same folds."""
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
        "metrics": {m: spread([f[m] for f in folds]) for m in METRICS},
        "recall": {n: spread([f["per_class"][n]["recall"] for f in folds]) for n in names},
        "pooled": classification_report(pooled, names),
        "baseline": {"answer": names[majority],
                     **{m: spread([b[m] for b in baselines]) for m in METRICS}},
    }


def markdown(summary: dict[str, Any], *, model: str = "cnnjax", title: str = "") -> str:
    """The cv summary as a Markdown table (mean +- std over folds); `model` heads the column
    of `summary`'s own numbers, `title` replaces the k-fold heading."""
    k = summary["num_folds"]
    kind = "patient-grouped" if summary["grouped"] else "stratified"
    title = title or f"{k}-fold {kind} cross-validation (mean ± std over folds)"
    lines = [title, "",
             f"| metric | {model} | always '{summary['baseline']['answer']}' |", "|---|---|---|"]
    for metric in METRICS:
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


def summarize_regression(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (over folds, ddof=0) of MAE, RMSE and R², and of the same for the
    baseline that always predicts each fold's training mean."""
    return {
        "num_examples": int(sum(f["num_examples"] for f in folds)),
        "metrics": {m: spread([f[m] for f in folds]) for m in REGRESSION_METRICS},
        "baseline": {"answer": "the training mean",
                     **{m: spread([f["baseline"][m] for f in folds])
                        for m in REGRESSION_METRICS}},
    }


def markdown_regression(summary: dict[str, Any]) -> str:
    """The regression cv summary as a Markdown table (mean +- std over folds)."""
    k = summary["num_folds"]
    kind = "patient-grouped" if summary["grouped"] else "stratified"
    lines = [f"{k}-fold {kind} cross-validation (mean ± std over folds)", "",
             "| metric | cnnjax | always the training mean |", "|---|---|---|"]
    for metric, name in zip(REGRESSION_METRICS, ("MAE", "RMSE", "R²")):
        ours, base = summary["metrics"][metric], summary["baseline"][metric]
        lines.append(f"| {name} | {ours['mean']:.3f} ± {ours['std']:.3f} "
                     f"| {base['mean']:.3f} ± {base['std']:.3f} |")
    lines += ["", f"{summary['num_examples']} recordings, each validated once.", ""]
    return "\n".join(lines)
