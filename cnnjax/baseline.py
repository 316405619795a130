"""`--mode=baseline`: a simple model's numbers on exactly the recordings and folds of an
experiment, to read a CNN's result against.

A CNN's balanced accuracy says little on its own: a linear model on summary statistics may
do as well. This mode reads the recordings and their log-mels as training does (same
builder, feature settings and feature cache), describes each whole recording by the mean
and standard deviation over time of every mel band and of its frame-to-frame difference,
fits a standardised, class-balanced logistic regression on each fold's training side, and
summarises the validation sides as `--mode=cv` does: `baseline_report.json` and
`baseline_report.md` in the workdir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnjax import report as reporting
from cnnjax.config import validate_config
from cnnjax.data.datasets import (Recordings, load_recordings, recording_log_mels,
                                  split_recordings)
from cnnjax.data.image_datasets import IMAGE_SOURCES
from cnnjax.errors import ConfigError
from cnnjax.logs import logger
from cnnjax.metrics import classification_report, confusion_matrix, summarize_folds
from cnnjax.train.tasks import Regression, task_kind

MODEL = "log-mel statistics + logistic regression"
FEATURES = ("per mel band: mean and standard deviation over time of the log-mel and of its "
            "first difference along time (np.diff), 4 * n_mels numbers per recording")
CLASSIFIER = ("StandardScaler + LogisticRegression(class_weight='balanced', C=1.0, "
              "max_iter=2000), fitted on each training side")


def recording_features(log_mel: np.ndarray) -> np.ndarray:
    """The 4 * n_mels statistics of one `[n_mels, frames]` log-mel: band means, band stds,
    then the means and stds of the first difference along time. np.diff rather than
    librosa's smoothed delta: defined from two frames on, and checkable by hand."""
    delta = np.diff(log_mel, axis=1)
    return np.concatenate([log_mel.mean(axis=1), log_mel.std(axis=1),
                           delta.mean(axis=1), delta.std(axis=1)]).astype(np.float64)


def num_splits(config: Any) -> int:
    """How many train/validation splits the experiment has: its folds, or one when it
    names validation groups or asks for a hold-out split."""
    folds = config.data.num_folds
    return folds if folds >= 2 and not config.data.val_groups else 1


def _check(config: Any) -> None:
    """Refuses what a log-mel classifier cannot stand beside: images and regression."""
    validate_config(config)
    if config.data.name in IMAGE_SOURCES:
        raise ConfigError(f"--mode=baseline needs audio recordings, but config.data.name="
                          f"{config.data.name!r} is an image dataset.")
    if task_kind(config.loss.name) is Regression:
        raise ConfigError(f"--mode=baseline is a classifier, but config.loss.name="
                          f"{config.loss.name!r} is a regression loss.")


def make_classifier() -> Any:
    """The scikit-learn pipeline, imported here so that scikit-learn stays optional."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ConfigError("--mode=baseline needs scikit-learn: pip install "
                          "'cnnjax[baseline]'.") from None
    return make_pipeline(StandardScaler(),
                         LogisticRegression(class_weight="balanced", C=1.0, max_iter=2000))


def evaluate_fold(classifier: Any, features: np.ndarray, recordings: Recordings,
                  train: np.ndarray, val: np.ndarray) -> dict[str, Any]:
    """Fits `classifier` anew on the `train` recordings and reports it on the `val` ones."""
    labels, names = recordings.labels, recordings.class_names
    classifier.fit(features[train], labels[train])
    predicted = classifier.predict(features[val])
    return classification_report(confusion_matrix(labels[val], predicted, len(names)), names)


def _title(config: Any, num_folds: int) -> str:
    kind = "patient-grouped" if config.data.grouped else "stratified"
    if num_folds >= 2:
        return f"{MODEL}: {num_folds}-fold {kind} cross-validation (mean ± std over folds)"
    if config.data.val_groups:
        split = (f"validating on groups {list(config.data.val_groups)}, training on the "
                 f"others")
    else:
        split = f"{kind} hold-out split, {config.data.val_fraction:.0%} validation"
    return f"{MODEL}: {split} (one split, so no spread)"


def summary_line(summary: dict[str, Any]) -> str:
    """The headline numbers in one line."""
    k = summary["num_folds"]
    split = f"{k} folds" if k >= 2 else "one split"
    metrics, always = summary["metrics"], summary["baseline"]

    def spread(name: str) -> str:
        mean = f"{metrics[name]['mean']:.3f}"
        return f"{mean} ± {metrics[name]['std']:.3f}" if k >= 2 else mean

    recall = ", ".join(f"{name} {value['mean']:.3f}"
                       for name, value in summary["recall"].items())
    return (f"baseline ({MODEL}), {split}: balanced accuracy {spread('balanced_accuracy')}, "
            f"macro-F1 {spread('macro_f1')}, accuracy {spread('accuracy')}; recall {recall}; "
            f"always '{always['answer']}': balanced accuracy "
            f"{always['balanced_accuracy']['mean']:.3f}")


def evaluate_folds(config: Any, recordings: Recordings, features: np.ndarray,
                   classifier: Any) -> list[dict[str, Any]]:
    """Every split of the experiment (`num_splits`): its training size, validation
    recordings and `classifier`'s report on them."""
    folds = []
    for fold in range(num_splits(config)):
        train, val = split_recordings(config.data, recordings, fold)
        folds.append({"fold": fold, "num_train": int(train.size),
                      "val_file_names": [recordings.file_names[i] for i in val],
                      "report": evaluate_fold(classifier, features, recordings, train, val)})
    return folds


def run_baseline(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Evaluates the baseline on the experiment's folds (or its one split), writes
    `baseline_report.json` and `.md` into `workdir` and returns the report."""
    _check(config)
    classifier = make_classifier()  # before the data: a missing scikit-learn fails fast
    recordings = load_recordings(config.data)
    features = np.stack([recording_features(s) for s in recording_log_mels(config, recordings)])
    folds = evaluate_folds(config, recordings, features, classifier)
    summary = summarize_folds([f["report"] for f in folds])
    summary.update(num_folds=len(folds), grouped=bool(config.data.grouped),
                   split_seed=config.data.split_seed)
    text = reporting.cv_markdown(summary, model="baseline", title=_title(config, len(folds)))
    line = summary_line(summary)
    # cv's summary calls the majority answer its baseline; here that word is taken.
    always_majority = summary.pop("baseline")
    report = {"model": MODEL, "features": FEATURES, "classifier": CLASSIFIER,
              "num_features": int(features.shape[1]), "num_recordings": len(recordings.records),
              **summary, "always_majority": always_majority,
              "val_fraction": config.data.val_fraction,
              "val_groups": list(config.data.val_groups), "folds": folds}
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reporting.write_json(workdir / "baseline_report.json", report)
    (workdir / "baseline_report.md").write_text(text)
    logger.info(f"{line}. Wrote {workdir / 'baseline_report.json'} and .md")
    return report
