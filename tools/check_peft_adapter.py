#!/usr/bin/env python3
"""Load a tunekit LoRA export (RUN/model: adapter_model.safetensors + adapter_config.json +
config.json) with `peft.PeftModel.from_pretrained` and compare its class probabilities with
`tunekit predict` on the same file: the adapter format is PEFT's, so they must agree.

Usage:
    tunekit predict --model RUN/model --input FILE.tsv --output /tmp/tk.jsonl
    python3 tools/check_peft_adapter.py RUN/model FILE.tsv /tmp/tk.jsonl [N] [--max-length L]

Works for every encoder family transformers has a `...ForSequenceClassification` for; what the
export needs, per family (what PEFT itself writes for task_type SEQ_CLS):
- `target_modules` with the family's module names: BERT / RoBERTa / XLM-R / ELECTRA
  `query`, `value` (`key`, `dense`...); DistilBERT `q_lin`, `v_lin`; MPNet `q`, `v`;
  DeBERTa-v2 `query_proj`, `value_proj`; ModernBERT `Wqkv` (fused q/k/v; also `Wo`, `Wi`).
  Adapter tensor names: `base_model.model.<prefix>.<path>.lora_A.weight` /
  `.lora_B.weight` with `<prefix>` the family's base_model_prefix (`bert`, `roberta`,
  `distilbert`, `electra`, `mpnet`, `deberta`, and `model` for ModernBERT).
- every head weight that the base checkpoint (`base_model_name_or_path`) lacks must be in
  `modules_to_save` (saved as `base_model.model.<module>.weight`, no `.modules_to_save.default`
  infix in the file): PEFT's SEQ_CLS default is only `classifier` / `score`, which covers the
  whole head of BERT, RoBERTa, XLM-R, ELECTRA and MPNet (their `classifier.dense` +
  `classifier.out_proj` live under `classifier`), but NOT DistilBERT's `pre_classifier`,
  DeBERTa's `pooler` (`pooler.dense`), or ModernBERT's `head` (`head.dense`, `head.norm`);
  pretrained checkpoints do not contain those, so without them in `modules_to_save` PEFT runs
  a randomly initialised layer. This script refuses such an adapter by name (exit 1) instead of
  reporting a large probability difference. (BERT's `pooler` comes from the checkpoint.)

The texts are truncated to --max-length tokens (default 128, capped by the model's
position table for tiny models), as `tunekit predict` does with the run's max_length.
"""
import argparse
import csv
import json
import sys

import peft
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def covered(key, modules_to_save):
    """Whether a state-dict key of the task model lives under one of modules_to_save."""
    parts = key.split(".")
    return any(m in parts[:-1] or key.startswith(m + ".") for m in modules_to_save)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("data")
    ap.add_argument("preds")
    ap.add_argument("n", nargs="?", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = json.load(open(f"{args.model_dir}/config.json"))
    adapter = json.load(open(f"{args.model_dir}/adapter_config.json"))
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    torch.manual_seed(0)
    base, info = AutoModelForSequenceClassification.from_pretrained(
        adapter["base_model_name_or_path"], num_labels=len(labels), output_loading_info=True
    )
    mts = adapter.get("modules_to_save") or []
    uncovered = [k for k in info["missing_keys"] if not covered(k, mts)]
    print(f"{cfg.get('model_type')}: target_modules {adapter.get('target_modules')}, "
          f"modules_to_save {mts}")
    if uncovered:
        print(f"check_peft_adapter: the base checkpoint lacks {uncovered} and the adapter's "
              f"modules_to_save {mts} does not cover them: PEFT would run them randomly "
              f"initialised", file=sys.stderr)
        sys.exit(1)
    model = peft.PeftModel.from_pretrained(base, args.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    max_length = args.max_length
    positions = getattr(base.config, "max_position_embeddings", None)
    if positions is not None and cfg.get("model_type") in ("roberta", "xlm-roberta", "mpnet"):
        positions -= base.config.pad_token_id + 1  # position ids start at padding_idx + 1
    if positions is not None and positions < max_length:
        max_length = positions
    with open(args.data, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: args.n]
    with open(args.preds) as f:
        tk = [json.loads(line) for line in f][: args.n]
    if len(tk) < len(rows):
        sys.exit(f"check_peft_adapter: {args.preds} has {len(tk)} rows, {args.data} {len(rows)}")
    max_diff, agree = 0.0, 0
    for i in range(0, len(rows), 32):
        chunk = rows[i : i + 32]
        enc = tok([r["text"] for r in chunk], padding=True, truncation=True,
                  max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            p = torch.softmax(model(**enc).logits, -1)
        for j, row in enumerate(p.tolist()):
            t = tk[i + j]["probabilities"]
            max_diff = max(max_diff, max(abs(row[k] - t[labels[k]]) for k in range(len(labels))))
            agree += labels[max(range(len(labels)), key=lambda k: row[k])] == tk[i + j]["label"]
    print(f"{len(rows)} rows: max |p_peft - p_tunekit| = {max_diff:.2e}, "
          f"same label {agree}/{len(rows)}")
    sys.exit(0 if max_diff < args.tolerance else 1)


if __name__ == "__main__":
    main()
