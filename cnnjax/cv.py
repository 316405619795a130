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
from pathlib import Path
from typing import Any

import jax
import ml_collections

from cnnjax import report as reporting
from cnnjax.errors import ConfigError
from cnnjax.logs import logger
from cnnjax.train.tasks import task_kind

DEFAULT_FOLDS = 5
FOLD_REPORT = "cv_fold_report.json"


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
            logger.info(f"fold {fold + 1}/{num_folds}: finished before, reading {done}")
            folds.append(finished["report"])
            continue
        logger.info(f"fold {fold + 1}/{num_folds} in {fold_dir}")
        report = train_and_evaluate(fold_config(config, fold, num_folds), fold_dir)
        if writer:
            reporting.write_json(done, {"num_epochs": config.num_epochs, "report": report})
        folds.append(report)
    task = task_kind(config.loss.name)
    summary = task.summarize_folds(folds)
    summary.update(num_folds=num_folds, grouped=bool(config.data.grouped),
                   split_seed=config.data.split_seed)
    if writer:
        reporting.write_json(workdir / "cv_report.json", summary)
        print(task.write_cv_report(workdir, summary), flush=True)
    return summary
