#!/usr/bin/env python3
"""Opacus reference for tunekit's DP-SGD benchmark on MR (docs/benchmarks.md).

all-MiniLM-L6-v2 as BertForSequenceClassification, DP-SGD with Opacus 1.6
(PrivacyEngine.make_private_with_epsilon: Poisson sampling, per-example clipping to
max_grad_norm, RDP accountant), ε = 8, δ = 1e-5, AdamW, constant learning rate, the same
recipe as `tunekit train` with the `[privacy.dp]` config this script prints. Reports test
accuracy, ε spent, the mean private step time and the mean non-private step time of the same
model and batches (so the step-time cost of privacy on this machine).

    pip install 'opacus==1.6.*'
    python3 tools/dp_mr_opacus.py --threads 2 --limit 2000 --epochs 1 --output opacus-dp-mr.json

`--limit N` keeps the first N training rows spread over the file (a reduced run; say so in
the table).
"""
import argparse
import csv
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from opacus import PrivacyEngine  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def read_tsv(path, limit=0):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if limit and limit < len(rows):
        step = (len(rows) - 1) // limit
        rows = [rows[i * step] for i in range(limit)]
    return rows


def encode(rows, tok, label2id, max_length):
    enc = tok([r["text"] for r in rows], truncation=True, max_length=max_length,
              padding="max_length", return_tensors="pt")
    labels = torch.tensor([label2id[r["label"]] for r in rows])
    return torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"], labels)


def accuracy(model, ds, batch=64):
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            ids, mask, y = ds[i:i + batch]
            logits = model(input_ids=ids, attention_mask=mask).logits
            right += (logits.argmax(-1) == y).sum().item()
    return right / len(ds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--data", default="assets/data/mr")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--output")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    train_rows = read_tsv(os.path.join(a.data, "train.tsv"), a.limit)
    test_rows = read_tsv(os.path.join(a.data, "test.tsv"))
    labels = sorted({r["label"] for r in train_rows})
    label2id = {l: i for i, l in enumerate(labels)}
    train = encode(train_rows, tok, label2id, a.max_length)
    test = encode(test_rows, tok, label2id, a.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
    model.config.hidden_dropout_prob = 0.0
    model.train()

    # Non-private reference step time: the same model, batch size and optimiser.
    ref = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=a.lr)
    loader = torch.utils.data.DataLoader(train, batch_size=a.batch_size, shuffle=True)
    times = []
    for k, (ids, mask, y) in enumerate(loader):
        if k >= 12:
            break
        t = time.perf_counter()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(input_ids=ids, attention_mask=mask).logits, y).backward()
        ref_opt.step()
        times.append(time.perf_counter() - t)
    plain_step = sum(times[2:]) / len(times[2:])
    del ref, ref_opt

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private_with_epsilon(
        module=model, optimizer=opt, data_loader=loader, target_epsilon=a.epsilon,
        target_delta=a.delta, epochs=a.epochs, max_grad_norm=a.max_grad_norm,
        poisson_sampling=True,
    )
    step_times = []
    start = time.perf_counter()
    for _ in range(a.epochs):
        for ids, mask, y in loader:
            t = time.perf_counter()
            opt.zero_grad()
            if len(y):
                loss = torch.nn.functional.cross_entropy(
                    model(input_ids=ids, attention_mask=mask).logits, y)
                loss.backward()
            opt.step()
            step_times.append(time.perf_counter() - t)
    train_s = time.perf_counter() - start
    out = {
        "opacus": __import__("opacus").__version__,
        "torch": torch.__version__,
        "train_examples": len(train),
        "epochs": a.epochs,
        "noise_multiplier": opt.noise_multiplier,
        "epsilon": engine.get_epsilon(a.delta),
        "delta": a.delta,
        "test_accuracy": accuracy(model._module, test),
        "dp_step_s": sum(step_times) / len(step_times),
        "plain_step_s": plain_step,
        "train_s": train_s,
        "steps": len(step_times),
    }
    out["step_cost"] = out["dp_step_s"] / out["plain_step_s"]
    print(json.dumps(out, indent=1))
    if a.output:
        with open(a.output, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
