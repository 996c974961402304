#!/usr/bin/env python3
"""Check that transformers loads a tunekit HF export of any encoder family and gives tunekit's logits.

tunekit exports classification models in Hugging Face layout (config.json with the family's
`model_type` and `architectures`, model.safetensors with the family's head tensor names,
tokenizer.json). This script loads such a directory with `AutoModelForSequenceClassification`
or `AutoModelForTokenClassification` (+ `AutoTokenizer`), runs every example of a predictions
file ALONE (no padding, so pad handling cannot hide or cause a difference), and compares
transformers' logits with tunekit's.

    python3 tools/check_arch_export.py --model OUT_DIR --predictions tunekit_logits.json \
        [--tolerance 1e-4] [--attn-implementation eager]

Predictions file (JSON), sequence classification:

    {"task": "sequence_classification",        # optional, default: from config.architectures
     "texts": ["first segment", ...],
     "pairs": ["second segment", ...] | null,  # sentence pairs, or null / absent
     "input_ids": [[int, ...], ...],           # optional: tunekit's token ids per example;
                                               # when present they must equal the tokenizer's
     "logits": [[float] * num_labels, ...]}    # one row per example

token classification (logits per token of the tokenizer's output, special tokens included,
unpadded, i.e. `len(logits[i]) == len(input_ids of example i)`):

    {"task": "token_classification",
     "texts": [...], "pairs": [...] | null, "input_ids": [[...]] (optional),
     "logits": [[[float] * num_labels] * seq_len_i, ...]}

Optional "max_length": int (tunekit's truncation length; examples are tokenized with
truncation to it, else without truncation).

Prints one JSON line: {"model_type", "architecture", "task", "examples", "ids_match",
"max_abs_diff", "worst_example", "tolerance", "ok"}; exit code 0 when every example's token ids
match (if given) and max |logit diff| <= tolerance, 1 on a mismatch, 2 on bad input.
`tools/make_arch_fixtures.py` fixtures double as a self-test: `--self-test DIR` builds the
predictions file from DIR/expected.json and checks DIR/seq and DIR/token against it.
"""
import argparse
import inspect
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

TASKS = ("sequence_classification", "token_classification")


def fail_input(msg):
    print(f"check_arch_export: {msg}", file=sys.stderr)
    sys.exit(2)


def infer_task(config):
    archs = config.architectures or []
    if any(a.endswith("ForTokenClassification") for a in archs):
        return "token_classification"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "sequence_classification"
    fail_input(f"config.json architectures {archs}: give \"task\" in the predictions file")


def check(model_dir, preds, tolerance, attn_implementation):
    config = AutoConfig.from_pretrained(model_dir)
    task = preds.get("task") or infer_task(config)
    if task not in TASKS:
        fail_input(f"\"task\" must be one of {TASKS}, got {task!r}")
    texts, pairs, logits = preds.get("texts"), preds.get("pairs"), preds.get("logits")
    if not isinstance(texts, list) or not isinstance(logits, list) or len(texts) != len(logits):
        fail_input("\"texts\" and \"logits\" must be lists of the same length")
    if pairs is not None and len(pairs) != len(texts):
        fail_input(f"\"pairs\" has {len(pairs)} entries, \"texts\" {len(texts)}")
    ids_given = preds.get("input_ids")
    if ids_given is not None and len(ids_given) != len(texts):
        fail_input(f"\"input_ids\" has {len(ids_given)} entries, \"texts\" {len(texts)}")
    cls = AutoModelForTokenClassification if task == "token_classification" else (
        AutoModelForSequenceClassification
    )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = cls.from_pretrained(model_dir, **kwargs).eval()
    except (ValueError, TypeError):
        model = cls.from_pretrained(model_dir).eval()  # class without that attention option
    tok = AutoTokenizer.from_pretrained(model_dir)
    accepted = inspect.signature(model.forward).parameters
    max_length = preds.get("max_length")

    ids_match, worst, worst_i = True, 0.0, None
    for i, text in enumerate(texts):
        args = [text] + ([pairs[i]] if pairs is not None else [])
        enc = tok(*args, truncation=max_length is not None, max_length=max_length,
                  return_tensors="pt")
        if ids_given is not None and enc["input_ids"][0].tolist() != ids_given[i]:
            ids_match = False
            print(f"example {i}: token ids differ:\n  transformers {enc['input_ids'][0].tolist()}"
                  f"\n  tunekit      {ids_given[i]}", file=sys.stderr)
            continue
        with torch.no_grad():
            got = model(**{k: v for k, v in enc.items() if k in accepted}).logits[0]
        want = torch.tensor(logits[i], dtype=torch.float32)
        if got.shape != want.shape:
            print(f"example {i}: logits shape {list(want.shape)} from tunekit, "
                  f"{list(got.shape)} from transformers", file=sys.stderr)
            ids_match = False
            continue
        d = (got - want).abs().max().item()
        if d > worst or worst_i is None:
            worst, worst_i = d, i
    ok = ids_match and worst <= tolerance
    return {
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "task": task,
        "examples": len(texts),
        "ids_match": ids_match,
        "max_abs_diff": worst,
        "worst_example": worst_i,
        "tolerance": tolerance,
        "ok": ok,
    }


def self_test(fixture_dir, tolerance, attn_implementation):
    """Check DIR/seq and DIR/token against DIR/expected.json's unpadded cases."""
    exp = json.load(open(os.path.join(fixture_dir, "expected.json"), encoding="utf-8"))
    alone = [c for c in exp["cases"] if not c["name"].startswith("batch_")]
    ok = True
    for task, sub, key in (
        ("sequence_classification", "seq", "seq_logits"),
        ("token_classification", "token", "token_logits"),
    ):
        for paired in (False, True):
            cases = [c for c in alone if (c["pairs"] is not None) == paired]
            preds = {
                "task": task,
                "texts": [c["texts"][0] for c in cases],
                "pairs": [c["pairs"][0] for c in cases] if paired else None,
                "input_ids": [c["input_ids"][0] for c in cases],
                "logits": [c[key][0] for c in cases],
            }
            res = check(os.path.join(fixture_dir, sub), preds, tolerance, attn_implementation)
            print(json.dumps(dict(res, fixture=fixture_dir, pairs=paired)))
            ok &= res["ok"]
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="exported HF directory")
    ap.add_argument("--predictions", help="tunekit's logits, JSON (format above)")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--attn-implementation", default="eager",
                    help="passed to from_pretrained where the class accepts it ('' for default)")
    ap.add_argument("--self-test", metavar="FIXTURE_DIR",
                    help="check a tools/make_arch_fixtures.py fixture against its expected.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.self_test:
        sys.exit(0 if self_test(args.self_test, args.tolerance, args.attn_implementation) else 1)
    if not args.model or not args.predictions:
        fail_input("--model and --predictions are required (or --self-test DIR)")
    try:
        with open(args.predictions, encoding="utf-8") as f:
            preds = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail_input(f"{args.predictions}: {e}")
    res = check(args.model, preds, args.tolerance, args.attn_implementation)
    print(json.dumps(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
