#!/usr/bin/env python3
"""The tensor names and shapes `transformers`' BertForSequenceClassification expects.

tunekit exports fine-tuned models in HF layout; the test `hf_export_names_match_transformers`
compares the exported safetensors against this list (made once from transformers itself, so
an export that transformers would load with missing or unexpected keys fails the test).

    python3 tools/hf_tensor_names.py [--model assets/models/all-MiniLM-L6-v2] [--num-labels 2]
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402
from transformers import AutoConfig, BertForSequenceClassification  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--num-labels", type=int, default=2)
    ap.add_argument("--output", default="crates/tunekit/tests/fixtures/hf_bert_seqcls_minilm.json")
    args = ap.parse_args()
    config = AutoConfig.from_pretrained(args.model, num_labels=args.num_labels)
    model = BertForSequenceClassification(config)
    tensors = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(args.output, "w") as f:
        json.dump({"generated_by": "tools/hf_tensor_names.py",
                   "transformers_version": transformers.__version__,
                   "num_labels": args.num_labels,
                   "tensors": tensors}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.output}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
