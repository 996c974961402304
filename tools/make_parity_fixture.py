#!/usr/bin/env python3
"""Reference embeddings for tunekit's parity tests, computed with PyTorch + transformers.

tunekit must reproduce what `transformers` computes for the same model and sentence; this
script computes it once and writes a small JSON fixture that the Rust tests compare against
(`crates/tunekit-cli/tests/parity.rs`): token ids, masked mean-pooled last hidden states
(sentence-transformers style, not normalised), the [CLS] hidden state and the pooler output.

    python3 tools/make_parity_fixture.py [--model assets/models/all-MiniLM-L6-v2]
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

SENTENCES = [
    "Hello world",
    "The movie was great, I loved every minute of it!",
    "An utterly dull, lifeless and overlong film that never finds its footing.",
    "  Leading and trailing spaces should not matter.  ",
    "Café naïve Zürich façade — accents and a dash.",
    "東京は日本の首都です。",
    "What a day 🎉🎉 can't believe it",
    "MiXeD CaSe WoRdS and NUMBERS 12345 3.14159",
    "Visit https://example.com/path?q=1 for details, or mail someone@example.org.",
    "a",
    (
        "This is a much longer sentence that goes on and on about the plot, the characters, the "
        "cinematography, the score, the pacing of the second act, the surprising performance of "
        "the supporting cast, and the way the ending ties everything together in a manner that "
        "some viewers will find satisfying and others will find contrived."
    ),
]


def round7(values):
    return [float(f"{v:.7g}") for v in values]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--output", default="crates/tunekit/tests/fixtures/parity_minilm.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()

    def run(batch):
        enc = tok(batch, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return enc, mean, out.last_hidden_state[:, 0], out.pooler_output

    # One at a time (no padding) is the reference; the padded batch must agree with it.
    singles = [run([s]) for s in SENTENCES]
    _, batch_mean, _, _ = run(SENTENCES)
    for i, (_, mean, _, _) in enumerate(singles):
        diff = (batch_mean[i] - mean[0]).abs().max().item()
        assert diff < 1e-5, f"padded batch differs from single for sentence {i}: {diff}"

    fixture = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "generated_by": "tools/make_parity_fixture.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "max_length": args.max_length,
        "sentences": SENTENCES,
        "input_ids": [enc["input_ids"][0].tolist() for enc, _, _, _ in singles],
        "mean_pooled": [round7(m[0].tolist()) for _, m, _, _ in singles],
        "cls": [round7(c[0].tolist()) for _, _, c, _ in singles],
        "pooler": [round7(p[0].tolist()) for _, _, _, p in singles],
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.output}: {len(SENTENCES)} sentences, "
          f"lengths {[len(x) for x in fixture['input_ids']]}")


if __name__ == "__main__":
    main()
