#!/usr/bin/env python3
"""Check that `transformers` loads a tunekit-exported model and predicts what tunekit predicts.

    tunekit predict --model runs/mr-sentiment/model --input assets/data/mr/test.tsv --output /tmp/preds.jsonl
    python3 tools/check_hf_export.py --model runs/mr-sentiment/model \
        --data assets/data/mr/test.tsv --predictions /tmp/preds.jsonl

Prints the share of identical labels and the largest probability difference; exits 1 if any
label differs or a probability differs by more than --tolerance.
"""
import argparse
import csv
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    with open(args.data, encoding="utf-8", newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f, delimiter="\t")]
    with open(args.predictions) as f:
        ours = [json.loads(line) for line in f]
    assert len(ours) == len(texts), (len(ours), len(texts))
    id2label = model.config.id2label
    same, max_diff = 0, 0.0
    for start in range(0, len(texts), 64):
        batch = texts[start:start + 64]
        enc = tok(batch, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits, -1)
        for i, p in enumerate(probs):
            row = ours[start + i]
            label = id2label[int(p.argmax())]
            same += label == row["label"]
            for j, name in id2label.items():
                max_diff = max(max_diff, abs(float(p[j]) - row["probabilities"][name]))
    print(json.dumps({"rows": len(texts), "same_label": same, "max_probability_diff": max_diff}))
    sys.exit(0 if same == len(texts) and max_diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
