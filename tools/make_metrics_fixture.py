#!/usr/bin/env python3
"""scikit-learn / SciPy reference values for tunekit's metrics
(crates/tunekit/tests/fixtures/metrics_sklearn.json, checked by
crates/tunekit/tests/metrics_sklearn.rs within 1e-6).

Cases, all from a fixed seed and rounded to 6 decimals before computing (so both sides see
exactly the same numbers): a binary problem with tied scores, a 3-class problem with one class
never predicted, and a regression problem with tied targets and predictions.
ECE has no scikit-learn function; it is computed here by its definition (10 equal-width bins
over the top-class probability, bin = min(floor(conf * 10), 9), sum of n_b / N * |acc_b - conf_b|).

Usage: python3 tools/make_metrics_fixture.py   (needs numpy, scikit-learn, scipy)
"""
import json
import pathlib

import numpy as np
import scipy
import sklearn
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score,
                             mean_absolute_error, mean_squared_error,
                             precision_recall_fscore_support, r2_score, roc_auc_score,
                             top_k_accuracy_score)
from sklearn.preprocessing import label_binarize

rng = np.random.default_rng(7)


def ece(probs, y, bins=10):
    conf = probs.max(1)
    pred = probs.argmax(1)
    b = np.minimum(np.floor(conf * bins).astype(int), bins - 1)
    total = 0.0
    for i in range(bins):
        m = b == i
        if m.any():
            total += m.sum() / len(y) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(total)


def softmax_rows(n, c, sharp):
    z = rng.normal(size=(n, c)) * sharp
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p = np.round(p, 6)
    p[:, -1] = np.round(1.0 - p[:, :-1].sum(1), 6)  # rows sum to 1 after rounding
    return p


def classification_case(n, c, sharp, drop_class=None):
    y = rng.integers(0, c, size=n)
    p = softmax_rows(n, c, sharp)
    # Make the true class likelier, so the metrics are not those of noise.
    for i in range(n):
        if rng.random() < 0.6:
            j = p[i].argmax()
            p[i, [j, y[i]]] = p[i, [y[i], j]]
    if drop_class is not None:  # a class the model never predicts
        for i in range(n):
            if p[i].argmax() == drop_class:
                k = (drop_class + 1) % c
                p[i, [drop_class, k]] = p[i, [k, drop_class]]
    if c == 2:  # ties in the score
        p[: n // 5, 1] = 0.5
        p[: n // 5, 0] = 0.5
    pred = p.argmax(1)
    labels = list(range(c))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {
        "labels": y.tolist(),
        "probs": p.tolist(),
        "accuracy": accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro", labels=labels, zero_division=0),
        "micro_f1": f1_score(y, pred, average="micro", labels=labels, zero_division=0),
        "weighted_f1": f1_score(y, pred, average="weighted", labels=labels, zero_division=0),
        "precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(),
        "ece": ece(p, y),
    }
    if c == 2:
        out["roc_auc"] = roc_auc_score(y, p[:, 1])
        out["pr_auc"] = average_precision_score(y, p[:, 1])
    else:
        out["roc_auc"] = roc_auc_score(y, p, multi_class="ovr", average="macro")
        out["pr_auc"] = average_precision_score(label_binarize(y, classes=labels), p, average="macro")
        out["top2_accuracy"] = top_k_accuracy_score(y, p, k=2, labels=labels)
    return out


def regression_case(n):
    t = np.round(rng.normal(size=n) * 2.0, 1)  # rounding makes ties
    pred = np.round(t + rng.normal(size=n) * 0.8, 2)
    pred[:4] = pred[4]  # tied predictions
    return {
        "targets": t.tolist(), "predictions": pred.tolist(),
        "mse": mean_squared_error(t, pred), "mae": mean_absolute_error(t, pred),
        "r2": r2_score(t, pred),
        "pearson": float(pearsonr(t, pred)[0]), "spearman": float(spearmanr(t, pred)[0]),
    }


fixture = {
    "binary": classification_case(50, 2, 1.0),
    "multiclass": classification_case(60, 3, 1.5, drop_class=2),
    "regression": regression_case(40),
    "versions": {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "scipy": scipy.__version__},
}
path = pathlib.Path("crates/tunekit/tests/fixtures/metrics_sklearn.json")
path.write_text(json.dumps(fixture, indent=1))
print("wrote", path)
