#!/usr/bin/env python3
"""PyTorch reference for tunekit's MR compression table: the same fine-tuned model (a tunekit
run's `model/`, which transformers loads as BertForSequenceClassification) in f32 and with
PyTorch's dynamic int8 quantisation of its linear layers (`torch.ao.quantization.quantize_dynamic`:
int8 weights per tensor, activations quantised per batch at run time), measured as
`tunekit compress-report` measures: batch-1 latency over the first 100 test sentences (each
alone, tokenised beforehand), batch-32 throughput over the whole test split (length-sorted
batches), test accuracy.

    python3 tools/bench_torch_quant.py --model runs/mr-report/model --data assets/data/mr/test.tsv --threads 2
"""
import argparse
import csv
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def measure(model, tok, texts, labels, label2id):
    enc = [tok(t, truncation=True, max_length=128, return_tensors="pt") for t in texts[:100]]
    with torch.inference_mode():
        for e in enc[:5]:
            model(**e)
        lat = []
        for e in enc:
            t0 = time.perf_counter()
            model(**e)
            lat.append((time.perf_counter() - t0) * 1000)
        order = sorted(range(len(texts)), key=lambda i: len(tok(texts[i])["input_ids"]))
        correct = 0
        t0 = time.perf_counter()
        for s in range(0, len(order), 32):
            idx = order[s:s + 32]
            b = tok([texts[i] for i in idx], truncation=True, max_length=128, padding=True, return_tensors="pt")
            pred = model(**b).logits.argmax(-1).tolist()
            correct += sum(int(p == label2id[labels[i]]) for p, i in zip(pred, idx))
        secs = time.perf_counter() - t0
    lat.sort()
    return {
        "batch1_p50_ms": round(statistics.median(lat), 1),
        "batch1_p90_ms": round(lat[int(0.9 * len(lat)) - 1], 1),
        "batch32_examples_per_s": round(len(texts) / secs, 1),
        "accuracy": round(correct / len(texts), 4),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/mr-report/model")
    ap.add_argument("--data", default="assets/data/mr/test.tsv")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.data, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    label2id = {v: int(k) for k, v in model.config.id2label.items()}
    out = {"torch_version": torch.__version__, "threads": torch.get_num_threads()}
    out["f32"] = measure(model, tok, texts, labels, label2id)
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    out["dynamic_int8"] = measure(q, tok, texts, labels, label2id)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
