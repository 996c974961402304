#!/usr/bin/env python3
"""Load a tunekit `export --format hf` directory of any task with transformers (or
sentence-transformers for embedding models) and print its outputs as JSON, for the test
`crates/tunekit-cli/tests/every_task.rs` to compare with `tunekit predict`.

    python3 tools/check_task_export.py --task multilabel --model OUT_DIR --inputs inputs.json

inputs.json: {"texts": [...]} (multilabel, regression, embedding) or
{"words": [[...], ...]} (token_classification: pre-split words, as CoNLL gives them).

Output on stdout: {"architectures": [...], "problem_type": ..., "outputs": [...]} where each
output is, by task:
- multilabel: the sigmoid probability of every label (AutoModelForSequenceClassification,
  problem_type multi_label_classification);
- regression: the predicted value (logits[:, 0], problem_type regression);
- token_classification: the tag of every word, from its first word piece
  (AutoModelForTokenClassification, is_split_into_words=True);
- embedding: the sentence vector from SentenceTransformer(...).encode (the export's
  modules.json: Transformer, Pooling, Normalize).
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(2)
    inputs = json.load(open(args.inputs))
    config = AutoConfig.from_pretrained(args.model)
    out = []
    if args.task == "embedding":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(args.model, device="cpu")
        out = st.encode(inputs["texts"], convert_to_numpy=True).astype(float).tolist()
    elif args.task == "token_classification":
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForTokenClassification.from_pretrained(args.model).eval()
        for words in inputs["words"]:
            enc = tok(words, is_split_into_words=True, truncation=True,
                      max_length=args.max_length, return_tensors="pt")
            with torch.no_grad():
                pred = model(**enc).logits[0].argmax(-1).tolist()
            tags, seen = ["O"] * len(words), set()
            for k, w in enumerate(enc.word_ids(0)):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags[w] = model.config.id2label[pred[k]]
            out.append(tags)
    else:
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
        enc = tok(inputs["texts"], padding=True, truncation=True,
                  max_length=args.max_length, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits
        if args.task == "multilabel":
            out = torch.sigmoid(logits).tolist()
        else:
            out = logits[:, 0].tolist()
    print(json.dumps({
        "architectures": config.architectures,
        "problem_type": getattr(config, "problem_type", None),
        "outputs": out,
    }))


if __name__ == "__main__":
    main()
