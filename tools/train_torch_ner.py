#!/usr/bin/env python3
"""PyTorch + transformers Trainer reference for tunekit's WNUT-16 NER benchmark.

Same recipe as examples/wnut16-ner.toml: all-MiniLM-L6-v2 as BertForTokenClassification, the
first word piece of each word labelled (the rest -100), 5 epochs, batch 16, AdamW lr 1e-4,
weight decay 0.01, 10% linear warm-up then linear decay, max_length 128, evaluation every
epoch, best epoch by validation entity F1 (seqeval). The validation and test sentences are the
ones tunekit carved out of the file: they are read from a tunekit run's
predictions/{validation,test}.jsonl, and every other sentence of the file is training data.

    python3 tools/train_torch_ner.py --run runs/wnut16-ner --threads 2 --output torch-ner.json
"""
import argparse
import collections
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from seqeval.metrics import f1_score, precision_score, recall_score  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)


def read_conll(path):
    sents, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line:
            if words:
                sents.append((words, tags))
            words, tags = [], []
            continue
        cols = line.split()
        words.append(cols[0])
        tags.append(cols[-1])
    if words:
        sents.append((words, tags))
    return sents


def read_split(path):
    out = []
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        out.append((r["text"].split(" "), r["labels"]))
    return out


class Encoded(torch.utils.data.Dataset):
    def __init__(self, sents, tok, label2id, max_length):
        self.items = []
        for words, tags in sents:
            enc = tok(words, is_split_into_words=True, truncation=True, max_length=max_length)
            labels, prev = [], None
            for w in enc.word_ids():
                labels.append(-100 if w is None or w == prev else label2id[tags[w]])
                prev = w
            enc["labels"] = labels
            self.items.append(enc)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--data", default="assets/data/wnut16/ner.txt")
    ap.add_argument("--run", default="runs/wnut16-ner", help="tunekit run whose carved splits to use")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    allsents = read_conll(args.data)
    val = read_split(os.path.join(args.run, "predictions/validation.jsonl"))
    test = read_split(os.path.join(args.run, "predictions/test.jsonl"))
    held = collections.Counter((tuple(w), tuple(t)) for w, t in val + test)
    train = []
    for w, t in allsents:
        k = (tuple(w), tuple(t))
        if held[k] > 0:
            held[k] -= 1
        else:
            train.append((w, t))
    assert sum(held.values()) == 0, "validation/test sentences not found in the data file"
    labels = ["O"] + sorted({t for _, ts in train for t in ts} - {"O"})
    label2id = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    ds = {n: Encoded(s, tok, label2id, 128) for n, s in [("train", train), ("val", val), ("test", test)]}

    def metrics(pred):
        p = np.argmax(pred.predictions, axis=-1)
        gold, guess = [], []
        for row_p, row_y in zip(p, pred.label_ids):
            g = [labels[y] for y in row_y if y != -100]
            q = [labels[x] for x, y in zip(row_p, row_y) if y != -100]
            gold.append(g)
            guess.append(q)
        return {"f1": f1_score(gold, guess), "precision": precision_score(gold, guess),
                "recall": recall_score(gold, guess)}

    targs = TrainingArguments(
        output_dir="/tmp/tunekit-torch-ner", num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
        max_grad_norm=1.0, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="f1", logging_strategy="epoch",
        report_to="none", use_cpu=True, seed=args.seed, disable_tqdm=True,
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["val"],
                      data_collator=DataCollatorForTokenClassification(tok), compute_metrics=metrics)
    start = time.perf_counter()
    out = trainer.train()
    train_time = time.perf_counter() - start
    v = trainer.evaluate(ds["val"])
    t = trainer.evaluate(ds["test"], metric_key_prefix="test")
    summary = {
        "tool": "tools/train_torch_ner.py", "torch_version": torch.__version__,
        "transformers_version": transformers.__version__, "threads": torch.get_num_threads(),
        "train_sentences": len(train), "steps": out.global_step,
        "train_time_s": round(train_time, 2),
        "validation_f1": v["eval_f1"], "test_f1": t["test_f1"],
        "test_precision": t["test_precision"], "test_recall": t["test_recall"],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
