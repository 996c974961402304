#!/usr/bin/env python3
"""Load a tunekit LoRA export (RUN/model: adapter_model.safetensors + adapter_config.json +
config.json) with `peft.PeftModel.from_pretrained` and compare its class probabilities with
`tunekit predict` on the same file: the adapter format is PEFT's, so they must agree.

Usage:
    tunekit predict --model RUN/model --input FILE.tsv --output /tmp/tk.jsonl
    python3 tools/check_peft_adapter.py RUN/model FILE.tsv /tmp/tk.jsonl [N]
"""
import csv
import json
import sys

import peft
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir, data, preds = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
cfg = json.load(open(f"{model_dir}/config.json"))
adapter = json.load(open(f"{model_dir}/adapter_config.json"))
labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
base = AutoModelForSequenceClassification.from_pretrained(
    adapter["base_model_name_or_path"], num_labels=len(labels)
)
model = peft.PeftModel.from_pretrained(base, model_dir).eval()
tok = AutoTokenizer.from_pretrained(model_dir)
rows = list(csv.DictReader(open(data, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[:n]
tk = [json.loads(l) for l in open(preds)][:n]
max_diff, agree = 0.0, 0
for i in range(0, len(rows), 32):
    chunk = rows[i : i + 32]
    enc = tok([r["text"] for r in chunk], padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits, -1)
    for j, row in enumerate(p.tolist()):
        t = tk[i + j]["probabilities"]
        max_diff = max(max_diff, max(abs(row[k] - t[labels[k]]) for k in range(len(labels))))
        agree += labels[max(range(len(labels)), key=lambda k: row[k])] == tk[i + j]["label"]
print(f"{len(rows)} rows: max |p_peft - p_tunekit| = {max_diff:.2e}, same label {agree}/{len(rows)}")
sys.exit(0 if max_diff < 1e-4 else 1)
