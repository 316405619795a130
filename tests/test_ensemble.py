"""`cnnjax.ensemble` on hand-written validation predictions, against confusion matrices and
fold statistics computed by hand; a real run ensembled with itself is in test_cli.py."""

import csv
import json

import pytest

from cnnjax.ensemble import ensemble, main
from cnnjax.errors import DataError

NAMES = ["a", "b", "c"]
FOLD_0 = [("r1", "a"), ("r2", "b"), ("r3", "c"), ("r4", "a")]
FOLD_1 = [("s1", "a"), ("s2", "b"), ("s3", "c")]
SURE = [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]
# Alone, each member gets two of fold 0 right; their average gets r2 and r3 right.
MEMBER_1 = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]]
MEMBER_2 = [[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.7, 0.2, 0.1]]


def write_predictions(folder, recordings, probabilities):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "val_predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", *NAMES])
        for (file, label), row in zip(recordings, probabilities):
            writer.writerow([file, label, *row])


def cv_run(root, fold_0_probabilities, grouped=True):
    write_predictions(root / "fold_0", FOLD_0, fold_0_probabilities)
    write_predictions(root / "fold_1", FOLD_1, SURE)
    (root / "cv_report.json").write_text(json.dumps({"grouped": grouped, "split_seed": 0}))
    return root


def test_cv_runs_average_fold_by_fold(tmp_path, capsys):
    members = [cv_run(tmp_path / "one", MEMBER_1), cv_run(tmp_path / "two", MEMBER_2)]
    main([str(m) for m in members] + ["--out", str(tmp_path / "ensemble")])
    summary = json.loads((tmp_path / "ensemble" / "cv_report.json").read_text())
    # fold 0 averaged: r1 [.4 .5 .1] -> b, r2 -> b, r3 -> c, r4 [.4 .5 .1] -> b: recall a 0,
    # b 1, c 1, balanced accuracy 2/3; fold 1 all right: 1.
    assert summary["metrics"]["balanced_accuracy"]["mean"] == pytest.approx(5 / 6)
    assert summary["metrics"]["balanced_accuracy"]["std"] == pytest.approx(1 / 6)
    assert summary["metrics"]["accuracy"]["mean"] == pytest.approx((2 / 4 + 1) / 2)
    assert summary["pooled"]["confusion_matrix"] == [[1, 2, 0], [0, 2, 0], [0, 0, 2]]
    assert summary["recall"]["a"]["mean"] == pytest.approx(0.5)
    assert (summary["num_folds"], summary["grouped"]) == (2, True)
    assert "2-fold patient-grouped cross-validation" in capsys.readouterr().out
    assert (tmp_path / "ensemble" / "cv_confusion_matrix.png").exists()


def test_single_runs_average_their_validation_recordings(tmp_path):
    write_predictions(tmp_path / "one", FOLD_0, MEMBER_1)
    write_predictions(tmp_path / "two", FOLD_0, MEMBER_2)
    report = ensemble([tmp_path / "one", tmp_path / "two"], tmp_path / "ensemble")
    assert report["confusion_matrix"] == [[0, 2, 0], [0, 1, 0], [0, 0, 1]]
    assert report["balanced_accuracy"] == pytest.approx(2 / 3)
    written = json.loads((tmp_path / "ensemble" / "report.json").read_text())
    assert written["members"] == [str(tmp_path / "one"), str(tmp_path / "two")]


def test_runs_judged_on_other_recordings_or_splits_are_refused(tmp_path):
    one = cv_run(tmp_path / "one", MEMBER_1)
    other_split = cv_run(tmp_path / "other_split", MEMBER_2, grouped=False)
    with pytest.raises(DataError, match="split differently"):
        ensemble([one, other_split], tmp_path / "out")
    other_recordings = cv_run(tmp_path / "other_recordings", MEMBER_2)
    write_predictions(other_recordings / "fold_0", [("x", "a")] + FOLD_0[1:], MEMBER_2)
    with pytest.raises(DataError, match="other validation recordings"):
        ensemble([one, other_recordings], tmp_path / "out")
    fewer_folds = cv_run(tmp_path / "fewer_folds", MEMBER_2)
    (fewer_folds / "fold_1" / "val_predictions.csv").unlink()
    (fewer_folds / "fold_1").rmdir()
    with pytest.raises(DataError, match=r"\[2, 1\] folds"):
        ensemble([one, fewer_folds], tmp_path / "out")
    (one / "fold_1" / "val_predictions.csv").unlink()
    with pytest.raises(DataError, match="val_predictions.csv not found"):
        ensemble([one, cv_run(tmp_path / "two", MEMBER_2)], tmp_path / "out")
