#!/usr/bin/env python3
"""The recipe of examples/smollm2-mr-lora.toml in PyTorch + transformers + PEFT, for the
side-by-side in docs/benchmarks.md: SmolLM2-135M-Instruct loaded from the same GGUF file
(dequantised to f32 by transformers), LoRA r 8, alpha 16 on q/k/v/o/gate/up/down_proj, AdamW
(lr 2e-4, no weight decay, linear schedule with 3% warm-up, clipping at 1.0), batch 8, one
epoch over assets/data/mr-sft/train.jsonl (tools/mr_to_sft.py), the loss on the answer tokens
only (chat template; the user turn with the generation prompt is context, each part tokenised
on its own, as tunekit's `llm::sft`). Batches are formed in file order after a seeded shuffle
(tunekit groups by length: the batches differ, the recipe does not).

Prints test accuracy by greedy generation (exact match of the answer, at most 32 new tokens)
before and after training, the mean train step time (excluding the first step), and peak RSS.

Usage: python3 tools/train_torch_sft_mr.py [--threads 2] [--max-steps N] [--skip-before]
"""
import argparse
import json
import os
import random
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF = os.path.join(ROOT, "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf")
DATA = os.path.join(ROOT, "assets/data/mr-sft")


def records(split):
    with open(os.path.join(DATA, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def encode(tok, r, max_length=128):
    user = [{"role": "user", "content": r["prompt"]}]
    both = user + [{"role": "assistant", "content": r["completion"]}]
    context = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(both, tokenize=False)
    c = tok(context, add_special_tokens=False)["input_ids"]
    t = tok(full[len(context):], add_special_tokens=False)["input_ids"]
    ids = (c + t)[:max_length]
    labels = ([-100] * len(c) + t)[:max_length]
    return ids, labels


def accuracy(model, tok, recs):
    ok = 0
    with torch.no_grad():
        for r in recs:
            text = tok.apply_chat_template(
                [{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True
            )
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=32,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            ok += tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip() == r["completion"]
    return ok / len(recs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--skip-before", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    d, f = os.path.dirname(GGUF), os.path.basename(GGUF)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    test = records("test")
    result = {"torch": torch.__version__, "threads": a.threads}
    if not a.skip_before:
        model.eval()
        result["test_accuracy_before"] = accuracy(model, tok, test)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    train = [encode(tok, r) for r in records("train")]
    random.Random(42).shuffle(train)
    bs = 8
    steps = (len(train) + bs - 1) // bs
    if a.max_steps:
        steps = min(steps, a.max_steps)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(0.03 * steps + 0.999), steps)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model.train()
    times = []
    for s in range(steps):
        batch = train[s * bs:(s + 1) * bs]
        n = max(len(i) for i, _ in batch)
        ids = torch.tensor([i + [pad] * (n - len(i)) for i, _ in batch])
        labels = torch.tensor([l + [-100] * (n - len(l)) for _, l in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in batch])
        t0 = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask).logits
        # Summed over answer tokens, divided by their count (tunekit's normaliser).
        lp = torch.log_softmax(logits[:, :-1].float(), -1)
        y = labels[:, 1:]
        keep = y != -100
        loss = -lp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].sum() / keep.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
        if s % 25 == 0:
            print(f"step {s + 1}/{steps} loss {loss.item():.4f} {times[-1]:.2f} s", flush=True)
    result["steps"] = steps
    result["train_step_s_mean"] = sum(times[1:]) / max(len(times) - 1, 1)
    result["train_time_s"] = sum(times)
    model.eval()
    result["test_accuracy_after"] = accuracy(model, tok, test)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
