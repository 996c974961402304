#!/usr/bin/env python3
"""Write MR (movie-review polarity, from scripts/fetch-assets.sh) as supervised fine-tuning
records for a decoder: `{"prompt": "Review: …\nIs this review positive or negative? Answer
with one word.", "completion": "positive"}`, one JSON line each, into assets/data/mr-sft/.

A seeded random sample (Python's `random.Random(42)`) of N rows of each split is kept — the
MR files are grouped by label, so their first rows would be nearly all one class: --train 1000,
--validation 200, --test 200 by default. tools/train_torch_sft_mr.py reads the same files.

Usage: python3 tools/mr_to_sft.py [--train N] [--validation N] [--test N]
"""
import argparse
import csv
import json
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUESTION = "Is this review positive or negative? Answer with one word."


def prompt(text: str) -> str:
    return f"Review: {text}\n{QUESTION}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--validation", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    args = ap.parse_args()
    src = ROOT / "assets/data/mr"
    out = ROOT / "assets/data/mr-sft"
    out.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", args.train), ("validation", args.validation), ("test", args.test)]:
        with open(src / f"{split}.tsv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        random.Random(42).shuffle(rows)
        rows = rows[:n]
        tmp = out / f"{split}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"prompt": prompt(r["text"]), "completion": r["label"]}) + "\n")
        tmp.replace(out / f"{split}.jsonl")
        print(f"{out / f'{split}.jsonl'}: {len(rows)} records")


if __name__ == "__main__":
    main()
