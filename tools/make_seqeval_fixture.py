"""Entity extraction and scores from seqeval 1.2.2 (default, conlleval-compatible mode) on
random tag sequences, partly malformed (I- after O, type changes, E-/S- tags), for
crates/tunekit/tests/fixtures/seqeval.json (read by task::ner's tests).

    pip install seqeval==1.2.2 && python3 tools/make_seqeval_fixture.py
"""
import json
import random
from pathlib import Path

from seqeval.metrics import f1_score, precision_score, recall_score, classification_report
from seqeval.metrics.sequence_labeling import get_entities

rng = random.Random(7)
TYPES = ["PER", "LOC", "ORG", "product"]


def sentence(bioes):
    prefixes = ["B", "I", "O", "O", "O"] + (["E", "S"] if bioes else [])
    return [
        "O" if (p := rng.choice(prefixes)) == "O" else f"{p}-{rng.choice(TYPES)}"
        for _ in range(rng.randint(1, 12))
    ]


def noisy(tags):
    out = list(tags)
    for i in range(len(out)):
        if rng.random() < 0.25:
            out[i] = rng.choice(["O", f"B-{rng.choice(TYPES)}", f"I-{rng.choice(TYPES)}"])
    return out


cases = []
for k in range(80):
    bioes = k % 3 == 0
    truth = [sentence(bioes) for _ in range(rng.randint(1, 5))]
    pred = [noisy(s) for s in truth]
    report = classification_report(truth, pred, output_dict=True, zero_division=0)
    per_type = {
        t: [v["precision"], v["recall"], v["f1-score"], int(v["support"])]
        for t, v in report.items()
        if t not in ("micro avg", "macro avg", "weighted avg")
    }
    cases.append(
        {
            "truth": truth,
            "predicted": pred,
            "precision": precision_score(truth, pred, zero_division=0),
            "recall": recall_score(truth, pred, zero_division=0),
            "f1": f1_score(truth, pred, zero_division=0),
            "entities_true": [list(e) for e in get_entities(truth)],
            "per_type": per_type,
        }
    )
out = Path(__file__).resolve().parent.parent / "crates/tunekit/tests/fixtures/seqeval.json"
out.write_text(json.dumps(cases, indent=0) + "\n")
print(f"{len(cases)} cases -> {out}")
