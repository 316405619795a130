"""--mode=cv: every fold trained in its own workdir, finished folds skipped on a rerun, and
the summary equal to what the per-fold reports give."""

import json

import numpy as np
import pytest

from cnnjax.metrics import classification_report, summarize_folds
from readback import assert_confusion_png
from test_cli import TINY, run_main

NAMES = ["extrastole", "murmur", "normal"]


def test_summary_is_the_folds_mean_std_pooled_and_majority_baseline():
    folds = [classification_report(np.array(c), NAMES) for c in (
        [[1, 1, 0], [0, 2, 1], [0, 1, 4]], [[2, 0, 0], [1, 1, 1], [1, 0, 5]])]
    summary = summarize_folds(folds)
    assert summary["metrics"]["accuracy"]["folds"] == [7 / 10, 8 / 11]
    assert summary["metrics"]["accuracy"]["mean"] == pytest.approx((7 / 10 + 8 / 11) / 2)
    assert summary["metrics"]["accuracy"]["std"] == pytest.approx(abs(7 / 10 - 8 / 11) / 2)
    assert summary["recall"]["murmur"]["folds"] == pytest.approx([2 / 3, 1 / 3])
    assert summary["pooled"]["confusion_matrix"] == [[3, 1, 0], [1, 3, 2], [1, 1, 9]]
    # Always 'normal' (the most common class overall): accuracy = its share of each fold,
    # balanced accuracy 1/3, macro-F1 = F1 of 'normal' / 3.
    baseline = summary["baseline"]
    assert baseline["answer"] == "normal"
    assert baseline["accuracy"]["folds"] == pytest.approx([5 / 10, 6 / 11])
    assert baseline["balanced_accuracy"]["mean"] == pytest.approx(1 / 3)
    assert baseline["macro_f1"]["folds"][0] == pytest.approx((2 * 0.5 / 1.5) / 3)


def mean_std(spread) -> str:
    return f"{spread['mean']:.3f} ± {spread['std']:.3f}"


@pytest.mark.slow
def test_cv_trains_every_grouped_fold_once_and_resumes(tmp_path):
    workdir = tmp_path / "cv"
    flags = [f"--workdir={workdir}", "--mode=cv", *TINY, "--config.num_epochs=1",
             "--config.data.num_folds=3", "--config.data.grouped=True",
             "--config.data.synthetic.num_per_class=(('normal',9),('murmur',6),('extrastole',6))"]
    result = run_main(*flags, data_dir=tmp_path / "data", timeout=600)
    assert result.returncode == 0, result.stderr
    folds = [json.loads((workdir / f"fold_{i}" / "report.json").read_text()) for i in range(3)]
    # Every labelled recording is validated exactly once over the folds.
    (index,) = (tmp_path / "data").glob("synthetic_heartbeat-*/set_b.csv")
    assert sum(f["num_examples"] for f in folds) == len(index.read_text().splitlines()) - 1
    summary = json.loads((workdir / "cv_report.json").read_text())
    assert summary["metrics"]["balanced_accuracy"]["mean"] == pytest.approx(
        np.mean([f["balanced_accuracy"] for f in folds]))
    assert summary["pooled"]["confusion_matrix"] == np.sum(
        [f["confusion_matrix"] for f in folds], axis=0).tolist()
    assert_confusion_png(workdir / "cv_confusion_matrix.png",
                         summary["pooled"]["confusion_matrix"])
    table = {cells[0]: cells[1:] for line in (workdir / "cv_report.md").read_text().splitlines()
             if line.startswith("| ") for cells in [line.strip("| ").split(" | ")]}
    assert table["metric"] == ["cnnjax", "always 'normal'"]
    for metric, spread in summary["metrics"].items():
        assert table[metric.replace("_", " ")] == [mean_std(spread),
                                                   mean_std(summary["baseline"][metric])]
    for name, spread in summary["recall"].items():
        assert table[f"recall {name}"][0] == mean_std(spread)

    again = run_main(*flags, data_dir=tmp_path / "data", timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("finished before") == 3
    assert json.loads((workdir / "cv_report.json").read_text()) == summary
