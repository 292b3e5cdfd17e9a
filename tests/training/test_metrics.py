import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score
from sklearn.metrics import confusion_matrix as sk_cm

from loralens.training.metrics import aggregate_folds, classification_metrics, confusion_matrix, mean_std

LABELS = ["neutral", "happy", "sad", "angry"]


def test_known_answer_by_hand():
    # truth:  n n n h h s s s s a ; predictions chosen so each number below can be checked by hand.
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0, 3]
    m = classification_metrics(y_true, y_pred, LABELS)
    # recalls: neutral 2/3, happy 1/2, sad 3/4, angry 1/1
    assert m.per_class_recall == pytest.approx({"neutral": 2 / 3, "happy": 0.5, "sad": 0.75, "angry": 1.0})
    assert m.uar == pytest.approx((2 / 3 + 0.5 + 0.75 + 1.0) / 4)
    assert m.war == pytest.approx(7 / 10)
    # F1 = 2tp/(support+predicted): neutral 4/6, happy 2/4, sad 6/8, angry 2/2
    assert m.macro_f1 == pytest.approx((4 / 6 + 2 / 4 + 6 / 8 + 1.0) / 4)
    assert m.confusion == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 1]]
    assert m.n == 10


def test_absent_class_is_left_out_of_uar():
    # "angry" never occurs in the truth: UAR is over the other three classes, its recall is None.
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 3]
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m.per_class_recall["angry"] is None
    assert m.uar == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    # angry is predicted once (never true): F1 0 and counted in the macro mean, as scikit-learn does
    assert m.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, size=200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, size=200))
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m.uar == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m.war == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    rec = recall_score(y_true, y_pred, average=None, labels=[0, 1, 2, 3])
    assert [m.per_class_recall[lab] for lab in LABELS] == pytest.approx(list(rec))
    assert np.array_equal(np.array(m.confusion), sk_cm(y_true, y_pred, labels=[0, 1, 2, 3]))


def test_confusion_matrix_rejects_bad_indices():
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="entries"):
        confusion_matrix([0, 1], [0], 4)


def test_empty_split_gives_nan():
    m = classification_metrics([], [], LABELS)
    assert math.isnan(m.uar) and math.isnan(m.war) and m.n == 0


def test_mean_std_is_sample_std():
    r = mean_std([0.5, 0.6, 0.7])
    assert r["mean"] == pytest.approx(0.6)
    assert r["std"] == pytest.approx(0.1)  # sqrt(((0.1)^2 + 0 + (0.1)^2) / (3 - 1))
    assert mean_std([0.4]) == {"mean": 0.4, "std": None, "n": 1}
    assert mean_std([]) == {"mean": None, "std": None, "n": 0}
    assert mean_std([0.2, float("nan"), 0.4])["n"] == 2


def test_aggregate_folds():
    folds = {
        "fold_0": {"uar": 0.5, "war": 0.6, "macro_f1": 0.4, "per_class_recall": {"a": 0.5, "b": None}},
        "fold_1": {"uar": 0.7, "war": 0.8, "macro_f1": 0.6, "per_class_recall": {"a": 0.9, "b": 0.3}},
    }
    agg = aggregate_folds(folds, ["a", "b"])
    assert agg["uar"]["mean"] == pytest.approx(0.6)
    assert agg["uar"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert agg["per_class_recall"]["a"]["mean"] == pytest.approx(0.7)
    assert agg["per_class_recall"]["b"] == {"mean": 0.3, "std": None, "n": 1}
