"""tfmtnas.pipelines.evaluating: per-task metrics against hand-computed values."""

import numpy as np
import pytest

from tfmtnas.features import TaskSpec
from tfmtnas.pipelines.evaluating import task_metrics, top_k_accuracy

# Four classes; each row's rank of its label: 1st, 2nd, 3rd, (missing), 1st, tie for 1st.
PROBS = np.array([[0.7, 0.2, 0.1, 0.0],
                  [0.1, 0.6, 0.3, 0.0],
                  [0.2, 0.1, 0.0, 0.7],
                  [0.0, 0.0, 0.0, 1.0],
                  [0.4, 0.3, 0.2, 0.1],
                  [0.4, 0.4, 0.1, 0.1]])
LABELS = np.array([0, 2, 1, np.nan, 0, 1], np.float32)


def test_top_k_accuracy_hand_values():
    keep = ~np.isnan(LABELS)
    y, p = LABELS[keep], PROBS[keep]
    assert top_k_accuracy(y, p, 1) == pytest.approx(3 / 5)  # rows 0, 4 and the tie
    assert top_k_accuracy(y, p, 2) == pytest.approx(4 / 5)  # and row 1
    assert top_k_accuracy(y, p, 3) == pytest.approx(5 / 5)
    assert top_k_accuracy(np.zeros([0]), np.zeros([0, 4]), 1) is None


def test_task_metrics_mask_missing_multiclass_labels():
    tasks = [TaskSpec("digit", "multiclass:4", top_k=2), TaskSpec("click")]
    metrics, counts = task_metrics(
        {"digit": PROBS, "click": np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.15])},
        {"digit": LABELS, "click": np.array([1, 0, 1, 0, np.nan, 1], np.float32)}, tasks)
    assert metrics == {"digit_accuracy": pytest.approx(3 / 5),
                       "digit_top2_accuracy": pytest.approx(4 / 5),
                       "click_auc": pytest.approx(5 / 6)}  # 0.15 < 0.2
    assert counts == {"digit": 5, "click": 5}
