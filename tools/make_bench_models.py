#!/usr/bin/env python3
"""Randomly initialised encoders of every BERT-shaped family at all-MiniLM-L6-v2's size (the
BERT row is all-MiniLM-L6-v2 itself), for the
per-architecture rows of docs/benchmarks.md (`bench --model DIR` beside
`tools/bench_torch.py --model DIR`).

Each directory is an HF model made by transformers from a config (seeded, no hub access):
hidden 384, 6 layers, 12 heads, FFN 1536, vocabulary 30522 (the bench workload draws token ids
up to 30000), max positions 512 (+2 where positions start after the padding index), with the
family's tiny fixture tokenizer copied beside it (the bench feeds token ids directly; the
directory only needs a tokenizer.json to open). Timing does not depend on the weights' values.

    python3 tools/make_bench_models.py [--out /tmp/tunekit-bench-models]
"""
import argparse
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModel  # noqa: E402

SIZE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
            vocab_size=30522)
FAMILIES = {
    "roberta": dict(max_position_embeddings=514, pad_token_id=1, type_vocab_size=1),
    "distilbert": dict(max_position_embeddings=512, dim=384, n_layers=6, n_heads=12, hidden_dim=1536),
    "electra": dict(max_position_embeddings=512, embedding_size=128),
    "mpnet": dict(max_position_embeddings=514, pad_token_id=1),
    # DeBERTa-v3's layout (relative attention, 256 log buckets, shared key/query projections).
    "deberta-v2": dict(max_position_embeddings=512, relative_attention=True,
                       pos_att_type=["p2c", "c2p"], position_buckets=256,
                       max_relative_positions=-1, share_att_key=True, norm_rel_ebd="layer_norm",
                       position_biased_input=False, type_vocab_size=0),
    # ModernBERT's layout at this size: a global layer every third, window 128.
    "modernbert": dict(max_position_embeddings=8192, vocab_size=50368, local_attention=128,
                       global_attn_every_n_layers=3, pad_token_id=50283),
}
FIXTURE = "crates/tunekit/tests/fixtures/arch/{}/seq/tokenizer.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/tunekit-bench-models")
    args = ap.parse_args()
    for family, extra in FAMILIES.items():
        torch.manual_seed(0)
        keys = dict(SIZE, **extra)
        if family == "distilbert":
            for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
                keys.pop(k)
        config = AutoConfig.for_model(family, **keys)
        model = AutoModel.from_config(config)
        out = os.path.join(args.out, family)
        model.save_pretrained(out, safe_serialization=True)
        shutil.copy(FIXTURE.format(family), os.path.join(out, "tokenizer.json"))
        print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
