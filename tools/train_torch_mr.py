#!/usr/bin/env python3
"""PyTorch + transformers Trainer reference for tunekit's MR benchmark.

Runs the same recipe as examples/mr-sentiment.toml (all-MiniLM-L6-v2 as
BertForSequenceClassification, 3 epochs, batch 32, AdamW lr 5e-5, weight decay 0.01, 10%
linear warm-up then linear decay, max_length 128, dynamic padding, evaluation every epoch,
best epoch by validation accuracy) and reports test accuracy, macro-F1, training wall time,
examples/s and peak RSS, for docs/benchmarks.md.

    python3 tools/train_torch_mr.py --threads 2 --group-by-length --output torch-mr.json
    python3 tools/train_torch_mr.py --limit 64 --epochs 1 --threads 1   # smoke test
"""
import argparse
import csv
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def read_tsv(path, limit):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return rows[:limit] if limit else rows


class Encoded(torch.utils.data.Dataset):
    def __init__(self, rows, tok, label2id, max_length):
        self.items = []
        for r in rows:
            enc = tok(r["text"], truncation=True, max_length=max_length)
            enc["labels"] = label2id[r["label"]]
            self.items.append(enc)
        self.lengths = [len(e["input_ids"]) for e in self.items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--data-dir", default="assets/data/mr")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--group-by-length", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N rows of each split")
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--output", default=None)
    ap.add_argument("--bf16", action="store_true",
                    help="Trainer bf16=True: CPU autocast to bf16 (tunekit's train.precision = \"bf16\")")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: the Trainer on GPU 0, TF32 off (f32 products, as tunekit's)")
    args = ap.parse_args()

    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    train_rows = read_tsv(os.path.join(args.data_dir, "train.tsv"), args.limit)
    val_rows = read_tsv(os.path.join(args.data_dir, "validation.tsv"), args.limit)
    test_rows = read_tsv(os.path.join(args.data_dir, "test.tsv"), args.limit)
    labels = sorted({r["label"] for r in train_rows})
    label2id = {l: i for i, l in enumerate(labels)}
    id2label = {i: l for l, i in label2id.items()}

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=id2label, label2id=label2id)
    train_ds = Encoded(train_rows, tok, label2id, args.max_length)
    val_ds = Encoded(val_rows, tok, label2id, args.max_length)
    test_ds = Encoded(test_rows, tok, label2id, args.max_length)

    def metrics(pred):
        y = pred.label_ids
        p = np.argmax(pred.predictions, axis=-1)
        return {"accuracy": accuracy_score(y, p), "macro_f1": f1_score(y, p, average="macro")}

    out_dir = "/tmp/tunekit-torch-mr"
    targs = TrainingArguments(
        output_dir=out_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        length_column_name="length",
        logging_strategy="epoch",
        report_to="none",
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        seed=args.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if args.group_by_length:
        # LengthGroupedSampler reads lengths from the dataset when given.
        train_ds.length = train_ds.lengths
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics)
    start = time.perf_counter()
    train_out = trainer.train()
    train_time = time.perf_counter() - start
    val = trainer.evaluate(val_ds)
    test = trainer.evaluate(test_ds, metric_key_prefix="test")
    epochs = args.epochs if args.max_steps < 0 else train_out.global_step * args.batch_size / len(train_ds)
    summary = {
        "tool": "tools/train_torch_mr.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "group_by_length": args.group_by_length,
        "train_examples": len(train_ds),
        "steps": train_out.global_step,
        "train_time_s": round(train_time, 2),
        "train_examples_per_s": round(len(train_ds) * epochs / train_time, 2),
        "validation_accuracy": val["eval_accuracy"],
        "test_accuracy": test["test_accuracy"],
        "test_macro_f1": test["test_macro_f1"],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
