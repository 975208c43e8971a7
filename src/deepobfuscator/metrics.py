"""Classification figures from scores, in numpy (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.0) -> float:
    """Share of correct answers; scores are logits (threshold 0) or probabilities (0.5)."""
    return float(np.mean((np.asarray(scores) > threshold) == np.asarray(labels).astype(bool)))


def balanced_accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.0) -> float:
    """Mean of the true-positive and true-negative rates: 0.5 for any constant guess,
    whatever the class balance. With one class present it is plain accuracy."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) > threshold
    rates = [np.mean(pred[y == c] == c) for c in (False, True) if np.any(y == c)]
    return float(np.mean(rates))


def best_threshold(labels: np.ndarray, scores: np.ndarray, default: float = 0.0) -> float:
    """The threshold (predict `score > threshold`) with the highest balanced accuracy on
    these labels: every cut between two distinct scores, and both ends, is tried; among
    equally good cuts the one nearest `default`. `default` itself when one class is
    missing (nothing to tune on)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float(default)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tied score
    # cut after the k-th distinct score: everything up to it is called negative
    neg_below = np.r_[0, np.cumsum(~y)[last]]
    pos_below = np.r_[0, np.cumsum(y)[last]]
    bal = 0.5 * (neg_below / n_neg + (n_pos - pos_below) / n_pos)
    distinct = s[last]
    cuts = np.r_[distinct[0] - 1.0, (distinct[:-1] + distinct[1:]) / 2, distinct[-1]]
    best = np.flatnonzero(np.isclose(bal, bal.max(), rtol=0, atol=1e-12))
    return float(cuts[best[np.argmin(np.abs(cuts[best] - default))]])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get average ranks).
    NaN when only one class is present."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def class_balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present, predicting each row's most probable class
    (probs (N, K)): 1/K for any constant guess."""
    y = np.asarray(labels).astype(np.int64)
    pred = np.asarray(probs).argmax(1)
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """The mean over classes present (with a rest) of each class-vs-rest ROC AUC."""
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probs)
    aucs = [roc_auc(y == c, p[:, c]) for c in range(p.shape[1])
            if 0 < int((y == c).sum()) < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def task_scores(labels: np.ndarray, probs: np.ndarray,
                threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUC of one task's answers: scores (N,) of a binary
    task (P(yes) with threshold 0.5, or logits with 0), or (N, K) class probabilities."""
    y, p = np.asarray(labels), np.asarray(probs)
    if p.ndim == 1:
        return {"accuracy": accuracy(y, p, threshold),
                "balanced_accuracy": balanced_accuracy(y, p, threshold), "auc": roc_auc(y, p)}
    return {"accuracy": float(np.mean(p.argmax(1) == y)),
            "balanced_accuracy": class_balanced_accuracy(y, p), "auc": macro_auc(y, p)}


def finite_mean(values: list[float]) -> float:
    """The mean of the finite values (a task whose AUC is undefined on a split with one
    class is left out); NaN when none is."""
    ok = [v for v in values if np.isfinite(v)]
    return float(np.mean(ok)) if ok else float("nan")


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always answering the most common class: the chance level for accuracy."""
    y = np.asarray(labels).astype(bool)
    return float(max(y.mean(), 1 - y.mean())) if len(y) else float("nan")


def answer_floor(train_answers: np.ndarray, train_target: np.ndarray,
                 test_answers: np.ndarray, test_target: np.ndarray) -> float:
    """The floor of a private attribute under a service that answers its tasks: the
    balanced accuracy, on the test rows, of the best attacker that sees only the true
    answers (N, k) of every task. The answers are discrete, so that attacker is a table:
    for each combination of answers seen on the training rows it predicts the target's
    class under which the combination is more likely (the rule that maximises balanced
    accuracy); a tie or an unseen combination predicts 0. With one task this is what the
    task's answer alone tells about the attribute."""
    tr = np.asarray(train_answers).reshape(len(train_answers), -1)
    te = np.asarray(test_answers).reshape(len(test_answers), -1)
    y = np.asarray(train_target).astype(bool)
    n1, n0 = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    cells, inverse = np.unique(tr, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ones = np.bincount(inverse[y], minlength=len(cells)) / n1
    zeros = np.bincount(inverse[~y], minlength=len(cells)) / n0
    says_one = {tuple(c): bool(p1 > p0) for c, p1, p0 in zip(cells, ones, zeros, strict=True)}
    pred = np.array([says_one.get(tuple(row), False) for row in te], dtype=float)
    return balanced_accuracy(test_target, pred, threshold=0.5)
