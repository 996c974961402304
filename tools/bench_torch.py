#!/usr/bin/env python3
"""PyTorch counterpart of `cargo run --release --bin bench`: the same workload, timed the same way.

all-MiniLM-L6-v2, batch B × S tokens (deterministic pseudo-random ids, no padding), masked mean
pooling + linear head, cross-entropy, AdamW (weight decay 0.01), dropout off; median of
--steps iterations after --warmup.

    python3 tools/bench_torch.py step --threads 2
    python3 tools/bench_torch.py infer --batch 32 --threads 2
    python3 tools/bench_torch.py step --precision bf16   # CPU autocast to bf16 (oneDNN, AMX)
    python3 tools/bench_torch.py step --preset base --batch 8 --seq 512
    python3 tools/bench_torch.py step --preset base --device cuda   # GPU: f32 (TF32 off)

Attention is PyTorch's `sdpa` (scaled_dot_product_attention), transformers' default, named
explicitly. `--preset base` builds a BERT-base-shaped model (12 layers, hidden 768, 12 heads,
FFN 3072, vocabulary 30522) from a config with random weights, the shape of tunekit's
`bench --preset base` (timing does not depend on the weights' values).
"""
import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModel  # noqa: E402


def tokens(batch, seq):
    x = 0x2545F4914F6CDD1D
    mask64 = (1 << 64) - 1
    rows = []
    for _ in range(batch):
        ids = [101]
        for _ in range(seq - 2):
            x ^= (x << 13) & mask64
            x ^= x >> 7
            x ^= (x << 17) & mask64
            ids.append(1000 + x % 29000)
        ids.append(102)
        rows.append(ids)
    return torch.tensor(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["step", "infer"])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--preset", choices=["base"], default=None,
                    help="a BERT-base-shaped random model instead of --model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="hidden and attention dropout of the step (MR recipe: 0.1)")
    ap.add_argument("--int8", action="store_true",
                    help="infer: dynamic int8 linear layers (torch.ao.quantization.quantize_dynamic)")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: forward under torch.autocast('cpu', torch.bfloat16), the "
                         "Trainer's bf16=True on CPU (f32 master weights)")
    ap.add_argument("--device", default="cpu",
                    help="cpu or cuda[:N]; on CUDA every timed iteration ends with "
                         "torch.cuda.synchronize(), and TF32 is off (f32 products, as tunekit's)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.preset == "base":
        from transformers import BertConfig
        config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, vocab_size=30522,
                            max_position_embeddings=512)
        enc = AutoModel.from_config(config, attn_implementation="sdpa")
    else:
        try:
            enc = AutoModel.from_pretrained(args.model, attn_implementation="sdpa")
        except (ValueError, ImportError):
            # Families without an sdpa implementation in transformers (e.g. MPNet): the
            # default ("eager"); the output line names what ran.
            enc = AutoModel.from_pretrained(args.model)
    out_attn = enc.config._attn_implementation
    # Every family's dropout modules (DistilBERT's config names them `dropout` /
    # `attention_dropout`, BERT's `hidden_dropout_prob` / `attention_probs_dropout_prob`).
    for m in enc.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = args.dropout
    head = torch.nn.Linear(enc.config.hidden_size, 2)
    enc, head = enc.to(dev), head.to(dev)
    ids = tokens(args.batch, args.seq).to(dev)
    mask = torch.ones_like(ids)
    labels = (torch.arange(args.batch) % 2).to(dev)

    def logits():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            h = enc(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            return head((h * m).sum(1) / m.sum(1)).float()

    out = {"workload": f"{args.what}, batch {args.batch} x {args.seq} tokens, dropout {args.dropout}, {args.precision}", "threads": args.threads,
           "torch_version": torch.__version__, "attention": out_attn,
           "model": args.preset or args.model,
           "device": torch.cuda.get_device_name(dev) if cuda else "cpu"}
    if args.what == "step":
        enc.train()
        params = list(enc.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
        fwd, bwd, step, total = [], [], [], []
        for i in range(args.warmup + args.steps):
            sync()
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(logits(), labels)
            loss.item()  # as tunekit's bench reads its loss back
            t1 = time.perf_counter()
            loss.backward()
            sync()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            t3 = time.perf_counter()
            if i >= args.warmup:
                fwd.append((t1 - t0) * 1e3)
                bwd.append((t2 - t1) * 1e3)
                step.append((t3 - t2) * 1e3)
                total.append((t3 - t0) * 1e3)
        out.update(step_ms_median=statistics.median(total), forward_ms_median=statistics.median(fwd),
                   backward_ms_median=statistics.median(bwd), optimizer_ms_median=statistics.median(step))
    else:
        enc.eval()
        if args.int8:
            enc = torch.ao.quantization.quantize_dynamic(enc, {torch.nn.Linear}, dtype=torch.qint8)
            out["int8"] = "quantize_dynamic"
        times = []
        with torch.inference_mode():
            for i in range(args.warmup + args.steps):
                sync()
                t0 = time.perf_counter()
                logits().cpu()
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        out.update(latency_ms_median=statistics.median(times),
                   latency_ms_p99=times[max(0, int(len(times) * 0.99 + 0.999) - 1)],
                   examples_per_s=args.batch * 1e3 / statistics.median(times))
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if cuda:
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    print(json.dumps(out))


if __name__ == "__main__":
    main()
