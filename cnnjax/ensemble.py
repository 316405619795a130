"""Ensembles of finished classification runs, judged on the same validation recordings: each
recording's class probabilities averaged over the runs (`val_predictions.csv`, which every
classification run writes), then the report a single run would give. For cross-validation
workdirs (`--mode=cv`) fold i of every run is averaged with fold i of the others and the cv reports
are written as `--mode=cv` writes them, so an ensemble of seeds or of recipes reads like
one more row beside its members.

    python -m cnnjax.ensemble --out runs/ensemble runs/seed0_cv runs/seed1_cv runs/seed2_cv

The runs must have validated on the same recordings with the same labels and classes (the
same data, split, folds and `config.data.split_seed`); anything else is an error naming the
first difference. Averaging the runs' probabilities is one fixed rule, chosen before any
run: no weight or member is picked by its validation score.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnjax import report as reporting
from cnnjax.errors import DataError
from cnnjax.metrics import classification_report, confusion_matrix, summarize_folds
from cnnjax.train.tasks import VAL_PREDICTIONS_FILE, Classification


def read_predictions(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """`val_predictions.csv` as (files, labels, class names, probabilities [N, C])."""
    if not path.exists():
        raise DataError(f"{path} not found: ensembles need every run's validation "
                        f"predictions (written by cnnjax runs and their --mode=eval).")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        names = list(reader.fieldnames or [])[2:]
        rows = list(reader)
    probabilities = np.array([[float(row[n]) for n in names] for row in rows], np.float64)
    return ([row["file"] for row in rows], [row["label"] for row in rows], names,
            probabilities.reshape(len(rows), len(names)))


def ensemble_report(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """The classification report of the runs' averaged probabilities (one validation set)."""
    members = [read_predictions(d / VAL_PREDICTIONS_FILE) for d in run_dirs]
    files, labels, names, _ = members[0]
    for run_dir, (other_files, other_labels, other_names, _) in zip(run_dirs[1:],
                                                                     members[1:]):
        for what, ours, theirs in (("classes", names, other_names),
                                   ("validation recordings", files, other_files),
                                   ("labels", labels, other_labels)):
            if ours != theirs:
                raise DataError(f"{run_dir} validated on other {what} than {run_dirs[0]}: "
                                f"an ensemble needs the same data, split and folds.")
    averaged = np.mean([probabilities for *_, probabilities in members], axis=0)
    truth = np.array([names.index(label) for label in labels])
    return classification_report(confusion_matrix(truth, averaged.argmax(-1), len(names)),
                                 names)


def fold_dirs(run_dir: Path) -> list[Path]:
    """A cv workdir's `fold_<i>` folders in fold order, or [] for a single run."""
    folds = [d for d in run_dir.glob("fold_*") if d.name.removeprefix("fold_").isdigit()]
    return sorted(folds, key=lambda d: int(d.name.removeprefix("fold_")))


def cv_settings(run_dir: Path) -> dict[str, Any]:
    """How a finished cv run split its data, from its `cv_report.json`."""
    path = run_dir / "cv_report.json"
    if not path.exists():
        raise DataError(f"{path} not found: {run_dir} is not a finished --mode=cv run.")
    summary = json.loads(path.read_text())
    return {"grouped": summary["grouped"], "split_seed": summary["split_seed"]}


def ensemble(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Writes the ensemble's reports into `out`: `report.json` for single runs, the cv
    reports (`cv_report.json`, `.md`, pooled confusion matrix) for cv workdirs."""
    run_dirs, out = [Path(d) for d in run_dirs], Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folds = [fold_dirs(d) for d in run_dirs]
    if not any(folds):
        report = ensemble_report(run_dirs)
        reporting.write_json(out / "report.json", {**report, "members": list(map(str, run_dirs))})
        print(reporting.format_summary(report, title=f"Ensemble of {len(run_dirs)} runs"))
        return report
    counts = {len(f) for f in folds}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"the runs have {[len(f) for f in folds]} folds: an ensemble of cv "
                        f"runs needs the same folds in each.")
    settings = [cv_settings(d) for d in run_dirs]
    if any(other != settings[0] for other in settings[1:]):
        raise DataError(f"the cv runs were split differently ({settings}): an ensemble needs "
                        f"the same folds in each.")
    reports = [ensemble_report(members) for members in zip(*folds)]
    summary = summarize_folds(reports)
    summary.update(num_folds=len(reports), **settings[0], members=list(map(str, run_dirs)))
    reporting.write_json(out / "cv_report.json", summary)
    print(Classification.write_cv_report(out, summary), flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run or --mode=cv workdirs")
    parser.add_argument("--out", required=True, help="folder for the ensemble's reports")
    args = parser.parse_args(argv)
    ensemble(args.runs, args.out)


if __name__ == "__main__":
    main()
