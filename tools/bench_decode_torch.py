#!/usr/bin/env python3
"""Decode speed of PyTorch + transformers on SmolLM2-135M-Instruct loaded from the GGUF file
(dequantised to f32), for the side-by-side with `tunekit generate` in docs/benchmarks.md:
batch 1, greedy, a KV cache; prints prompt-processing time and new tokens per second over
--new tokens (`min_new_tokens` = `max_new_tokens`, so eos does not end it early), the median
of --repeats runs after one warm-up.

Usage: python3 tools/bench_decode_torch.py [--threads 2] [--new 64] [--repeats 3] [--prompt TEXT]
"""
import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF = os.path.join(ROOT, "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", default="Once upon a time, in a small village by the sea,")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d, f = os.path.dirname(GGUF), os.path.basename(GGUF)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    ids = torch.tensor([tok(a.prompt, add_special_tokens=False)["input_ids"]])
    prefill, rates = [], []
    with torch.no_grad():
        for r in range(a.repeats + 1):
            t0 = time.perf_counter()
            model(ids)
            t1 = time.perf_counter()
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=a.new,
                min_new_tokens=a.new,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            t2 = time.perf_counter()
            if r > 0:
                prefill.append(t1 - t0)
                rates.append(a.new / (t2 - t1))
    print(json.dumps({
        "torch": torch.__version__, "threads": a.threads, "prompt_tokens": ids.shape[1],
        "prefill_ms": 1000 * statistics.median(prefill),
        "new_tokens": a.new, "tokens_per_s": statistics.median(rates),
    }))


if __name__ == "__main__":
    main()
