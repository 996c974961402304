#!/usr/bin/env python3
"""Check that ONNX Runtime runs a tunekit ONNX export and predicts what tunekit predicts.

    tunekit export --model runs/mr-sentiment/model --format onnx --out /tmp/mr-onnx
    tunekit predict --model runs/mr-sentiment/model --input assets/data/mr/test.tsv --output /tmp/preds.jsonl
    python3 tools/check_onnx_export.py --model /tmp/mr-onnx \
        --data assets/data/mr/test.tsv --predictions /tmp/preds.jsonl

Tokenises with the exported tokenizer.json (the `tokenizers` package, as tunekit does), runs
batches of 64 padded to their longest row, and prints the share of identical labels, the
largest probability difference and the ONNX Runtime time; exits 1 if a label differs or a
probability differs by more than --tolerance.
"""
import argparse
import csv
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-optimizations", action="store_true", help="run the graph as written (no ORT graph rewrites)")
    args = ap.parse_args()
    tok = Tokenizer.from_file(f"{args.model}/tokenizer.json")
    tok.enable_truncation(args.max_length)
    tok.no_padding()
    id2label = json.load(open(f"{args.model}/config.json"))["id2label"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    if args.no_optimizations:
        # ONNX Runtime rewrites int8 QDQ weights + MatMul into its own quantised kernels;
        # without graph optimisations it computes exactly the graph's float arithmetic.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(f"{args.model}/model.onnx", opts, providers=["CPUExecutionProvider"])
    with open(args.data, encoding="utf-8", newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f, delimiter="\t")]
    with open(args.predictions) as f:
        ours = [json.loads(line) for line in f]
    assert len(ours) == len(texts), (len(ours), len(texts))
    same, max_diff, seconds = 0, 0.0, 0.0
    for start in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[start:start + 64])
        n = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), n), np.int64)
        mask = np.zeros((len(enc), n), np.int64)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        t0 = time.perf_counter()
        (logits,) = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": np.zeros_like(ids)})
        seconds += time.perf_counter() - t0
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        for i, p in enumerate(probs):
            row = ours[start + i]
            same += id2label[str(int(p.argmax()))] == row["label"]
            for j, name in id2label.items():
                max_diff = max(max_diff, abs(float(p[int(j)]) - row["probabilities"][name]))
    print(json.dumps({"rows": len(texts), "same_label": same, "max_probability_diff": max_diff,
                      "onnxruntime": ort.__version__, "ort_seconds": round(seconds, 2)}))
    sys.exit(0 if same == len(texts) and max_diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
