#!/usr/bin/env python3
"""Make the data-preparation benchmark input: 50,000 labelled rows built from the MR train
split (assets/data/mr/train.tsv, from scripts/fetch-assets.sh), made messy on purpose and
deterministically: HTML wrappers, extra whitespace, e-mails / URLs / phone numbers, exact and
case-changed duplicates, some conflicting labels. Writes assets/bench/prep50k.csv and
assets/bench/prep50k_test.csv (1,000 rows, some of which also occur in the big file).

Usage: python3 bench/make_prep_data.py [--rows 50000]
"""
import argparse
import csv
import pathlib
import random

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=50000)
args = ap.parse_args()

src = pathlib.Path("assets/data/mr/train.tsv")
with src.open(encoding="utf-8") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
rng = random.Random(1234)
out = pathlib.Path("assets/bench")
out.mkdir(parents=True, exist_ok=True)


def messy(text: str) -> str:
    r = rng.random()
    if r < 0.05:
        return f"<p>{text} <b>really</b> &amp; truly</p>"
    if r < 0.10:
        return f"{text} -- mail me at user{rng.randrange(10**6)}@example.com"
    if r < 0.13:
        return f"{text} see https://example.org/r/{rng.randrange(10**6)}"
    if r < 0.15:
        return f"{text} call +1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    if r < 0.25:
        return "  " + text.replace(" ", "   ") + "  "
    return text


with (out / "prep50k.csv").open("w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(["text", "label"])
    for i in range(args.rows):
        base = rows[i % len(rows)]
        text, label = base["text"], base["label"]
        # Each pass over MR varies the text, so most rows are distinct; a few are exact or
        # case-changed repeats, and 0.5 % flip the label (annotation conflicts).
        if i >= len(rows) and rng.random() < 0.97:
            text = f"{text} (take {i // len(rows)} {rng.randrange(10**6)})"
        elif rng.random() < 0.3:
            text = text.upper()
        if rng.random() < 0.005:
            label = "negative" if label == "positive" else "positive"
        w.writerow([messy(text), label])

with (out / "prep50k_test.csv").open("w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(["text", "label"])
    for i in range(1000):
        base = rows[(i * 7) % len(rows)]
        w.writerow([base["text"], base["label"]])
print("wrote", out / "prep50k.csv", "and", out / "prep50k_test.csv")
