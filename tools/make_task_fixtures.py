"""scikit-learn's multi-label scores on random data, for
crates/tunekit/tests/fixtures/multilabel_sklearn.json (read by task::multilabel's tests).

    python3 tools/make_task_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, hamming_loss

rng = np.random.default_rng(11)
cases = []
for k in range(30):
    n, labels = int(rng.integers(1, 40)), int(rng.integers(2, 6))
    y = (rng.random((n, labels)) < rng.uniform(0.05, 0.6)).astype(np.float32)
    probs = np.clip(y * rng.uniform(0.2, 1.0, y.shape) + rng.uniform(0, 0.6, y.shape), 0, 1)
    probs = np.round(probs.astype(np.float32), 3)
    thresholds = np.round(rng.uniform(0.2, 0.8, labels), 3)
    pred = (probs >= thresholds).astype(int)
    pred5 = (probs >= 0.5).astype(int)
    yi = y.astype(int)
    scores = {
        "micro_f1": f1_score(yi, pred, average="micro", zero_division=0),
        "macro_f1": f1_score(yi, pred, average="macro", zero_division=0),
        "samples_f1": f1_score(yi, pred, average="samples", zero_division=0),
        "subset_accuracy": accuracy_score(yi, pred),
        "hamming_loss": hamming_loss(yi, pred),
        "micro_f1_at_0_5": f1_score(yi, pred5, average="micro", zero_division=0),
    }
    cases.append(
        {
            "probs": probs.tolist(),
            "targets": y.tolist(),
            "thresholds": thresholds.tolist(),
            "scores": {k: float(v) for k, v in scores.items()},
        }
    )
out = Path(__file__).resolve().parent.parent / "crates/tunekit/tests/fixtures/multilabel_sklearn.json"
out.write_text(json.dumps(cases) + "\n")
print(f"{len(cases)} cases -> {out}")
