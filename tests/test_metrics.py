import json
import math
import warnings

import numpy as np
import pytest

from cnnjax.metrics import classification_report, confusion_matrix

# Fixed 3-class example.
#   index:        0  1  2  3  4  5  6  7  8  9
#   labels:       0  0  0  1  1  2  2  2  2  0
#   predictions:  0  1  2  1  1  2  2  0  1  0
#
# true 0 (idx 0,1,2,9) -> predicted 0,1,2,0 -> row [2, 1, 1]
# true 1 (idx 3,4)     -> predicted 1,1     -> row [0, 2, 0]
# true 2 (idx 5,6,7,8) -> predicted 2,2,0,1 -> row [1, 1, 2]
#
# support (row sums)       = [4, 2, 4]
# predicted (column sums)  = [3, 4, 3]
# true positives (diag)    = [2, 2, 2], trace = 6
# accuracy   = 6/10 = 0.6, error rate = 0.4
# precision  = [2/3, 2/4, 2/3]
# recall     = [2/4, 2/2, 2/4]
# F1 = 2TP/(support+predicted) = [4/7, 4/6, 4/7]
#   (check class 0: 2 * (2/3 * 1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7)
# balanced accuracy = (1/2 + 1 + 1/2) / 3 = 2/3
# macro-F1 = (4/7 + 2/3 + 4/7) / 3 = (12/21 + 14/21 + 12/21) / 3 = 38/63
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
PREDICTIONS = [0, 1, 2, 1, 1, 2, 2, 0, 1, 0]
NAMES = ["cat", "dog", "bird"]


def test_confusion_matrix_rows_are_true_columns_are_predicted():
    matrix = confusion_matrix(LABELS, PREDICTIONS, num_classes=3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, [[2, 1, 1], [0, 2, 0], [1, 1, 2]])


def test_confusion_matrix_accepts_numpy_arrays_and_flattens_batches():
    labels = np.array(LABELS, dtype=np.int32).reshape(2, 5)
    predictions = np.array(PREDICTIONS, dtype=np.uint8).reshape(2, 5)
    np.testing.assert_array_equal(
        confusion_matrix(labels, predictions, 3), confusion_matrix(LABELS, PREDICTIONS, 3)
    )


def test_confusion_matrix_of_nothing_is_all_zero():
    np.testing.assert_array_equal(confusion_matrix([], [], 2), np.zeros((2, 2)))


def test_report_matches_hand_computed_values():
    report = classification_report(confusion_matrix(LABELS, PREDICTIONS, 3), NAMES)

    assert report["num_examples"] == 10
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["error_rate"] == pytest.approx(0.4)
    assert report["balanced_accuracy"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx(38 / 63)
    assert report["class_names"] == NAMES
    assert report["confusion_matrix"] == [[2, 1, 1], [0, 2, 0], [1, 1, 2]]

    expected = {
        "cat": (2 / 3, 1 / 2, 4 / 7, 4),
        "dog": (1 / 2, 1.0, 2 / 3, 2),
        "bird": (2 / 3, 1 / 2, 4 / 7, 4),
    }
    assert list(report["per_class"]) == NAMES
    for name, (precision, recall, f1, support) in expected.items():
        stats = report["per_class"][name]
        assert stats["precision"] == pytest.approx(precision)
        assert stats["recall"] == pytest.approx(recall)
        assert stats["f1"] == pytest.approx(f1)
        assert stats["support"] == support


def test_report_is_plain_json_serialisable_types():
    report = classification_report(confusion_matrix(LABELS, PREDICTIONS, 3), NAMES)
    assert json.loads(json.dumps(report)) == report
    assert type(report["accuracy"]) is float
    assert type(report["num_examples"]) is int
    assert type(report["per_class"]["cat"]["support"]) is int
    assert type(report["confusion_matrix"][0][0]) is int


def test_class_never_predicted_has_zero_precision_not_nan():
    # labels [0, 1, 1], predictions [0, 0, 0] -> [[1, 0], [2, 0]]
    # class 0: precision 1/3, recall 1/1, F1 = 2*1/(1+3) = 1/2
    # class 1: never predicted -> precision 0 (0/0), recall 0/2 = 0, F1 = 0/(2+0) = 0
    report = classification_report(confusion_matrix([0, 1, 1], [0, 0, 0], 2), ["a", "b"])
    b = report["per_class"]["b"]
    assert b == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    a = report["per_class"]["a"]
    assert a["precision"] == pytest.approx(1 / 3)
    assert a["recall"] == pytest.approx(1.0)
    assert a["f1"] == pytest.approx(1 / 2)
    # balanced accuracy = (1 + 0) / 2; macro-F1 = (1/2 + 0) / 2
    assert report["balanced_accuracy"] == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx(0.25)


def test_class_without_support_is_left_out_of_balanced_accuracy_only():
    # labels [0, 0, 1, 1], predictions [0, 2, 1, 1] -> [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    # recall: class 0 = 1/2, class 1 = 2/2, class 2 has no examples
    # balanced accuracy = (1/2 + 1) / 2 = 3/4   (not (1/2 + 1 + 0) / 3 = 1/2)
    # F1: class 0 = 2/(2+1) = 2/3, class 1 = 4/(2+2) = 1, class 2 = 0/(0+1) = 0
    # macro-F1 = (2/3 + 1 + 0) / 3 = 5/9
    report = classification_report(
        confusion_matrix([0, 0, 1, 1], [0, 2, 1, 1], 3), ["a", "b", "c"]
    )
    assert report["balanced_accuracy"] == pytest.approx(3 / 4)
    assert report["macro_f1"] == pytest.approx(5 / 9)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_empty_confusion_matrix_reports_zeros_without_nan():
    report = classification_report(np.zeros((2, 2), dtype=np.int64), ["a", "b"])
    assert report["num_examples"] == 0
    assert report["accuracy"] == 0.0
    assert report["balanced_accuracy"] == 0.0
    assert report["macro_f1"] == 0.0
    numbers = [v for stats in report["per_class"].values() for v in stats.values()]
    assert not any(math.isnan(v) for v in numbers)


@pytest.mark.parametrize(
    ("labels", "predictions", "message"),
    [
        ([0, 3], [0, 1], "labels must lie in"),
        ([0, 1], [0, -1], "predictions must lie in"),
        ([0, 1, 2], [0, 1], "same shape"),
        ([0.0, 1.0], [0, 1], "integer class indices"),
    ],
)
def test_confusion_matrix_rejects_bad_input(labels, predictions, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(labels, predictions, num_classes=3)


def test_report_rejects_mismatched_class_names():
    with pytest.raises(ValueError, match="2 class names for a 3-class"):
        classification_report(np.eye(3, dtype=np.int64), ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        classification_report(np.eye(2, dtype=np.int64), ["a", "a"])


@pytest.mark.parametrize("seed", range(4))
def test_report_agrees_with_scikit_learn_on_random_labels(seed):
    """scikit-learn as the reference on random labels, with one class never predicted and,
    for odd seeds, another class absent from the labels."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4 if seed % 2 else 5, 200)
    predictions = np.where(rng.random(200) < 0.5, labels, rng.integers(0, 5, 200))
    predictions[predictions == 2] = 3  # class 2 is never predicted
    classes = list(range(5))
    matrix = confusion_matrix(labels, predictions, 5)
    np.testing.assert_array_equal(matrix, metrics.confusion_matrix(labels, predictions,
                                                                   labels=classes))
    report = classification_report(matrix, [f"c{i}" for i in classes])
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    for i in classes:
        stats = report["per_class"][f"c{i}"]
        assert stats["precision"] == pytest.approx(precision[i])
        assert stats["recall"] == pytest.approx(recall[i])
        assert stats["f1"] == pytest.approx(f1[i])
        assert stats["support"] == support[i]
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
    assert report["macro_f1"] == pytest.approx(
        metrics.f1_score(labels, predictions, labels=classes, average="macro", zero_division=0))
    with warnings.catch_warnings():  # 'y_pred contains classes not in y_true' when one is absent
        warnings.simplefilter("ignore", UserWarning)
        expected = metrics.balanced_accuracy_score(labels, predictions)
    assert report["balanced_accuracy"] == pytest.approx(expected)
